"""Durable files: written whole or not at all, and JSON that any strict reader accepts.

Run folders, sweep folders and validation reports all write through here.

Durability. :func:`atomic_write` lets a writer fill a temporary file beside the target
(``.<name>.<random>.tmp``), flushes it to disk, renames it over the target and flushes the
folder, so that after a crash (``kill -9``, power loss) the target holds either its old content
or the whole new one, never a part. A writer killed mid-file leaves only a hidden temporary
file, which :func:`clear_temporaries` removes before the folder is written again.

Strict JSON. Python's ``json`` writes ``NaN`` and ``Infinity``, which strict readers (browsers,
``jq``, most languages) reject. :func:`json_safe` turns every value into plain JSON types:
non-finite numbers become ``null``, numpy scalars and arrays become numbers and lists, tables
become lists of records, anything else its text; :func:`write_json` then refuses anything that
is still not strict JSON (``allow_nan=False``).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "TMP_SUFFIX",
    "atomic_write",
    "clear_temporaries",
    "fsync_dir",
    "json_safe",
    "read_json",
    "read_parquet",
    "write_json",
    "write_parquet",
    "write_text",
]

TMP_SUFFIX = ".tmp"


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_file_mode()


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp_path)`` and rename the result to ``path`` (same folder, atomic).

    The data is flushed to disk before the rename and the rename itself is flushed with the
    folder, so after a crash ``path`` holds either the old file or the whole new one. When
    ``write`` raises, the temporary file is removed and the target is left as it was.

    An operating-system error (disk full, permission denied, ...) that does not say which
    file it was about is raised again as an :class:`OSError` naming ``path``, so that the one
    line the command line prints names the file.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise _naming(exc, path) from exc
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; outputs are ordinary files
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _naming(exc, path) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` naming the target ``path`` instead of a temporary file or nothing."""
    reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    reason = re.sub(r"^\[Errno \d+\]\s*", "", reason)  # pyarrow puts it in its text
    return OSError(exc.errno, reason, str(path))


def fsync_dir(folder: str | Path) -> None:
    """Flush a folder's entries (renames, new and removed files) to disk, where the platform
    allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def clear_temporaries(folder: str | Path) -> None:
    """Remove the temporary files that writers killed mid-file left in ``folder``."""
    for stale in Path(folder).glob(f".*{TMP_SUFFIX}"):
        stale.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_parquet(path: str | Path, df) -> None:
    """Write a DataFrame to ``path`` as parquet (without its index) atomically."""
    atomic_write(path, lambda p: df.to_parquet(p, index=False))


def write_json(path: str | Path, obj: Any, *, indent: int | None = None) -> None:
    """Write ``obj`` as strict JSON (see :func:`json_safe`) and a final newline, atomically."""
    text = json.dumps(json_safe(obj), indent=indent, allow_nan=False) + "\n"
    write_text(path, text)


def read_json(path: str | Path) -> Any:
    """Read a JSON file of an output folder; a file that is not JSON (cut short, edited by
    hand) is a one-line :class:`model.errors.UsageError` naming it. OS errors propagate."""
    from model.errors import UsageError

    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable JSON file ({_first_line(exc)})") from None


def read_parquet(path: str | Path, **kwargs):
    """Read a parquet table of an output folder; a file that is not parquet is a one-line
    :class:`model.errors.UsageError` naming it. OS errors propagate."""
    import pandas as pd

    from model.errors import UsageError

    path = Path(path)
    try:
        return pd.read_parquet(path, **kwargs)
    except OSError:
        raise
    except (ValueError, TypeError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise UsageError(f"{path}: not a readable parquet file ({_first_line(exc)})") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def json_safe(obj: Any) -> Any:
    """``obj`` in plain JSON types.

    Tables (dicts) keep their keys as text, lists and tuples become lists, numpy arrays lists,
    numpy scalars Python numbers, DataFrames lists of records (the index as a column), and
    non-finite numbers ``None`` (``null``). Anything else becomes its text (a path, a date).
    """
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    if hasattr(obj, "to_dict") and hasattr(obj, "columns"):  # a DataFrame
        return json_safe(obj.reset_index().to_dict(orient="records"))
    return str(obj)
