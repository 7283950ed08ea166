"""Venue presets: the published margin, liquidation, ADL and funding rules of real venues, as data.

``margin.venue = "binance" | "bybit" | "okx" | "hyperliquid" | "dydx"`` makes a venue's rules the
defaults of a run: every key a preset names and the config file (or ``--set``, or a sweep) does
not set takes the preset's value; keys the file sets win. The resolved ``config.toml`` of a run
folder holds the values used, so it reruns without the preset's help. Without ``margin.venue``
nothing changes.

Every value carries its source, a section of docs/reference/venues.md (which names the venue's
page or repository; every page there was read 2026-12 from stored copies) or the words
"project's choice" where the venue publishes nothing usable, and the source's date as
published. What a preset sets:

* maintenance tiers per asset symbol (``assets.<SYMBOL>.tiers``) for the symbols the venue
  publishes (BTC, ETH, SOL), and a documented default for other symbols (``None``: the engine's
  own default, ``1 / (2 x max leverage)``, which is Hyperliquid's rule). Tiers are set only for
  assets without tiers of their own, and not at all when the file sets ``margin.tiers`` or
  ``margin.maintenance`` (those apply to every asset). The engine extends the last tier beyond
  its cap; a venue's open-ended last tier is written with the cap ``OPEN_CAP``.
* margin keys: liquidation mode and the venue rules of :mod:`model.limits`, fee, takeover,
  insurance fund, liquidator vault (:mod:`model.vault`), ADL ranking (:mod:`model.adl`).
* funding: the venue's interval in hours becomes ``market.funding_interval`` in steps (at least
  one) and, from the interval in minutes that results, ``market.funding_basis`` (the rate is per
  ``basis_hours``) and ``market.funding_cap`` (the venue's cap per its own interval, scaled to
  the engine's). When the file sets the interval itself, basis and cap follow that interval.

Approximations and what is not modelled are listed in each preset's ``notes`` (and in
docs/market-realism.md, "Venue presets"). ``describe_presets()`` gives one line per preset, for
the command line's reference; ``CHOICES`` maps ``margin.venue`` and ``margin.adl_ranking`` to
their values' descriptions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from model.adl import RANKINGS

__all__ = [
    "CHOICES",
    "OPEN_CAP",
    "PRESETS",
    "FundingRule",
    "Preset",
    "Sourced",
    "describe_presets",
    "preset_settings",
    "venue_defaults",
]

# The cap written for a venue's open-ended last tier (the engine extends the last tier anyway).
OPEN_CAP = 1.0e15


@dataclass(frozen=True)
class Sourced:
    """A preset value and where it comes from.

    Attributes:
        value: the value (TOML-shaped; tiers as ``(cap, rate)`` pairs).
        source: the section of docs/reference/venues.md (and its source tag) or "project's
            choice", with what the source says.
        date: the source's date as published, as docs/reference/venues.md gives it (every
            source there was read 2026-12).
    """

    value: Any
    source: str
    date: str


@dataclass(frozen=True)
class FundingRule:
    """A venue's funding schedule.

    Attributes:
        interval_hours: hours between payments.
        basis_hours: hours the formula's rate is for (8: an 8-hour rate paid in parts).
        interest: the interest part of the rate per ``basis_hours`` (None: not published; the
            config's value is kept).
        cap: the largest rate of one payment, either way (None: not published).
        source: where the schedule comes from.
    """

    interval_hours: float
    basis_hours: float
    interest: Sourced | None
    cap: Sourced | None
    source: str


@dataclass(frozen=True)
class Preset:
    """One venue's rules.

    Attributes:
        name: the value of ``margin.venue``.
        description: one line, for the command line's reference.
        margin: ``[margin]`` key -> value.
        tiers: asset symbol -> maintenance tiers as ``(cap, rate)`` pairs.
        other_tiers: tiers of the other symbols (value None: the engine's default).
        funding: the funding schedule.
        notes: approximations, and published rules the engine does not model.
    """

    name: str
    description: str
    margin: dict[str, Sourced]
    tiers: dict[str, Sourced]
    other_tiers: Sourced
    funding: FundingRule
    notes: tuple[str, ...] = field(default=())


def _tiers(caps, rates) -> list[tuple[float, float]]:
    return [(float(c), float(r)) for c, r in zip(caps, rates, strict=True)]


# Binance's 2021 table for 75x altcoins (venues.md §1.4, §5).
_BINANCE_ALT = _tiers(
    [1e4, 5e4, 2.5e5, 1e6, 2e6, 5e6, 1e7, OPEN_CAP],
    [0.0065, 0.01, 0.02, 0.05, 0.10, 0.125, 0.15, 0.25],
)
_CHOICE = "n/a (project's choice)"

BINANCE = Preset(
    name="binance",
    description="Binance USD-M: BTC/ETH brackets, one partial reduction then takeover at the "
    "bankruptcy price, 0.5% fee, LeveragePnL ADL, 8-hour funding",
    margin={
        "liquidation": Sourced(
            "partial",
            "venues.md §2.1 [B-LIQ]: one IOC reduction, then closed at the bankruptcy price",
            "undated (Binance's text as reproduced by traderwagon)",
        ),
        "fee": Sourced(
            0.005,
            "project's choice: per-symbol rates not found (venues.md §2.1; earlier note 0.5%, "
            "unverified)",
            _CHOICE,
        ),
        "takeover": Sourced(
            True,
            "venues.md §2.1 [B-LIQ]: 'closed at the bankruptcy price and the Insurance Fund "
            "will take over the position'",
            "undated (Binance's text as reproduced by traderwagon)",
        ),
        "adl_ranking": Sourced(
            "binance",
            "venues.md §3.1 [B-ADL]: LeveragePnL as quoted on Binance's developer forum "
            "(unverified)",
            "FAQ 2019-09-09, version of 2021-08-19",
        ),
    },
    tiers={
        "BTC": Sourced(
            _tiers(
                [5e4, 2.5e5, 3e6, 2e7, 4e7, 1e8, 1.2e8, 2e8, 3e8, 5e8],
                [0.004, 0.005, 0.01, 0.025, 0.05, 0.10, 0.125, 0.15, 0.25, 0.50],
            ),
            "venues.md §1.4 [B-BRK]: leverageBracket API response",
            "undated snapshot (commit f4c6c76)",
        ),
        "ETH": Sourced(
            _tiers(
                [1e4, 1e5, 5e5, 1e6, 2e6, 5e6, 1e7, 2e7, OPEN_CAP],
                [0.005, 0.0065, 0.01, 0.02, 0.05, 0.10, 0.125, 0.15, 0.25],
            ),
            "venues.md §1.4: ETHUSDT lookup table (gist crackcomm, unverified)",
            "2021",
        ),
        "SOL": Sourced(
            _BINANCE_ALT,
            "project's choice: Binance's 75x table (venues.md §5, gist crackcomm, unverified)",
            "2021",
        ),
    },
    other_tiers=Sourced(
        _BINANCE_ALT, "project's choice: Binance's 75x table (venues.md §5, unverified)", "2021"
    ),
    funding=FundingRule(
        8.0,
        8.0,
        Sourced(1e-4, "venues.md §1.3 [B-FUND]: 0.01% per 8 h (secondary summary)", "undated"),
        Sourced(
            0.004,
            "venues.md §1.3 [B-FUND]: clamp(F, +-MMR) with BTCUSDT's tier-1 MMR (secondary "
            "copy of the FAQ, unverified)",
            "undated",
        ),
        "venues.md §1.3 [B-FUND]: every 8 hours",
    ),
    notes=(
        "one funding cap for every asset (Binance caps per symbol at its tier-1 rate)",
        "the partial reduction is the smallest restoring fraction plus margin.buffer "
        "(model/partial.py), not an order sized by the venue",
    ),
)

BYBIT = Preset(
    name="bybit",
    description="Bybit USDT perpetuals: 20 BTC risk-limit tiers, lowest tier taken over whole, "
    "higher tiers stepped down, profit x leverage ADL, 8-hour funding",
    margin={
        "liquidation": Sourced(
            "partial", "venues.md §2.2 [BY-LIQ]: higher tiers stepped down", "2024-01-24"
        ),
        "partial_from_tier": Sourced(
            2,
            "venues.md §2.2 [BY-LIQ]: the lowest tier is closed at the bankruptcy price, higher "
            "tiers stepped down",
            "2024-01-24",
        ),
        "fee": Sourced(
            0.0,
            "venues.md §2.2, §3.2 [BY-ADL-OLD]: no separate liquidation fee (the taker fee rate "
            "on the liquidated order was not found)",
            "undated",
        ),
        "takeover": Sourced(
            True,
            "venues.md §2.2 [BY-LIQ]: the margin left above the bankruptcy price goes to the "
            "insurance fund",
            "2024-01-24",
        ),
        "adl_ranking": Sourced(
            "bitmex",
            "venues.md §3.2: profit % x effective leverage (partly verified)",
            "2024-09-06 and 2025-11-05 texts; older text undated",
        ),
    },
    tiers={
        "BTC": Sourced(
            _tiers(
                [2e6, 2.6e6, 3.2e6, 3.8e6, 4.4e6, 5e6, 5.6e6, 8.5e6, 1e7, 1.4e7]
                + [2e7, 2.8e7, 3.8e7, 5e7, 5.5e7, 6e7, 6.5e7, 7e7, 7.5e7, 8e7],
                [0.005, 0.0056, 0.0063, 0.0067, 0.0071, 0.0077, 0.0091, 0.01, 0.013, 0.015]
                + [0.016, 0.02, 0.025, 0.029, 0.03, 0.035, 0.036, 0.038, 0.04, 0.045],
            ),
            "venues.md §1.4 [BY-RL]: Margin Parameters page, first 20 tiers",
            "undated",
        ),
        "ETH": Sourced(
            [(OPEN_CAP, 0.01)],
            "venues.md §1.4: ETH base rate 1% (Risk-Limit page); tiers not found",
            "2025-11-25",
        ),
    },
    other_tiers=Sourced(
        None, "not found (venues.md §1.4): the engine's default 1 / (2 x max leverage)", _CHOICE
    ),
    funding=FundingRule(
        8.0,
        8.0,
        Sourced(1e-4, "venues.md §1.3 [BY-FUND]: 0.01% per 8 h", "2024-05-12"),
        None,
        "venues.md §1.3 [BY-FUND]: 8 hours by default (the cap is per symbol, not found: the "
        "config's is kept)",
    ),
    notes=(
        "the step-down to a lower tier is approximated by the smallest restoring fraction "
        "plus margin.buffer (model/limits.py)",
        "ADL on an 8-hour PnL drawdown of the insurance pool is not modelled",
    ),
)

OKX = Preset(
    name="okx",
    description="OKX perpetual swaps: partial from tier 3, full below, takeover at the "
    "bankruptcy price, ROI x leverage ADL, 8-hour funding (tiers not found)",
    margin={
        "liquidation": Sourced(
            "partial", "venues.md §2.3 [OKX-PL] (secondary summaries, unverified)", "undated"
        ),
        "partial_from_tier": Sourced(
            3,
            "venues.md §2.3 [OKX-PL]: tier 3 and above partial, tier 2 and below full",
            "undated",
        ),
        "takeover": Sourced(
            True,
            "venues.md §2.3: full liquidation taken over at the bankruptcy price",
            "undated",
        ),
        "adl_ranking": Sourced(
            "bitmex",
            "venues.md §3.3 [OKX-ADL]: ROI / margin ratio = ROI x effective leverage "
            "(secondary, unverified)",
            "2020-12-16, updated 2024-04-04",
        ),
    },
    tiers={},
    other_tiers=Sourced(
        None, "not found (venues.md §1.4): the engine's default 1 / (2 x max leverage)", _CHOICE
    ),
    funding=FundingRule(
        8.0,
        8.0,
        None,
        None,
        "venues.md §1.3: 8 hours by default; formula and cap not found (the config's kept)",
    ),
    notes=(
        "tiers not found: with the one default tier no position reaches tier 3, so every OKX "
        "liquidation is full unless the file gives tiers",
        "fee: the taker rate of the user's fee tier, not found numerically: the config's is kept",
        "ADL fills at the mark price at OKX; here at the bankruptcy price (model/adl.py)",
    ),
)

_HL_DATE = "docs mirror commit f0e8df5, 2026-07-03"

HYPERLIQUID = Preset(
    name="hyperliquid",
    description="Hyperliquid: two tiers per asset, whole-position market liquidation in 20% "
    "chunks above 100k, liquidator vault below 2/3 of maintenance, no fee, no fund, hourly "
    "funding",
    margin={
        "liquidation": Sourced(
            "full",
            "venues.md §2.4 [HL-LIQ]: market orders for the full size of the position",
            _HL_DATE,
        ),
        "chunk_notional": Sourced(
            100_000.0,
            "venues.md §2.4 [HL-LIQ]: positions above 100k USDC, 20% per liquidation, 30 s "
            "cooldown",
            _HL_DATE,
        ),
        "chunk_share": Sourced(0.2, "venues.md §2.4 [HL-LIQ]", _HL_DATE),
        "fee": Sourced(
            0.0, "venues.md §2.4 [HL-LIQ]: 'no clearance fee on liquidations'", _HL_DATE
        ),
        "insurance_fund": Sourced(0.0, "venues.md §1.2: no insurance fund as such", _HL_DATE),
        "vault": Sourced(
            True,
            "venues.md §2.4 [HL-LIQ]: backstop liquidation through the liquidator vault",
            _HL_DATE,
        ),
        "vault_threshold": Sourced(
            2.0 / 3.0, "venues.md §2.4 [HL-LIQ]: 'below 2/3 of the maintenance margin'", _HL_DATE
        ),
        "adl_ranking": Sourced("hyperliquid", "venues.md §3.5 [HL-ADL]", _HL_DATE),
    },
    tiers={
        "BTC": Sourced([(1.5e8, 0.0125), (OPEN_CAP, 0.025)], "venues.md §1.4 [HL-TIER]", _HL_DATE),
        "ETH": Sourced([(1e8, 0.02), (OPEN_CAP, 1.0 / 30.0)], "venues.md §1.4 [HL-TIER]", _HL_DATE),
        "SOL": Sourced([(7e7, 0.025), (OPEN_CAP, 0.05)], "venues.md §1.4 [HL-TIER]", _HL_DATE),
    },
    other_tiers=Sourced(
        None,
        "venues.md §2.4 [HL-LIQ]: half the initial margin at max leverage, the engine's default",
        _HL_DATE,
    ),
    funding=FundingRule(
        1.0,
        8.0,
        Sourced(1e-4, "venues.md §1.3 [HL-FUND]: 0.01% on the 8-hour basis", _HL_DATE),
        Sourced(0.04, "venues.md §1.3 [HL-FUND]: 4% per hour", _HL_DATE),
        "venues.md §1.3 [HL-FUND]: hourly, one eighth of the 8-hour rate",
    ),
    notes=(
        "funding is paid on the mark, not the oracle price",
        "ADL fills at the previous mark at Hyperliquid; here at the bankruptcy price "
        "(model/adl.py)",
        "a unit already below 2/3 of maintenance when found goes to the vault at once "
        "(model/vault.py); the vault holds its positions to the end of the run",
    ),
)

_DY_CFG = "v4-chain commit 84d4664, 2026-03-04"
_DY_GEN = "mainnet genesis, 2023-10-26"

DYDX = Preset(
    name="dydx",
    description="dYdX v4: flat 3% (BTC, ETH) and 5% (SOL) maintenance, at most 10% of a position "
    "and $100k per account per block, 1.5% fee, random-start deleveraging, hourly funding",
    margin={
        "liquidation": Sourced(
            "partial",
            "venues.md §2.5 [DY-CFG]: liquidation orders while the account is below maintenance",
            _DY_CFG,
        ),
        "fee": Sourced(
            0.015,
            "venues.md §2.5 [DY-CFG]: min(1.5% x quote, surplus above bankruptcy)",
            _DY_CFG,
        ),
        "round_share": Sourced(
            0.1, "venues.md §2.5 [DY-CFG]: max_position_portion_liquidated 10% per block", _DY_CFG
        ),
        "round_min_notional": Sourced(
            1000.0, "venues.md §2.5 [DY-CFG]: min_position_notional_liquidated $1,000", _DY_CFG
        ),
        "round_max_notional": Sourced(
            100_000.0,
            "venues.md §2.5 [DY-CFG]: max_notional_liquidated $100,000 per subaccount",
            _DY_CFG,
        ),
        "max_rounds": Sourced(
            1000,
            "project's choice: a round stands for a block, and the per-block limits need more "
            "rounds",
            _CHOICE,
        ),
        "adl_ranking": Sourced("random", "venues.md §3.6 [DY-DEL]", _DY_CFG),
    },
    tiers={
        "BTC": Sourced([(OPEN_CAP, 0.03)], "venues.md §1.4 [DY-GEN]: Large-Cap MMF 3%", _DY_GEN),
        "ETH": Sourced([(OPEN_CAP, 0.03)], "venues.md §1.4 [DY-GEN]: Large-Cap MMF 3%", _DY_GEN),
        "SOL": Sourced([(OPEN_CAP, 0.05)], "venues.md §1.4 [DY-GEN]: Mid-Cap MMF 5%", _DY_GEN),
    },
    other_tiers=Sourced(
        [(OPEN_CAP, 0.10)], "project's choice: Long-Tail MMF 10% (venues.md §1.4)", _DY_GEN
    ),
    funding=FundingRule(
        1.0,
        8.0,
        Sourced(0.0, "venues.md §1.3 [DY-FUND]: interest 0 for cross markets", "2025-09-19"),
        Sourced(
            0.015,
            "venues.md §1.3 [DY-FUND]: 8-hour rate capped at 600% x (IMF - MMF) = 12% for "
            "Large-Cap, 1.5% an hour",
            "2025-09-19",
        ),
        "venues.md §1.3 [DY-FUND]: hourly, premium / 8 + interest",
    ),
    notes=(
        "the rate keeps the 0.05% clamp of the interest term, which dYdX does not have",
        "one funding cap for every asset: the Large-Cap one (Mid-Cap's is 30%)",
        "the insurance fund's $1,000,000 limit per subaccount and block is not modelled",
        "the fillable price of liquidation orders is not modelled: orders walk the book",
    ),
)

PRESETS: dict[str, Preset] = {p.name: p for p in (BINANCE, BYBIT, OKX, HYPERLIQUID, DYDX)}

CHOICES: dict[str, dict[str, str]] = {
    "margin.venue": {name: p.description for name, p in PRESETS.items()},
    "margin.adl_ranking": dict(RANKINGS),
}


def describe_presets() -> dict[str, str]:
    """``margin.venue`` value -> one-line description, for the command line's reference."""
    return {name: p.description for name, p in PRESETS.items()}


def _tier_rows(pairs) -> list[dict[str, float]]:
    return [{"cap": cap, "rate": rate} for cap, rate in pairs]


def _funding(rule: FundingRule, step_minutes: float, interval: int | None) -> dict[str, Any]:
    """The ``[market]`` funding keys of ``rule`` for steps of ``step_minutes`` (``interval``:
    the file's own ``funding_interval``, which basis and cap then follow)."""
    venue_minutes = rule.interval_hours * 60.0
    steps = max(1, round(venue_minutes / step_minutes)) if interval is None else int(interval)
    out: dict[str, Any] = {"market.funding_interval": steps}
    if steps == 0:  # the file switched funding off
        return out
    minutes = steps * step_minutes
    out["market.funding_basis"] = rule.basis_hours * 60.0 / minutes
    if rule.interest is not None:
        out["market.funding_interest"] = rule.interest.value
    if rule.cap is not None:
        out["market.funding_cap"] = min(1.0, rule.cap.value * minutes / venue_minutes)
    return out


def preset_settings(
    name: str, symbols, step_minutes: float = 60.0, funding_interval: int | None = None
) -> dict[str, Any]:
    """Every key the preset ``name`` sets, dotted (``margin.fee``, ``assets.BTC.tiers``,
    ``market.funding_interval``), with TOML-shaped values, for assets ``symbols``.

    Args:
        name: a key of :data:`PRESETS`.
        symbols: the config's asset symbols.
        step_minutes: the length of a step (funding intervals are counted in steps).
        funding_interval: the file's own ``market.funding_interval``, if it sets one.
    """
    preset = PRESETS[name]
    out: dict[str, Any] = {f"margin.{k}": v.value for k, v in preset.margin.items()}
    for symbol in symbols:
        tiers = preset.tiers.get(symbol, preset.other_tiers).value
        if tiers is not None:
            out[f"assets.{symbol}.tiers"] = _tier_rows(tiers)
    out.update(_funding(preset.funding, step_minutes, funding_interval))
    return out


def _is_set(data: dict, key: str) -> bool:
    """Whether the TOML-shaped ``data`` sets the dotted ``key`` (assets addressed by symbol)."""
    node: Any = data
    for part in key.split("."):
        if isinstance(node, list):
            node = next((x for x in node if isinstance(x, dict) and x.get("symbol") == part), None)
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
        if node is None:
            return False
    return True


def venue_defaults(
    data: dict, symbols, step_minutes: float, funding_interval: int
) -> dict[str, Any]:
    """The keys of the preset named by ``data``'s ``margin.venue`` that ``data`` does not set.

    Args:
        data: the TOML-shaped config (its ``margin.venue`` names a preset).
        symbols: the config's asset symbols.
        step_minutes: the config's ``market.step_minutes``.
        funding_interval: the config's ``market.funding_interval`` (used when ``data`` sets it).
    """
    name = data["margin"]["venue"]
    interval = funding_interval if _is_set(data, "market.funding_interval") else None
    settings = preset_settings(name, symbols, step_minutes, interval)
    flat_rule = _is_set(data, "margin.tiers") or _is_set(data, "margin.maintenance")
    return {
        key: value
        for key, value in settings.items()
        if not _is_set(data, key) and not (flat_rule and key.startswith("assets."))
    }
