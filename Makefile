# The two commands of the README contract: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.earthsynth-installed
DEMO_OUT ?= out/demo

.PHONY: demo test install bench clean

# Creating the venv and installing is skipped when pyproject.toml has not changed since the last install.
$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/earthsynth demo --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "# $$b"; $(PY) $$b; done

clean:
	rm -rf out .pytest_cache
