"""Speed and memory benchmarks: prints tables and writes them to benchmarks/results.md.

Run from the repository root::

    python -m benchmarks.bench                 # everything (about 10 minutes on 2 cores)
    python -m benchmarks.bench --quick         # small sizes, a smoke test of the script
    python -m benchmarks.bench --only stepping reference --out /tmp/results.md

Sections:

* ``stepping``: time per calm step against trader count (10^3 to 10^6) and asset count
  (1, 4, 16), with the margin screen and with every account checked every round.
* ``cascade``: cost of a step against the number of liquidations it makes (one shock of
  growing size on a fixed book).
* ``memory``: construction time and resident memory per trader, steady and peak, measured in a
  fresh process per size.
* ``reference``: the engine against a per-agent Mesa implementation of the same one-asset
  scenario (benchmarks/reference.py), with a check that both liquidate the same accounts in
  the same rounds and end at the same price.
* ``slide``: the same comparison over whole runs with a shock every step and cascades in
  most steps (benchmarks/reference.py ``sliding_scenario``).
* ``headline``: 1,000,000 traders x 2 assets x 1,000 calm steps with noise traders, one
  process, construction included.
* ``sweep``: sweep throughput (runs per minute) with 1 and 2 worker processes.
* ``sweep_overhead``: what a study-sized sweep run spends beyond the model's stepping, part
  by part (benchmarks/sweep_speed.py's breakdown).
* ``liquidity``: calm and cascade steps at 100,000 traders under the static book, the market
  makers' book, and the makers' book with value traders' orders resting inside the rounds,
  each against the static cost.
* ``teaching``: ``contagion demo`` end to end (target: under 30 s wall) and one dashboard step
  with its four charts at 5,000 traders (target: under 3 CPU s), each against its target.

Every CPU-time table also prints a *floor*: the CPU time of one read pass, with numpy in the
same process, over the memory the benchmark touches (the whole book, and the book rows of the
accounts liquidated), so the headroom left to any implementation is visible next to the
engine's time.

Times inside one process are CPU seconds of that process (``time.process_time``), which other
work on a shared machine disturbs far less than wall-clock time; the headline also gives wall
time, and the sweep, whose point is parallelism, only wall time. Every table notes the
machine's load average when it was measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results.md"

SYMBOLS = ["BTC", "ETH", "SOL", "XRP", "BNB", "DOGE", "ADA", "TRX"]


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------


def calm_config(
    n: int,
    assets: int = 2,
    steps: int = 100,
    *,
    noise: float = 0.0,
    shocks=(),
    seed: int = 42,
) -> dict:
    """A calm venue: ``n`` traders at about 3x, book depth growing with ``n``, no shocks.

    Prices follow correlated GBM at 50% a year in one-hour steps; the few accounts at the
    high end of the leverage distribution still get liquidated now and then. ``noise`` is the
    share of traders following the ``noise`` rule (the rest hold).
    """
    scale = max(n, 1) / 1e4
    asset_list = []
    for j in range(assets):
        symbol = SYMBOLS[j % len(SYMBOLS)] + ("" if j < len(SYMBOLS) else str(j // len(SYMBOLS)))
        price = 60000.0 / (3.0**j)
        asset_list.append(
            {"symbol": symbol, "price": price, "depth": 2.0e7 * scale, "max_leverage": 50.0}
        )
    strategies = {"hold": 1.0 - noise, "noise": noise} if noise > 0 else {"hold": 1.0}
    return {
        "name": f"bench-{n}x{assets}",
        "seed": seed,
        "steps": steps,
        "market": {"volatility": 0.5, "correlation": 0.5, "impact_exponent": 0.5},
        "assets": asset_list,
        "traders": {
            "count": n,
            "leverage": 3.0,
            "leverage_dispersion": 0.4,
            "collateral": 2000.0,
            "assets_per_trader": min(assets, 2),
            "strategies": strategies,
        },
        "margin": {"mode": "cross", "liquidation": "partial", "insurance_fund": 1e6 * scale},
        "shocks": [dict(s) for s in shocks],
    }


def _model(data, **kwargs):
    from model import ContagionModel
    from model.config import build_config

    return ContagionModel(build_config(data), **kwargs)


def load() -> str:
    """The 1-minute load average, for the notes under each table."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:  # pragma: no cover - not on every platform
        return "n/a"


def cpu_min(fn, repeats: int = 5) -> float:
    """The least CPU time (seconds) of ``repeats`` calls of ``fn``: the steadiest figure on a
    shared machine, where other work only ever adds time."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def book_pass(book, rows=None, repeats: int = 5) -> float:
    """The floor: CPU seconds of one read pass over the book's arrays that the margin check
    and the screen read (wallet, quantity, entry, isolated margin and flag), for ``rows`` or
    the whole book. numpy sums over the same arrays, measured in the same process as the
    engine, so the gap between the two is the headroom left to any implementation that has
    to look at that memory at least once."""
    if rows is None:
        arrays = (book.wallet, book.qty, book.entry, book.margin, book.isolated)

        def read():
            return sum(float(a.sum()) for a in arrays)
    else:
        rows = np.asarray(rows, dtype=np.int64)

        def read():  # a gather (np.take, numpy's fastest): the rows are scattered
            return (
                book.wallet.take(rows).sum()
                + book.qty.take(rows, axis=0).sum()
                + book.entry.take(rows, axis=0).sum()
                + book.margin.take(rows, axis=0).sum()
                + book.isolated.take(rows, axis=0).sum()
            )

    return cpu_min(read, repeats)


def fill_rows(model) -> np.ndarray:
    """Book row of every fill so far (one per liquidated position, repeats kept)."""
    ids = model.engine.fills.columns()["trader_id"]
    order = np.argsort(model.book.ids, kind="stable")
    return order[np.searchsorted(model.book.ids, ids, sorter=order)]


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def bench_stepping(quick: bool) -> dict:
    """Time per calm step against traders and assets, with and without the screen."""
    sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000, 1_000_000]
    assets = [1, 4] if quick else [1, 4, 16]
    rows = []
    for a in assets:
        for n in sizes:
            if n * a > 4_000_000:  # (n, A) float arrays of 10^6 x 16 need about 1.5 GB
                continue
            row = {"traders": n, "assets": a}
            for screen in (True, False):
                steps = 200 if screen else max(5, min(200, int(2e7 / (n * a))))
                m = _model(calm_config(n, a, steps), create_agents=False, screen=screen)
                m.step()  # first step: screen rebuild, warm caches
                t0 = time.process_time()
                m.run(steps - 1)
                per = (time.process_time() - t0) / (steps - 1)
                row["screen_ms" if screen else "full_ms"] = per * 1e3
                if screen:
                    row["rebuilds"] = m.engine.screen.rebuilds
                    row["checked_per_step"] = m.engine.screen.checked_total / m.steps
                    row["floor_ms"] = book_pass(m.book) * 1e3
            row["speedup"] = row["full_ms"] / row["screen_ms"]
            rows.append(row)
            print(_fmt_row(row), flush=True)
    # growth: how step cost scales with traders at 2 assets... from the table itself
    return {
        "title": "Calm steps: time per step against traders and assets",
        "columns": [
            ("traders", "traders", "{:,}"),
            ("assets", "assets", "{}"),
            ("screen_ms", "CPU ms/step (screen)", "{:.3f}"),
            ("full_ms", "CPU ms/step (check all)", "{:.2f}"),
            ("speedup", "speed-up", "{:.0f}x"),
            ("checked_per_step", "rows checked/step", "{:,.0f}"),
            ("rebuilds", "screen rebuilds", "{}"),
            ("floor_ms", "floor: one book pass, CPU ms", "{:.3f}"),
        ],
        "rows": rows,
        "notes": [
            "Calm market: GBM 50%/year, one-hour steps, traders at about 3x (log-normal "
            "dispersion 0.4), depth growing with the trader count, hold only, no shocks. "
            "Per-step time averaged over 199 steps after the first (screen) or over enough "
            "steps for about 2e7 account-asset checks (check all); rebuilds included. "
            "Floor: one read pass over the book's arrays (numpy sums, same process): what "
            "checking every account once per round costs at the least; a screened calm step "
            "reads far less than that.",
            f"Load average at the end: {load()}.",
        ],
    }


def cascade_model(n: int, shock: float):
    """A calm two-asset book of traders at about 12x, two steps run, and a BTC shock due at
    the next step (the cascade section and tests/test_benchmarks.py use it)."""
    data = calm_config(n, 2, 3, shocks=[{"step": 3, "asset": "BTC", "return": shock}])
    data["traders"]["leverage"] = 12.0
    data["market"]["volatility"] = 0.0
    m = _model(data, create_agents=False)
    m.run(2)
    return m


def bench_cascade(quick: bool) -> dict:
    """Cost of a step against the number of liquidations it makes, and its floor."""
    n = 20_000 if quick else 100_000
    cases = [(n, s) for s in (-0.01, -0.03, -0.06, -0.10, -0.15, -0.25)]
    cases.append((30_000 if quick else 150_000, -0.25))  # about 10^5 fills
    rows = []
    for traders, shock in cases:
        best = None
        for _ in range(1 if quick else 2):  # least CPU time of two identical steps
            m = cascade_model(traders, shock)
            t0 = time.process_time()
            m.step()
            dt = time.process_time() - t0
            best = dt if best is None else min(best, dt)
        last = m.last
        fills = last.liquidations
        liquidated = np.unique(fill_rows(m))
        floor_rows = book_pass(m.book, liquidated)
        floor_book = book_pass(m.book)
        rows.append(
            {
                "traders": traders,
                "shock": shock,
                "fills": fills,
                "accounts": last.accounts,
                "rounds": last.rounds,
                "ms": best * 1e3,
                "us_per_fill": best * 1e6 / max(fills, 1),
                "floor_rows_ms": floor_rows * 1e3,
                "floor_book_ms": floor_book * 1e3,
                "over_floor": best / (floor_rows + floor_book),
            }
        )
        print(_fmt_row(rows[-1]), flush=True)
    return {
        "title": "Cascade steps: cost against liquidations (2 assets)",
        "columns": [
            ("traders", "traders", "{:,}"),
            ("shock", "BTC shock", "{:+.0%}"),
            ("fills", "fills", "{:,}"),
            ("accounts", "accounts", "{:,}"),
            ("rounds", "rounds", "{}"),
            ("ms", "CPU ms for the step", "{:.1f}"),
            ("us_per_fill", "us per fill", "{:.2f}"),
            ("floor_rows_ms", "floor: pass over liquidated rows, ms", "{:.2f}"),
            ("floor_book_ms", "floor: book pass, ms", "{:.2f}"),
            ("over_floor", "step / floor", "{:.0f}x"),
        ],
        "rows": rows,
        "notes": [
            "One shock to BTC at step 3 of a calm market of traders at about 12x; the time is "
            "the whole step (rounds, fills, fees, insurance fund, contagion graph, records), "
            "the least CPU time of two identical runs. Floor: one read pass (numpy, same "
            "process) over the book rows of the accounts liquidated, and one over the whole "
            "book (a step this large moves prices past the screen's bounds, which then reads "
            "every account once).",
            f"Load average at the end: {load()}.",
        ],
    }


LIQUIDITY_VARIANTS = {
    "static": {"model": "static"},
    "market makers": {"model": "market_makers"},
    "makers + resting orders": {"model": "market_makers", "value_orders": "in_rounds"},
}


def _liquidity_step_ms(data, steps) -> dict:
    """CPU ms per step of ``data`` under each liquidity variant. The variants' models step in
    turn, one step each, so that a change of load on a shared machine falls on all of them."""
    models = {}
    for variant, liquidity in LIQUIDITY_VARIANTS.items():
        models[variant] = _model({**data, "liquidity": liquidity}, create_agents=False)
        models[variant].run(1)
    spent = dict.fromkeys(models, 0.0)
    for _ in range(steps):
        for variant, m in models.items():
            t0 = time.process_time()
            m.step()
            spent[variant] += time.process_time() - t0
    # the floor: a read pass over the rows of the traders who trade every step (none: 0)
    static = models["static"]
    trading = [r for name, r in static.strategy_rows.items() if name != "hold"]
    floor = book_pass(static.book, np.concatenate(trading)) if trading else 0.0
    return {variant: t * 1e3 / steps for variant, t in spent.items()}, floor * 1e3


def bench_liquidity(quick: bool) -> dict:
    """Calm and cascade steps under each liquidity variant, against the static book."""
    n = 20_000 if quick else 100_000
    rules = {"hold": 0.7, "value": 0.2, "noise": 0.1}
    rows = []
    for label, strategies in (("calm, hold only", {"hold": 1.0}), ("calm, 30% rules", rules)):
        data = calm_config(n, 2, 1000)
        data["traders"]["strategies"] = strategies
        steps = 40 if quick else (400 if label == "calm, hold only" else 50)
        times, floor = _liquidity_step_ms(data, steps)
        for variant, ms in times.items():
            row = {"case": label, "variant": variant, "fills": 0, "ms": ms, "floor": floor}
            rows.append({**row, "ratio": ms / times["static"]})
            print(_fmt_row(rows[-1]), flush=True)
    for shock in (-0.03, -0.10, -0.25):
        data = calm_config(n, 2, 3, shocks=[{"step": 3, "asset": "BTC", "return": shock}])
        data["traders"].update(leverage=12.0, strategies=rules)
        data["market"]["volatility"] = 0.0
        base = None
        for variant in LIQUIDITY_VARIANTS:
            m = _model({**data, "liquidity": LIQUIDITY_VARIANTS[variant]}, create_agents=False)
            m.run(2)
            t0 = time.process_time()
            m.step()
            ms = (time.process_time() - t0) * 1e3
            base = ms if base is None else base
            row = {"case": f"cascade, BTC {shock:+.0%}", "variant": variant}
            floor = book_pass(m.book) + book_pass(m.book, np.unique(fill_rows(m)))
            row.update(fills=m.last.liquidations, ms=ms, ratio=ms / base, floor=floor * 1e3)
            rows.append(row)
            print(_fmt_row(row), flush=True)
    return {
        "title": f"Liquidity: step cost under each book ({n:,} traders, 2 assets)",
        "columns": [
            ("case", "case", "{}"),
            ("variant", "liquidity", "{}"),
            ("fills", "fills", "{:,}"),
            ("ms", "CPU ms/step", "{:.2f}"),
            ("ratio", "against static", "{:.2f}x"),
            ("floor", "floor ms", "{:.2f}"),
        ],
        "rows": rows,
        "notes": [
            "Calm: GBM 50%/year, traders at about 3x, hold only or 20% value and 10% noise "
            "traders; per-step CPU time over 400 steps (hold only) or 50 (rules) after one, the "
            "three variants' models stepping in turn. Cascade: one BTC shock at step "
            "3 on traders at about 12x (20% value, 10% noise), volatility 0; the time of the "
            "shock step. The books differ, so the cascades differ too (fills column). "
            "'makers + resting orders': value traders' ladders trade inside the rounds. "
            "Floor: one read pass (numpy, same process) over the rows of the traders who "
            "trade every step (calm), or over the book and the rows liquidated (cascade).",
            f"Load average at the end: {load()}.",
        ],
    }


_MEMORY_CHILD = textwrap.dedent(
    """
    import gc, json, sys, time
    import psutil
    from benchmarks.bench import calm_config, _model
    n, steps, noise = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    proc = psutil.Process()
    import model, agents.strategies  # imports before the baseline
    from model import kernels
    if kernels.enabled():  # numba's import, and its compiled code loaded by a small run
        kernels.MIN_ROWS, least = 0, kernels.MIN_ROWS
        _model(calm_config(1000, 2, 5, noise=max(noise, 0.1)), create_agents=False).run()
        kernels.MIN_ROWS = least
    gc.collect()
    base = proc.memory_info().rss
    t0, c0 = time.perf_counter(), time.process_time()
    m = _model(calm_config(n, 2, steps, noise=noise), create_agents=False)
    build, build_cpu = time.perf_counter() - t0, time.process_time() - c0
    gc.collect()
    built = proc.memory_info().rss
    t0, c0 = time.perf_counter(), time.process_time()
    m.run()
    run, run_cpu = time.perf_counter() - t0, time.process_time() - c0
    gc.collect()
    after = proc.memory_info().rss
    # floor: one pass over the book (construction reads it) and, per step, one over the rows
    # of the traders who trade every step
    from benchmarks.bench import book_pass
    trading = m.strategy_rows.get("noise")
    floor = book_pass(m.book) + (steps * book_pass(m.book, trading) if trading is not None else 0)
    # VmHWM: this process's own high-water mark (ru_maxrss may carry the parent's over exec)
    status = open("/proc/self/status").read().split("VmHWM:")[1]
    peak = int(status.split()[0]) * 1024
    print(json.dumps({"base": base, "built": built, "after": after, "peak": peak,
                      "build_s": build, "run_s": run,
                      "build_cpu": build_cpu, "run_cpu": run_cpu, "floor": floor,
                      "liquidations": m.summary()["liquidations"]}))
    """
)


def _child(n: int, steps: int, noise: float = 0.0) -> dict:
    out = _python(_MEMORY_CHILD, str(n), str(steps), str(noise))
    return json.loads(out.stdout.strip().splitlines()[-1])


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``code`` with ``args`` in a fresh Python process from the repository's root."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def bench_memory(quick: bool) -> dict:
    """Construction time and resident bytes per trader, each size in a fresh process."""
    sizes = [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
    rows = []
    for n in sizes:
        r = _child(n, 100)
        rows.append(
            {
                "traders": n,
                "build_s": r["build_cpu"],
                "built_b": (r["built"] - r["base"]) / n,
                "after_b": (r["after"] - r["base"]) / n,
                "peak_b": (r["peak"] - r["base"]) / n,
                "base_mb": r["base"] / 2**20,
            }
        )
        print(_fmt_row(rows[-1]), flush=True)
    return {
        "title": "Construction and resident memory per trader (2 assets, no agent objects)",
        "columns": [
            ("traders", "traders", "{:,}"),
            ("build_s", "construction CPU s", "{:.2f}"),
            ("built_b", "B/trader built", "{:.0f}"),
            ("after_b", "B/trader after 100 steps", "{:.0f}"),
            ("peak_b", "B/trader peak", "{:.0f}"),
            ("base_mb", "interpreter + imports MB", "{:.0f}"),
        ],
        "rows": rows,
        "notes": [
            "Resident set size of a fresh process, less its size after the imports (with numba "
            "installed: its import and the compiled kernels, loaded by a run of 1,000 "
            "traders); 'peak' is the process's high-water mark (VmHWM), "
            "so it includes every temporary of construction and of the steps. Mesa Trader "
            "agents, created by default only up to model.model.AGENT_LIMIT accounts, cost "
            "about 600 bytes each on top.",
            f"Load average at the end: {load()}.",
        ],
    }


def bench_reference(quick: bool) -> dict:
    """The engine against the per-agent Mesa reference on the same accounts and shocks."""
    from benchmarks.reference import ReferenceModel, engine_events, engine_model, scenario

    sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    rows = []
    for n in sizes:
        sc = scenario(n, steps=50)
        timings = {}
        for name in ("engine", "reference"):
            m = engine_model(sc, create_agents=False) if name == "engine" else ReferenceModel(sc)
            calm, busy, quiet = [], [], []
            for _ in range(sc.steps):
                screen = m.engine.screen if name == "engine" else None
                before = (screen.checked_total, screen.rebuilds) if screen else None
                t0 = time.process_time()
                m.step()
                dt = time.process_time() - t0
                liq = m.last.liquidations if name == "engine" else _ref_step_events(m)
                (busy if liq else calm).append(dt)
                if screen and (screen.checked_total, screen.rebuilds) == before:
                    quiet.append(dt)  # no account near its boundary, no rebuild
            timings[name] = (m, np.array(calm), np.array(busy), np.array(quiet))
        eng, e_calm, e_busy, e_quiet = timings["engine"]
        ref, r_calm, r_busy, _ = timings["reference"]
        same = engine_events(eng) == ref.events
        floor = book_pass(eng.book) + book_pass(eng.book, fill_rows(eng))
        rows.append(
            {
                "traders": n,
                "events": len(ref.events),
                "identical": "yes" if same else "NO",
                "price_diff": abs(eng.mark[0] / ref.price - 1.0),
                "ref_calm": np.median(r_calm) * 1e3,
                "eng_calm": np.median(e_calm) * 1e3,
                "calm_x": np.median(r_calm) / np.median(e_calm),
                "eng_quiet": np.median(e_quiet) * 1e3 if e_quiet.size else float("nan"),
                "quiet_x": np.median(r_calm) / np.median(e_quiet) if e_quiet.size else float("nan"),
                "ref_total": (r_calm.sum() + r_busy.sum()),
                "eng_total": (e_calm.sum() + e_busy.sum()),
                "total_x": (r_calm.sum() + r_busy.sum()) / (e_calm.sum() + e_busy.sum()),
                "floor_ms": floor * 1e3,
            }
        )
        print(_fmt_row(rows[-1]), flush=True)
    return {
        "title": "Engine against a per-agent Mesa implementation (one asset, same accounts)",
        "columns": [
            ("traders", "traders", "{:,}"),
            ("events", "liquidations", "{:,}"),
            ("identical", "same liquidations", "{}"),
            ("price_diff", "final price rel. diff", "{:.1e}"),
            ("ref_calm", "per-agent CPU ms/calm step", "{:.2f}"),
            ("eng_calm", "engine ms/calm step", "{:.3f}"),
            ("calm_x", "calm speed-up", "{:.0f}x"),
            ("eng_quiet", "engine ms/quiet step", "{:.3f}"),
            ("quiet_x", "quiet speed-up", "{:.0f}x"),
            ("ref_total", "per-agent CPU s (50 steps)", "{:.2f}"),
            ("eng_total", "engine CPU s (50 steps)", "{:.2f}"),
            ("total_x", "overall speed-up", "{:.0f}x"),
            ("floor_ms", "floor ms", "{:.2f}"),
        ],
        "rows": rows,
        "notes": [
            "benchmarks/reference.py: one MarginTrader(mesa.Agent) per account with a Python "
            "margin check, a loop over model.agents every round; cross margin, full "
            "liquidation, fee, insurance fund. 50 steps with a shock every 7 steps (1% to 4%, "
            "mostly down) and cascades several rounds deep. 'same liquidations': the list of "
            "(step, round, trader) is equal, in order. Calm steps: median over steps without "
            "liquidations; quiet steps: the engine's calm steps in which the screen found no "
            "account near its boundary and did not rebuild (against the same per-agent calm "
            "median; rebuilds are in the overall figure); overall: "
            "the whole run including cascade steps. Floor: one read pass (numpy, same "
            "process) over the whole book plus one over the book rows of every liquidation.",
            f"Load average at the end: {load()}.",
        ],
    }


def bench_slide(quick: bool) -> dict:
    """Whole runs with a shock every step and cascades in most steps, against the per-agent
    reference (benchmarks/reference.py, :func:`sliding_scenario`)."""
    from benchmarks.reference import ReferenceModel, engine_events, engine_model, sliding_scenario

    sizes = [10_000] if quick else [10_000, 100_000]
    rows = []
    for n in sizes:
        sc = sliding_scenario(n, steps=200)
        best = None
        for _ in range(1 if quick else 3):  # least CPU time of identical runs
            m = engine_model(sc, create_agents=False)
            t0 = time.process_time()
            m.run()
            dt = time.process_time() - t0
            best = dt if best is None else min(best, dt)
        ref = ReferenceModel(sc)
        t0 = time.process_time()
        for _ in range(sc.steps):
            ref.step()
        ref_s = time.process_time() - t0
        fills = m.engine.fills.columns()
        rounds = np.unique(fills["step"] * (sc.max_rounds + 1) + fills["round"]).size
        floor_book = book_pass(m.book)
        floor_rows = book_pass(m.book, fill_rows(m))
        rows.append(
            {
                "traders": n,
                "steps": sc.steps,
                "busy": int(np.unique(fills["step"]).size),
                "rounds": int(rounds),
                "events": len(ref.events),
                "identical": "yes" if engine_events(m) == ref.events else "NO",
                "price_diff": abs(m.mark[0] / ref.price - 1.0),
                "ref_s": ref_s,
                "eng_s": best,
                "speedup": ref_s / best,
                "us_per_fill": best * 1e6 / max(len(ref.events), 1),
                "floor_ms": (floor_book + floor_rows) * 1e3,
                "over_floor": best / (floor_book + floor_rows),
            }
        )
        print(_fmt_row(rows[-1]), flush=True)
    return {
        "title": "Whole runs with a shock every step against the per-agent reference",
        "columns": [
            ("traders", "traders", "{:,}"),
            ("steps", "steps", "{}"),
            ("busy", "steps with liquidations", "{}"),
            ("rounds", "liquidation rounds", "{:,}"),
            ("events", "liquidations", "{:,}"),
            ("identical", "same liquidations", "{}"),
            ("price_diff", "final price rel. diff", "{:.1e}"),
            ("ref_s", "per-agent CPU s", "{:.2f}"),
            ("eng_s", "engine CPU s", "{:.3f}"),
            ("speedup", "speed-up", "{:.0f}x"),
            ("us_per_fill", "engine us per liquidation", "{:.2f}"),
            ("floor_ms", "floor ms", "{:.2f}"),
            ("over_floor", "engine / floor", "{:.0f}x"),
        ],
        "rows": rows,
        "notes": [
            "benchmarks/reference.py sliding_scenario: the accounts of the reference scenario "
            "(2x to 60x, 65% long), a shock every step (log return -0.3% +- 0.2%), so most "
            "steps make a new low and start a cascade several rounds deep; full liquidation, "
            "one asset. Engine: the least CPU time of three identical 200-step runs "
            "(construction excluded); per-agent: one run. 'same liquidations': the list of "
            "(step, round, trader) is equal, in order. Floor: one read pass (numpy, same "
            "process) over the whole book plus one over the book rows of every liquidation.",
            f"Load average at the end: {load()}.",
        ],
    }


def _ref_step_events(ref) -> int:
    """Liquidations the reference made in its last step."""
    t = ref.steps
    count = 0
    for s, _, _ in reversed(ref.events):
        if s != t:
            break
        count += 1
    return count


def bench_headline(quick: bool) -> dict:
    """A million traders x 2 assets x 1,000 calm steps with noise traders, one process."""
    n = 100_000 if quick else 1_000_000
    rows = []
    for noise, steps in ((0.0, 1000), (0.01, 1000), (0.1, 1000)):
        steps = steps // 5 if quick else steps
        t0 = time.perf_counter()
        r = _child(n, steps, noise)
        total = time.perf_counter() - t0
        rows.append(
            {
                "traders": n,
                "steps": steps,
                "noise": noise,
                "build_s": r["build_cpu"],
                "run_s": r["run_cpu"],
                "total_s": r["build_cpu"] + r["run_cpu"],
                "wall_s": r["build_s"] + r["run_s"],
                "per_1000": r["build_cpu"] + r["run_cpu"] * 1000 / steps,
                "process_s": total,
                "liquidations": r["liquidations"],
                "peak_b": (r["peak"] - r["base"]) / n,
                "floor_s": r["floor"],
            }
        )
        print(_fmt_row(rows[-1]), flush=True)
    return {
        "title": "Headline: one process, 2 assets, calm market",
        "columns": [
            ("traders", "traders", "{:,}"),
            ("steps", "steps", "{:,}"),
            ("noise", "noise-trader share", "{:.0%}"),
            ("build_s", "construction CPU s", "{:.1f}"),
            ("run_s", "steps CPU s", "{:.1f}"),
            ("total_s", "construction + steps CPU s", "{:.1f}"),
            ("wall_s", "same, wall s", "{:.1f}"),
            ("per_1000", "CPU s for 1,000 steps", "{:.1f}"),
            ("process_s", "whole process s (imports too)", "{:.1f}"),
            ("liquidations", "liquidations", "{:,}"),
            ("peak_b", "peak B/trader", "{:.0f}"),
            ("floor_s", "floor CPU s", "{:.2f}"),
        ],
        "rows": rows,
        "notes": [
            "Noise traders trade every step (AR(1) overlay, orders of 10% of equity), so "
            "their accounts are re-bounded by the screen every step. One fresh process per "
            "row; construction includes generating the population; numba's import and the "
            "load of the compiled kernels (a run of 1,000 traders, when numba is installed) "
            "come before the memory baseline, with the other imports. Floor: one read pass "
            "over the book plus, per step, one over the rows of the noise traders (numpy "
            "gathers, same process).",
            f"Load average at the end: {load()}.",
        ],
    }


# The child of bench_run_folder: `contagion run` in a fresh process, its peak resident size
# (ru_maxrss, kB on Linux) printed after it.
_RUN_FOLDER_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    from experiments.cli import main
    t0 = time.perf_counter()
    status = main(sys.argv[1:])
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"status": status, "wall": wall, "peak": peak}))
    """
)


# The run command's result line: "<name>: N traders, S steps in 17.1s (+0.5s set-up); ..."
_RUN_LINE = re.compile(r" steps in ([0-9.]+)s \(\+([0-9.]+)s set-up\)")


def bench_run_folder(quick: bool, sizes: list[int] | None = None) -> dict:
    """`contagion run` of the baseline config, whole (run, run folder, cascade.png), in a
    fresh process per size (``sizes`` traders; by default 30,000 and 300,000): the wall
    time and the peak resident memory."""
    sizes = sizes or ([30_000] if quick else [30_000, 300_000])
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            args = ["run", "experiments/configs/baseline.toml", "--quiet", "--out", f"{tmp}/run"]
            args += ["--set", f"traders.count={n}", "--set", "steps=600"]
            out = _python(_RUN_FOLDER_CHILD, *args)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            assert r["status"] == 0, out.stderr
            summary = json.loads(Path(f"{tmp}/run/summary.json").read_text())
        rows.append(
            {
                "traders": n,
                "fills": summary["liquidations"],
                "edges": summary["contagion_graph"]["edges_recorded"],
                "run_s": sum(map(float, _RUN_LINE.search(out.stdout).groups())),
                "wall_s": r["wall"],
                "peak_gb": r["peak"] / 2**30,
            }
        )
        print(_fmt_row(rows[-1]), flush=True)
    return {
        "title": "A run folder: `contagion run` of the baseline config, 600 steps",
        "columns": [
            ("traders", "traders", "{:,}"),
            ("fills", "liquidation fills", "{:,}"),
            ("edges", "edge events", "{:,}"),
            ("run_s", "set-up and steps s", "{:.1f}"),
            ("wall_s", "whole command s", "{:.1f}"),
            ("peak_gb", "peak resident GB", "{:.2f}"),
        ],
        "rows": rows,
        "notes": [
            "One fresh process per size: the model's set-up and 600 steps (a crash at step "
            "500, re-entry after a day), then the run folder (tables, GraphML, summary) and "
            "cascade.png. Peak: the process's high-water mark of resident memory.",
            f"Load average at the end: {load()}.",
        ],
    }


def bench_sweep(quick: bool) -> dict:
    """Sweep throughput with 1 and 2 worker processes (experiments/sweep.py)."""
    from experiments.sweep import load_sweep, make_executor, run_sweep

    n, steps, values = (2_000, 100, [3, 6]) if quick else (50_000, 500, [2, 3, 4, 5, 6, 8, 10, 12])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        import tomli_w

        (tmp / "base.toml").write_text(tomli_w.dumps(calm_config(n, 2, steps)))
        (tmp / "sweep.toml").write_text(
            tomli_w.dumps(
                {
                    "sweep": {
                        "name": "bench",
                        "base": "base.toml",
                        "replicates": 2,
                        "sampler": "grid",
                        "grid": {"traders.leverage": values},
                    }
                }
            )
        )
        spec = load_sweep(tmp / "sweep.toml")
        runs = len(values) * 2
        # the floor: a read pass over a run's book, once a step
        book = _model(calm_config(n, 2, steps), create_agents=False).book
        floor = book_pass(book) * steps
        for workers in (1, 2):
            t0 = time.perf_counter()
            table = run_sweep(spec, tmp / f"out{workers}", make_executor(workers), progress=False)
            dt = time.perf_counter() - t0
            ok = int((table["status"] == "ok").sum())
            rows.append(
                {
                    "workers": workers,
                    "runs": runs,
                    "ok": ok,
                    "seconds": dt,
                    "per_min": ok / dt * 60,
                    "floor": floor * runs,
                }
            )
            print(_fmt_row(rows[-1]), flush=True)
    return {
        "title": f"Sweep throughput ({n:,} traders x {steps} steps per run)",
        "columns": [
            ("workers", "workers", "{}"),
            ("runs", "runs", "{}"),
            ("ok", "ok", "{}"),
            ("seconds", "wall s", "{:.1f}"),
            ("per_min", "runs per minute", "{:.1f}"),
            ("floor", "floor CPU s", "{:.2f}"),
        ],
        "rows": rows,
        "notes": [
            "experiments/sweep.py with its local process pool; a grid of traders.leverage "
            "x 2 replicates over the calm benchmark config. The two cores are shared with "
            "whatever else runs on the machine. Floor: one read pass (numpy) over a run's book "
            "a step, for every run (python -m benchmarks.sweep_speed breaks a study-sized "
            "run's time down and compares one worker process with two).",
            f"Load average at the end: {load()}.",
        ],
    }


def _time_demo() -> tuple[float, float]:
    """Wall and CPU seconds of ``contagion demo`` (two runs, figures, narration), imports done."""
    import contextlib
    import io

    from experiments.demo import run_demo_command

    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        t0, c0 = time.perf_counter(), time.process_time()
        code = run_demo_command(out=Path(tmp) / "demo")
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if code != 0:
        raise RuntimeError(f"contagion demo exited with {code}")
    return wall, cpu


def _time_dashboard_step(traders: int) -> tuple[float, float, int]:
    """Wall and CPU seconds of the dashboard's shock step and its four charts drawn to PNG
    (what SolaraViz does after Step), and the accounts the step liquidated."""
    import io
    from unittest import mock

    from experiments import app

    figures = []
    m = app.DashboardModel(traders=traders, leverage=20.0)
    for _ in range(m.config.shocks[0].step - 1):
        m.step()
    with mock.patch.object(app.solara, "FigureMatplotlib", lambda fig, **kw: figures.append(fig)):
        t0, c0 = time.perf_counter(), time.process_time()
        m.step()  # the shock and its cascade
        for panel in (app.PricePanel, app.EquityPanel, app.RoundsPanel, app.CascadePanel):
            panel(m)
        for fig in figures:
            fig.savefig(io.BytesIO(), format="png")
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, m.last.accounts


def bench_teaching(quick: bool) -> dict:
    """The demo and the dashboard's step against the times a class can wait for."""
    rows = []
    wall, cpu = _time_demo()
    rows.append(
        {
            "what": "contagion demo, end to end",
            "target": "wall < 30 s",
            "wall_s": wall,
            "cpu_s": cpu,
            "met": "yes" if wall < 30 else "NO",
        }
    )
    print(_fmt_row(rows[-1]), flush=True)
    wall, cpu, accounts = _time_dashboard_step(5000)
    rows.append(
        {
            "what": f"dashboard shock step + 4 charts, 5,000 traders ({accounts:,} liquidated)",
            "target": "CPU < 3 s",
            "wall_s": wall,
            "cpu_s": cpu,
            "met": "yes" if cpu < 3 else "NO",
        }
    )
    print(_fmt_row(rows[-1]), flush=True)
    return {
        "title": "Teaching: the demo and the dashboard",
        "columns": [
            ("what", "what", "{}"),
            ("target", "target", "{}"),
            ("wall_s", "wall s", "{:.2f}"),
            ("cpu_s", "CPU s", "{:.2f}"),
            ("met", "met", "{}"),
        ],
        "rows": rows,
        "notes": [
            "Measured in this process after the imports. The demo runs the cross and the "
            "isolated run of experiments/configs/demo.toml, draws its three figures and "
            "writes both run folders; the dashboard row is the step SolaraViz runs on Step "
            "at the shock, with the leverage slider at 20x, and "
            "the price, equity, rounds and contagion-network charts rendered to PNG. What "
            "they produce is checked by tests/test_demo.py and tests/test_app.py. Same sizes "
            "with --quick.",
            f"Load average at the end: {load()}.",
        ],
    }


def bench_sweep_overhead(quick: bool) -> dict:
    """A study-sized sweep run's parts: what a sweep spends beyond the model's own stepping
    (benchmarks/sweep_speed.py's breakdown, in this process)."""
    from benchmarks.sweep_speed import run_breakdown, study_spec
    from experiments.sweep import plan_runs

    with tempfile.TemporaryDirectory() as tmp:
        spec = study_spec(2 if quick else 4, Path(tmp))
        runs = len(plan_runs(spec))
        parts = run_breakdown(spec, runs)
    stepping = parts["stepping"]
    overhead = sum(v for k, v in parts.items() if k != "stepping" and not k.startswith(" "))
    rows = [
        {
            "part": name.strip()
            if not name.startswith(" ") or "floor" in name
            else f"(summary) {name.strip()}",
            "ms": value * 1e3,
            "share": f"{100 * value / stepping:.1f}%",
        }
        for name, value in parts.items()
    ]
    rows.append(
        {
            "part": "overhead (all but stepping)",
            "ms": overhead * 1e3,
            "share": f"{100 * overhead / stepping:.1f}%",
        }
    )
    return {
        "title": f"Sweep overhead: the parts of a study-sized run ({runs} runs)",
        "columns": [
            ("part", "part", "{}"),
            ("ms", "CPU ms per run", "{:.2f}"),
            ("share", "of the stepping", "{}"),
        ],
        "rows": rows,
        "notes": [
            "The runs of the sensitivity study (experiments/sensitivity.toml: 1,000 traders x "
            "200 steps, a shock at step 100) with fewer base samples; each part the least of "
            "three repeats of every run, averaged over the runs (experiments.sweep.run_one's "
            "parts: config, construction, stepping, summary, cascade sizes; record: the "
            "durable run record the driver writes, fsync included). Rows marked (summary) "
            "are parts of the summary; the floor, a numpy read pass over the run's book a "
            "step, is not overhead. python -m benchmarks.sweep_speed adds one worker against two.",
            f"Load average at the end: {load()}.",
        ],
    }


SECTIONS = {
    "stepping": bench_stepping,
    "cascade": bench_cascade,
    "memory": bench_memory,
    "reference": bench_reference,
    "slide": bench_slide,
    "headline": bench_headline,
    "run_folder": bench_run_folder,
    "sweep": bench_sweep,
    "sweep_overhead": bench_sweep_overhead,
    "liquidity": bench_liquidity,
    "teaching": bench_teaching,
}


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _fmt_row(row: dict) -> str:
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def markdown_table(section: dict) -> str:
    cols = section["columns"]
    lines = [
        f"### {section['title']}",
        "",
        "| " + " | ".join(label for _, label, _ in cols) + " |",
        "| " + " | ".join("---:" for _ in cols) + " |",
    ]
    for row in section["rows"]:
        lines.append("| " + " | ".join(fmt.format(row[key]) for key, _, fmt in cols) + " |")
    lines.append("")
    lines.extend(section["notes"])
    return "\n".join(lines) + "\n"


def numpy_simd() -> str:
    """Whether numpy found AVX-512 on this processor: its ``exp``, ``log`` and ``log1p`` take
    loops of those instructions where it did and slower scalar ones elsewhere
    (docs/performance-log.md, "Remeasured on another machine")."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # pragma: no cover (another numpy layout)
        return "SIMD unknown"
    return "AVX-512" if features.get("AVX512F") else "no AVX-512"


def machine_speed(repeats: int = 5) -> str:
    """How fast this machine is at the four kinds of work the figures mix, each the least of
    ``repeats`` timings: numpy's ``log1p`` (a transcendental loop, whose speed depends on the
    processor's vector instructions), numpy's normal draws, a gather of 10^5 rows of two
    values scattered through 10^6 (memory: the noise traders' reads), and a plain Python loop
    (the per-agent reference's kind of work). One machine's speed at these moved by half
    within an hour (docs/performance-log.md, "Remeasured on another machine"): figures from two
    runs compare through these."""
    values = np.linspace(0.0, 1.0, 1_000_000)
    rng = np.random.default_rng(0)
    book = np.ones((values.size, 2))
    rows = np.sort(rng.choice(values.size, values.size // 10, replace=False))

    def python_loop(n=200_000):
        total = 0.0
        for i in range(n):
            total += i * 0.5
        return total

    def ns(fn, per):
        return cpu_min(fn, repeats) * 1e9 / per

    log1p = ns(lambda: np.log1p(values), values.size)
    normal = ns(lambda: rng.standard_normal(values.size), values.size)
    gather = ns(lambda: book.take(rows, axis=0), rows.size)
    loop = ns(python_loop, 200_000)
    return (
        f"Machine speed (least of {repeats}): numpy log1p {log1p:.1f} ns a value, normal draws "
        f"{normal:.1f} ns a value, a scattered row gather {gather:.1f} ns a row, a Python loop "
        f"{loop:.1f} ns an iteration."
    )


def machine() -> str:
    """One paragraph about the machine and the software the figures come from."""
    import mesa

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:  # pragma: no cover
        pass
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):  # pragma: no cover
        mem = float("nan")
    from model import kernels

    if kernels.enabled():
        import numba

        compiled = f"numba {numba.__version__} (compiled kernels on)"
    else:
        compiled = "no numba (numpy only)"
    return (
        f"Machine: {cpu}, {os.cpu_count()} logical CPUs, {mem:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}, "
        f"numpy {np.__version__} ({numpy_simd()}), Mesa {mesa.__version__}, {compiled}. "
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), help="sections to run")
    parser.add_argument("--out", type=Path, default=RESULTS, help="markdown file to write")
    args = parser.parse_args(argv)
    names = args.only or list(SECTIONS)
    stamp = time.strftime("%Y-%m-%d", time.gmtime())
    parts = [
        "# Benchmark results\n",
        f"<!-- numbers: measured {stamp}, the machine of the line below, CPU times of "
        "processes sharing it with other work -->\n",
        f"{machine()}\n",
        f"{machine_speed()}\n",
    ]
    for name in names:
        print(f"== {name}", flush=True)
        section = SECTIONS[name](args.quick)
        text = markdown_table(section)
        print(text, flush=True)
        parts.append(text)
    parts.append("<!-- /numbers -->\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(parts))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
