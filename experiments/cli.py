"""The ``contagion`` command line.

``contagion run | sweep | calibrate | plot | demo | viz | validate | config``, and
``contagion --version``. Bad input exits with status 2 and one line naming the key or file and
what is wrong; no traceback. So does an operating-system error (permission denied, disk full, a
file where a folder is expected): one line naming the path and the reason.

Options shared by the commands that write a folder (:func:`add_output_options`): ``--out DIR``,
``--overwrite`` (replace a folder of the command's own kind, :mod:`experiments.folders`) and
``--quiet`` (no progress, :mod:`experiments.progress`: only the result lines, warnings and
errors).

This module is the only one that knows about ``argparse``: each command turns its arguments
into typed values and calls one library function (:func:`experiments.run.run_config`,
:func:`experiments.sweep.run_sweep_command`, :func:`experiments.calibrate.run_calibration`,
:func:`experiments.plots.plot_folder`, :func:`experiments.demo.run_demo_command`,
:func:`experiments.app.serve_dashboard`, :func:`experiments.validate.run_validation`,
:func:`experiments.reference.print_config_reference`). Nothing imports this module back.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from pathlib import Path

from model.allocation import without_hugepage_advice
from model.errors import ConfigError, UsageError, one_line

__all__ = ["add_output_options", "build_parser", "main", "os_error_line"]

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        raise UsageError(f"{self.prog}: {message}")


def _parse_sets(items) -> dict:
    overrides = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"--set {item}: empty key")
        overrides[key] = value.strip()
    return overrides


# Optional packages -> the extra of pyproject.toml that installs them.
_EXTRAS = {
    "solara": "viz",
    "ipyvue": "viz",
    "ipyvuetify": "viz",
    "dask": "dask",
    "distributed": "dask",
    "SALib": "sensitivity",
    "arch": "validation",
}


def _library(command: str, module_name: str, name: str):
    """``module_name.name``, imported when its command runs (so ``contagion run`` never loads
    the plotting, dashboard or cluster packages); a missing optional package is a usage error.
    """
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("experiments"):
            raise UsageError(f"contagion {command}: not available in this installation") from None
        extra = _EXTRAS.get((exc.name or "").split(".")[0], "dev")
        raise UsageError(
            f"contagion {command}: needs the optional package '{exc.name}' "
            f"(pip install -e '.[{extra}]' in the project's folder)"
        ) from None
    return getattr(module, name)


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def add_output_options(
    parser: argparse.ArgumentParser, *, default: str, what: str, overwrite: bool = True
) -> None:
    """``--out``, ``--overwrite`` (unless the command resumes instead) and ``--quiet``: the
    options of every command that writes a folder, with the same words everywhere."""
    parser.add_argument("--out", metavar="DIR", help=f"{what} (default {default})")
    if overwrite:
        parser.add_argument(
            "--overwrite",
            action="store_true",
            help=f"replace an existing {what}: the new one is written beside it and takes its "
            "place only when complete",
        )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress: only the result, warnings and errors"
    )


def cmd_run(args) -> int:
    overrides = _parse_sets(args.set)
    if args.seed is not None:
        overrides["seed"] = args.seed
    run_config = _library("run", "experiments.run", "run_config")
    return run_config(
        args.config,
        out=_path(args.out),
        overrides=overrides,
        overwrite=args.overwrite,
        quiet=args.quiet,
    )


def cmd_sweep(args) -> int:
    run_sweep_command = _library("sweep", "experiments.sweep", "run_sweep_command")
    return run_sweep_command(
        Path(args.sweep),
        out=_path(args.out),
        workers=args.workers,
        scheduler=args.scheduler,
        resume=args.resume,
        quiet=args.quiet,
    )


def cmd_calibrate(args) -> int:
    run_calibration = _library("calibrate", "experiments.calibrate", "run_calibration")
    return run_calibration(
        Path(args.file),
        out=_path(args.out),
        workers=args.workers,
        scheduler=args.scheduler,
        resume=args.resume,
        predict=_path(args.predict),
        progress=not args.quiet,
    )


def cmd_plot(args) -> int:
    plot_folder = _library("plot", "experiments.plots", "plot_folder")
    folder = Path(args.dir)
    files = plot_folder(folder)
    for path in files:
        print(path)
    if not files:
        print(f"{folder}: nothing to draw for these keys", file=sys.stderr)
    return 0


def cmd_demo(args) -> int:
    run_demo_command = _library("demo", "experiments.demo", "run_demo_command")
    return run_demo_command(
        out=_path(args.out),
        overrides=_parse_sets(args.set),
        overwrite=args.overwrite,
        quiet=args.quiet,
    )


def cmd_viz(args) -> int:
    serve_dashboard = _library("viz", "experiments.app", "serve_dashboard")
    return serve_dashboard(args.host, args.port, open_browser=args.open)


def cmd_validate(args) -> int:
    run_validation = _library("validate", "experiments.validate", "run_validation")
    return run_validation(
        out=_path(args.out),
        quick=args.quick,
        returns_csv=_path(args.returns),
        overwrite=args.overwrite,
        quiet=args.quiet,
    )


def cmd_config(args) -> int:
    print_config_reference = _library("config", "experiments.reference", "print_config_reference")
    return print_config_reference(args.key, markdown=args.markdown)


def build_parser() -> argparse.ArgumentParser:
    from model.provenance import DISTRIBUTION, project_version

    p = _Parser(prog="contagion", description="Market contagion through forced liquidations.")
    p.add_argument("--version", action="version", version=f"{DISTRIBUTION} {project_version()}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("run", help="run one config and write its run folder")
    r.add_argument("config", help="TOML config file")
    add_output_options(r, default="results/<name>", what="run folder")
    r.add_argument("--seed", type=int, help="override the config's seed")
    r.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set market.volatility=0.8 (repeatable)",
    )
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("sweep", help="run a parameter sweep")
    s.add_argument("sweep", help="sweep TOML file")
    add_output_options(s, default="results/<sweep name>", what="sweep folder", overwrite=False)
    s.add_argument("--workers", type=int, default=None, help="local worker processes")
    s.add_argument("--scheduler", help="Dask scheduler address (tcp://HOST:PORT) or 'local'")
    s.add_argument("--resume", action="store_true", help="finish an interrupted sweep")
    s.set_defaults(func=cmd_sweep)

    c = sub.add_parser("calibrate", help="posterior of parameters given observed metrics")
    c.add_argument("file", help="calibration TOML file ([calibrate])")
    add_output_options(c, default="results/<name>", what="calibration folder", overwrite=False)
    c.add_argument("--workers", type=int, default=None, help="local worker processes")
    c.add_argument("--scheduler", help="Dask scheduler address (tcp://HOST:PORT) or 'local'")
    c.add_argument("--resume", action="store_true", help="finish an interrupted calibration")
    c.add_argument(
        "--predict",
        metavar="STRESS.toml",
        help="run a stress scenario ([stress]) over the posterior draws",
    )
    c.set_defaults(func=cmd_calibrate)

    pl = sub.add_parser("plot", help="draw the figures of a run or sweep folder")
    pl.add_argument("dir", help="run or sweep folder")
    pl.set_defaults(func=cmd_plot)

    d = sub.add_parser("demo", help="a narrated cascade in the terminal")
    add_output_options(d, default="results/demo", what="demo folder")
    d.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="change the demo's market, e.g. --set assets.BTC.depth=4e6 (repeatable)",
    )
    d.set_defaults(func=cmd_demo)

    v = sub.add_parser("viz", help="the interactive dashboard (Solara)")
    v.add_argument("--port", type=int, default=8765)
    v.add_argument("--host", default="127.0.0.1")
    v.add_argument("--no-open", dest="open", action="store_false", help="do not open a browser tab")
    v.set_defaults(func=cmd_viz)

    va = sub.add_parser("validate", help="check the engine against theory, literature and data")
    add_output_options(va, default="results/validation", what="validation report folder")
    va.add_argument("--quick", action="store_true", help="the quick variants (as in the tests)")
    va.add_argument(
        "--returns",
        metavar="CSV",
        help="your own return series (a 'return' or a price column) as the stylized-facts "
        "reference column instead of the S&P 500",
    )
    va.set_defaults(func=cmd_validate)

    c = sub.add_parser(
        "config",
        help="every config key: type, default, allowed range, unit, meaning",
        description="Print the reference of the config keys (docs/configuration.md).",
    )
    c.add_argument(
        "key",
        nargs="?",
        metavar="KEY|SECTION",
        help="a key (margin.fee, assets.BTC.depth) or a section (margin); default: all",
    )
    c.add_argument(
        "--markdown", action="store_true", help="the whole reference as Markdown (the docs page)"
    )
    c.set_defaults(func=cmd_config)
    return p


def _format_warning(message, category, filename, lineno, line=None):
    return f"contagion: warning: {message}\n"


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings on stderr as one line each, above a progress bar rather than through it."""
    from experiments.progress import say

    say(_format_warning(message, category, filename, lineno).rstrip("\n"), err=True)


def os_error_line(exc: OSError) -> str:
    """An operating-system error as one line: the path(s) and the reason, no traceback.

    ``[Errno 13] Permission denied: 'x'`` becomes ``x: permission denied``; errors raised
    without a path (pyarrow's, say) keep their own text, on one line.
    """
    reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    reason = reason[:1].lower() + reason[1:]
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    if not paths:
        return one_line(reason)
    return one_line(f"{' -> '.join(paths)}: {reason}")


@without_hugepage_advice  # (every command: a million traders' tables and drawings too)
def main(argv=None) -> int:
    warnings.formatwarning = _format_warning
    warnings.showwarning = _show_warning
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except SystemExit as exc:  # --version and --help print and stop here
        return exc.code if isinstance(exc.code, int) else 0
    except (ConfigError, UsageError) as exc:
        print(f"contagion: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # the last resort: every command catches where it reads and writes
        print(f"contagion: error: {os_error_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("contagion: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
