"""Fresh memory for a large model's arrays: numpy's transparent huge page advice, off while
the model works.

On Linux numpy advises the kernel to back every array of 4 MB and more with transparent huge
pages (``madvise``, `numpy's global state
<https://numpy.org/doc/stable/reference/global_state.html>`_). On a host whose huge page
setting defragments on advice (``/sys/kernel/mm/transparent_hugepage/defrag`` set to
``madvise``), the first write to each such array can wait while the kernel compacts memory
into 2 MB pages, and how long depends on how fragmented the host's memory is. A model makes
such arrays when it is built at a million traders (a few hundred, once) and when a round
writes a large part of its contagion edges (the victims times the liquidators of a round);
on such a host the advice cost a million traders' construction 2.0 to 2.4 CPU s against
0.46 s, and a cascade step writing 900,000 edges 59 to 163 ms against 35
(docs/performance-log.md), with no step measurably faster for it.
:func:`without_hugepage_advice` turns the advice off while a model is built, steps and
writes its results (:class:`model.ContagionModel`), and while a ``contagion`` command runs
(its tables, drawings and reports read a large run's files whole), and restores it after; a
user who set ``NUMPY_MADVISE_HUGEPAGE`` chose for the whole process, and that choice stands.

Memory freed back: a long run's logs grow in blocks of a few tens of kB, which the C library
serves from its heap; when a log is joined whole (:class:`model.column_log.ColumnLog`) the
blocks are freed, but between other allocations the heap keeps their pages, and the large
arrays made next (the merged graph's, the tables') take new ones: at 300,000 traders the
GraphML file's writing left 0.6 GB held and summary.json's 0.7 GB. :func:`release_free_memory`
gives such pages back (glibc's ``malloc_trim``, as Dask's workers do for unmanaged memory);
elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

import numpy as np

__all__ = ["release_free_memory", "without_hugepage_advice"]


@functools.cache
def _advice_setter():
    """numpy's setter of the advice (``_set_madvise_hugepage``, returning the previous
    value), or None where this numpy has none."""
    core = getattr(np, "_core", None) or getattr(np, "core", None)
    return getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)


def without_hugepage_advice(func):
    """Decorate ``func`` so that numpy gives no huge page advice for the arrays it makes
    (unless the environment variable ``NUMPY_MADVISE_HUGEPAGE`` sets it); the previous
    setting is restored when it returns or raises, so calls may nest."""

    @functools.wraps(func)
    def advice_off(*args, **kwargs):
        setter = _advice_setter()
        if setter is None or "NUMPY_MADVISE_HUGEPAGE" in os.environ:
            return func(*args, **kwargs)
        before = setter(False)
        try:
            return func(*args, **kwargs)
        finally:
            setter(before)

    return advice_off


def release_free_memory() -> bool:
    """Give the pages of memory the process freed back to the operating system (glibc's
    ``malloc_trim(0)``); returns whether it could (False without glibc)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None (another C library, another system)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
