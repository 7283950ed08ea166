"""Sweep speed on study-sized runs: where a run's time goes, and one worker against two.

The runs are those of the sensitivity study (experiments/sensitivity.toml: 1,000 traders x 200
steps, a shock at step 100, the Saltelli design over eight knobs), with fewer base samples.

* Breakdown: the CPU time of each part of a sweep's run (experiments.sweep.run_one's parts, in
  this process, each the least of repeated runs): the config, the construction, the stepping,
  the summary and the cascade sizes, and the durable record the driver writes. Overhead is
  everything but the stepping. The summary's own parts are timed on the finished models, and
  so is the floor: one numpy read pass over a run's book for each of its steps.
* Executors: the same runs with the serial executor (in this process), with one worker process
  and with two: wall time and the CPU time of the driver and of the workers, and the start-up
  of a two-process pool (spawn, imports).
* Projection to an idle machine with two cores, from the CPU times: a worker's start-up, then
  per run the workers' CPU (their own start-up taken out) and the driver's, on one core with
  one worker and shared by two cores with two. On a loaded machine the wall times say more
  about the load than about the sweep.

A report, not a test: the numbers depend on the machine and its load.

    python -m benchmarks.sweep_speed            # 8 base samples: 160 runs
    python -m benchmarks.sweep_speed --samples 4
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "experiments" / "sensitivity.toml"


def study_spec(samples: int, folder: Path):
    """The sensitivity study with ``samples`` base samples (``samples x 10`` points, two
    replicates each), written to ``folder``."""
    from experiments.sweep import load_sweep

    (folder / "configs").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "experiments" / "configs" / "study_base.toml", folder / "configs")
    text = STUDY.read_text().replace("samples = 64", f"samples = {samples}")
    (folder / "study.toml").write_text(text)
    return load_sweep(folder / "study.toml")


# The parts of a run, in the order run_one does them.
PARTS = ("config", "construction", "stepping", "summary", "cascade sizes")


def _cpu() -> float:
    return time.process_time()


def run_breakdown(spec, runs: int, repeats: int = 3) -> dict[str, float]:
    """CPU seconds per run of each part of ``run_one``, the least of ``repeats`` for each run,
    averaged over the first ``runs`` runs of the sweep; the summary's parts on the models of
    the last repeat (each the least of five calls)."""
    from experiments.sweep import cascade_sizes, plan_runs, run_metrics
    from model import ContagionModel, metrics
    from model.config import apply_overrides, build_config
    from model.results import event_metrics

    tasks = plan_runs(spec)[:runs]
    best: dict[tuple[int, str], float] = {}
    models = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(repeats):
            models = []
            for i, task in enumerate(tasks):
                t = [_cpu()]
                params = {**task.params, "seed": task.seed}
                cfg = build_config(apply_overrides(spec.base, params), base_dir=spec.base_dir)
                t.append(_cpu())
                model = ContagionModel(cfg, create_agents=False)
                t.append(_cpu())
                model.run()
                t.append(_cpu())
                run_metrics(model)
                t.append(_cpu())
                cascade_sizes(model.engine.fills.columns())
                t.append(_cpu())
                for k, name in enumerate(PARTS):
                    best[i, name] = min(best.get((i, name), float("inf")), t[k + 1] - t[k])
                models.append(model)
    out = {}
    for name in PARTS:
        out[name] = sum(best[i, name] for i in range(len(tasks))) / len(tasks)
    summary_parts = {
        "  cascade metrics": lambda m: metrics.cascade_metrics(
            m.engine.fills.columns(), m.recorder.edge_batches()
        ),
        "  contagion graph info": lambda m: (m.recorder._cache.clear(), m.recorder.info()),
        "  event metrics": event_metrics,
        "  money": lambda m: m.money(),
    }
    for name, fn in summary_parts.items():
        total = 0.0
        for m in models:
            times = []
            for _ in range(5):
                t0 = _cpu()
                fn(m)
                times.append(_cpu() - t0)
            total += min(times)
        out[name] = total / len(models)
    out["record"] = record_cost(spec, runs)
    # the floor: one numpy read pass over the run's book a step (not part of the overhead)
    from benchmarks.bench import book_pass

    out["  floor: a book pass a step"] = sum(book_pass(m.book) * m.steps for m in models) / len(
        models
    )
    return out


def record_cost(spec, runs: int) -> float:
    """CPU seconds the driver spends writing one run's durable record (fsync included)."""
    from experiments.sweep import SweepFolder, plan_runs, run_one

    tasks = plan_runs(spec)[:runs]
    record = run_one(tasks[0], spec.base, spec.base_dir)
    with tempfile.TemporaryDirectory() as tmp:
        folder = SweepFolder(Path(tmp))
        folder.runs.mkdir()
        t0 = _cpu()
        for task in tasks:
            folder.record(task, record)
        return (_cpu() - t0) / len(tasks)


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def _self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def pool_startup(spec) -> tuple[float, float]:
    """Wall and worker CPU seconds to start a two-process pool and run a run of no steps on
    each worker (spawn, imports)."""
    from experiments.sweep import ProcessExecutor, RunTask, run_one

    fn = functools.partial(run_one, base=spec.base, base_dir=spec.base_dir)
    c0, t0 = _children_cpu(), time.perf_counter()
    list(ProcessExecutor(2).run(fn, [RunTask(0, k, 1, {"steps": 0}) for k in range(2)]))
    return time.perf_counter() - t0, _children_cpu() - c0


def sweep_timings(spec, folder: Path) -> list[dict]:
    """Wall and CPU seconds per run of the whole sweep: in this process (the serial executor),
    with one worker process and with two."""
    from experiments.sweep import ProcessExecutor, SerialExecutor, run_sweep

    rows = []
    for name, executor in (
        ("serial", SerialExecutor()),
        ("1 worker", ProcessExecutor(1)),
        ("2 workers", ProcessExecutor(2)),
    ):
        c0, d0, t0 = _children_cpu(), _self_cpu(), time.perf_counter()
        table = run_sweep(spec, folder / name.replace(" ", "-"), executor, progress=False)
        wall = time.perf_counter() - t0
        n = len(table)
        rows.append(
            {
                "name": name,
                "runs": n,
                "ok": int((table["status"] == "ok").sum()),
                "wall": wall / n,
                "driver": (_self_cpu() - d0) / n,
                "worker": (_children_cpu() - c0) / n,
            }
        )
    return rows


def project(worker_cpu: dict, driver_cpu: dict, startup: float, n: int) -> tuple[float, float]:
    """Projected wall seconds of ``n`` runs on an idle two-core machine with one worker process
    and with two: a worker's start-up (``startup`` CPU seconds, the workers starting in
    parallel), then per run the workers' and the driver's CPU (``worker_cpu`` and
    ``driver_cpu`` by number of workers), shared by two cores when there are two workers."""
    one = startup + n * (worker_cpu[1] + driver_cpu[1])
    two = startup + n * (worker_cpu[2] + driver_cpu[2]) / 2.0
    return one, two


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8, help="base samples (a power of 2)")
    parser.add_argument(
        "--breakdown-runs", type=int, default=0, help="runs in the breakdown (0: all of them)"
    )
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="sweep-speed-"))
    try:
        spec = study_spec(args.samples, tmp)
        print(f"load average at the start: {os.getloadavg()[0]:.1f}")
        from experiments.sweep import plan_runs

        parts = run_breakdown(spec, args.breakdown_runs or len(plan_runs(spec)))
        overhead = sum(v for k, v in parts.items() if k != "stepping" and not k.startswith(" "))
        for name, value in parts.items():
            print(f"{name:26s} {value * 1e3:8.2f} ms CPU per run")
        print(
            f"overhead beyond stepping: {overhead * 1e3:.1f} ms = "
            f"{100 * overhead / parts['stepping']:.0f}% of the stepping"
        )
        startup_wall, startup_cpu = pool_startup(spec)
        print(f"two-worker pool start-up: {startup_wall:.1f} s wall, {startup_cpu:.1f} s CPU")
        rows = sweep_timings(spec, tmp)
        for r in rows:
            print(
                f"{r['name']}: {r['runs']} runs, {r['wall'] * 1e3:.0f} ms wall per run; CPU "
                f"per run: driver {r['driver'] * 1e3:.1f} ms, workers {r['worker'] * 1e3:.1f} ms"
            )
        serial, one, two = rows
        # the pools' workers started afresh: their start-up is not a run's
        per_worker = startup_cpu / 2.0
        worker = {
            1: max(one["worker"] - per_worker / one["runs"], 0.0),
            2: max(two["worker"] - startup_cpu / two["runs"], 0.0),
        }
        print(
            f"workers' CPU per run, start-up taken out: one worker {worker[1] * 1e3:.1f} ms, "
            f"two workers {worker[2] * 1e3:.1f} ms"
        )
        driver = {1: one["driver"], 2: two["driver"]}
        for n in (two["runs"], 1000):
            t1, t2 = project(worker, driver, per_worker, n)
            print(
                f"projected, idle 2 cores, {n} runs: 1 worker {t1:.0f} s, 2 workers {t2:.0f} s "
                f"({t1 / t2:.2f}x)"
            )
        print(
            f"measured here (wall, start-up included): 2 workers against 1 worker "
            f"{one['wall'] / two['wall']:.2f}x, against the serial executor "
            f"{serial['wall'] / two['wall']:.2f}x"
        )
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
