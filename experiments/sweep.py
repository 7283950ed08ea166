"""Parameter sweeps: from one laptop to a cluster, resumable, with tidy results.

A sweep file names a base run config and the knobs to vary (docs/design.md, "Sweep file";
:class:`SweepTable` declares its keys)::

    [sweep]
    base = "configs/study_base.toml"   # relative to the sweep file
    replicates = 10
    sampler = "grid"                   # grid | lhs | sobol | random | saltelli
    samples = 64                       # non-grid samplers
    seed = 1                           # base seed (default: the base config's seed)
    [sweep.set]                        # fixed overrides applied to every run
    steps = 300
    [sweep.grid]                       # key -> values (crossed with the sampled points)
    "margin.mode" = ["cross", "isolated"]
    [sweep.ranges]                     # key -> [low, high] or [low, high, "log"]
    "traders.leverage" = [2, 50, "log"]

Why the pieces are shaped this way:

* Seeds. A run's seed follows from the base seed, the replicate and (only when common random
  numbers are switched off) the point's values, never from the order runs are scheduled in, the
  worker count or interruptions. With common random numbers (the default) replicate ``k`` uses
  the same random stream at every point, so the difference between two points is not blurred
  by different shocks: ``seed = SeedSequence([base, 0, k])``. Without them,
  ``SeedSequence([base, 2, hash(point), k])``. The samplers draw from ``SeedSequence([base, 1])``.
* Durability. Workers only compute; the driver alone writes. Each finished run becomes one small
  JSON file in ``runs/`` (written to a temporary name, fsynced, renamed, folder fsynced) before it
  is counted, so after ``kill -9`` a ``--resume`` skips exactly the runs on disk: nothing is lost
  or done twice. ``runs.parquet`` and ``cascades.parquet`` are rebuilt from ``runs/`` at the end.
* Failures. A run that raises becomes a row with ``status = "error"`` and the error text; the
  sweep goes on. A local worker process that dies takes only its own run with it (the runs that
  were in flight are rerun one at a time to find which one kills its worker); a lost Dask
  worker's runs are rescheduled by the Dask scheduler.
* Executors. One interface, ``Executor.run(fn, tasks)`` yielding ``(task, result)`` as runs
  finish: :class:`SerialExecutor` (in this process), :class:`ProcessExecutor` (local processes
  from an explicit ``multiprocessing`` context, ``spawn`` by default, never the global default)
  and :class:`DaskExecutor` (a running scheduler, or a LocalCluster).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import sys
import threading
import time
import typing
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from experiments.progress import progress_bar
from model import metrics, storage
from model.config import apply_overrides, build_config, build_section, describe, read_toml
from model.config import spec as setting  # "spec" names the SweepSpec everywhere here
from model.errors import ConfigError, UsageError
from model.fills import Kind
from model.provenance import provenance, utc_now

__all__ = [
    "SAMPLERS",
    "DaskExecutor",
    "ProcessExecutor",
    "RunTask",
    "SerialExecutor",
    "SweepAborted",
    "SweepSpec",
    "SweepTable",
    "load_sweep",
    "make_executor",
    "plan_runs",
    "read_runs",
    "run_metrics",
    "run_one",
    "run_seed",
    "run_sweep",
    "run_sweep_command",
    "sample_points",
]

Sampler = Literal["grid", "lhs", "sobol", "random", "saltelli"]
SAMPLERS = typing.get_args(Sampler)
SWEEP_FILE = "sweep.json"
RUNS_DIR = "runs"
RUNS_TABLE = "runs.parquet"
CASCADES_TABLE = "cascades.parquet"
INCOMPLETE_MARKER = ".incomplete"
# Stream tags inside SeedSequence([base, tag, ...]): distinct streams for distinct purposes.
_TAG_REPLICATE, _TAG_SAMPLER, _TAG_POINT = 0, 1, 2


# --------------------------------------------------------------------------------------------
# The sweep file
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """A sampled knob: uniform on [low, high], or log-uniform when ``log``."""

    low: float
    high: float
    log: bool = False

    def scale(self, u: np.ndarray) -> np.ndarray:
        """Map unit-interval draws onto the range."""
        if self.log:
            return np.exp(np.log(self.low) + u * (np.log(self.high) - np.log(self.low)))
        return self.low + u * (self.high - self.low)


@dataclass
class SweepSpec:
    """A validated sweep file.

    Attributes:
        base: the TOML-shaped base run config, with ``[sweep.set]`` applied.
        base_dir: folder that relative paths inside the base config refer to.
        grid: crossed keys and their values (the whole sweep for ``sampler = "grid"``).
        ranges: sampled keys (the other samplers), in file order.
    """

    name: str
    path: Path
    base: dict
    base_dir: str
    replicates: int = 1
    sampler: str = "grid"
    samples: int = 0
    seed: int = 0
    common_random_numbers: bool = True
    grid: dict[str, list] = field(default_factory=dict)
    ranges: dict[str, Range] = field(default_factory=dict)

    @property
    def keys(self) -> list[str]:
        """Swept keys: the sampled ones, then the grid ones."""
        return [*self.ranges, *self.grid]


@dataclass
class SweepTable:
    """The ``[sweep]`` table of a sweep file as written, declared with the run config's
    :func:`model.config.spec` and validated by the same machinery (types, bounds, defaults,
    unknown keys with a did-you-mean, one-line messages naming ``sweep.<key>``).

    ``set``, ``grid`` and ``ranges`` are tables of dotted keys (or nested tables); their values
    are checked by :func:`load_sweep` once flattened, and every point against the run config.
    """

    base: str = setting(doc="the base run config (TOML), relative to the sweep file", min_len=1)
    name: str | None = setting(None, doc="the sweep's name (default: the sweep file's)", min_len=1)
    replicates: int = setting(
        1, doc="runs per point, each with its own random stream", ge=1, le=1_000_000
    )
    sampler: Sampler = setting(
        "grid", doc="grid: the product of sweep.grid; otherwise points drawn over sweep.ranges"
    )
    samples: int | None = setting(
        None,
        doc="points a sampler other than grid draws (a power of 2 for sobol and saltelli)",
        ge=1,
        le=10_000_000,
    )
    seed: int | None = setting(
        None, doc="base seed of the sweep (default: the base config's seed)", ge=0, le=2**63 - 1
    )
    common_random_numbers: bool = setting(
        True, doc="replicate k draws the same random stream at every point"
    )
    set: dict[str, Any] = setting(factory=dict, doc="overrides applied to every run")
    grid: dict[str, Any] = setting(
        factory=dict, doc="key -> list of values, crossed with each other and the sampled points"
    )
    ranges: dict[str, Any] = setting(
        factory=dict, doc='key -> [low, high] or [low, high, "log"], sampled (not with grid)'
    )


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file. Every problem is a one-line :class:`ConfigError`."""
    path = Path(path)
    data = read_toml(path)
    if not isinstance(data.get("sweep"), dict):
        raise ConfigError(f"{path}: no [sweep] table")
    extra = sorted(set(data) - {"sweep"})
    if extra:
        raise ConfigError(f"{extra[0]}: unknown top-level key in a sweep file (only [sweep])")
    sw = build_section(SweepTable, data["sweep"], "sweep")
    base_path = Path(sw.base)
    if not base_path.is_absolute():
        base_path = path.resolve().parent / base_path
    base = apply_overrides(read_toml(base_path), _flatten(sw.set))
    base_dir = str(base_path.resolve().parent)
    base_cfg = build_config(base, base_dir=base_dir)  # the base itself must be valid
    grid = _parse_grid(sw.grid)
    ranges = {key: _parse_range(key, v) for key, v in _flatten(sw.ranges).items()}
    _check_sampler(sw, grid, ranges)
    spec = SweepSpec(
        name=sw.name or path.stem,
        path=path.resolve(),
        base=base,
        base_dir=base_dir,
        replicates=sw.replicates,
        sampler=sw.sampler,
        samples=0 if sw.sampler == "grid" else sw.samples,
        seed=base_cfg.seed if sw.seed is None else sw.seed,
        common_random_numbers=sw.common_random_numbers,
        grid=grid,
        ranges=ranges,
    )
    _check_points(spec)
    return spec


def _parse_grid(table: dict) -> dict[str, list]:
    """``sweep.grid`` flattened: each key a non-empty list of distinct values."""
    grid = {}
    for key, values in _flatten(table).items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep.grid.{key}: expected a non-empty list of values")
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise ConfigError(f"sweep.grid.{key}: values repeat")
        grid[key] = values
    return grid


def _check_sampler(sw: SweepTable, grid: dict, ranges: dict) -> None:
    """What the sampler asks of the other keys: ranges only for drawn points, never a key in
    both, samples given (a power of 2 for the Sobol sequence)."""
    both = set(grid) & set(ranges)
    if both:
        raise ConfigError(f"sweep.ranges.{sorted(both)[0]}: also in sweep.grid")
    if sw.sampler == "grid":
        if ranges:
            raise ConfigError(
                f"sweep.ranges.{next(iter(ranges))}: the grid sampler takes values from "
                "sweep.grid; choose sampler = 'lhs', 'sobol', 'random' or 'saltelli' for ranges"
            )
        return
    if not ranges:
        raise ConfigError(f"sweep.ranges: the {sw.sampler} sampler needs at least one range")
    if sw.samples is None:
        raise ConfigError(f"sweep.samples: required by the {sw.sampler} sampler")
    if sw.sampler in ("sobol", "saltelli") and sw.samples & (sw.samples - 1):
        raise ConfigError(
            f"sweep.samples: the {sw.sampler} sampler needs a power of 2, got {sw.samples}"
        )


def _flatten(table: dict, prefix: str = "") -> dict:
    """``{"market": {"volatility": [..]}}`` and ``{"market.volatility": [..]}`` alike."""
    out = {}
    for k, v in table.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _parse_range(key: str, value) -> Range:
    where = f"sweep.ranges.{key}"
    if not isinstance(value, list) or len(value) not in (2, 3):
        raise ConfigError(f'{where}: expected [low, high] or [low, high, "log"], got {value!r}')
    low, high = value[0], value[1]
    for v in (low, high):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"{where}: bounds must be finite numbers, got {v!r}")
    if not low < high:
        raise ConfigError(f"{where}: low must be below high, got [{low}, {high}]")
    log = False
    if len(value) == 3:
        if value[2] not in ("log", "linear"):
            raise ConfigError(f"{where}: scale must be 'log' or 'linear', got {value[2]!r}")
        log = value[2] == "log"
        if log and low <= 0:
            raise ConfigError(f"{where}: a log range needs low > 0, got {low}")
    return Range(float(low), float(high), log)


def _check_points(spec: SweepSpec) -> None:
    """Every point must make a valid config: fail before any run starts, naming the key."""
    for point in sample_points(spec):
        try:
            build_config(apply_overrides(spec.base, point), base_dir=spec.base_dir)
        except ConfigError as exc:
            shown = ", ".join(f"{k}={v!r}" for k, v in point.items())
            raise ConfigError(f"{spec.path.name}: point ({shown}): {exc}") from None


# --------------------------------------------------------------------------------------------
# Samplers and seeds
# --------------------------------------------------------------------------------------------


@functools.cache
def _integer_keys() -> set[str]:
    """Dotted keys (list items as ``assets[]``) whose config type is a whole number."""
    return {row["key"] for row in describe() if row["type"] == "a whole number"}


@functools.cache
def _list_keys() -> frozenset[str]:
    return frozenset(row["key"] for row in describe() if row["type"] == "a list")


def _schema_key(key: str) -> str:
    """``assets.BTC.depth`` -> ``assets[].depth`` (the shape :func:`describe` uses)."""
    parts, out, skip = key.split("."), [], False
    lists = _list_keys()
    for part in parts:
        if skip:
            skip = False
            continue
        out.append(part)
        if ".".join(out) in lists:
            out[-1] += "[]"
            skip = True
    return ".".join(out)


def unit_samples(sampler: str, n: int, d: int, seed: int) -> np.ndarray:
    """(n, d) draws in the unit cube.

    ``saltelli`` returns the Saltelli design for first-order and total Sobol indices
    (``n (d + 2)`` rows, in the row order SALib's ``sample.sobol`` uses with
    ``calc_second_order=False``: for each base sample A_j, AB_j1 .. AB_jd, B_j), built from a
    scrambled Sobol sequence in 2d dimensions, so sweeps run without SALib installed.
    """
    from scipy.stats import qmc

    rng = np.random.default_rng(np.random.SeedSequence([seed, _TAG_SAMPLER]))
    if sampler == "random":
        return rng.random((n, d))
    if sampler == "lhs":
        return _qmc(qmc.LatinHypercube, d, rng).random(n)
    if sampler == "sobol":
        return _qmc(qmc.Sobol, d, rng, scramble=True).random_base2(int(math.log2(n)))
    if sampler == "saltelli":
        base = _qmc(qmc.Sobol, 2 * d, rng, scramble=True).random_base2(int(math.log2(n)))
        a, b = base[:, :d], base[:, d:]
        rows = np.empty((n, d + 2, d))
        rows[:, 0] = a
        for i in range(d):
            ab = a.copy()
            ab[:, i] = b[:, i]
            rows[:, 1 + i] = ab
        rows[:, d + 1] = b
        return rows.reshape(n * (d + 2), d)
    raise ValueError(f"unknown sampler {sampler!r}")  # pragma: no cover


def _qmc(engine, d, rng, **kw):
    """A scipy.stats.qmc engine fed by ``rng`` (``rng=`` since scipy 1.15, ``seed=`` before)."""
    try:
        return engine(d=d, rng=rng, **kw)
    except TypeError:  # pragma: no cover - scipy < 1.15
        return engine(d=d, seed=rng, **kw)


def sample_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """The sweep's points, in a fixed order: sampled points (outer) crossed with the grid."""
    import itertools

    grid_points = [
        dict(zip(spec.grid, values, strict=True))
        for values in itertools.product(*spec.grid.values())
    ]
    if spec.sampler == "grid":
        return grid_points
    keys = list(spec.ranges)
    u = unit_samples(spec.sampler, spec.samples, len(keys), spec.seed)
    ints = _integer_keys()
    sampled = []
    for row in u:
        point = {}
        for j, key in enumerate(keys):
            v = float(spec.ranges[key].scale(row[j : j + 1])[0])
            point[key] = int(round(v)) if _schema_key(key) in ints else v
        sampled.append(point)
    return [{**s, **g} for s in sampled for g in grid_points]


def _point_hash(point: dict) -> list[int]:
    text = json.dumps(point, sort_keys=True, default=str)
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return [int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:], "little")]


def run_seed(base_seed: int, replicate: int, point: dict | None = None) -> int:
    """The seed of one run (a 63-bit integer).

    Args:
        base_seed: the sweep's base seed.
        replicate: the replicate number k.
        point: ``None`` for common random numbers (replicate k gets the same seed at every
            point); else the point's values, which then enter the seed through a stable hash.
    """
    words = [base_seed & 0xFFFFFFFF, base_seed >> 32]
    if point is None:
        entropy = [*words, _TAG_REPLICATE, replicate]
    else:
        entropy = [*words, _TAG_POINT, *_point_hash(point), replicate]
    state = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & (2**63 - 1)


@dataclass(frozen=True)
class RunTask:
    """One run of a sweep: which point, which replicate, which seed, which values."""

    point: int
    replicate: int
    seed: int
    params: dict = field(hash=False)

    @property
    def run_id(self) -> str:
        return f"p{self.point:06d}-r{self.replicate:04d}"


def plan_runs(spec: SweepSpec, points: list[dict] | None = None) -> list[RunTask]:
    """Every run, replicate-major (all points of replicate 0 first), so an interrupted sweep
    already covers the whole parameter space with fewer replicates."""
    points = sample_points(spec) if points is None else points
    tasks = []
    for k in range(spec.replicates):
        crn_seed = run_seed(spec.seed, k) if spec.common_random_numbers else None
        for p, point in enumerate(points):
            seed = crn_seed if crn_seed is not None else run_seed(spec.seed, k, point)
            tasks.append(RunTask(p, k, seed, point))
    return tasks


# --------------------------------------------------------------------------------------------
# One run (what a worker does)
# --------------------------------------------------------------------------------------------


def run_metrics(model) -> dict[str, Any]:
    """The run's headline metrics, flattened to scalars (one row of runs.parquet).

    ``summary()`` nests per-asset values; here ``max_drawdown`` and ``amplification`` are the
    worst asset's and ``max_drawdown_BTC`` etc. the per-asset ones. Added: liquidated notional
    per asset (cross-asset contagion shows up in the assets that were not shocked).

    Args:
        model: a finished run (its fill log's columns, not the liquidations table: building
            the table would cost more than the run's summary).
    """
    summary = model.summary()
    out: dict[str, Any] = {}
    for key, value in summary.items():
        if key in ("name", "seed"):
            continue
        if isinstance(value, dict):
            for sub, v in value.items():
                if sub == "worst":
                    out[key] = v
                elif sub == "worst_asset":
                    out[f"{key}_asset"] = v
                else:
                    out[f"{key}_{sub}"] = v
        elif isinstance(value, list):
            out[f"n_{key}"] = len(value)
        else:
            out[key] = value
    fills = model.engine.fills.columns()
    codes, weights = fills["asset"], fills["notional"]
    kept = fills["kind"] != Kind.COLLATERAL  # sales of collateral: collateral_sold_notional
    if not kept.all():
        codes, weights = codes[kept], weights[kept]
    notional = np.bincount(codes, weights=weights, minlength=len(model.symbols))
    for j, s in enumerate(model.symbols):
        out[f"liquidated_notional_{s}"] = float(notional[j])
    return out


def cascade_sizes(liquidations) -> list[list[int]]:
    """``[step, accounts]`` of every cascade (:func:`model.metrics.cascades`: the accounts
    liquidated, not auto-deleveraged, in any round of the step), in step order, from the
    liquidations table or the fill log's columns."""
    return metrics.cascade_sizes(liquidations).tolist()


def run_one(task: RunTask, base: dict, base_dir: str) -> dict[str, Any]:
    """Run one point of a sweep and return its record (never raises for a failing run)."""
    from model import ContagionModel

    t0 = time.perf_counter()
    record: dict[str, Any] = {"status": "ok", "error": ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # kept in the metrics (n_warnings) instead
            cfg = build_config(
                apply_overrides(base, {**task.params, "seed": task.seed}), base_dir=base_dir
            )
            model = ContagionModel(cfg, create_agents=False)
            model.run()
            record["metrics"] = run_metrics(model)
            record["cascades"] = cascade_sizes(model.engine.fills.columns())
    except Exception as exc:  # a failing run is a row, not the end of the sweep
        record.update(status="error", error=f"{type(exc).__name__}: {exc}", metrics={})
        record["cascades"] = []
    record["elapsed"] = time.perf_counter() - t0
    return record


# --------------------------------------------------------------------------------------------
# Executors
# --------------------------------------------------------------------------------------------


class SweepAborted(RuntimeError):
    """The executor itself failed (not a run): the sweep stops and can be resumed."""


class SerialExecutor:
    """Runs every task in this process, in order (the reference for 'serial = parallel')."""

    workers = 1

    def run(self, fn: Callable, tasks: Iterable[RunTask]) -> Iterator[tuple[RunTask, dict]]:
        for task in tasks:
            yield task, fn(task)

    def close(self) -> None:
        pass


def _watch_parent(parent: int) -> None:
    """Worker initializer: exit when the parent process is gone (after ``kill -9`` of the
    sweep), so no orphaned worker keeps computing runs nobody will record."""

    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


class ProcessExecutor:
    """Local worker processes from an explicit multiprocessing context.

    Args:
        workers: number of processes.
        context: ``"spawn"`` (default: a fresh interpreter per worker, safe with threads and on
            every platform), ``"forkserver"`` or ``"fork"``.
        max_attempts: a run whose worker dies is retried alone up to this many times, then
            recorded as an error.
    """

    def __init__(self, workers: int, context: str = "spawn", max_attempts: int = 2):
        import multiprocessing

        self.workers = int(workers)
        self.context = multiprocessing.get_context(context)
        self.max_attempts = max_attempts
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=workers,
            mp_context=self.context,
            initializer=_watch_parent,
            initargs=(os.getpid(),),
        )

    def run(self, fn: Callable, tasks: Iterable[RunTask]) -> Iterator[tuple[RunTask, dict]]:
        pending = list(tasks)[::-1]  # pop() from the end keeps the planned order
        window = 2 * self.workers
        self._pool = self._new_pool(self.workers)
        running: dict = {}
        try:
            while pending or running:
                try:
                    while pending and len(running) < window:
                        running[self._pool.submit(fn, pending[-1])] = pending[-1]
                        pending.pop()
                except BrokenProcessPool:
                    # a worker died since the last wait: its run is among those in flight,
                    # whose futures report it below; the run not submitted stays pending
                    if not running:  # no run in flight: an idle worker died, start afresh
                        self._pool.shutdown(wait=False, cancel_futures=True)
                        self._pool = self._new_pool(self.workers)
                        continue
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                broken = []
                for fut in done:
                    task = running.pop(fut)
                    try:
                        yield task, fut.result()
                    except BrokenProcessPool:
                        broken.append(task)
                if broken:
                    # The pool is dead: every run in flight is a suspect. Rerun them one at a
                    # time in a one-worker pool: a run that breaks it is the culprit.
                    suspects = broken + list(running.values())
                    running.clear()
                    self._pool.shutdown(wait=False, cancel_futures=True)
                    suspects.sort(key=lambda t: (t.replicate, t.point))
                    yield from self._one_by_one(fn, suspects)
                    self._pool = self._new_pool(self.workers)
        finally:
            self.close()

    def _one_by_one(self, fn: Callable, tasks: list[RunTask]) -> Iterator[tuple[RunTask, dict]]:
        """Run ``tasks`` one at a time in a one-worker pool, replacing the pool whenever a task
        kills its worker; a task that does so ``max_attempts`` times becomes an error record."""
        pool = self._new_pool(1)
        try:
            for task in tasks:
                for _ in range(self.max_attempts):
                    try:
                        result = pool.submit(fn, task).result()
                        break
                    except BrokenProcessPool:
                        pool.shutdown(wait=False, cancel_futures=True)
                        pool = self._new_pool(1)
                else:
                    result = {
                        "status": "error",
                        "error": f"worker process died ({self.max_attempts} attempts)",
                        "metrics": {},
                        "cascades": [],
                        "elapsed": float("nan"),
                    }
                yield task, result
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class DaskExecutor:
    """Runs on Dask distributed: ``address="local"`` starts a LocalCluster on loopback,
    ``tcp://HOST:PORT`` connects to a running scheduler (for example one started by
    dask-jobqueue on SLURM, see docs/cluster.md).

    Dask reschedules the runs of a worker that is lost; a run that takes down workers
    ``distributed.scheduler.allowed-failures`` times is recorded as an error.
    """

    def __init__(self, address: str, workers: int | None = None, timeout: float = 20.0):
        from dask.distributed import Client, LocalCluster

        self.cluster = None
        if address == "local":
            n = workers or _cpu_count()
            self.cluster = LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            )
            self.client = Client(self.cluster)
        else:
            try:
                self.client = Client(address, timeout=timeout)
            except (OSError, TimeoutError, ValueError) as exc:
                raise UsageError(f"--scheduler {address}: cannot connect ({exc})") from None
        self.workers = max(1, sum(self.client.nthreads().values()))

    def run(self, fn: Callable, tasks: Iterable[RunTask]) -> Iterator[tuple[RunTask, dict]]:
        from dask.distributed import as_completed
        from distributed.scheduler import KilledWorker

        pending = list(tasks)[::-1]
        window = max(16, 4 * self.workers)
        owner: dict = {}

        def submit():
            task = pending.pop()
            fut = self.client.submit(fn, task, pure=False)
            owner[fut.key] = task
            return fut

        ac = as_completed([submit() for _ in range(min(window, len(pending)))])
        for fut in ac:
            task = owner.pop(fut.key)
            try:
                result = fut.result()
            except KilledWorker as exc:  # the run itself kept taking workers down
                result = {
                    "status": "error",
                    "error": f"KilledWorker: {exc}",
                    "metrics": {},
                    "cascades": [],
                    "elapsed": float("nan"),
                }
            except Exception as exc:
                # run_one never raises, so anything else is the cluster (a lost scheduler, a
                # cancelled future): stop, and let --resume redo the runs that were in flight
                why = " ".join(str(exc).split())  # one line
                raise SweepAborted(
                    f"lost the Dask cluster ({type(exc).__name__}: {why}); finished runs are "
                    "saved, run again with --resume"
                ) from None
            fut.release()
            if pending:
                ac.add(submit())
            yield task, result

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def make_executor(workers: int | None = None, scheduler: str | None = None):
    """The executor the command line asks for: Dask when ``scheduler`` is given, else local
    processes (``workers`` of them, default one per core; ``workers=1`` runs in-process)."""
    if workers is not None and workers < 1:
        raise UsageError(f"--workers: must be at least 1, got {workers}")
    if scheduler:
        if workers is not None and scheduler != "local":
            raise UsageError(
                "--workers: applies to local processes or --scheduler local; "
                f"the cluster at {scheduler} has its own workers"
            )
        try:
            import dask.distributed  # noqa: F401
        except ImportError:
            raise UsageError(
                "--scheduler: needs the optional package dask "
                "(pip install 'margin-contagion[dask]')"
            ) from None
        return DaskExecutor(scheduler, workers)
    n = _cpu_count() if workers is None else workers
    return SerialExecutor() if n == 1 else ProcessExecutor(n)


# --------------------------------------------------------------------------------------------
# The sweep folder
# --------------------------------------------------------------------------------------------


def base_config_text(spec: SweepSpec) -> str:
    """The sweep's base config (``[sweep.set]`` applied) as resolved, in the canonical TOML of
    a run folder's config.toml: what sweep.json's ``config_sha256`` hashes."""
    from model.results import config_text

    return config_text(build_config(spec.base, base_dir=spec.base_dir))


def _fingerprint(spec: SweepSpec, points: list[dict]) -> str:
    """What identifies a sweep's results: base config, points, seeds, replicates."""
    ident = {
        "base": spec.base,
        "base_dir": spec.base_dir,
        "points": points,
        "replicates": spec.replicates,
        "seed": spec.seed,
        "common_random_numbers": spec.common_random_numbers,
    }
    text = json.dumps(ident, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class SweepFolder:
    """The sweep's output folder: ``sweep.json``, ``runs/``, ``runs.parquet``,
    ``cascades.parquet``, and a ``.incomplete`` marker while runs are missing."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.runs = self.out / RUNS_DIR

    def check(self, spec: SweepSpec, points: list[dict], resume: bool) -> None:
        """Refuse an output folder that holds something else (before any worker starts).

        A folder with a ``sweep.json`` is this command's own: it needs ``--resume`` and the
        same sweep. Any other folder that is not empty is refused, ``--resume`` or not
        (:mod:`experiments.folders`).
        """
        from experiments.folders import SWEEP_FOLDER, blocking_file, kind_of

        meta_path = self.out / SWEEP_FILE
        fingerprint = _fingerprint(spec, points)
        if self.out.exists() and not self.out.is_dir():
            raise UsageError(f"--out {self.out}: exists and is not a folder")
        blocking = blocking_file(self.out)
        if blocking is not None:
            raise UsageError(
                f"--out {self.out}: cannot create the {SWEEP_FOLDER.name}: {blocking} is not "
                "a folder"
            )
        if meta_path.exists():
            if not resume:
                raise UsageError(
                    f"--out {self.out}: already holds a sweep; pass --resume to finish it "
                    "or choose another --out"
                )
            try:
                old = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                raise UsageError(f"{meta_path}: unreadable; cannot resume") from None
            if old.get("fingerprint") != fingerprint:
                raise UsageError(
                    f"--resume: {self.out} was started from a different sweep (base config, "
                    "points, seeds or replicates changed); use another --out"
                )
        elif self.out.is_dir() and any(self.out.iterdir()):
            found = kind_of(self.out)
            what = f"holds a {found.name}" if found else "is not empty"
            raise UsageError(
                f"--out {self.out}: {what} and is not a {SWEEP_FOLDER.name} "
                f"(no {SWEEP_FILE}); choose a new or empty folder"
            )

    def start(self, spec: SweepSpec, points: list[dict], resume: bool) -> set[str]:
        """Create or reopen the folder; return the run ids already finished.

        ``sweep.json`` is written first (it marks the folder as a sweep's from the start), with
        a ``provenance`` block for this session; a resumed sweep keeps the blocks of its
        earlier sessions under ``provenance.earlier``.
        """
        self.check(spec, points, resume)
        meta_path = self.out / SWEEP_FILE
        self.started, self._clock = utc_now(), time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        earlier = []
        if meta_path.exists():
            old = json.loads(meta_path.read_text()).get("provenance") or {}
            earlier = [*old.pop("earlier", []), old] if old else []
        self.meta = {
            "name": spec.name,
            "sweep_file": str(spec.path),
            "sampler": spec.sampler,
            "samples": spec.samples,
            "replicates": spec.replicates,
            "seed": spec.seed,
            "common_random_numbers": spec.common_random_numbers,
            "keys": spec.keys,
            "grid": spec.grid,
            "ranges": {k: dataclasses.asdict(r) for k, r in spec.ranges.items()},
            "base": spec.base,
            "base_dir": spec.base_dir,
            "points": points,
            "fingerprint": _fingerprint(spec, points),
        }
        self._config_text = base_config_text(spec)
        self._earlier = earlier
        self.write_meta()
        self.runs.mkdir(exist_ok=True)
        storage.write_text(self.out / INCOMPLETE_MARKER, "this sweep has runs still to do\n")
        storage.clear_temporaries(self.runs)  # leftovers of a write cut short
        return {p.stem for p in self.runs.glob("p*-r*.json")}

    def write_meta(self) -> None:
        """Write sweep.json with this session's provenance (elapsed seconds so far)."""
        block = provenance(
            seed=self.meta["seed"],
            config_text=self._config_text,
            started=self.started,
            elapsed=time.perf_counter() - self._clock,
        )
        if self._earlier:
            block["earlier"] = self._earlier
        storage.write_json(self.out / SWEEP_FILE, {**self.meta, "provenance": block}, indent=1)

    def record(self, task: RunTask, result: dict) -> None:
        """Write one finished run durably (before it is counted as done)."""
        row = {
            "point": task.point,
            "replicate": task.replicate,
            "seed": task.seed,
            "params": task.params,
            **result,
        }
        storage.write_json(self.runs / f"{task.run_id}.json", row)

    def consolidate(self, spec_keys: list[str], complete: bool) -> pd.DataFrame:
        """Rebuild runs.parquet and cascades.parquet from runs/ (atomic replace), and
        sweep.json with the session's elapsed time."""
        runs, cascades = read_run_records(self.runs, spec_keys)
        storage.write_parquet(self.out / RUNS_TABLE, runs)
        storage.write_parquet(self.out / CASCADES_TABLE, cascades)
        if hasattr(self, "meta"):
            self.write_meta()
        if complete:
            (self.out / INCOMPLETE_MARKER).unlink(missing_ok=True)
        return runs


def read_run_records(runs_dir: Path, keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """runs/*.json -> (runs table, cascades table), sorted by point and replicate."""
    rows, casc = [], []
    for path in sorted(Path(runs_dir).glob("p*-r*.json")):
        rec = storage.read_json(path)
        row = {"point": rec["point"], "replicate": rec["replicate"], "seed": rec["seed"]}
        for k in keys:
            row[k] = rec["params"].get(k)
        row["status"] = rec["status"]
        row["error"] = rec["error"]
        row.update(rec.get("metrics") or {})
        row["elapsed"] = rec["elapsed"]
        rows.append(row)
        for step, size in rec.get("cascades") or []:
            casc.append((rec["point"], rec["replicate"], step, size))
    runs = pd.DataFrame(rows)
    if len(runs):
        runs = runs.sort_values(["point", "replicate"], kind="stable").reset_index(drop=True)
        runs["seed"] = runs["seed"].astype("uint64")
        for c in runs.columns:  # missing values of error rows in object columns: None
            if pd.api.types.is_object_dtype(runs[c].dtype):
                runs[c] = runs[c].where(runs[c].notna(), None)
    cascades = pd.DataFrame(casc, columns=["point", "replicate", "step", "size"]).astype("int64")
    return runs, cascades


def read_runs(out: str | Path) -> pd.DataFrame:
    """A sweep folder's runs: runs.parquet, or the runs/ records of an unfinished sweep."""
    out = Path(out)
    if (out / RUNS_TABLE).exists() and not (out / INCOMPLETE_MARKER).exists():
        return storage.read_parquet(out / RUNS_TABLE)
    meta = storage.read_json(out / SWEEP_FILE)
    return read_run_records(out / RUNS_DIR, meta["keys"])[0]


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    executor=None,
    *,
    resume: bool = False,
    progress: bool = True,
    run_fn: Callable | None = None,
) -> pd.DataFrame:
    """Run (or finish) a sweep into ``out``; returns the runs table.

    Args:
        spec: from :func:`load_sweep`.
        out: the sweep folder.
        executor: default :class:`SerialExecutor`.
        resume: finish a sweep already started in ``out`` (skips the runs on disk).
        progress: a progress bar on stderr when it is a terminal
            (:mod:`experiments.progress`).
        run_fn: ``task -> record``; default :func:`run_one` bound to the base config.
    """
    executor = executor or SerialExecutor()
    points = sample_points(spec)
    tasks = plan_runs(spec, points)
    folder = SweepFolder(Path(out))
    try:
        finished = folder.start(spec, points, resume)
    except BaseException:
        executor.close()  # a cluster started for nothing is shut down, not left behind
        raise
    todo = [t for t in tasks if t.run_id not in finished]
    fn = run_fn or functools.partial(run_one, base=spec.base, base_dir=spec.base_dir)
    bar = progress_bar(
        len(tasks), unit="run", desc=spec.name, initial=len(tasks) - len(todo), quiet=not progress
    )
    failed = 0
    try:
        for task, result in executor.run(fn, todo):
            folder.record(task, result)
            bar.update()
            if result["status"] != "ok":
                failed += 1
                bar.set_postfix_str(f"{failed} failed")
    finally:
        bar.close()
        executor.close()
        done = {p.stem for p in folder.runs.glob("p*-r*.json")}
        complete = all(t.run_id in done for t in tasks)
        folder.consolidate(spec.keys, complete)
    return pd.read_parquet(folder.out / RUNS_TABLE)


def run_sweep_command(
    sweep_path: str | Path,
    *,
    out: str | Path | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    resume: bool = False,
    quiet: bool = False,
) -> int:
    """Load a sweep file and run it (or finish it) with a progress bar on stderr.

    Args:
        sweep_path: the sweep TOML file.
        out: the sweep folder (default ``results/<sweep name>``).
        workers: local worker processes (default: one per core), or Dask workers of
            ``scheduler="local"``.
        scheduler: a Dask scheduler address (``tcp://HOST:PORT``) or ``"local"``.
        resume: finish a sweep already started in ``out``.
        quiet: no progress and no opening line: only the result line and errors.

    Returns:
        the exit status: 0 when the sweep ran to the end (failed runs are rows of the table),
        1 when the cluster was lost, 130 when interrupted.
    """
    spec = load_sweep(sweep_path)
    out = Path(out) if out is not None else Path("results") / spec.name
    points = sample_points(spec)
    SweepFolder(out).check(spec, points, resume)  # before starting any worker or cluster
    executor = make_executor(workers, scheduler)
    n = len(points) * spec.replicates
    where = f"Dask at {scheduler}" if scheduler else f"{executor.workers} worker(s)"
    if not quiet:
        print(
            f"{spec.name}: {n} runs ({spec.sampler} sampler) on {where} -> {out}", file=sys.stderr
        )
    t0 = time.perf_counter()
    try:
        runs = run_sweep(spec, out, executor, resume=resume, progress=not quiet)
    except SweepAborted as exc:
        print(f"contagion: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"contagion: interrupted; finished runs are saved, --resume finishes {out}",
            file=sys.stderr,
        )
        return 130
    failed = int((runs["status"] != "ok").sum()) if len(runs) else 0
    print(
        f"{spec.name}: {len(runs)} runs ({failed} failed) in {time.perf_counter() - t0:.1f}s; "
        f"results: {out / RUNS_TABLE}"
    )
    return 0
