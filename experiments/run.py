"""``contagion run``: one config, one run, one run folder with its cascade drawn.

The model writes the run folder's data (:func:`model.results.write_run`); the drawing of its
largest cascade (``cascade.png``) belongs to the experiments layer, so it is added here, after
the folder is complete: a folder whose drawing failed still holds every result.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from experiments.folders import RUN_FOLDER, OutputFolder
from experiments.progress import progress_bar
from model import storage

__all__ = ["CASCADE_PNG", "draw_run_cascade", "run_config", "write_run_folder"]

CASCADE_PNG = "cascade.png"


def draw_run_cascade(folder: str | Path) -> Path:
    """Draw the largest cascade of a written run folder into its ``cascade.png``.

    Only that step's edge events and liquidations are read: the step is found from the
    edge events' steps and targets read a row group at a time, and the two tables are read
    with a filter on it, so a long run's tables (tens of millions of edge events) are never
    held whole."""
    import pyarrow.parquet as pq

    from experiments.cascade_drawing import largest_cascade_step_of_parts, write_cascade_png
    from model.results import LOG_ROWS_PER_GROUP

    folder = Path(folder)
    edges_path = folder / "contagion_edges.parquet"
    batches = pq.ParquetFile(edges_path).iter_batches(
        batch_size=LOG_ROWS_PER_GROUP, columns=["step", "target"]
    )
    step = largest_cascade_step_of_parts(b.to_pandas() for b in batches)
    only = None if step is None else [("step", "==", step)]
    edges = storage.read_parquet(edges_path, filters=only)
    liquidations = storage.read_parquet(folder / "liquidations.parquet", filters=only)
    path = folder / CASCADE_PNG
    storage.atomic_write(path, lambda p: write_cascade_png(p, edges, liquidations, step))
    return path


def write_run_folder(model, out: str | Path) -> Path:
    """Write ``model``'s run folder and draw its cascade; returns the folder.

    A drawing that fails is a warning, not an error: the folder already holds every result,
    and the figure can be drawn again from it (:func:`draw_run_cascade`). A file that cannot
    be written (a full disk, say) is still an error."""
    folder = model.write_results(out)
    try:
        draw_run_cascade(folder)
    except OSError:
        raise
    except Exception as exc:  # (the renderer's own limits, say: the data are all written)
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        warnings.warn(f"{CASCADE_PNG} not drawn ({reason})", stacklevel=2)
    return folder


def run_config(
    config: str | Path,
    *,
    out: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    overwrite: bool = False,
    quiet: bool = False,
) -> int:
    """Run one config and write its run folder, printing a one-line summary.

    Args:
        config: the TOML config file.
        out: the run folder (default ``results/<name>``); a folder that exists and is not
            empty must be a run folder, replaced only with ``overwrite``
            (:class:`experiments.folders.OutputFolder`).
        overrides: dotted-key overrides (``--set`` and ``--seed``), parsed by each key's type.
        overwrite: replace an existing run folder (the new one is written beside it and
            renamed over it when complete).
        quiet: no progress bar (the summary line and warnings still print).

    Returns:
        the exit status (0).
    """
    from model import ContagionModel, load_config

    cfg = load_config(config, overrides=overrides)
    target = OutputFolder(out, RUN_FOLDER, overwrite=overwrite, default=Path("results") / cfg.name)
    with target as folder:  # a bad --out fails now, not after the run
        t0 = time.perf_counter()
        model = ContagionModel(cfg)
        built = time.perf_counter() - t0
        with progress_bar(cfg.steps, unit="step", desc=cfg.name, quiet=quiet) as bar:
            model.run(on_step=lambda t: bar.update())
        ran = time.perf_counter() - t0 - built
        write_run_folder(model, folder)
    s = storage.read_json(target.path / "summary.json")  # (the summary the folder holds)
    print(
        f"{cfg.name}: {s['traders']} traders, {s['steps']} steps in {ran:.1f}s "
        f"(+{built:.1f}s set-up); {s['accounts_liquidated']} accounts liquidated "
        f"({100 * s['fraction_liquidated']:.2f}%), {s['liquidations']} fills, "
        f"${s['liquidated_notional']:,.0f} closed; worst drawdown "
        f"{100 * s['max_drawdown']['worst']:.1f}% ({s['max_drawdown']['worst_asset']}); "
        f"bad debt ${s['bad_debt']:,.0f}"
    )
    if cfg.scenario is not None:
        from experiments.scenarios import scenario_report

        print(scenario_report(model, s))
    print(f"run folder: {target.path}")
    return 0
