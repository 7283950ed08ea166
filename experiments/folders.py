"""Output folders: each command writes only into a folder of its own kind, never over another.

``contagion run``, ``demo`` and ``validate`` (and any command that writes a folder) claim their
``--out`` folder through :class:`OutputFolder` before doing any work:

* a folder that does not exist, or is empty, is written directly;
* a folder of the command's own kind (recognised by its files, :data:`KINDS`) is refused
  unless ``--overwrite`` is given; then the new folder is written beside it, in a hidden
  sibling ``.<name>.<random>.new`` in the same parent, and renamed over the old one only once
  it is complete. An interrupted overwrite (an error, Ctrl-C) removes the new folder and leaves
  the old one as it was; ``kill -9`` can leave the hidden sibling behind, never a mixed folder;
* any other non-empty folder is refused, ``--overwrite`` or not: it holds something else.

The default folder (``results/<name>``) follows the same rule. Every refusal is a
:class:`model.errors.UsageError`: one line naming the folder, exit status 2.

Kinds are recognised by what their writers put in them first, so that a folder whose writer
was interrupted is still recognised:

======================  ==========================================================
kind                    recognised by
======================  ==========================================================
sweep folder            ``sweep.json`` (written before any run starts)
demo folder             ``narration.txt`` or an ``isolated/`` run folder
validation report       ``results.json`` (written when the checks start) or ``report.md``
run folder              ``config.toml`` and ``summary.json``, or the ``.incomplete`` marker
======================  ==========================================================

A demo folder holds a run folder too (the cross-margin run), so the kinds are tried in the
order above and the first that matches names the folder. A new command with folders of its
own adds a :class:`FolderKind` to :data:`KINDS` and claims its ``--out`` the same way.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from model.errors import UsageError
from model.storage import fsync_dir

__all__ = [
    "DEMO_FOLDER",
    "KINDS",
    "RUN_FOLDER",
    "SWEEP_FOLDER",
    "VALIDATION_FOLDER",
    "FolderKind",
    "OutputFolder",
    "blocking_file",
    "kind_of",
]


@dataclass(frozen=True)
class FolderKind:
    """A kind of output folder and the files that mark one.

    Attributes:
        name: what the folder is called in messages ("run folder").
        marks: groups of names (files or folders); the folder is of this kind when every name
            of some group is in it.
    """

    name: str
    marks: tuple[tuple[str, ...], ...]

    def matches(self, folder: Path) -> bool:
        return any(all((folder / name).exists() for name in group) for group in self.marks)

    def describe(self) -> str:
        """The marks in words: ``config.toml and summary.json, or .incomplete``."""
        return ", or ".join(" and ".join(group) for group in self.marks)


SWEEP_FOLDER = FolderKind("sweep folder", (("sweep.json",),))
DEMO_FOLDER = FolderKind("demo folder", (("narration.txt",), ("isolated",)))
VALIDATION_FOLDER = FolderKind("validation report", (("results.json",), ("report.md",)))
RUN_FOLDER = FolderKind("run folder", (("config.toml", "summary.json"), (".incomplete",)))
# Most specific first: a demo folder also holds a run folder's files.
KINDS: list[FolderKind] = [SWEEP_FOLDER, DEMO_FOLDER, VALIDATION_FOLDER, RUN_FOLDER]


def kind_of(folder: str | Path) -> FolderKind | None:
    """The kind of an existing folder (the first of :data:`KINDS` it matches), or ``None``."""
    folder = Path(folder)
    return next((kind for kind in KINDS if kind.matches(folder)), None)


def blocking_file(path: str | Path) -> Path | None:
    """The nearest existing ancestor of ``path`` when it is a file (so ``path`` cannot be
    created), else ``None``."""
    for parent in Path(path).parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _is_empty(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return next(entries, None) is None


def _dir_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


class OutputFolder:
    """A command's output folder, claimed before the work starts.

    Use as a context manager: ``with OutputFolder(out, RUN_FOLDER, overwrite=...) as folder``
    checks ``out`` (raising :class:`UsageError` when it must not be written), creates what is
    needed and gives the folder to write into: ``out`` itself, or the hidden sibling that
    replaces ``out`` when the block ends without an error. On an error the sibling is removed
    (and ``out``, if this claim created it and nothing was written), and the error goes on.

    Args:
        out: the folder named on the command line, or ``None`` for ``default``.
        kind: the command's kind of folder.
        overwrite: replace a folder of ``kind`` (``--overwrite``).
        default: the folder used when ``out`` is ``None`` (``results/<name>``).
    """

    def __init__(
        self,
        out: str | Path | None,
        kind: FolderKind,
        *,
        overwrite: bool = False,
        default: str | Path | None = None,
    ):
        if out is None and default is None:
            raise ValueError("OutputFolder needs out or default")
        self.is_default = out is None
        self.path = Path(default if out is None else out)
        self.kind = kind
        self.overwrite = overwrite
        self.staging: Path | None = None
        self._created = False

    @property
    def label(self) -> str:
        """How messages name the folder: ``--out DIR``, or ``DIR`` for the default one."""
        return str(self.path) if self.is_default else f"--out {self.path}"

    @property
    def write_to(self) -> Path:
        """Where the command writes: the hidden sibling when replacing, else the folder."""
        return self.staging if self.staging is not None else self.path

    # ---- claiming ------------------------------------------------------------------------
    def claim(self) -> Path:
        """Check the folder and prepare it; returns :attr:`write_to`.

        Raises:
            UsageError: the folder must not be written, or cannot be (one line naming it).
        """
        try:
            return self._claim()
        except OSError as exc:  # a name too long, a folder that cannot be listed, ...
            raise UsageError(
                f"{self.label}: cannot be used as the {self.kind.name}: {exc.strerror or exc}"
            ) from None

    def _claim(self) -> Path:
        path = self.path
        if path.exists() and not path.is_dir():
            raise UsageError(f"{self.label}: exists and is not a folder")
        if path.is_dir() and not _is_empty(path):
            self._check_existing()
            self.staging = self._make_staging()
            return self.staging
        self._create()
        return path

    def _check_existing(self) -> None:
        found = kind_of(self.path)
        if found is None:
            raise UsageError(
                f"{self.label}: not empty and not a {self.kind.name} "
                f"(no {self.kind.describe()}); choose a new or empty folder"
            )
        if found is not self.kind:
            raise UsageError(
                f"{self.label}: holds a {found.name}, not a {self.kind.name}; choose another folder"
            )
        if not self.overwrite:
            where = " or --out to write elsewhere" if self.is_default else ""
            raise UsageError(
                f"{self.label}: already holds a {self.kind.name}; pass --overwrite to "
                f"replace it{where}"
            )

    def _create(self) -> None:
        path = self.path
        blocking = blocking_file(path)
        if blocking is not None:
            raise UsageError(
                f"{self.label}: cannot create the {self.kind.name}: {blocking} is not a folder"
            )
        existed = path.is_dir()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"{self.label}: cannot create the {self.kind.name}: {exc.strerror or exc}"
            ) from None
        self._created = not existed
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(f"{self.label}: the folder is not writable")

    def _make_staging(self) -> Path:
        parent = self.path.parent
        try:
            staging = Path(
                tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".new", dir=parent)
            )
            os.chmod(staging, _dir_mode())  # mkdtemp makes 0700; outputs are ordinary folders
        except OSError as exc:
            raise UsageError(
                f"{self.label}: cannot write the new folder beside it in {parent}: "
                f"{exc.strerror or exc}"
            ) from None
        return staging

    # ---- finishing -----------------------------------------------------------------------
    def commit(self) -> None:
        """Put the finished folder in place: rename the sibling over the old folder."""
        if self.staging is None:
            return
        path, staging = self.path, self.staging
        old = path.with_name(f".{path.name}.{secrets.token_hex(4)}.old")
        os.rename(path, old)
        try:
            os.rename(staging, path)
        except BaseException:
            os.rename(old, path)
            raise
        self.staging = None
        fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)

    def abandon(self) -> None:
        """After an error: remove the sibling (the old folder stays as it was), or the folder
        this claim created if nothing was written into it."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
        elif self._created:
            try:
                self.path.rmdir()  # only when still empty
            except OSError:
                pass

    def __enter__(self) -> Path:
        return self.claim()

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abandon()
