"""Numbers in the docs, checked against fresh runs: the markers, the inventory, the sources.

Every number that README.md and docs/*.md quote (docs/reference/ quotes external sources and is
left out; docs/configuration.md and docs/outputs.md are generated from the code and checked by
tests/test_reference.py) is covered in one of these ways, written as HTML comments, which
Markdown does not show:

* ``12.1%<!-- from: run:oct-2025 share -->``: the number just before the comment is
  checked against a Python expression evaluated on a *source* (a fresh run, a config file, a
  constant of the code), at the precision it is quoted with: ``12.1%`` passes for a value that
  rounds to 12.1 in percent. ``k``, ``M``, ``B`` scale by thousands, millions, billions; a range
  ``0.16-0.23`` takes a pair; a ``~T`` at the end allows an absolute tolerance ``T`` in the
  quoted units (``about 80%<!-- from: ... ~5 -->``), ``~xF`` a factor ``F``.
* ``<!-- output: demo -->`` on the line before a fenced block, a block quote or a table: every
  line of the block (but ``...``; a table's data rows) is printed word for word by the source.
* ``<!-- numbers: measured 2026-11-24, AMD EPYC 2 cores, ... -->`` ... ``<!-- /numbers -->``: a
  region of measurements (timings, memory), which no rerun reproduces: they say when and where
  they were measured, and are left out on purpose. Other kinds of region: ``external`` (figures
  reported by others, with where they come from), ``example`` (a worked example whose numbers
  are the example's own inputs and arithmetic), ``definition`` (numbers that are part of a
  definition, such as the 1% of "1% depth").

:func:`inventory` finds every number of a page that none of these covers; the tests require
there be none. Numbers in fenced blocks of code or commands (``bash``, ``toml``, ``python``,
``console``), in inline code, in links, years, days of the month, list and section numbers, the
digits of names (GARCH(1,1), S&P 500, ACF(r, 1)), and the labels and definitions listed in
``_NOT_QUANTITIES`` (names of steps and rounds, the grid point a figure is read at, exit
statuses, the constants of formulas) are not quantities and are skipped.

Sources are named ``kind:argument``; ``SOURCES`` in tests/docsources.py builds each one's
namespace once (the runs are cached for the session). ``python -m tests.docnumbers [FILE ...]`` prints every
marked number with its fresh value, and every number not covered.
"""

from __future__ import annotations

import functools
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ("configuration.md", "outputs.md")


def pages() -> list[Path]:
    """README.md and docs/*.md, the generated pages left out."""
    docs = sorted(p for p in (ROOT / "docs").glob("*.md") if p.name not in GENERATED)
    return [ROOT / "README.md", *docs]


# --------------------------------------------------------------------------------------------
# Numbers as quoted
# --------------------------------------------------------------------------------------------

_NUM = r"[-+\u2212]?\$?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?"
_SUFFIX = r"(?:%|x|k|M|B)?"
QUOTED = re.compile(
    rf"(?P<lo>{_NUM})(?P<s1>{_SUFFIX})(?:(?:-|\u2013| to )(?P<hi>{_NUM})(?P<s2>{_SUFFIX}))?\**$"
)
_SCALE = {"%": 100.0, "k": 1e-3, "M": 1e-6, "B": 1e-9, "x": 1.0, "": 1.0}


@dataclass(frozen=True)
class Quoted:
    """A number as a page quotes it: its value(s), decimals and unit suffix."""

    text: str
    lo: float
    hi: float | None
    decimals: int
    exponent: bool
    suffix: str

    @classmethod
    def parse(cls, text: str) -> Quoted:
        m = QUOTED.search(text)
        if m is None:
            raise ValueError(f"no number before the marker: {text[-30:]!r}")
        lo, hi = m.group("lo"), m.group("hi")
        shown = hi or lo
        mantissa = shown.split("e")[0]
        decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
        return cls(
            m.group(0).rstrip("*"),
            _value(lo),
            None if hi is None else _value(hi),
            decimals,
            "e" in shown,
            m.group("s2") or m.group("s1"),
        )

    def agrees(self, value, tolerance: str | None = None) -> bool:
        """Whether ``value`` (a number, or a pair for a range) reads as this quote."""
        values = list(value) if isinstance(value, (tuple, list)) else [value]
        quoted = [self.lo] if self.hi is None else [self.lo, self.hi]
        if len(values) != len(quoted):
            return False
        return all(self._one(q, v, tolerance) for q, v in zip(quoted, values, strict=True))

    def _one(self, quoted: float, value, tolerance: str | None) -> bool:
        v = float(value) * _SCALE[self.suffix]
        if not math.isfinite(v):
            return False
        if tolerance:
            if tolerance.startswith("x"):
                f = float(tolerance[1:])
                return quoted / f <= v <= quoted * f if quoted > 0 else v == quoted
            return abs(v - quoted) <= float(tolerance) + 1e-12
        if self.exponent:
            return f"{v:.{self.decimals}e}" == f"{quoted:.{self.decimals}e}"
        return abs(v - quoted) <= 0.5 * 10.0**-self.decimals * (1 + 1e-9) + 1e-12

    def shown(self, value) -> str:
        """``value`` written as this quote writes numbers (for messages)."""
        values = list(value) if isinstance(value, (tuple, list)) else [value]
        out = []
        for v in values:
            v = float(v) * _SCALE[self.suffix]
            out.append(f"{v:.{self.decimals}e}" if self.exponent else f"{v:,.{self.decimals}f}")
        return "-".join(out) + self.suffix


def _value(text: str) -> float:
    t = text.replace("\u2212", "-").replace("$", "").replace(",", "")
    return float(t)


# --------------------------------------------------------------------------------------------
# Reading a page
# --------------------------------------------------------------------------------------------

FROM = re.compile(r"<!--\s*from:\s*(?P<source>\S+)\s+(?P<expr>.*?)\s*(?:~(?P<tol>x?[\d.]+))?\s*-->")
OUTPUT = re.compile(r"<!--\s*output:\s*(?P<source>\S+)\s*-->")
REGION = re.compile(r"<!--\s*numbers:\s*(?P<kind>\w+)\s*(?P<why>.*?)\s*-->", re.S)
REGION_END = re.compile(r"<!--\s*/numbers\s*-->")
KINDS = ("measured", "external", "example", "definition")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class Marked:
    """A number with its source: where it is, what it says, how to recompute it."""

    page: str
    line: int
    quoted: Quoted
    source: str
    expr: str
    tolerance: str | None


@dataclass(frozen=True)
class OutputBlock:
    """Lines a page quotes from a source's printed output."""

    page: str
    line: int
    source: str
    lines: tuple[str, ...]
    quote: bool  # a block quote (compared as running text) rather than a code block


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def marked_numbers(path: Path) -> list[Marked]:
    """Every ``<!-- from: ... -->`` of a page with the number before it."""
    text = path.read_text(encoding="utf-8")
    out = []
    for m in FROM.finditer(text):
        before = text[: m.start()]
        line = before.count("\n") + 1
        quoted = Quoted.parse(before[-60:])
        expr = m.group("expr").replace("\\|", "|")  # a pipe escaped inside a table row
        out.append(Marked(_rel(path), line, quoted, m.group("source"), expr, m.group("tol")))
    return out


def output_blocks(path: Path) -> list[OutputBlock]:
    """Every block a page marks as the printed output of a source."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines):
        m = OUTPUT.search(line)
        if not m:
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        if lines[j].startswith("```"):
            k = j + 1
            while not lines[k].startswith("```"):
                k += 1
            body = [x for x in lines[j + 1 : k] if x.strip() not in ("", "...")]
            out.append(OutputBlock(_rel(path), j + 1, m.group("source"), tuple(body), False))
        elif lines[j].startswith("|"):  # a table: its data rows (not header, not rule)
            k = j
            while k < len(lines) and lines[k].startswith("|"):
                k += 1
            body = lines[j + 2 : k]
            out.append(OutputBlock(_rel(path), j + 3, m.group("source"), tuple(body), False))
        elif lines[j].startswith(">"):
            k = j
            while k < len(lines) and lines[k].startswith(">"):
                k += 1
            body = [x.lstrip(">").strip() for x in lines[j:k]]
            out.append(OutputBlock(_rel(path), j + 1, m.group("source"), tuple(body), True))
        else:
            raise ValueError(f"{_rel(path)}:{i + 1}: output marker not followed by a block")
    return out


# What is not a quantity: removed before the inventory looks for numbers.
_NOT_QUANTITIES = [
    # names with digits
    re.compile(r"GARCH\(1,\s?1\)(-t)?|AR\(1\)|S&P\s500|24/7"),
    # statistics' names (a table row escapes the pipes: ACF(\|r\|, 1))
    re.compile(r"ACF\((?:\\?\|)?r(?:\\?\|)?,\s?\d+\)|Hill index \(top 5%\)|top 5%"),
    re.compile(r"\b(?:Python|Mesa|numpy|Linux)\s[\d.]+(?:\.\d+)*"),
    re.compile(r"\b\d{1,2}\s(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*\b"),
    re.compile(r"(?<![\d,.])(?:19|20)\d\d(?![\d,.]\d|%)"),  # years
    re.compile(r"\b[A-Za-z_]+\d+\b"),  # names with digits: log10, A0, p0
    re.compile(r"\d+(?=\s?(?:st|nd|rd|th)\b)"),  # ordinals
    # names of steps, rounds, generations, replicates ("round 1", "steps 1-3", "rounds 2 to 6")
    re.compile(
        r"\b(?:[Rr]ounds?|[Ss]teps?|[Gg]enerations?|[Rr]eplicates?)\s+\d+"
        r"(?:\s?(?:-|to|and)\s?\d+)?"
    ),
    # labels of the grid point a figure is read at: "cap 1 to 10", "at leverage 20", "lag 50",
    # "mean degree 1", "seeds 42-46", "at 5x and 60% volatility", "under -15%", "(5x-12x)"
    re.compile(
        r"\b(?:[Cc]aps?|at leverage|degree|lags?|[Ss]eeds?)\s+\d+(?:\s?(?:-|to|and)\s?\d+)?"
    ),
    re.compile(r"\b(?:[Aa]t|from|between|to|and)\s+\d+x(?:-\d+x)?\b|\(\d+x-\d+x\)"),
    re.compile(r"\b[Cc]hecks?\s+\d+[a-z]?\b"),  # the validation checks' numbers: "check 4b"
    re.compile(r"\d+%(?=\s+to\s+\d+%\s+volatility)"),
    re.compile(r"-?\d+%(?=\s+(?:volatility|shock))|\b(?:shocks? of|under|small shock \()\s*-?\d+%"),
    re.compile(r"\b0\.\.n-1\b|\b4 KiB"),  # generated ids 0..n-1, a memory page
    re.compile(r"§\s?\d+(?:\.\d+)*(?:-\d+(?:\.\d+)*)?|ISO 8601"),  # references, standards
    re.compile(r"\(0 if\b"),  # a formula's value where it is undefined
    # formulas and definitions: r - 1, 1/depth, (1 + buffer), weights that sum to 1, the root's
    # weight 1, "(0: off)" and "(1: nothing)", R = 1, the "1% depth", 95% intervals
    re.compile(r"\b[a-z]\s?[-+]\s?\d\b|\b1\s?/\s?[a-z]|\b1\s?\+\s?[a-z]|\bR = 1\b"),
    re.compile(r"(?<=sum to )1\b|(?<=sums to )1\b|(?<=summing to )1\b|(?<=weight )1\b"),
    re.compile(r"(?<=\()[01](?=:)"),  # "(0: off)", "(1: nothing)"
    re.compile(r"\b1%(?= depth)|\b95%(?=\s+(?:bootstrap|intervals?))"),
    # exit statuses are the command line's contract, tested by the CLI's own tests
    re.compile(r"(?:exit status|with status|exits? with|\bexit)\s+\d+\b|kill -9"),
    re.compile(r"(?<=[<>]= )0\b|(?<=[<>] )0\b|(?<=power of )2\b"),  # signs and powers of two
]
_NUMBER = re.compile(r"(?<![\w.$\-/])[-+\u2212]?\$?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")


def _strip(text: str) -> str:
    """A page's prose with everything that is not a quoted quantity blanked out (same length,
    so positions still give line numbers)."""

    def blank(m):
        return re.sub(r"[^\n]", " ", m.group(0))

    text = re.sub(r"```(?:bash|sh|toml|python|console)\n.*?```", blank, text, flags=re.S)
    text = re.sub(r"^\s*```.*$", blank, text, flags=re.M)  # the fences of the other blocks
    text = re.sub(r"`(?:[^`\n]|\n(?!\n))+`", blank, text)  # inline code, perhaps wrapped
    text = re.sub(r"\]\([^)]*\)", blank, text)  # link targets
    text = re.sub(r"<https?://[^>]*>|https?://\S+", blank, text)
    # list and section numbers ("1.", "### 4b.")
    text = re.sub(r"^\s*(?:#+\s*)?\d+[a-z]?\.\s", blank, text, flags=re.M)
    for pattern in _NOT_QUANTITIES:
        text = pattern.sub(blank, text)
    return text


def inventory(path: Path) -> list[tuple[int, str]]:
    """Every number of a page covered by no marker, output block or region: (line, context)."""
    raw = path.read_text(encoding="utf-8")
    covered = _covered_spans(raw, path)
    text = _strip(raw)
    text = re.sub(r"<!--.*?-->", lambda m: " " * len(m.group(0)), text, flags=re.S)
    out = []
    for m in _NUMBER.finditer(text):
        if any(a <= m.start() < b for a, b in covered):
            continue
        line = raw.count("\n", 0, m.start()) + 1
        lo = raw.rfind("\n", 0, m.start()) + 1
        context = raw[max(lo, m.start() - 40) : m.end() + 25].replace("\n", " ")
        out.append((line, context))
    return out


def _covered_spans(raw: str, path: Path) -> list[tuple[int, int]]:
    """Character spans covered: marked numbers, output blocks, declared regions."""
    spans = []
    for m in FROM.finditer(raw):
        q = QUOTED.search(raw[: m.start()][-60:])
        if q:
            spans.append((m.start() - len(q.group(0)), m.start()))
    spans += _region_spans(raw, path)
    for m in OUTPUT.finditer(raw):
        start = raw.find("\n", m.end()) + 1
        if raw[start:].lstrip("\n").startswith("```"):
            first = raw.index("```", start)
            end = raw.index("```", first + 3) + 3
        else:
            end = start
            while raw.startswith((">", "|"), end):
                end = raw.find("\n", end) + 1 or len(raw)
        spans.append((start, end))
    return spans


def _region_spans(raw: str, path: Path) -> list[tuple[int, int]]:
    spans = []
    for m in REGION.finditer(raw):
        kind, why = m.group("kind"), m.group("why")
        if kind not in KINDS:
            raise ValueError(f"{_rel(path)}: unknown kind of numbers {kind!r} ({', '.join(KINDS)})")
        if not why:
            raise ValueError(f"{_rel(path)}: a region of {kind} numbers must say why")
        if kind == "measured" and not _DATE.search(why):
            raise ValueError(f"{_rel(path)}: measured numbers must give the date they were taken")
        end = REGION_END.search(raw, m.end())
        if end is None:
            raise ValueError(f"{_rel(path)}: <!-- numbers: {kind} --> is never closed")
        spans.append((m.start(), end.end()))
    return spans


# --------------------------------------------------------------------------------------------
# Evaluating a marker
# --------------------------------------------------------------------------------------------


class View:
    """Attribute and item access into dicts and objects, for marker expressions
    (``summary.max_drawdown.BTC``); numbers and strings come out as they are."""

    def __init__(self, obj):
        self._obj = obj

    def __getattr__(self, name):
        obj = self._obj
        if isinstance(obj, dict) and name in obj:
            return wrap(obj[name])
        return wrap(getattr(obj, name))

    def __getitem__(self, key):
        return wrap(self._obj[key])

    def __call__(self, *args, **kwargs):
        return wrap(self._obj(*args, **kwargs))

    def __len__(self):
        return len(self._obj)

    def __iter__(self):
        return (wrap(x) for x in self._obj)


def wrap(obj):
    """Containers as :class:`View`; numbers, strings, arrays and tables as they are."""
    if isinstance(obj, View):
        return obj
    if isinstance(obj, (dict, list, tuple)) or (
        hasattr(obj, "__dataclass_fields__") and not isinstance(obj, type)
    ):
        return View(obj)
    return obj


def unwrap(obj):
    if isinstance(obj, View):
        return unwrap(obj._obj)
    if isinstance(obj, tuple):
        return tuple(unwrap(x) for x in obj)
    return obj


_BUILTINS = {
    name: __builtins__[name] if isinstance(__builtins__, dict) else getattr(__builtins__, name)
    for name in ("abs", "min", "max", "sum", "len", "round", "int", "float", "sorted", "any", "all")
}


def evaluate(expr: str, namespace: dict):
    """The value of a marker's expression in a source's namespace."""
    import numpy as np

    # the namespace as globals, so that generator expressions in markers see it too
    scope = {k: wrap(v) for k, v in namespace.items()}
    scope.update({"np": np, "__builtins__": _BUILTINS})
    return unwrap(eval(expr, scope))  # noqa: S307 (our own docs)


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """How to recompute the numbers of one source.

    Attributes:
        build: argument -> the namespace marker expressions are evaluated in (``text`` in it
            holds the printed output that output blocks are checked against).
        slow: it runs a model (2 s or more): a slow test.
        heavy: it reruns a whole study or a validation check's full variant (minutes to an
            hour): a ``heavy`` test, left out of the README's test command and run with
            ``pytest -m heavy`` (README.md says when).
    """

    build: object
    slow: bool = True
    heavy: bool = False


@functools.cache
def namespace(name: str) -> dict:
    """The namespace of a source ``kind:argument`` (built once per session)."""
    from tests import docsources

    kind, arg = _kind(name)
    if kind not in docsources.SOURCES:
        raise KeyError(f"unknown source {name!r} (kinds: {', '.join(docsources.SOURCES)})")
    return docsources.SOURCES[kind].build(arg)


def _kind(name: str) -> tuple[str, str]:
    """``run:oct-2025`` -> ("run", "oct-2025"); ``demo[a=1]`` -> ("demo", "[a=1]")."""
    m = re.match(r"[a-z][a-z0-9_-]*", name)
    kind = m.group(0) if m else name
    return kind, name[len(kind) :].removeprefix(":")


def is_slow(name: str) -> bool:
    from tests import docsources

    return docsources.SOURCES[_kind(name)[0]].slow


def is_heavy(name: str) -> bool:
    from tests import docsources

    return docsources.SOURCES[_kind(name)[0]].heavy


def check(marked: list[Marked]) -> list[str]:
    """What disagrees among these marked numbers (all of one source): one line each."""
    problems = []
    for m in marked:
        try:
            value = evaluate(m.expr, namespace(m.source))
        except Exception as exc:  # a broken marker is a failure to report, not a crash
            problems.append(f"{m.page}:{m.line}: {m.expr!r} failed: {type(exc).__name__}: {exc}")
            continue
        if not m.quoted.agrees(value, m.tolerance):
            problems.append(
                f"{m.page}:{m.line}: quotes {m.quoted.text}, {m.source} gives "
                f"{m.quoted.shown(value)} ({m.expr})"
            )
    return problems


def check_output(block: OutputBlock) -> list[str]:
    """Lines of a quoted block the source no longer prints."""
    text = namespace(block.source)["text"]
    if block.quote:
        said = " ".join(" ".join(block.lines).split())
        return [] if said in " ".join(text.split()) else [f"{block.page}:{block.line}: {said[:80]}"]
    printed = set(text.splitlines())
    return [
        f"{block.page}:{block.line}: {line.strip()[:80]}"
        for line in block.lines
        if line not in printed
    ]


def main(argv: list[str]) -> int:
    """Print every marked number with its fresh value, and every number not covered."""
    paths = [Path(a).resolve() for a in argv] or pages()
    for path in paths:
        for line, context in inventory(path):
            print(f"{_rel(path)}:{line}: not covered: {context}")
        for m in marked_numbers(path):
            problems = check([m])
            print(problems[0] if problems else f"{m.page}:{m.line}: {m.quoted.text} ok")
        for block in output_blocks(path):
            for problem in check_output(block):
                print(f"not printed: {problem}")
    return 0


if __name__ == "__main__":
    # run the module the sources import (not this copy, __main__), so their classes are ours
    from tests.docnumbers import main as _main

    sys.exit(_main(sys.argv[1:]))
