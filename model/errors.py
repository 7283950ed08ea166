"""The errors that mean bad input: the command line turns each into exit status 2 and one line.

* :class:`ConfigError`: a run config, sweep file, population file or ``--set`` value is wrong;
  the message names the key, row or file and what is wrong.
* :class:`UsageError`: the command line itself is wrong (an unknown option, an ``--out`` that
  holds something else, a missing optional package).

Both live here, below every module that raises them, so that raising one never means importing
the command line.
"""

from __future__ import annotations

__all__ = ["ConfigError", "UsageError", "one_line"]


def one_line(message) -> str:
    """``message`` as one line: line breaks that came in with user text are shown escaped."""
    text = str(message)
    for raw, shown in (("\r", "\\r"), ("\n", "\\n")):
        text = text.replace(raw, shown)
    return text


class ConfigError(ValueError):
    """A configuration problem, phrased as one line naming the key or file.

    Line breaks that reach the message through user text (a key or value with a newline in
    it) are shown escaped, so the message stays one line.
    """

    def __init__(self, message: str = ""):
        super().__init__(one_line(message))


class UsageError(Exception):
    """Bad command-line usage, phrased as one line naming the option or file."""

    def __init__(self, message: str = ""):
        super().__init__(one_line(message))
