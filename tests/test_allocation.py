"""model/allocation.py: numpy's huge page advice off while a model is built, restored after,
and left alone when the environment chooses it."""

import numpy as np
import pytest

from model import ContagionModel, allocation
from model.config import build_config
from tests.helpers import small_config

multiarray = (getattr(np, "_core", None) or np.core).multiarray
if not hasattr(multiarray, "_get_madvise_hugepage"):
    pytest.skip("this numpy has no huge page advice to set", allow_module_level=True)


@pytest.mark.parametrize("before", [True, False])
def test_advice_is_off_inside_and_restored_after(before, monkeypatch):
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    previous = multiarray._set_madvise_hugepage(before)
    try:
        with allocation.without_hugepage_advice():
            inside = multiarray._get_madvise_hugepage()
        after = multiarray._get_madvise_hugepage()
    finally:
        multiarray._set_madvise_hugepage(previous)
    assert (inside, after) == (False, before)


def test_advice_restored_when_the_block_raises(monkeypatch):
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    previous = multiarray._set_madvise_hugepage(True)
    try:
        with pytest.raises(ValueError), allocation.without_hugepage_advice():
            raise ValueError("a bad config")
        assert multiarray._get_madvise_hugepage() is True
    finally:
        multiarray._set_madvise_hugepage(previous)


def test_the_environment_s_choice_stands(monkeypatch):
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
    previous = multiarray._set_madvise_hugepage(True)
    try:
        with allocation.without_hugepage_advice():
            inside = multiarray._get_madvise_hugepage()
    finally:
        multiarray._set_madvise_hugepage(previous)
    assert inside is True


def test_a_model_is_built_without_the_advice(monkeypatch):
    """Every construction turns the advice off and puts the previous setting back."""
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    calls = []

    def setter(enabled):
        calls.append(enabled)
        return "previous"

    monkeypatch.setattr(allocation, "_advice_setter", lambda: setter)
    cfg = build_config(small_config(steps=12))
    ContagionModel(cfg, create_agents=False)
    ContagionModel(cfg, create_agents=False)
    assert calls == [False, "previous", False, "previous"]
