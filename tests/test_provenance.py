"""The provenance block of summary.json and sweep.json: every key, with values found
independently (git run here, versions from the packages themselves, the hash of the file)."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import mesa
import networkx
import numpy
import pandas
import pyarrow
import pytest
import scipy

from model import ContagionModel, provenance
from model.config import build_config
from tests.helpers import small_config

ROOT = Path(__file__).resolve().parent.parent
KEYS = {
    "version",
    "git",
    "python",
    "packages",
    "platform",
    "seed",
    "config_sha256",
    "started",
    "elapsed_seconds",
}


def _git(cwd, *args) -> str:
    return subprocess.run(
        ["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_summary_json_carries_the_provenance_of_the_run(tmp_path):
    cfg = build_config(
        small_config(
            steps=4, traders={"count": 30}, shocks=[{"step": 2, "asset": "BTC", "return": -0.08}]
        )
    )
    before = datetime.now(UTC)
    t0 = time.perf_counter()
    m = ContagionModel(cfg, rng=1234)
    time.sleep(0.05)  # a measurable set-up
    m.run()
    out = m.write_results(tmp_path / "run")
    wall = time.perf_counter() - t0
    after = datetime.now(UTC)
    prov = json.loads((out / "summary.json").read_text())["provenance"]
    assert set(prov) == KEYS
    assert prov["seed"] == 1234  # the stream's seed, not the config's 7
    assert prov["config_sha256"] == hashlib.sha256((out / "config.toml").read_bytes()).hexdigest()
    started = datetime.fromisoformat(prov["started"])
    assert started.utcoffset().total_seconds() == 0
    assert before <= started <= after
    assert 0.05 <= prov["elapsed_seconds"] <= wall
    assert prov["python"] == platform.python_version()
    assert prov["platform"] == platform.platform()
    assert prov["packages"] == {
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "mesa": mesa.__version__,
        "networkx": networkx.__version__,
        "scipy": scipy.__version__,
        "pyarrow": pyarrow.__version__,
    }
    if (ROOT / ".git").exists():  # a checkout (a worktree has a .git file)
        assert prov["git"]["commit"] == _git(ROOT, "rev-parse", "HEAD")
        changed = _git(ROOT, "status", "--porcelain", "--untracked-files=no")
        assert prov["git"]["dirty"] is bool(changed)
    # the headline metrics a sweep flattens into runs.parquet carry no provenance
    assert "provenance" not in m.summary()


def test_seed_is_the_config_seed_by_default_and_none_for_a_generator(tmp_path):
    import numpy as np

    cfg = build_config(
        small_config(
            steps=2, traders={"count": 20}, shocks=[{"step": 2, "asset": "BTC", "return": -0.08}]
        )
    )
    assert ContagionModel(cfg).seed == 7
    assert ContagionModel(cfg, rng=5).seed == 5
    assert ContagionModel(cfg, rng=np.random.default_rng(3)).seed is None


def test_git_state_reads_the_checkout_it_runs_from(tmp_path, monkeypatch):
    repo = tmp_path / "checkout"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "t@example.org")
    _git(repo, "config", "user.name", "t")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "commit", "-q", "-m", "one")
    monkeypatch.setattr(provenance, "_SOURCE_ROOT", repo.resolve())
    commit = _git(repo, "rev-parse", "HEAD")
    assert provenance.git_state() == {"commit": commit, "dirty": False}
    (repo / "results").mkdir()
    (repo / "results" / "new.txt").write_text("untracked output\n")
    assert provenance.git_state() == {"commit": commit, "dirty": False}
    (repo / "a.py").write_text("x = 2\n")
    assert provenance.git_state() == {"commit": commit, "dirty": True}
    # code inside some other repository (a virtual environment in a checkout) is not that
    # repository's commit
    inner = repo / "venv" / "site-packages"
    inner.mkdir(parents=True)
    monkeypatch.setattr(provenance, "_SOURCE_ROOT", inner.resolve())
    assert provenance.git_state() is None
    monkeypatch.setattr(provenance, "_SOURCE_ROOT", (tmp_path / "elsewhere").resolve())
    assert provenance.git_state() is None


def test_no_git_program_gives_none(monkeypatch):
    def missing(*args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", "git")

    monkeypatch.setattr(provenance.subprocess, "run", missing)
    assert provenance.git_state() is None


def test_project_version_is_the_distribution_metadata(monkeypatch):
    import importlib.metadata

    try:
        expected = importlib.metadata.version("margin-contagion")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("margin-contagion is not installed")
    assert provenance.project_version() == expected

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(provenance.importlib.metadata, "version", not_installed)
    assert provenance.project_version() == "unknown"
    assert provenance.package_versions(("numpy",)) == {"numpy": None}


def test_sha256_text_is_sha256sum_of_the_file(tmp_path):
    text = 'name = "x"\nseed = 1\n'
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert provenance.sha256_text(text) == hashlib.sha256(path.read_bytes()).hexdigest()
    # the SHA-256 test vector of "abc" (FIPS 180-2)
    assert provenance.sha256_text("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
