"""Sweep machinery speed: per-run overhead and the 1 vs 2 worker speed-up, on runs of ~1 s.

Runs 24 runs of the baseline config at 200 steps (10,000 traders) four ways: a plain loop over
the model (no sweep machinery), the serial executor, and local processes with 1 and 2 workers.
Overhead is what the sweep adds per run beyond the runs' own time (durable record, progress,
pickling), measured after the one-off start-up of the worker processes, which is reported
separately. A report, not a test: the numbers depend on the machine and its load.

    python benchmarks/sweep_speed.py
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from pathlib import Path

import tomli_w

from experiments.sweep import (
    ProcessExecutor,
    RunTask,
    SerialExecutor,
    load_sweep,
    plan_runs,
    run_one,
    run_sweep,
)

BASELINE = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "baseline.toml"


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="sweep-speed-"))
    sweep = {
        "sweep": {
            "base": str(BASELINE),
            "replicates": 8,
            "set": {"steps": 200, "shocks.0.step": 100},
            "grid": {"traders.leverage": [5.0, 10.0, 20.0]},
        }
    }
    (root / "speed.toml").write_text(tomli_w.dumps(sweep))
    spec = load_sweep(root / "speed.toml")
    tasks = plan_runs(spec)
    n = len(tasks)
    fn = functools.partial(run_one, base=spec.base, base_dir=spec.base_dir)

    t0 = time.perf_counter()
    direct = sum(fn(t)["elapsed"] for t in tasks)
    t_direct = time.perf_counter() - t0
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"plain loop: {n} runs in {t_direct:.2f}s, mean run {direct / n:.2f}s")

    empty = [RunTask(0, k, 1, {"steps": 0}) for k in range(2)]
    walls, startups = {}, {}
    for name, make in [
        ("serial", SerialExecutor),
        ("1 process", lambda: ProcessExecutor(1)),
        ("2 processes", lambda: ProcessExecutor(2)),
    ]:
        ex = make()
        t0 = time.perf_counter()
        list(ex.run(fn, empty[: ex.workers]))  # spawn, import, one empty run per worker
        startup = time.perf_counter() - t0 if isinstance(ex, ProcessExecutor) else 0.0
        ex = make()
        t0 = time.perf_counter()
        runs = run_sweep(spec, root / name.replace(" ", "-"), ex, progress=False)
        wall = time.perf_counter() - t0
        walls[name], startups[name] = wall, startup
        busy = runs["elapsed"].sum()
        extra = (wall - startup) * ex.workers - busy
        print(
            f"{name}: {wall:.2f}s wall (start-up {startup:.2f}s), runs themselves {busy:.2f}s; "
            f"overhead {1000 * extra / n:.0f} ms per run = {100 * extra / busy:.1f}% of a run"
        )
    steady = {k: walls[k] - startups[k] for k in walls}
    print(
        f"speed-up, 2 processes over 1: {walls['1 process'] / walls['2 processes']:.2f}x "
        f"wall, {steady['1 process'] / steady['2 processes']:.2f}x after start-up; "
        f"over the serial executor: {walls['serial'] / walls['2 processes']:.2f}x"
    )
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
