"""model/sorting.py: stable_argsort against numpy's stable sort and lexsort."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.sorting import run_labels, run_starts, stable_argsort, union_of_sorted

FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(FLOATS, st.sampled_from([0.0, -0.0, 1.0, np.nan])), max_size=60))
def test_floats_equal_numpys_stable_sort(values):
    keys = np.array(values, dtype=float)
    assert np.array_equal(stable_argsort(keys), np.argsort(keys, kind="stable"))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-(2**40), 2**40), max_size=60), st.integers(1, 5))
def test_integers_equal_numpys_stable_sort(values, spread):
    keys = np.array(values, dtype=np.int64) // spread  # (coarser: more ties)
    assert np.array_equal(stable_argsort(keys), np.argsort(keys, kind="stable"))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_ties_broken_as_lexsort_breaks_them(data):
    k = data.draw(st.integers(0, 60))
    keys = np.array(data.draw(st.lists(st.sampled_from([0.5, -1.0, 2.0, np.nan]), min_size=k,
                                       max_size=k)), dtype=float)  # fmt: skip
    rows = np.array(data.draw(st.permutations(range(3 * k))), dtype=np.int64)[:k]
    assert np.array_equal(stable_argsort(keys, rows), np.lexsort((rows, keys)))


@pytest.mark.parametrize("ties", [None, "rows"])
def test_large_random_keys_with_and_without_ties(ties):
    rng = np.random.default_rng(7)
    for keys in (rng.normal(size=100_000), rng.integers(0, 50, 100_000).astype(float)):
        if ties is None:
            expected, got = np.argsort(keys, kind="stable"), stable_argsort(keys)
        else:
            rows = rng.permutation(1_000_000)[: keys.size]
            expected, got = np.lexsort((rows, keys)), stable_argsort(keys, rows)
        assert np.array_equal(got, expected)


def test_tie_breakers_too_wide_to_pair_fall_back_to_lexsort():
    keys = np.array([1.0, 0.0, 1.0, 0.0])
    rows = np.array([2**62, 5, 3, 2**61], dtype=np.int64)
    assert np.array_equal(stable_argsort(keys, rows), np.lexsort((rows, keys)))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-(2**40), 2**40), max_size=60),
    st.lists(st.integers(-(2**40), 2**40), max_size=60),
    st.integers(0, 3),
)
def test_union_of_sorted_is_numpys_union(a, b, overlap):
    """Sorted distinct integers, apart, interleaved, sharing some or all of their values,
    empty: the union numpy gives, sorted and distinct."""
    a = np.unique(np.array(a, dtype=np.int64))
    b = np.unique(np.array(b + a[:: overlap + 1].tolist() if overlap else b, dtype=np.int64))
    got = union_of_sorted(a, b)
    expected = np.union1d(a, b)
    assert got.dtype == np.int64 and got.tolist() == expected.tolist()
    assert union_of_sorted(b, a).tolist() == expected.tolist()
    assert union_of_sorted(a, a).tolist() == a.tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=40))
def test_runs_of_sorted_keys_found_by_hand(pairs):
    """The first entry of each run of equal (a, b) in sorted pairs, and each entry's run,
    against a loop over the pairs."""
    pairs = sorted(pairs)
    a = np.array([p[0] for p in pairs], dtype=np.int64)
    b = np.array([p[1] for p in pairs], dtype=np.int64)
    starts = [i for i in range(len(pairs)) if i == 0 or pairs[i] != pairs[i - 1]]
    assert run_starts(a, b).tolist() == starts
    assert run_labels(run_starts(a, b), len(pairs)).tolist() == [
        sum(s <= i for s in starts) - 1 for i in range(len(pairs))
    ]
