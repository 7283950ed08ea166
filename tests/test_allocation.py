"""model/allocation.py: numpy's huge page advice off while a model is built, steps and writes
its results, restored after, and left alone when the environment chooses it; freed memory
given back."""

from pathlib import Path

import numpy as np
import pytest

from model import ContagionModel, allocation
from model.config import build_config
from tests.helpers import small_config

multiarray = (getattr(np, "_core", None) or np.core).multiarray
if not hasattr(multiarray, "_get_madvise_hugepage"):
    pytest.skip("this numpy has no huge page advice to set", allow_module_level=True)


@allocation.without_hugepage_advice
def _advice_inside(then=None):
    """The advice as numpy holds it inside a decorated call (calling ``then`` first)."""
    if then is not None:
        then()
    return multiarray._get_madvise_hugepage()


@pytest.fixture
def advice():
    """Sets numpy's advice for a test, and puts the process's back after it."""
    previous = multiarray._get_madvise_hugepage()
    yield multiarray._set_madvise_hugepage
    multiarray._set_madvise_hugepage(previous)


@pytest.fixture
def calls(monkeypatch):
    """The values numpy's setter is called with (a stand-in that answers "previous")."""
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    seen = []

    def setter(enabled):
        seen.append(enabled)
        return "previous"

    monkeypatch.setattr(allocation, "_advice_setter", lambda: setter)
    return seen


@pytest.mark.parametrize("before", [True, False])
def test_advice_is_off_inside_and_restored_after(before, advice, monkeypatch):
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    advice(before)
    assert _advice_inside() is False
    assert multiarray._get_madvise_hugepage() is before


def test_nested_calls_restore_the_outer_setting(advice, monkeypatch):
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    advice(True)
    inner = []
    assert _advice_inside(lambda: inner.append(_advice_inside())) is False
    assert inner == [False] and multiarray._get_madvise_hugepage() is True


def test_advice_restored_when_the_call_raises(advice, monkeypatch):
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    advice(True)

    def fail():
        raise ValueError("a bad config")

    with pytest.raises(ValueError):
        _advice_inside(fail)
    assert multiarray._get_madvise_hugepage() is True


def test_the_environment_s_choice_stands(advice, monkeypatch):
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
    advice(True)
    assert _advice_inside() is True


def test_a_model_builds_steps_and_writes_without_the_advice(tmp_path, calls):
    """Construction, every step and the results' writing each turn the advice off and put
    the previous setting back."""
    m = ContagionModel(build_config(small_config(steps=12)), create_agents=False)
    assert calls == [False, "previous"]
    m.run()
    assert calls == [False, "previous"] * 13
    m.write_results(tmp_path / "run")
    assert calls == [False, "previous"] * 14


def test_a_command_runs_without_the_advice(tmp_path, calls):
    """The ``contagion`` command's whole run (its tables and drawings read a large run's
    files whole), bad input included: turned off, then the previous setting back."""
    from experiments.cli import main

    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert calls == [False, "previous"]


def _resident_bytes() -> int:
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) * 1024


def test_freed_blocks_between_kept_ones_are_given_back():
    """Blocks of 32 kB (a log's) freed between smaller ones still in use: the heap keeps
    their pages until release_free_memory gives them back."""
    from model.allocation import release_free_memory

    if not Path("/proc/self/status").exists() or not release_free_memory():
        pytest.skip("glibc's malloc_trim and /proc are Linux's")
    blocks, kept = [], []
    for _ in range(3200):  # 100 MB of blocks
        blocks.append(np.ones(4096))
        kept.append(np.ones(600))
    before = _resident_bytes()
    blocks.clear()
    freed = _resident_bytes()
    release_free_memory()
    given_back = freed - _resident_bytes()
    assert before - freed < 20 << 20  # freed, but still held
    assert given_back > 60 << 20, given_back
