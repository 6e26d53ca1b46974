"""Fixtures of the OHIF browser test: Node + Chromium, the driver, the OHIF build.

On a developer machine without Node/npm or Chromium the browser test is skipped;
with ``CI=true`` it fails instead (like the Orthanc/DCMTK tests: a silent skip in
CI would hide it). Downloads (``npm ci``, ``npm pack``) happen once and are cached
under this directory (git-ignored); a failed download is a test error, not a skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.browser.ohif_support import HERE, BrowserTools, HarnessError, ensure_driver, ohif_dist
from tests.peers.common import need

#: Override with OHIF_TEST_CHROMIUM to use another Chromium/Chrome binary.
DEFAULT_CHROMIUM = "/usr/bin/chromium"


def _chromium() -> str | None:
    wanted = os.environ.get("OHIF_TEST_CHROMIUM", DEFAULT_CHROMIUM)
    if Path(wanted).is_file() and os.access(wanted, os.X_OK):
        return wanted
    return shutil.which(wanted)


@pytest.fixture(scope="session")
def browser_tools() -> BrowserTools:
    """Node, npm and Chromium present, and playwright-core installed (``npm ci``)."""
    node, npm, chromium = shutil.which("node"), shutil.which("npm"), _chromium()
    need(
        node is not None and npm is not None,
        "Node.js/npm (for the OHIF browser test)",
        "apt-get install nodejs npm",
    )
    need(chromium is not None, "Chromium (for the OHIF browser test)", "apt-get install chromium")
    assert node is not None and chromium is not None
    try:
        version = ensure_driver()
    except HarnessError as exc:
        pytest.fail(f"installing the browser driver failed: {exc}", pytrace=False)
    return BrowserTools(node, chromium, version, HERE / "ohif_smoke.mjs")


@pytest.fixture(scope="session")
def ohif_build(browser_tools: BrowserTools) -> Path:
    """The extracted prebuilt OHIF viewer (``@ohif/app``'s ``dist``), cached across runs."""
    try:
        return ohif_dist()
    except HarnessError as exc:
        pytest.fail(f"fetching the OHIF viewer failed: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where screenshots and the browser log go: $TEST_ARTIFACTS or tests/browser/artifacts."""
    root = os.environ.get("TEST_ARTIFACTS")
    path = Path(root) if root else HERE / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path
