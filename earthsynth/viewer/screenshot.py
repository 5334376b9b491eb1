"""Screenshots of the web viewer in headless Chromium with software WebGL2 (SwiftShader), for tests and reports.

Drives the system Chromium (Debian's `chromium`) through the Python `playwright` package; no browser is
downloaded (never `playwright install`). SwiftShader renders WebGL on the CPU, so this works on machines
without a GPU.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from earthsynth.errors import ConfigError, EarthsynthError
from earthsynth.io.atomic import atomic_path

CHROMIUM_ENV = "EARTHSYNTH_CHROMIUM"      # another Chromium binary
CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMIUM_ARGS = [
    # software WebGL2: ANGLE on SwiftShader, allowed although it is "unsafe" for untrusted pages
    "--use-angle=swiftshader", "--use-gl=angle", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
    # the sandbox cannot start as root or in most containers; the page is our own, served from loopback
    "--no-sandbox",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-dev-shm-usage",
]
_STATE_JS = "() => window.__viewer ? {...window.__viewer} : null"
_DONE_JS = "() => !!window.__viewer && (window.__viewer.ready || window.__viewer.error !== null)"


def find_chromium() -> str:
    """Path of the Chromium binary ($EARTHSYNTH_CHROMIUM, else `chromium` / `chromium-browser` on PATH)."""
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        if shutil.which(configured) is None:
            raise EarthsynthError(f"{CHROMIUM_ENV}={configured} is not an executable",
                                  hint=f"point {CHROMIUM_ENV} at a Chromium binary or unset it")
        return shutil.which(configured)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise EarthsynthError("no Chromium browser found (looked for chromium, chromium-browser on PATH)",
                          hint="install Debian's `chromium` package (apt-get install chromium)")


def _sync_playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise EarthsynthError("the Python package `playwright` is not installed",
                              hint="pip install 'playwright==1.65.*' (it drives the system Chromium; "
                                   "do not run `playwright install`)") from None
    return sync_playwright


def screenshot(url: str, png_path, *, width: int = 640, height: int = 480, timeout_s: float = 120) -> dict:
    """Open `url` (a viewer page) in headless Chromium, wait until `window.__viewer` reports ready or an
    error (or `timeout_s` passes), and write a PNG of the page.

    Returns {ready, error, frames, console_errors, page_errors, seconds, png}: `error` is the page's own
    message, or "timed out ..." when it never got ready; `console_errors` are the browser console's errors
    (failed requests included), `page_errors` uncaught exceptions."""
    if width < 16 or height < 16 or timeout_s <= 0:
        raise ConfigError(f"screenshot size {width}x{height} / timeout {timeout_s} s is out of range")
    chromium_path = find_chromium()
    sync_playwright = _sync_playwright()
    console_errors: list[str] = []
    page_errors: list[str] = []
    start = time.monotonic()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS,
                                             timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1)
            page.on("console", lambda m: m.type == "error" and console_errors.append(m.text[:500]))
            page.on("pageerror", lambda e: page_errors.append(str(e)[:1000]))
            page.on("requestfailed", lambda r: console_errors.append(f"{r.url}: {r.failure}"))
            page.goto(url, wait_until="load", timeout=timeout_s * 1000)
            timed_out = None
            try:
                page.wait_for_function(_DONE_JS, polling=100, timeout=max(timeout_s - (time.monotonic() - start),
                                                                          1) * 1000)
            except Exception as exc:   # playwright's TimeoutError: report it, keep the screenshot of the page
                if "Timeout" not in type(exc).__name__:
                    raise
                timed_out = f"timed out after {timeout_s:g} s waiting for window.__viewer.ready"
            viewer_state = page.evaluate(_STATE_JS) or {}
            with atomic_path(png_path) as tmp:
                page.screenshot(path=str(tmp), type="png")
            # as of the screenshot: closing the browser aborts requests still open, which is no page fault
            console_errors, page_errors = list(console_errors), list(page_errors)
        finally:
            browser.close()
    return {"ready": bool(viewer_state.get("ready")), "error": viewer_state.get("error") or timed_out,
            "frames": int(viewer_state.get("frames") or 0), "console_errors": console_errors,
            "page_errors": page_errors, "seconds": round(time.monotonic() - start, 2), "png": Path(png_path)}
