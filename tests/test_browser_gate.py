"""The gate of tests marked ``browser`` (tests/conftest.py): how Chromium is found, and that a
missing one skips the dashboard's browser test, or fails it under CONTAGION_REQUIRE_BROWSER=1,
before its server starts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests import helpers
from tests.helpers import BROWSER_NAMES, CHROMIUM_OVERRIDE, REQUIRE_BROWSER, find_chromium

ROOT = Path(__file__).resolve().parent.parent
BROWSER_TEST = "tests/test_app.py::test_dashboard_in_a_real_browser"


def _executable(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_the_override_names_the_browser_and_nothing_else_is_looked_at(tmp_path, monkeypatch):
    fake = _executable(tmp_path, "my-chrome")
    monkeypatch.setenv(CHROMIUM_OVERRIDE, str(fake))
    assert find_chromium() == str(fake)
    monkeypatch.setenv("PATH", str(tmp_path))
    _executable(tmp_path, "chromium")
    monkeypatch.setenv(CHROMIUM_OVERRIDE, str(tmp_path / "missing"))
    assert find_chromium() is None
    (tmp_path / "not-executable").write_text("")
    monkeypatch.setenv(CHROMIUM_OVERRIDE, str(tmp_path / "not-executable"))
    assert find_chromium() is None


@pytest.mark.parametrize("name", BROWSER_NAMES)
def test_each_browser_name_is_found_on_path_after_debians(tmp_path, monkeypatch, name):
    monkeypatch.delenv(CHROMIUM_OVERRIDE, raising=False)
    monkeypatch.setattr(helpers, "DEBIAN_CHROMIUM", str(tmp_path / "debian" / "chromium"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_chromium() is None
    fake = _executable(tmp_path, name)
    assert find_chromium() == str(fake)
    (tmp_path / "debian").mkdir()
    debian = _executable(tmp_path / "debian", "chromium")
    assert find_chromium() == str(debian)


def _run_browser_test(env: dict) -> subprocess.CompletedProcess:
    """The dashboard's browser test in a fresh pytest, showing each fixture it sets up."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--setup-show",
            BROWSER_TEST,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_a_missing_browser_skips_or_fails_before_the_server_starts(tmp_path):
    missing = tmp_path / "no-chromium"
    env = {k: v for k, v in os.environ.items() if k not in (REQUIRE_BROWSER, "PYTEST_ADDOPTS")}
    env[CHROMIUM_OVERRIDE] = str(missing)

    skipped = _run_browser_test(env)
    assert skipped.returncode == 0, skipped.stdout[-2000:]
    assert "1 skipped" in skipped.stdout
    reason = f"no Chromium: {CHROMIUM_OVERRIDE}={missing} is not an executable file"
    skip_line = re.compile(rf"SKIPPED \[1\] tests/test_app.py:\d+: {re.escape(reason)}")
    lines = [line for line in skipped.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(lines) == 1 and skip_line.fullmatch(lines[0]), skipped.stdout[-2000:]
    assert "SETUP" not in skipped.stdout, "a fixture (the dashboard's server?) was set up"

    failed = _run_browser_test({**env, REQUIRE_BROWSER: "1"})
    assert failed.returncode == 1, failed.stdout[-2000:]
    assert "1 error" in failed.stdout
    assert f"{reason} ({REQUIRE_BROWSER}=1)" in failed.stdout
    assert "SETUP" not in failed.stdout, "a fixture (the dashboard's server?) was set up"
