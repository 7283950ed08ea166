"""Shared fixtures, and the gate of tests marked ``browser``.

Configs are built in code (tests/helpers.py), so tests do not depend on shipped files.
A test marked ``browser`` is skipped, before any of its fixtures start, when no Chromium is
found (tests.helpers.find_chromium); with CONTAGION_REQUIRE_BROWSER=1 a missing browser is an
error instead, so a CI machine that should have one cannot pass by skipping.
"""

from __future__ import annotations

import os

import pytest

from model.config import build_config
from tests.helpers import (
    BROWSER_NAMES,
    CHROMIUM_OVERRIDE,
    DEBIAN_CHROMIUM,
    REQUIRE_BROWSER,
    find_chromium,
    small_config,
)


def _no_browser_reason() -> str:
    override = os.environ.get(CHROMIUM_OVERRIDE)
    if override:
        return f"no Chromium: {CHROMIUM_OVERRIDE}={override} is not an executable file"
    looked = ", ".join(BROWSER_NAMES)
    return f"no Chromium: neither {DEBIAN_CHROMIUM} nor {looked} on PATH"


def _browser_required() -> bool:
    return os.environ.get(REQUIRE_BROWSER) == "1"


def pytest_collection_modifyitems(items):
    """Without a browser, tests marked ``browser`` are skipped (a skip mark acts before any of
    their fixtures start, and the summary line names the test)."""
    browser = [item for item in items if item.get_closest_marker("browser") is not None]
    if not browser or _browser_required() or find_chromium() is not None:
        return
    skip = pytest.mark.skip(reason=_no_browser_reason())
    for item in browser:
        item.add_marker(skip)


def pytest_runtest_setup(item):
    """With CONTAGION_REQUIRE_BROWSER=1, a missing browser fails a browser test instead."""
    if item.get_closest_marker("browser") is None or not _browser_required():
        return
    if find_chromium() is None:
        pytest.fail(f"{_no_browser_reason()} ({REQUIRE_BROWSER}=1)", pytrace=False)


@pytest.fixture(scope="session")
def chromium() -> str:
    """The browser executable for tests marked ``browser`` (the gate above found it)."""
    path = find_chromium()
    if path is None:  # only a test not marked ``browser`` gets here without one
        pytest.fail("no Chromium for a test not marked browser", pytrace=False)
    return path


@pytest.fixture
def small_cfg():
    return build_config(small_config())
