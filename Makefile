# The two commands of the README contract: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.earthsynth-installed
DEMO_OUT ?= out/demo

VIEWER_MODULES := earthsynth/viewer/node_modules/.package-lock.json

.PHONY: demo test install viewer bench clean

# Creating the venv and installing is skipped when pyproject.toml has not changed since the last install.
$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

# three.js + the splat renderer of the web viewer, from npm (`npm ci` writes node_modules/.package-lock.json)
$(VIEWER_MODULES): earthsynth/viewer/package-lock.json
	npm ci --prefix earthsynth/viewer --no-audit --no-fund --loglevel=error

viewer: $(VIEWER_MODULES)

demo: $(STAMP) $(if $(shell command -v npm),viewer)
	$(VENV)/bin/earthsynth demo --out $(DEMO_OUT)

# the browser tests need the viewer's npm packages; without npm they are skipped (and say so)
test: $(STAMP) $(if $(shell command -v npm),viewer)
	$(PY) -m pytest -q

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "# $$b"; $(PY) $$b; done

clean:
	rm -rf out .pytest_cache
