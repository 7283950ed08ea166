"""Calibration with uncertainty: which parameter values are consistent with a real event.

A calibration file names a base run config, a prior over some of its keys and the observed
values of some run metrics (docs/calibration.md; :class:`CalibrateTable` declares the keys)::

    [calibrate]
    base = "../configs/oct-2025.toml"   # a run config, relative to this file
    method = "abc-smc"                  # abc-smc (pyabc) | emulator (scikit-learn GP)
    budget = 2000                       # model runs at most (posterior-predictive runs apart)
    seed = 1
    [calibrate.parameters]              # dotted key -> [low, high] or [low, high, "log"]
    "traders.leverage" = [2, 50, "log"]
    [calibrate.targets]                 # metric (a runs.parquet column) -> value or [low, high]
    fraction_liquidated = 0.088
    long_share_liquidated = [0.84, 0.91]

Why the pieces are shaped this way:

* Runs. Every model run is a :class:`experiments.sweep.RunTask` given to the sweep executors
  (:func:`experiments.sweep.make_executor`: local processes or Dask) and computed by
  :func:`experiments.sweep.run_one`, so a calibration runs wherever a sweep runs. The methods
  ask for runs in batches; the driver alone writes.
* Durability and resume. Each finished run becomes one JSON record in ``runs/`` (written
  atomically, like a sweep's) named by its place in the method's deterministic sequence of
  batches. A method is a deterministic function of ``seed`` and of the runs' results, so
  ``--resume`` replays it from the start: runs already on disk are read back instead of
  being run again, and it continues where it stopped.
* Determinism. Batches are fixed by the method, never by the number of workers or by the
  order runs finish in; within a batch results are used in planned order. The same file and
  seed give the same posterior with any executor.
* Seeds. Run ``i`` of batch ``b`` of stage ``g`` has the seed
  ``SeedSequence([seed, 3, g, b, i])``: every simulation its own random stream (common random
  numbers would tie the noise of all parameter values together, which ABC must not do).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import sys
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from experiments.sweep import (
    RunTask,
    _flatten,
    _integer_keys,
    _schema_key,
    make_executor,
    run_one,
)
from model import storage
from model.config import apply_overrides, build_config, build_section, did_you_mean, read_toml
from model.config import spec as setting
from model.errors import ConfigError, UsageError

__all__ = [
    "METHODS",
    "CalibrateTable",
    "CalibrationSpec",
    "Prior",
    "RunStore",
    "Target",
    "load_calibration",
    "metric_names",
    "minimum_budget",
    "run_calibration",
]

Method = Literal["abc-smc", "emulator"]
METHODS = typing.get_args(Method)
META_FILE = "calibration.json"
POSTERIOR_TABLE = "posterior.parquet"
PREDICTIVE_TABLE = "predictive.parquet"
INFO_FILE = "method.json"  # the method's account of itself (generations, epsilons, time)
RUNS_DIR = "runs"
INCOMPLETE_MARKER = ".incomplete"
_TAG_RUN, _TAG_RESAMPLE = 3, 4


# --------------------------------------------------------------------------------------------
# The calibration file
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prior:
    """A calibrated key: uniform on [low, high], or log-uniform when ``log``; the methods
    work on the unit interval, ``u = 0`` at ``low`` and ``u = 1`` at ``high``."""

    key: str
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def value(self, u: np.ndarray) -> np.ndarray:
        """Unit-interval coordinates -> values of the key."""
        u = np.asarray(u, dtype=float)
        if self.log:
            return np.exp(np.log(self.low) + u * (np.log(self.high) - np.log(self.low)))
        return self.low + u * (self.high - self.low)

    def unit(self, x: np.ndarray) -> np.ndarray:
        """Values of the key -> unit-interval coordinates."""
        x = np.asarray(x, dtype=float)
        if self.log:
            return (np.log(x) - np.log(self.low)) / (np.log(self.high) - np.log(self.low))
        return (x - self.low) / (self.high - self.low)

    def config_value(self, u: float) -> float | int:
        v = float(self.value(np.array([u]))[0])
        return int(round(v)) if self.integer else v

    @property
    def width(self) -> float:
        """The prior's width on the scale it is uniform on (log for log priors)."""
        return math.log(self.high / self.low) if self.log else self.high - self.low


@dataclass(frozen=True)
class Target:
    """An observed metric: a value, or a band ``[low, high]`` where sources disagree (every
    value in the band is equally consistent with the event)."""

    metric: str
    low: float
    high: float

    @property
    def is_band(self) -> bool:
        return self.high > self.low

    @property
    def centre(self) -> float:
        return 0.5 * (self.low + self.high)

    def excess(self, x: np.ndarray) -> np.ndarray:
        """How far simulated values lie outside the band (0 inside); signed for a value."""
        x = np.asarray(x, dtype=float)
        if not self.is_band:
            return x - self.low
        return np.maximum(self.low - x, 0.0) + np.maximum(x - self.high, 0.0)

    def shown(self) -> str:
        return f"[{self.low:g}, {self.high:g}]" if self.is_band else f"{self.low:g}"


@dataclass
class CalibrateTable:
    """The ``[calibrate]`` table of a calibration file as written, declared with the run
    config's :func:`model.config.spec` and validated by the same machinery (types, bounds,
    unknown keys with a did-you-mean, one-line messages naming ``calibrate.<key>``)."""

    base: str = setting(doc="the base run config (TOML), relative to this file", min_len=1)
    name: str | None = setting(None, doc="the calibration's name (default: the file's)", min_len=1)
    method: Method = setting(
        "abc-smc",
        doc="abc-smc: sequential Monte Carlo ABC (pyabc); emulator: Gaussian-process emulator "
        "of the targets and its likelihood (scikit-learn)",
    )
    budget: int = setting(2000, doc="model runs at most (inference)", ge=1, le=10_000_000)
    seed: int = setting(1, doc="seed of the calibration", ge=0, le=2**63 - 1)
    population: int | None = setting(
        None,
        doc="abc-smc: particles per generation (default budget / 10, within 20..1000)",
        ge=10,
        le=100_000,
    )
    generations: int = setting(20, doc="abc-smc: most generations", ge=1, le=1000)
    draws: int = setting(1000, doc="emulator: posterior draws kept", ge=10, le=1_000_000)
    predictive: int = setting(
        100, doc="posterior-predictive runs (on top of the budget)", ge=0, le=1_000_000
    )
    set: dict[str, Any] = setting(factory=dict, doc="overrides applied to every run")
    parameters: dict[str, Any] = setting(
        factory=dict, doc='dotted key -> [low, high] (uniform) or [low, high, "log"]'
    )
    targets: dict[str, Any] = setting(
        factory=dict, doc="metric (a runs.parquet column) -> observed value or [low, high]"
    )


@dataclass
class CalibrationSpec:
    """A validated calibration file."""

    name: str
    path: Path
    base: dict
    base_dir: str
    method: str
    budget: int
    seed: int
    population: int
    generations: int
    draws: int
    predictive: int
    priors: list[Prior]
    targets: list[Target]
    metrics: list[str] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.priors]

    def point(self, u: np.ndarray) -> dict[str, float | int]:
        """Unit coordinates -> config overrides."""
        return {p.key: p.config_value(float(u[j])) for j, p in enumerate(self.priors)}


def load_calibration(path: str | Path) -> CalibrationSpec:
    """Read and validate a calibration file. Every problem is a one-line :class:`ConfigError`
    naming the key, before any run."""
    path = Path(path)
    data = read_toml(path)
    if not isinstance(data.get("calibrate"), dict):
        raise ConfigError(f"{path}: no [calibrate] table")
    extra = sorted(set(data) - {"calibrate"})
    if extra:
        raise ConfigError(f"{extra[0]}: unknown top-level key in a calibration file")
    cal = build_section(CalibrateTable, data["calibrate"], "calibrate")
    base_path = Path(cal.base)
    if not base_path.is_absolute():
        base_path = path.resolve().parent / base_path
    base = apply_overrides(read_toml(base_path), _flatten(cal.set))
    base_dir = str(base_path.resolve().parent)
    build_config(base, base_dir=base_dir)  # the base itself must be valid
    ints = _integer_keys()
    priors = [
        _parse_prior(key, v, _schema_key(key) in ints)
        for key, v in _flatten(cal.parameters).items()
    ]
    if not priors:
        raise ConfigError("calibrate.parameters: name at least one key to calibrate")
    metrics = metric_names(base, base_dir)
    targets = [_parse_target(m, v, metrics) for m, v in _flatten(cal.targets).items()]
    if not targets:
        raise ConfigError("calibrate.targets: name at least one metric and its observed value")
    population = cal.population or int(min(1000, max(20, cal.budget // 10)))
    spec = CalibrationSpec(
        name=cal.name or path.stem,
        path=path.resolve(),
        base=base,
        base_dir=base_dir,
        method=cal.method,
        budget=cal.budget,
        seed=cal.seed,
        population=population,
        generations=cal.generations,
        draws=cal.draws,
        predictive=cal.predictive,
        priors=priors,
        targets=targets,
        metrics=metrics,
    )
    need = minimum_budget(spec)
    if spec.budget < need:
        raise ConfigError(
            f"calibrate.budget: {spec.method} needs at least {need} runs here, got {spec.budget}"
            + (" (3 x population)" if spec.method == "abc-smc" else " (10 per parameter, >= 20)")
        )
    _check_corners(spec)
    return spec


def minimum_budget(spec: CalibrationSpec) -> int:
    """The fewest runs a method can work with: ABC-SMC a prior-predictive sample and two
    generations of ``population`` particles; the emulator ten design points per parameter."""
    if spec.method == "abc-smc":
        return 3 * spec.population
    return max(20, 10 * len(spec.priors))


def _parse_prior(key: str, value: Any, integer: bool) -> Prior:
    where = f"calibrate.parameters.{key}"
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
            raise ConfigError(f"{where}: a log range must lie above zero, got [{low}, {high}]")
    return Prior(key, float(low), float(high), log, integer)


def _parse_target(metric: str, value: Any, metrics: list[str]) -> Target:
    where = f"calibrate.targets.{metric}"
    if metric not in metrics:
        raise ConfigError(
            f"{where}: not a metric of this base config{did_you_mean(metric, metrics)}"
        )
    values = value if isinstance(value, list) else [value]
    if len(values) not in (1, 2):
        raise ConfigError(f"{where}: expected a value or [low, high], got {value!r}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"{where}: expected finite numbers, got {v!r}")
    if len(values) == 2 and not values[0] < values[1]:
        raise ConfigError(f"{where}: band low must be below high, got {value!r}")
    return Target(metric, float(values[0]), float(values[-1]))


@functools.cache
def _metric_names(base_json: str, base_dir: str) -> tuple[str, ...]:
    from experiments.sweep import run_metrics
    from model import ContagionModel

    base = json.loads(base_json)
    cfg = build_config(apply_overrides(base, {"steps": 1, "shocks": []}), base_dir=base_dir)
    model = ContagionModel(cfg, create_agents=False)
    model.run()
    metrics = run_metrics(model)
    return tuple(k for k, v in metrics.items() if isinstance(v, (int, float)))


def metric_names(base: dict, base_dir: str) -> list[str]:
    """The numeric metrics a run of ``base`` reports (the columns of a sweep's runs.parquet),
    found from one step of the base config without its shocks (they change no column)."""
    return list(_metric_names(json.dumps(base, sort_keys=True), base_dir))


def _check_corners(spec: CalibrationSpec) -> None:
    """Every corner of the prior box must make a valid config (the config's bounds are per
    key, so a box whose corners are valid is valid inside): fail before any run."""
    d = len(spec.priors)
    corners = (
        np.array(np.meshgrid(*[[0.0, 1.0]] * d)).reshape(d, -1).T
        if d <= 10
        else np.vstack([np.zeros(d), np.ones(d)])
    )
    for u in corners:
        point = spec.point(u)
        try:
            build_config(apply_overrides(spec.base, point), base_dir=spec.base_dir)
        except ConfigError as exc:
            shown = ", ".join(f"{k}={v!r}" for k, v in point.items())
            raise ConfigError(f"calibrate.parameters: point ({shown}): {exc}") from None


# --------------------------------------------------------------------------------------------
# Runs: durable records, resumed by replay
# --------------------------------------------------------------------------------------------


def run_seed(seed: int, *tags: int) -> int:
    """The seed of one run (63 bits) from the calibration seed and the run's place."""
    words = [seed & 0xFFFFFFFF, seed >> 32, _TAG_RUN, *tags]
    state = np.random.SeedSequence(words).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & (2**63 - 1)


class RunStore:
    """The runs of a calibration, one durable JSON record each in ``runs/``.

    ``evaluate`` takes a named batch of points, reads back the runs already on disk (a
    resumed calibration), gives the others to the executor and writes each as it finishes;
    it returns the metrics in the batch's order, so results never depend on finishing order.
    """

    def __init__(self, out: Path, spec: CalibrationSpec, executor, progress=None):
        self.dir = Path(out) / RUNS_DIR
        self.spec = spec
        self.executor = executor
        self.progress = progress
        self.done = 0
        self.ran = 0  # runs computed by this process (not read back from disk)
        self.elapsed = 0.0  # summed run times (what dominated: runs or the method)
        self.fn = functools.partial(run_one, base=spec.base, base_dir=spec.base_dir)

    def evaluate(self, name: str, points: list[dict], seeds: list[int]) -> list[dict | None]:
        """Metrics of each point (None for a failed run), in order."""
        results: list[dict | None] = [None] * len(points)
        todo = []
        for i, (point, seed) in enumerate(zip(points, seeds, strict=True)):
            rec = self._read(f"{name}-{i:05d}")
            if rec is not None:
                if rec["params"] != _jsonable(point) or rec["seed"] != seed:
                    raise UsageError(
                        f"--resume: {self.dir.parent} holds run {name}-{i:05d} of a different "
                        "calibration; use another --out"
                    )
                results[i] = rec["metrics"] if rec["status"] == "ok" else None
                self.elapsed += rec["elapsed"] or 0.0
            else:
                todo.append(RunTask(i, 0, seed, point))
        for task, result in self.executor.run(self.fn, todo) if todo else ():
            rec = {"params": _jsonable(task.params), "seed": task.seed, **result}
            storage.write_json(self.dir / f"{name}-{task.point:05d}.json", rec)
            results[task.point] = result["metrics"] if result["status"] == "ok" else None
            self.elapsed += result["elapsed"] if math.isfinite(result["elapsed"]) else 0.0
            self.ran += 1
            if self.progress is not None:
                self.progress.update()
        self.done += len(points)
        return results

    def _read(self, stem: str) -> dict | None:
        path = self.dir / f"{stem}.json"
        if not path.exists():
            return None
        return json.loads(path.read_text())


def _jsonable(point: dict) -> dict:
    return json.loads(json.dumps(point))


def metrics_table(spec: CalibrationSpec, u: np.ndarray, results: list[dict | None]) -> pd.DataFrame:
    """Rows of (parameter values, status, metrics) for points ``u`` and their results."""
    rows = []
    for j, res in enumerate(results):
        row = spec.point(u[j])
        row["status"] = "ok" if res is not None else "error"
        row.update({k: v for k, v in (res or {}).items() if isinstance(v, (int, float))})
        rows.append(row)
    return pd.DataFrame(rows)


def target_matrix(spec: CalibrationSpec, results: list[dict | None]) -> np.ndarray:
    """(n, k) target metrics of each run (NaN for a failed run)."""
    out = np.full((len(results), len(spec.targets)), np.nan)
    for i, res in enumerate(results):
        if res is not None:
            out[i] = [float(res.get(t.metric, np.nan)) for t in spec.targets]
    return out


def resample(weights: np.ndarray, n: int, seed: int, tag: int = 0) -> np.ndarray:
    """``n`` indices drawn by systematic resampling of ``weights`` (deterministic from seed)."""
    w = np.asarray(weights, dtype=float)
    w = w / w.sum()
    rng = np.random.default_rng(np.random.SeedSequence([seed, _TAG_RESAMPLE, tag]))
    positions = (rng.random() + np.arange(n)) / n
    idx = np.searchsorted(np.cumsum(w), positions, side="left")
    return np.minimum(idx, len(w) - 1)


# --------------------------------------------------------------------------------------------
# The folder and the driver
# --------------------------------------------------------------------------------------------


def fingerprint(spec: CalibrationSpec) -> str:
    """What identifies a calibration's results: everything that changes a run or the method."""
    ident = {
        "base": spec.base,
        "base_dir": spec.base_dir,
        "method": spec.method,
        "budget": spec.budget,
        "seed": spec.seed,
        "population": spec.population,
        "generations": spec.generations,
        "draws": spec.draws,
        "predictive": spec.predictive,
        "priors": [p.__dict__ for p in spec.priors],
        "targets": [t.__dict__ for t in spec.targets],
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()


def check_folder(out: Path, spec: CalibrationSpec, resume: bool) -> None:
    """Refuse an output folder that holds something else (before any worker starts)."""
    meta_path = out / META_FILE
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    if meta_path.exists():
        try:
            old = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            raise UsageError(f"{meta_path}: unreadable; cannot resume") from None
        if old.get("fingerprint") != fingerprint(spec):
            raise UsageError(
                f"--out {out}: holds a different calibration (base, priors, targets, method, "
                "budget or seed changed); choose another --out"
            )
        if not resume and (out / INCOMPLETE_MARKER).exists():
            raise UsageError(
                f"--out {out}: holds an unfinished calibration; pass --resume to finish it"
            )
    elif out.exists() and any(out.iterdir()) and not resume:
        raise UsageError(f"--out {out}: folder exists and is not empty")


def provenance(spec: CalibrationSpec) -> dict[str, Any]:
    """Where results came from: the project's provenance block (model/provenance.py; its
    config hash is of the calibration as resolved) plus the calibration libraries' versions
    and the command line."""
    from model.provenance import package_versions, utc_now
    from model.provenance import provenance as block

    text = json.dumps({"fingerprint": fingerprint(spec), "base": spec.base}, sort_keys=True)
    out = block(seed=spec.seed, config_text=text, started=utc_now(), elapsed=0.0)
    out["packages"].update(package_versions(("pyabc", "scikit-learn")))
    out["command"] = " ".join(sys.argv)
    return out


def _start(out: Path, spec: CalibrationSpec) -> None:
    (out / RUNS_DIR).mkdir(parents=True, exist_ok=True)
    (out / INCOMPLETE_MARKER).write_text("this calibration has runs still to do\n")
    meta_path = out / META_FILE
    if not meta_path.exists():
        meta = {
            "name": spec.name,
            "calibration_file": str(spec.path),
            "method": spec.method,
            "budget": spec.budget,
            "seed": spec.seed,
            "population": spec.population,
            "parameters": {
                p.key: [p.low, p.high, "log" if p.log else "linear"] for p in spec.priors
            },
            "targets": {t.metric: [t.low, t.high] if t.is_band else t.low for t in spec.targets},
            "base": spec.base,
            "base_dir": spec.base_dir,
            "fingerprint": fingerprint(spec),
            "provenance": provenance(spec),
        }
        storage.write_json(meta_path, meta, indent=1)
    storage.clear_temporaries(out / RUNS_DIR)


def infer(spec: CalibrationSpec, store: RunStore, out: Path) -> tuple[pd.DataFrame, dict]:
    """Run the spec's method; returns (posterior table, the method's account of itself)."""
    from experiments import calibration_methods as methods

    if spec.method == "abc-smc":
        return methods.abc_smc(spec, store, out)
    return methods.emulator(spec, store, out)


def posterior_predictive(
    spec: CalibrationSpec,
    store: RunStore,
    posterior: pd.DataFrame,
    n: int,
    name: str = "pp",
    overrides: dict | None = None,
    seed_tag: int = 1000,
) -> pd.DataFrame:
    """``n`` runs at posterior draws (resampled by weight), each with a fresh seed; with
    ``overrides`` (a stress scenario) applied on top of each draw."""
    if n == 0 or posterior.empty:
        return pd.DataFrame()
    w = posterior["weight"].to_numpy() if "weight" in posterior else np.ones(len(posterior))
    idx = resample(w, n, spec.seed, seed_tag)
    u = np.column_stack([p.unit(posterior[p.key].to_numpy()[idx]) for p in spec.priors])
    points = [{**spec.point(row), **(overrides or {})} for row in u]
    seeds = [run_seed(spec.seed, seed_tag, 0, i) for i in range(n)]
    results = store.evaluate(name, points, seeds)
    table = metrics_table(spec, u, results)
    table.insert(0, "draw", idx)
    return table


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user + system) of this process and of its finished child processes (the
    local workers, counted once their pool closes): what the method and the runs cost,
    whatever else the machine is doing."""
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def run_calibration(
    path: str | Path,
    *,
    out: str | Path | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    resume: bool = False,
    predict: str | Path | None = None,
    progress: bool = True,
) -> int:
    """``contagion calibrate``: infer the posterior, run the posterior predictive, write the
    report; with ``predict``, run a stress scenario over the posterior draws.

    Args:
        path: the calibration TOML file.
        out: the calibration folder (default ``results/<name>``).
        workers: local worker processes (default one per core), or Dask workers of
            ``scheduler="local"``.
        scheduler: a Dask scheduler address (``tcp://HOST:PORT``) or ``"local"``.
        resume: finish a calibration already started in ``out`` (runs on disk are reused).
        predict: a stress file (``[stress]``) to run over the posterior draws.

    Returns:
        the exit status: 0 when done, 1 when the cluster was lost, 130 when interrupted.
    """
    from experiments import calibration_report as report
    from experiments.progress import progress_bar
    from experiments.sweep import SweepAborted

    spec = load_calibration(path)
    stress = report.load_stress(predict, spec) if predict is not None else None
    out = Path(out) if out is not None else Path("results") / spec.name
    finished = (out / POSTERIOR_TABLE).exists() and not (out / INCOMPLETE_MARKER).exists()
    check_folder(out, spec, resume or (finished and stress is not None))
    executor = make_executor(workers, scheduler)
    where = f"Dask at {scheduler}" if scheduler else f"{executor.workers} worker(s)"
    print(
        f"{spec.name}: {spec.method}, budget {spec.budget} runs (+{spec.predictive} predictive) "
        f"on {where} -> {out}",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    cpu0 = _cpu_seconds()
    total = (0 if finished else spec.budget + spec.predictive) + (stress.draws if stress else 0)
    bar = progress_bar(total, unit="run", desc=spec.name, quiet=not progress)
    store = RunStore(out, spec, executor, bar)
    try:
        if not finished:
            _start(out, spec)
            posterior, info = infer(spec, store, out)
            storage.write_parquet(out / POSTERIOR_TABLE, posterior)
            predictive = posterior_predictive(spec, store, posterior, spec.predictive)
            storage.write_parquet(out / PREDICTIVE_TABLE, predictive)
            driver, workers_cpu = (b - a for a, b in zip(cpu0, _cpu_seconds(), strict=True))
            info.update(
                wall_seconds=time.perf_counter() - t0,
                run_seconds=store.elapsed,
                workers=executor.workers,
                runs_computed=store.ran,
                driver_cpu_seconds=driver,
                worker_cpu_seconds=workers_cpu,
            )
            storage.write_json(out / INFO_FILE, info, indent=1)
            report.write_report(out, spec, posterior, predictive, info)
            (out / INCOMPLETE_MARKER).unlink(missing_ok=True)
        if stress is not None:
            posterior = pd.read_parquet(out / POSTERIOR_TABLE)
            folder = report.run_stress(spec, stress, store, posterior, out)
            print(f"{spec.name}: stress {stress.name}: {folder}")
    except SweepAborted as exc:
        print(f"contagion: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"contagion: interrupted; finished runs are saved, --resume finishes {out}",
            file=sys.stderr,
        )
        return 130
    finally:
        bar.close()
        executor.close()
    print(f"{spec.name}: done in {time.perf_counter() - t0:.1f}s; report: {out / 'report.md'}")
    return 0
