"""The ``contagion`` command line.

``contagion run | sweep | plot | demo | viz | validate``. Bad input exits with status 2 and one
line naming the key or file and what is wrong; no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import warnings
from pathlib import Path

from model.errors import ConfigError, UsageError

__all__ = ["main"]

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


def cmd_run(args) -> int:
    from model import ContagionModel, load_config
    from model.results import check_run_folder

    overrides = _parse_sets(args.set)
    if args.seed is not None:
        overrides["seed"] = args.seed
    cfg = load_config(args.config, overrides=overrides)
    out = Path(args.out) if args.out else Path("results") / cfg.name
    check_run_folder(out)  # a bad --out fails now, not after the run
    t0 = time.perf_counter()
    model = ContagionModel(cfg)
    built = time.perf_counter() - t0
    model.run()
    ran = time.perf_counter() - t0 - built
    model.write_results(out)
    s = model.summary()
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
    print(f"run folder: {out}")
    return 0


# Commands implemented in their own modules: name -> (module, function).
_DELEGATED = {
    "sweep": ("experiments.sweep", "sweep_command"),
    "plot": ("experiments.plots", "plot_command"),
    "demo": ("experiments.demo", "demo_command"),
    "viz": ("experiments.app", "viz_command"),
    "validate": ("experiments.validate", "validate_command"),
}


def _delegate(name):
    def run(args):
        module_name, func = _DELEGATED[name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("experiments"):
                raise UsageError(f"contagion {name}: not available in this installation") from None
            raise UsageError(
                f"contagion {name}: needs the optional package '{exc.name}' "
                "(pip install 'margin-contagion[dev]')"
            ) from None
        return getattr(module, func)(args)

    return run


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="contagion", description="Market contagion through forced liquidations.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("run", help="run one config and write its run folder")
    r.add_argument("config", help="TOML config file")
    r.add_argument("--out", help="run folder (default results/<name>)")
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
    s.add_argument("--out", help="sweep folder (default results/<sweep name>)")
    s.add_argument("--workers", type=int, default=None, help="local worker processes")
    s.add_argument("--scheduler", help="Dask scheduler address (tcp://HOST:PORT) or 'local'")
    s.add_argument("--resume", action="store_true", help="finish an interrupted sweep")
    s.set_defaults(func=_delegate("sweep"))

    pl = sub.add_parser("plot", help="draw the figures of a run or sweep folder")
    pl.add_argument("dir", help="run or sweep folder")
    pl.set_defaults(func=_delegate("plot"))

    d = sub.add_parser("demo", help="a narrated cascade in the terminal")
    d.add_argument("--out", help="run folder (default results/demo)")
    d.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="change the demo's market, e.g. --set assets.BTC.depth=4e6 (repeatable)",
    )
    d.set_defaults(func=_delegate("demo"))

    v = sub.add_parser("viz", help="the interactive dashboard (Solara)")
    v.add_argument("--port", type=int, default=8765)
    v.add_argument("--host", default="127.0.0.1")
    v.add_argument("--no-open", dest="open", action="store_false", help="do not open a browser tab")
    v.set_defaults(func=_delegate("viz"))

    va = sub.add_parser("validate", help="check the engine against theory, literature and data")
    va.add_argument("--out", help="report folder (default results/validation)")
    va.add_argument("--quick", action="store_true", help="the quick variants (as in the tests)")
    va.add_argument(
        "--returns",
        metavar="CSV",
        help="your own return series (a 'return' or a price column) as the stylized-facts "
        "reference column instead of the S&P 500",
    )
    va.set_defaults(func=_delegate("validate"))
    return p


def _format_warning(message, category, filename, lineno, line=None):
    return f"contagion: warning: {message}\n"


def main(argv=None) -> int:
    warnings.formatwarning = _format_warning
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except (ConfigError, UsageError) as exc:
        print(f"contagion: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("contagion: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
