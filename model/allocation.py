"""Fresh memory for a large model's arrays: numpy's transparent huge page advice, off while
a model is built.

On Linux numpy advises the kernel to back every array of 4 MB and more with transparent huge
pages (``madvise``, `numpy's global state
<https://numpy.org/doc/stable/reference/global_state.html>`_). On a host whose huge page
setting defragments on advice (``/sys/kernel/mm/transparent_hugepage/defrag`` set to
``madvise``), the first write to each such array can wait while the kernel compacts memory
into 2 MB pages. Building a model of a million traders allocates a few hundred such arrays
once: with the advice it took 2.0 to 2.4 CPU s on such a host, without it 0.46 s, its steps
the same (docs/performance-log.md). :func:`without_hugepage_advice` turns the advice off
while a model is built (:class:`model.ContagionModel`) and restores it after; a user who set
``NUMPY_MADVISE_HUGEPAGE`` chose for the whole process, and that choice stands.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

__all__ = ["without_hugepage_advice"]


def _advice_setter():
    """numpy's setter of the advice (``_set_madvise_hugepage``, returning the previous
    value), or None where this numpy has none."""
    core = getattr(np, "_core", None) or getattr(np, "core", None)
    return getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)


@contextlib.contextmanager
def without_hugepage_advice():
    """Inside the block numpy gives no huge page advice for new arrays (unless the
    environment variable ``NUMPY_MADVISE_HUGEPAGE`` sets it); the previous setting is
    restored after. Usable as a decorator."""
    setter = _advice_setter()
    if setter is None or "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        yield
        return
    before = setter(False)
    try:
        yield
    finally:
        setter(before)
