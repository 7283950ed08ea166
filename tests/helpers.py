"""Builders the test modules share: import them from here (``from tests.helpers import ...``).

Fixtures live in tests/conftest.py; plain functions and data live here, so that no test module
imports another test module.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "ADL_WORKED_BOOK",
    "BROWSER_NAMES",
    "CALM_MAKERS",
    "CHROMIUM_OVERRIDE",
    "DEBIAN_CHROMIUM",
    "DECAY_RANGE",
    "DECAY_WINDOW",
    "HAND_EDGES",
    "IMPACT_BANDS",
    "IMPACT_DEPTH",
    "IMPACT_DURATIONS",
    "IMPACT_PRICE",
    "IMPACT_SIZES",
    "RECOVERY",
    "REQUIRE_BROWSER",
    "STATIC_BOOK",
    "adl_worked_fills",
    "adl_worked_table",
    "comparable_bytes",
    "decay_checks",
    "find_chromium",
    "hand_edges",
    "hand_liquidations",
    "metaorder_impacts",
    "recovery_calibration",
    "run_schedule",
    "small_config",
]


PROVENANCE_START = '\n  "provenance": {'


def comparable_bytes(path: Path) -> bytes:
    """A run folder file's bytes, for comparing two runs with the same seed byte for byte.

    Every file is a function of the config and the seed except summary.json's last block,
    ``provenance`` (versions, commit, start time, elapsed seconds): for summary.json the bytes
    before that block are returned (docs/reliability.md, "Same seed, same bytes").
    """
    data = Path(path).read_bytes()
    if Path(path).name != "summary.json":
        return data
    text = data.decode("utf-8")
    assert text.count(PROVENANCE_START) == 1, "summary.json without its provenance block"
    head, tail = text.split(PROVENANCE_START)
    assert tail.rstrip().endswith("}\n}") and tail.count('"') > 10  # the block ends the file
    return head.encode("utf-8")


def small_config(**overrides):
    """A small two-asset config as a TOML-shaped dict, with top-level overrides merged in."""
    data = {
        "name": "small",
        "seed": 7,
        "steps": 30,
        "market": {
            "volatility": 0.8,
            "correlation": 0.5,
            "impact_exponent": 0.5,
            "resilience": 0.1,
        },
        "assets": [
            {"symbol": "BTC", "price": 60000.0, "depth": 2.0e6, "max_leverage": 50},
            {"symbol": "ETH", "price": 3000.0, "depth": 1.0e6, "max_leverage": 25},
        ],
        "traders": {"count": 500, "leverage": 15.0, "assets_per_trader": 2},
        "margin": {"mode": "cross", "liquidation": "partial", "insurance_fund": 1.0e5},
        "shocks": [{"step": 10, "asset": "BTC", "return": -0.08}],
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


# --------------------------------------------------------------------------------------------
# A hand-made cascade: liquidation fills and contagion edges small enough to work out by hand
# --------------------------------------------------------------------------------------------


def hand_liquidations() -> pd.DataFrame:
    """Fills of three cascades (steps 3, 7, 9), with one ADL fill that is not a liquidation."""
    rows = [
        # step, round, trader, asset, notional, kind
        (3, 1, 1, "BTC", 100.0, "full"),
        (3, 1, 1, "ETH", 50.0, "full"),
        (3, 1, 2, "BTC", 80.0, "partial"),
        (3, 2, 3, "BTC", 40.0, "full"),
        (3, 2, 4, "ETH", 60.0, "full"),
        (3, 2, 1, "BTC", 30.0, "partial"),
        (3, 2, 99, "BTC", 500.0, "adl"),  # not a liquidation
        (3, 3, 5, "BTC", 10.0, "full"),
        (7, 1, 6, "ETH", 5.0, "full"),
        (9, 1, 7, "BTC", 1.0, "full"),
        (9, 1, 8, "BTC", 2.0, "full"),
        (9, 1, 9, "BTC", 3.0, "full"),
        (9, 2, 10, "BTC", 4.0, "full"),
    ]
    df = pd.DataFrame(rows, columns=["step", "round", "trader_id", "asset", "notional", "kind"])
    df["kind"] = pd.Categorical(df["kind"], ["full", "partial", "adl"])
    return df


HAND_EDGES = [
    # step, round, source (None: root), target, weight
    (3, 1, None, 1, 1.0),
    (3, 1, None, 2, 1.0),
    (3, 2, 1, 3, 0.6),
    (3, 2, 2, 3, 0.4),
    (3, 2, 1, 4, 0.5),
    (3, 2, 2, 4, 0.5),
    (3, 2, 1, 1, 0.7),
    (3, 2, 2, 1, 0.3),
    (3, 3, 3, 5, 0.2),
    (3, 3, 4, 5, 0.3),
    (3, 3, 1, 5, 0.5),
    (7, 1, None, 6, 1.0),
    (9, 1, None, 7, 1.0),
    (9, 1, None, 8, 1.0),
    (9, 1, None, 9, 1.0),
    (9, 2, 7, 10, 1 / 6),
    (9, 2, 8, 10, 2 / 6),
    (9, 2, 9, 10, 3 / 6),
]


def hand_edges() -> pd.DataFrame:
    """HAND_EDGES as a contagion_edges table (root edges come from a ``step`` source)."""
    df = pd.DataFrame(HAND_EDGES, columns=["step", "round", "source", "target", "weight"])
    df["source_kind"] = pd.Categorical(
        np.where(df["source"].isna(), "step", "trader"), ["trader", "step", "others"]
    )
    df["source"] = df["source"].astype("Int64")
    return df


# --------------------------------------------------------------------------------------------
# One bankrupt book deleveraged under each ADL ranking (the table of docs/market-realism.md)
# --------------------------------------------------------------------------------------------

# (wallet, quantity, entry) of trader 0, a long bought at 100 on 100 of collateral, and of four
# shorts S1..S4 (traders 1..4). A -10% shock closes the long at 90 with equity -400: its
# bankruptcy price is 98, and ADL must take back 8 a unit on 50 units.
ADL_WORKED_BOOK = [
    (100.0, 50.0, 100.0),
    (100.0, -20.0, 100.0),
    (1000.0, -40.0, 100.0),
    (50.0, -10.0, 91.0),
    (500.0, -30.0, 85.0),
]


def adl_worked_fills(ranking: str) -> pd.DataFrame:
    """The ADL fills of :data:`ADL_WORKED_BOOK` under ``ranking``: trader_id, quantity, price,
    giveback (against the round's price), in the order they were made."""
    from model import ContagionModel
    from model.config import build_config
    from model.population import Population

    wallet, qty, entry = (np.array(c, dtype=float) for c in zip(*ADL_WORKED_BOOK, strict=True))
    n = len(wallet)
    pop = Population(
        ids=np.arange(n, dtype=np.int64),
        wallet=wallet,
        qty=qty[:, None],
        entry=entry[:, None],
        isolated=np.zeros((n, 1), bool),
        margin=np.zeros((n, 1)),
        strategy=np.array(["hold"] * n, dtype=object),
    )
    cfg = build_config(
        {
            "seed": 3,
            "steps": 1,
            "market": {"volatility": 0.0, "resilience": 0.0},
            "assets": [{"symbol": "X", "price": 100.0, "depth": 1.0e15, "max_leverage": 100}],
            "traders": {"count": 0},
            "margin": {
                "liquidation": "full",
                "fee": 0.0,
                "insurance_fund": 0.0,
                "adl_ranking": ranking,
            },
            "shocks": [{"step": 1, "asset": "X", "return": -0.10}],
        }
    )
    m = ContagionModel(cfg, population=pop).run()
    fills = m.tables()["liquidations"].query("kind == 'adl'").reset_index(drop=True)
    fills["giveback"] = np.abs(fills["quantity"]) * (fills["price"] - m.market.price[0])
    return fills[["trader_id", "quantity", "price", "giveback"]]


def adl_worked_table() -> str:
    """The markdown table of :data:`ADL_WORKED_BOOK` deleveraged under every ranking."""
    from model.adl import RANKINGS

    lines = [
        "| `margin.adl_ranking` | fills: short, units closed at price | given back |",
        "| --- | --- | --- |",
    ]
    for ranking in RANKINGS:
        fills = adl_worked_fills(ranking)
        closed = "; ".join(
            f"S{int(f.trader_id)} {abs(f.quantity):g} at {f.price:.2f}" for f in fills.itertuples()
        )
        given = " + ".join(f"{g:.2f}" for g in fills["giveback"])
        lines.append(f"| `{ranking}` | {closed} | {given} = {fills['giveback'].sum():.2f} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# The impact law of the market makers' book (tests/test_impact_law.py, docs/market-realism.md)
# --------------------------------------------------------------------------------------------

IMPACT_SIZES = np.array([0.1, 0.3, 1.0, 3.0, 10.0, 30.0])  # Q / d, d the 1% depth in quantity
IMPACT_DURATIONS = (20, 40, 80, 160)
IMPACT_PRICE, IMPACT_DEPTH = 100.0, 1.0e6
# The bands, stated before the measurement: the slope of log peak impact on log Q; the most
# the peak of one size may vary with the duration (max / min); the slope of log impact on
# log tau over DECAY_WINDOW (in units of T); the largest relative gap to sqrt(1 + x) - sqrt(x)
# over DECAY_RANGE (x = tau / T).
IMPACT_BANDS = {"slope": (0.45, 0.55), "spread": 1.25, "decay_slope": (-0.65, -0.35), "gap": 0.15}
DECAY_WINDOW = (5, 30)
DECAY_RANGE = (0.1, 30)

CALM_MAKERS = {
    "model": "market_makers",
    "refill_time": 0.25,
    "capital": 1.0e4,  # losses on the makers' inventory leave their capital factor at 1
    "inventory_limit": 1.0e9,  # their inventory factor too
    "vol_exponent": 0.0,  # and the only returns are the metaorder's own
}
STATIC_BOOK = {"model": "static"}


def run_schedule(schedule, liquidity):
    """Run one scripted account through ``len(schedule)`` steps, trading row ``t - 1`` of
    ``schedule`` (steps, A) in step ``t``, on assets that never move by themselves (volatility
    0) and a book set by ``liquidity`` (a ``[liquidity]`` table): (steps + 1, A) prices, the
    account's final equity, and the model."""
    from agents.strategies import Strategy
    from model import ContagionModel
    from model.config import build_config
    from model.population import Population

    schedule = np.asarray(schedule, dtype=float)
    steps, a = schedule.shape

    class Scripted(Strategy):
        name = "scripted"

        def orders(self, rows):
            t = self.model.steps - 1
            if t >= steps:
                return np.zeros((len(rows), a))
            return np.repeat(schedule[t][None, :], len(rows), axis=0)

    cfg = build_config(
        {
            "name": "impact",
            "steps": steps,
            "market": {"volatility": 0.0, "impact_exponent": 0.5, "resilience": 0.1},
            "assets": [
                {"symbol": f"A{j}", "price": IMPACT_PRICE, "depth": IMPACT_DEPTH,
                 "max_leverage": 100}
                for j in range(a)
            ],
            "traders": {"count": 0},
            "margin": {"maintenance": 0.005, "fee": 0.0, "adl": False},
            "liquidity": liquidity,
        }
    )  # fmt: skip
    pop = Population(
        np.array([0]), np.array([1e12]), np.zeros((1, a)), np.zeros((1, a)),
        np.zeros((1, a), bool), np.zeros((1, a)), np.array(["hold"], dtype=object),
    )  # fmt: skip
    model = ContagionModel(cfg, population=pop, create_agents=False)
    rule = Scripted(model)
    model.strategies = {rule.name: rule}
    model.strategy_rows = {rule.name: np.array([0])}
    model.run()
    prices = np.vstack([np.full(a, IMPACT_PRICE), model.market_history.price])
    return prices, float(model.book.equity(model.mark, np.array([0]))[0]), model


def metaorder_impacts(liquidity, duration, tail=30):
    """Metaorders buying each of :data:`IMPACT_SIZES` (one asset each) in equal children over
    ``duration`` steps, then nothing for ``tail`` durations: (sizes,) peak impact
    ``log(P_T / P_0)`` and (tail T + 1, sizes) the impact from the end on (row ``tau``)."""
    d_qty = IMPACT_DEPTH / IMPACT_PRICE
    schedule = np.zeros((duration * (1 + tail), IMPACT_SIZES.size))
    schedule[:duration] = IMPACT_SIZES * d_qty / duration
    prices, _, _ = run_schedule(schedule, liquidity)
    impact = np.log(prices / IMPACT_PRICE)
    return impact[duration], impact[duration:]


def decay_checks(peak, after, duration):
    """(sizes,) slopes of log I on log tau over :data:`DECAY_WINDOW` (in durations), and the
    largest relative gap of ``I(T + tau) / I(T)`` to ``sqrt(1 + x) - sqrt(x)`` over
    :data:`DECAY_RANGE` (``x = tau / T``)."""
    tau = np.arange(after.shape[0])
    first, last = DECAY_WINDOW
    window = (tau >= first * duration) & (tau <= last * duration)
    slopes = [
        np.polyfit(np.log(tau[window]), np.log(after[window, j]), 1)[0] for j in range(peak.size)
    ]
    x = tau / duration
    keep = (x >= DECAY_RANGE[0]) & (x <= DECAY_RANGE[1])
    law = np.sqrt(1 + x[keep]) - np.sqrt(x[keep])
    gap = np.max(np.abs(after[keep] / peak[None, :] / law[:, None] - 1))
    return np.array(slopes), gap


# --------------------------------------------------------------------------------------------
# The browser for tests marked ``browser`` (see tests/conftest.py)
# --------------------------------------------------------------------------------------------

DEBIAN_CHROMIUM = "/usr/bin/chromium"
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome")
# A path to use instead of looking: a browser elsewhere, or a missing path to see the skip.
CHROMIUM_OVERRIDE = "CONTAGION_CHROMIUM"
# Set to 1 (CI does) to make a missing browser an error instead of a skip.
REQUIRE_BROWSER = "CONTAGION_REQUIRE_BROWSER"


def find_chromium() -> str | None:
    """The Chromium (or Chrome) executable the browser tests drive, or None if there is none.

    ``CONTAGION_CHROMIUM`` names it outright when set (and nothing else is looked at);
    otherwise Debian's /usr/bin/chromium, then the first of BROWSER_NAMES on PATH.
    """
    override = os.environ.get(CHROMIUM_OVERRIDE)
    candidates = [override] if override else [DEBIAN_CHROMIUM, *map(shutil.which, BROWSER_NAMES)]
    for path in candidates:
        if path and Path(path).is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


# The parameter-recovery check of docs/calibration.md ("Proven on itself"): a hidden truth on a
# small one-asset base makes the targets (averaged over a few seeds), and the calibration's 90%
# interval must cover the truth and be narrower than ``width_below`` of the prior's.
RECOVERY = {
    "traders": 150,
    "steps": 20,
    "truth": {"traders.leverage": 8.0},
    "prior": [2, 50, "log"],
    "seeds": 5,
    "targets": ["fraction_liquidated", "liquidated_share"],
    "budget": {"abc-smc": 600, "emulator": 120},
    "population": 50,
    "predictive": 20,
    "width_below": 0.4,
}


def recovery_calibration(folder: Path, method: str, budget: int | None = None) -> Path:
    """Write the recovery check's base config (``base.toml``) and calibration file
    (``cal.toml``, returned) into ``folder``, the targets made by the model at the hidden
    truth; ``budget`` replaces the method's own."""
    import tomli_w

    from experiments.sweep import RunTask, run_one
    from model.config import read_toml

    data = small_config(
        steps=RECOVERY["steps"], shocks=[{"step": 5, "asset": "BTC", "return": -0.10}]
    )
    data["assets"] = [data["assets"][0]]
    data["assets"][0]["depth"] = 2.0e5
    data["traders"] = {"count": RECOVERY["traders"], "leverage": 10.0, "assets_per_trader": 1}
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / "base.toml"
    base.write_text(tomli_w.dumps(data))
    data = read_toml(base)
    runs = [
        run_one(RunTask(0, 0, seed, RECOVERY["truth"]), data, str(folder))["metrics"]
        for seed in range(RECOVERY["seeds"])
    ]
    table = {
        "base": base.name,
        "method": method,
        "budget": budget or RECOVERY["budget"][method],
        "population": RECOVERY["population"],
        "predictive": RECOVERY["predictive"],
        "parameters": {"traders.leverage": RECOVERY["prior"]},
        "targets": {m: float(np.mean([r[m] for r in runs])) for m in RECOVERY["targets"]},
    }
    path = folder / "cal.toml"
    path.write_text(tomli_w.dumps({"calibrate": table}))
    return path
