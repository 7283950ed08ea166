"""Progress of long commands on the terminal: one mechanism (tqdm) for steps, runs and checks.

``contagion run`` counts steps, ``sweep`` runs, ``validate`` checks: each shows what is done,
the rate and the time left on stderr while it works, and nothing when stderr is not a terminal
(a log file, a pipe, a notebook) or with ``--quiet``. The bar is cleared when the work ends,
so what stays on the screen is the command's result.

Lines printed while a bar is shown go through :func:`say`, which clears the bar, prints the
line and redraws the bar below it.
"""

from __future__ import annotations

import sys

__all__ = ["progress_bar", "say", "shows_progress"]


def shows_progress(quiet: bool = False, stream=None) -> bool:
    """Whether a bar is drawn: not ``quiet`` and ``stream`` (default stderr) is a terminal."""
    stream = sys.stderr if stream is None else stream
    if quiet:
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(
    total: int, *, unit: str, desc: str | None = None, initial: int = 0, quiet: bool = False
):
    """A tqdm bar on stderr counting ``unit``s up to ``total`` (disabled when
    :func:`shows_progress` says no: its ``update``, ``set_postfix_str`` and ``close`` then do
    nothing). Use it as a context manager, or close it."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit=unit,
        desc=desc,
        file=sys.stderr,
        disable=not shows_progress(quiet),
        leave=False,
        dynamic_ncols=True,
        mininterval=0.2,
        smoothing=0.1,
    )


def say(text: str = "", *, err: bool = False) -> None:
    """Print a line (to stdout, or stderr with ``err``) without breaking a bar on screen."""
    from tqdm import tqdm

    tqdm.write(text, file=sys.stderr if err else sys.stdout)
