"""``contagion validate``: run every validation check and write report.md with its figures.

The checks (one module each under :mod:`experiments.validation`):

1. fixed point of the price map (analytic, engine);
2. Greenwood, Landier and Thesmar (2015) closed form (analytic, engine);
3. Caccioli, Shrestha, Moore and Farmer (2014) overlapping portfolios (literature, engine);
4. Thurner, Farmer and Geanakoplos (2012) leverage and fat tails (literature, the paper's model,
   the numpy reference), and 4b the same through the engine (funds as margin accounts, margin
   calls by the liquidation engine, the noise trader's demand as the book);
5. stylized facts of the baseline's returns against real returns (data);
6. stylized facts from the engine's own mechanisms on a constant-volatility fundamental, against
   the same venue at leverage 1 (engine), 6b the same with makers that come back with
   fresh capital and value orders that rest (engine), 6c the same again with the makers
   starting flat and the depth calibrated on the evaluation window (engine), and 6d the
   question asked of check 4b's leverage cycle with market makers in its book (engine).

The report folder gets ``report.md`` (one row per check: name, what was compared, measured vs
expected, PASS or FAIL, then a section per check with its notes, table and figures),
``results.json`` (the same, machine-readable) and the PNG figures. Exit status: 0 when every
check passes, 1 when one fails (the report says which and why), 2 on bad input.
"""

from __future__ import annotations

import math
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from model import storage
from model.errors import ConfigError

__all__ = ["CHECKS", "render_report", "run_checks", "run_validation", "write_report"]


def _checks():
    from experiments.validation.caccioli import run_caccioli
    from experiments.validation.endogenous import run_endogenous
    from experiments.validation.endogenous_v2 import run_endogenous_v2
    from experiments.validation.endogenous_v3 import run_endogenous_v3
    from experiments.validation.endogenous_v4 import run_endogenous_v4
    from experiments.validation.fixed_point import run_fixed_point
    from experiments.validation.greenwood import run_greenwood
    from experiments.validation.stylized_facts import run_stylized_facts
    from experiments.validation.thurner import run_thurner
    from experiments.validation.thurner_engine import run_thurner_engine

    return [
        ("fixed_point", run_fixed_point),
        ("greenwood", run_greenwood),
        ("caccioli", run_caccioli),
        ("thurner", run_thurner),
        ("thurner_engine", run_thurner_engine),
        ("stylized_facts", run_stylized_facts),
        ("endogenous", run_endogenous),
        ("endogenous_v2", run_endogenous_v2),
        ("endogenous_v3", run_endogenous_v3),
        ("endogenous_v4", run_endogenous_v4),
    ]


CHECKS = (
    "fixed_point",
    "greenwood",
    "caccioli",
    "thurner",
    "thurner_engine",
    "stylized_facts",
    "endogenous",
    "endogenous_v2",
    "endogenous_v3",
    "endogenous_v4",
)


def run_checks(
    out_dir, *, quick: bool = False, returns_csv=None, only=None, log=print, bar=None
) -> list:
    """Run the checks (all, or those named in ``only``); figures go to ``out_dir``.

    A check that raises is reported as a FAIL naming the error, and the others still run.

    Args:
        log: called with one line per check as it finishes.
        bar: a progress bar (:func:`experiments.progress.progress_bar`) showing the check
            under way and counting those done.
    """
    results = []
    checks = [(k, f) for k, f in _checks() if only is None or k in only]
    for i, (key, func) in enumerate(checks, 1):
        if bar is not None:
            bar.set_description_str(key)
        kwargs = {"quick": quick, "out_dir": out_dir}
        if key == "stylized_facts" and returns_csv is not None:
            kwargs["reference_csv"] = returns_csv
        t0 = time.perf_counter()
        try:
            result = func(**kwargs)
        except (ConfigError, KeyboardInterrupt):
            raise
        except Exception as exc:  # a broken check must not hide the others
            from experiments.validation import check_result

            first = str(exc).splitlines()[0] if str(exc) else ""
            result = check_result(
                key,
                "(the check did not run to the end)",
                f"error: {type(exc).__name__}: {first}",
                "-",
                False,
                "The check raised an exception; run it from Python to see where.",
            )
        result["key"] = key
        result["seconds"] = time.perf_counter() - t0
        results.append(result)
        if bar is not None:
            bar.update()
        log(
            f"[{i}/{len(checks)}] {result['name']}: {'PASS' if result['passed'] else 'FAIL'} "
            f"({result['seconds']:.1f} s)"
        )
    return results


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.3g}"
        return f"{v:.4g}"
    return str(v)


def markdown_table(df) -> str:
    """A pandas DataFrame as a GitHub-flavoured markdown table (no extra dependency)."""
    import pandas as pd

    df = df.copy()
    if isinstance(df.columns, pd.MultiIndex):
        df.columns = [" ".join(str(c) for c in col if str(c)) for col in df.columns]
    index_name = df.index.name or ""
    show_index = not isinstance(df.index, pd.RangeIndex)
    headers = ([index_name] if show_index else []) + [str(c) for c in df.columns]
    lines = [
        "| " + " | ".join(_cell(h) for h in headers) + " |",
        "|" + "|".join(" --- " for _ in headers) + "|",
    ]
    for idx, row in df.iterrows():
        cells = ([_fmt(idx)] if show_index else []) + [_fmt(v) for v in row.tolist()]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def render_report(results, *, quick: bool, seconds: float) -> str:
    """The text of report.md."""
    import mesa
    import numpy as np

    from model.provenance import project_version

    pkg = project_version()
    passed = sum(r["passed"] for r in results)
    lines = [
        "# Validation report",
        "",
        f"{passed} of {len(results)} checks pass. "
        f"{'Quick variants (as in the test suite).' if quick else 'Full variants.'} "
        f"Generated {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} in {seconds:.0f} s "
        f"with margin-contagion {pkg}, Mesa {mesa.__version__}, numpy {np.__version__}, "
        f"Python {platform.python_version()}.",
        "",
        "| check | compared | measured | expected | result |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {_cell(r['name'])} | {_cell(r['compared'])} | {_cell(r['measured'])} | "
            f"{_cell(r['expected'])} | {'PASS' if r['passed'] else '**FAIL**'} |"
        )
    for r in results:
        lines += ["", f"## {r['name']}: {'PASS' if r['passed'] else 'FAIL'}", ""]
        lines += [f"Compared: {r['compared']}.", "", f"Measured: {r['measured']}.", ""]
        lines += [f"Expected: {r['expected']}.", ""]
        if r["notes"]:
            lines += [r["notes"], ""]
        if r.get("table") is not None:
            lines += [markdown_table(r["table"]), ""]
        for fig in r["figures"]:
            lines += [f"![{r['name']}]({fig})", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(results, out_dir, *, quick: bool, seconds: float) -> Path:
    """Write report.md and results.json into ``out_dir``; return the report's path."""
    out = Path(out_dir)
    report = out / "report.md"
    storage.write_text(report, render_report(results, quick=quick, seconds=seconds))
    storage.write_json(out / "results.json", _payload(results, quick, seconds), indent=2)
    return report


def _payload(results, quick: bool, seconds: float, complete: bool = True) -> dict:
    """results.json: ``complete`` is false while the checks run (the file marks the folder as
    a validation report from the start, :mod:`experiments.folders`)."""
    return {
        "quick": quick,
        "complete": complete,
        "seconds": seconds,
        "passed": complete and all(r["passed"] for r in results),
        "checks": [{k: v for k, v in r.items() if k != "data"} for r in results],
    }


def run_validation(
    *,
    out: str | Path | None = None,
    quick: bool = False,
    returns_csv: str | Path | None = None,
    overwrite: bool = False,
    quiet: bool = False,
) -> int:
    """Run every check, write the report folder and print where it is.

    Args:
        out: the report folder (default ``results/validation``); a folder that exists and is
            not empty must be a validation report, replaced only with ``overwrite``
            (:class:`experiments.folders.OutputFolder`).
        quick: the quick variants (as in the tests).
        returns_csv: a CSV of returns or prices to use as the stylized-facts reference instead
            of the S&P 500.
        overwrite: replace an existing validation report folder.
        quiet: no progress bar and no line per check: only where the report is and the
            checks that fail.

    Returns:
        the exit status: 0 when every check passes, 1 when one fails.
    """
    from experiments.folders import VALIDATION_FOLDER, OutputFolder
    from experiments.progress import progress_bar, say

    if returns_csv is not None:
        from experiments.validation.stylized_facts import load_returns

        load_returns(returns_csv)  # bad input fails now, with one line, before any work
    target = OutputFolder(
        out, VALIDATION_FOLDER, overwrite=overwrite, default=Path("results") / "validation"
    )
    with target as folder:
        storage.write_json(folder / "results.json", _payload([], quick, 0.0, False), indent=2)
        t0 = time.perf_counter()
        with progress_bar(len(CHECKS), unit="check", quiet=quiet) as bar:
            log = (lambda line: None) if quiet else say
            results = run_checks(folder, quick=quick, returns_csv=returns_csv, log=log, bar=bar)
        write_report(results, folder, quick=quick, seconds=time.perf_counter() - t0)
    report = target.path / "report.md"
    failed = [r["name"] for r in results if not r["passed"]]
    print(f"report: {report}")
    if failed:
        print(f"{len(failed)} of {len(results)} checks FAIL: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
