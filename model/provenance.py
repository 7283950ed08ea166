"""Provenance: what produced a result, so that a number in a report can be traced and rerun.

``summary.json`` (a run folder) and ``sweep.json`` (a sweep folder) carry a ``provenance``
block built here, one implementation for both:

* ``version``: the installed margin-contagion version (:func:`project_version`);
* ``git``: the commit of the source checkout the code was imported from and whether its tracked
  files had changes not yet committed (``dirty``), or ``null`` when the code is not in a git
  checkout (an installed wheel) or git is not available;
* ``python``, ``packages`` (numpy, pandas, mesa, networkx, scipy, pyarrow) and ``platform``;
* ``seed``: the seed the run's random stream was started from (a sweep's base seed);
* ``config_sha256``: the SHA-256 of the canonical resolved config text (the run folder's
  ``config.toml`` byte for byte), so two folders ran the same configuration exactly when the
  hashes agree;
* ``started`` (UTC, ISO 8601) and ``elapsed_seconds``.

Everything else in a run folder is a function of the config and the seed, byte for byte; this
block is the one part that depends on when, where and with what the run was made
(docs/reliability.md, "Same seed, same bytes").
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "DISTRIBUTION",
    "PACKAGES",
    "git_state",
    "package_versions",
    "project_version",
    "provenance",
    "sha256_text",
    "utc_now",
]

DISTRIBUTION = "margin-contagion"
# The packages whose versions can change a result (numbers, tables, the graph).
PACKAGES = ("numpy", "pandas", "mesa", "networkx", "scipy", "pyarrow")
# The folder that holds model/, agents/ and experiments/ when run from a checkout.
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def project_version() -> str:
    """The installed margin-contagion version, or ``"unknown"`` when it is not installed."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (``None`` for a package that is not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(_SOURCE_ROOT), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):  # no git, or it hung
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_state() -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the checkout the code runs from, else ``None``.

    Only a checkout whose top level is the folder holding ``model/`` counts: code installed
    into a virtual environment that happens to sit inside some other repository reports
    ``None``, not that repository's commit. ``dirty`` counts changes to tracked files (staged
    or not); untracked files such as run folders under ``results/`` do not make it dirty.
    """
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != _SOURCE_ROOT:
        return None
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def sha256_text(text: str) -> str:
    """The SHA-256 (hex) of ``text`` encoded as UTF-8: what ``sha256sum`` gives for the file."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def provenance(
    *, seed: int | None, config_text: str, started: datetime, elapsed: float
) -> dict[str, Any]:
    """The ``provenance`` block of summary.json and sweep.json.

    Args:
        seed: the seed of the random stream (``None`` when the run was given a generator).
        config_text: the canonical resolved config (what ``config.toml`` holds).
        started: when the run (or sweep) started, timezone-aware.
        elapsed: seconds from the start to the moment the block is written.
    """
    return {
        "version": project_version(),
        "git": git_state(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "platform": platform.platform(),
        "seed": None if seed is None else int(seed),
        "config_sha256": sha256_text(config_text),
        "started": started.astimezone(UTC).isoformat(timespec="microseconds"),
        "elapsed_seconds": round(float(elapsed), 6),
    }
