"""Config validation: every key typed and range-checked, one-line errors naming the key."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import tomli_w

from model.config import (
    ConfigError,
    apply_overrides,
    build_config,
    describe,
    load_config,
    parse_for_key,
    to_dict,
)
from tests.helpers import small_config


def error_of(data) -> str:
    """The ConfigError message that building ``data`` raises (fails the test if none)."""
    with pytest.raises(ConfigError) as info:
        build_config(data)
    message = str(info.value)
    assert "\n" not in message, "errors are one line"
    return message


def with_override(key, value, base=None):
    return apply_overrides(base or small_config(), {key: value})


# --------------------------------------------------------------------------------------------
# Types and ranges of every field, taken from the schema itself
# --------------------------------------------------------------------------------------------


def _tiered_base(key: str = ""):
    base = small_config()
    base["margin"]["tiers"] = [{"cap": 1e6, "rate": 0.01}, {"cap": 1e7, "rate": 0.02}]
    base["assets"][0]["tiers"] = [{"cap": 1e6, "rate": 0.01}]
    if key == "assets[].haircut":  # a haircut is a collateral asset's: make the first one so
        base["assets"][0] = {"symbol": "USDe", "price": 1.0, "depth": 1e6, "kind": "collateral"}
        base["shocks"] = [s for s in base["shocks"] if s["asset"] != "BTC"]
        base["traders"]["assets_per_trader"] = 1
    return base


def _addressable(key: str) -> str:
    """The dotted key of the first item for schema rows of list items (``assets[].price``)."""
    return key.replace("[]", ".0")


def _bounded_rows():
    rows = []
    for row in describe():
        for check, bound in row["checks"].items():
            if check in ("ge", "gt", "le", "lt"):
                rows.append((row["key"], row["type"], check, bound))
    return rows


BOUNDED = _bounded_rows()


def test_schema_has_bounds_on_the_numbers_that_matter():
    keys = {k for k, *_ in BOUNDED}
    for key in (
        "steps",
        "market.volatility",
        "assets[].price",
        "assets[].depth",
        "traders.leverage",
        "margin.fee",
        "margin.max_rounds",
        "shocks[].return",
        "margin.tiers[].rate",
    ):
        assert key in keys


@pytest.mark.parametrize(("key", "kind", "check", "bound"), BOUNDED, ids=[r[0] for r in BOUNDED])
def test_every_bound_rejects_the_first_value_outside(key, kind, check, bound):
    whole = kind == "a whole number"
    step = 1 if whole else max(abs(bound) * 1e-9, 1e-12)
    outside = {
        "ge": bound - step,
        "gt": bound,
        "le": bound + step,
        "lt": bound,
    }[check]
    if whole:
        outside = int(outside)
    data = with_override(_addressable(key), outside, _tiered_base(key))
    message = error_of(data)
    shown = _addressable(key).replace(".0.", "[0].").replace(".0", "[0]")
    assert message.startswith(shown + ":"), message
    word = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}[check]
    assert f"must be {word}" in message


# Inclusive bounds; a single tier's rate or cap at its bound alone would break the ordering
# checked across tiers, and assets_per_trader is also bounded by the number of assets.
INCLUSIVE = [
    r
    for r in BOUNDED
    if r[2] in ("ge", "le")
    and r[0] not in ("margin.tiers[].rate", "assets[].tiers[].rate", "traders.assets_per_trader")
]


@pytest.mark.parametrize(
    ("key", "kind", "check", "bound"), INCLUSIVE, ids=[r[0] for r in INCLUSIVE]
)
def test_every_inclusive_bound_accepts_the_bound_itself(key, kind, check, bound):
    value = int(bound) if kind == "a whole number" else float(bound)
    base = _tiered_base(key)
    if key == "steps":  # a run of no steps has no step for a shock
        base["shocks"] = []
    cfg = build_config(with_override(_addressable(key), value, base))
    kept = to_dict(cfg)
    for part in _addressable(key).split("."):
        kept = kept[int(part)] if part.isdigit() else kept[part]
    assert kept == value  # accepted as given, not clamped or replaced


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("steps", "ten", "steps: expected a whole number, got 'ten'"),
        ("steps", 2.5, "steps: expected a whole number, got 2.5"),
        ("steps", True, "steps: expected a whole number, got True"),
        ("market.volatility", "high", "market.volatility: expected a number, got 'high'"),
        ("market.volatility", float("nan"), "market.volatility: must be finite, got nan"),
        ("market.volatility", float("inf"), "market.volatility: must be finite, got inf"),
        ("margin.adl", 1, "margin.adl: expected true or false, got 1"),
        ("margin.mode", "crosss", "margin.mode: expected one of 'cross', 'isolated', got 'crosss'"),
        ("name", 5, "name: expected a string, got 5"),
        ("market", 3, "market: expected a table, got 3"),
        ("assets", {"symbol": "X"}, "assets: expected a list, got"),
        ("shocks", [{"step": 1, "asset": "BTC"}], "shocks[0].return: required key is missing"),
        ("traders.strategies", {"hold": "all"}, "traders.strategies.hold: expected a number"),
    ],
)
def test_type_errors_name_the_key(key, value, expected):
    assert error_of(with_override(key, value)).startswith(expected)


def test_integers_too_large_for_any_field_are_clean_errors():
    assert "too large" in error_of(with_override("steps", 10**400))
    assert "too large" in error_of(with_override("market.volatility", 10**400))
    assert error_of(with_override("seed", 2**63)) == (
        "seed: must be <= 9223372036854775807, got 9223372036854775808"
    )
    assert error_of(with_override("seed", 2**63 - 1 + 0.0)).startswith("seed:")


def test_whole_floats_are_accepted_as_integers_and_integers_as_floats():
    cfg = build_config(with_override("steps", 25.0))
    assert cfg.steps == 25 and isinstance(cfg.steps, int)
    cfg = build_config(with_override("market.volatility", 2))
    assert cfg.market.volatility == 2.0 and isinstance(cfg.market.volatility, float)


# --------------------------------------------------------------------------------------------
# Unknown keys and suggestions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"stpes": 10}, "stpes: unknown key (did you mean 'steps'?)"),
        (
            {"market": {"volatilty": 0.5}},
            "market.volatilty: unknown key (did you mean 'volatility'?)",
        ),
        ({"traders": {"levrage": 5}}, "traders.levrage: unknown key (did you mean 'leverage'?)"),
        ({"zzz": 1}, "zzz: unknown key"),
    ],
)
def test_unknown_keys_are_rejected_with_the_nearest_name(patch, expected):
    data = small_config()
    for k, v in patch.items():
        if isinstance(v, dict):
            data[k] = {**data[k], **v}
        else:
            data[k] = v
    assert error_of(data) == expected


def test_unknown_key_inside_a_list_item_names_the_item():
    data = small_config()
    data["assets"][1]["dept"] = 5.0
    assert error_of(data) == "assets[1].dept: unknown key (did you mean 'depth'?)"


def test_literal_typo_is_suggested():
    assert error_of(with_override("margin.liquidation", "partal")).endswith(
        "(did you mean 'partial'?)"
    )


# --------------------------------------------------------------------------------------------
# Cross-field checks
# --------------------------------------------------------------------------------------------


def test_correlation_matrix_checks():
    ok = [[1.0, 0.3], [0.3, 1.0]]
    assert build_config(with_override("market.correlation", ok)).market.correlation == ok
    cases = {
        "symmetric": [[1.0, 0.3], [0.2, 1.0]],
        "diagonal must be all 1": [[1.0, 0.3], [0.3, 0.9]],
        "between -1 and 1": [[1.0, 1.5], [1.5, 1.0]],
        "2x2 matrix": [[1.0]],
        "rows of different lengths": [[1.0, 0.3], [0.3]],
    }
    for words, matrix in cases.items():
        message = error_of(with_override("market.correlation", matrix))
        assert message.startswith("market.correlation:") and words in message, message


def test_correlation_must_be_positive_semidefinite():
    three = small_config()
    three["assets"].append({"symbol": "SOL", "price": 150.0, "depth": 5e5})
    # constant correlation c among 3 assets has eigenvalues 1 + 2c and 1 - c: PSD iff c >= -1/2
    assert build_config({**three, "market": {"correlation": -0.5}})
    message = error_of({**three, "market": {"correlation": -0.51}})
    assert message == "market.correlation: matrix must be positive semi-definite"
    # a valid-looking matrix (symmetric, unit diagonal, |x| <= 1) that is not PSD
    bad = [[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]]
    assert min(np.linalg.eigvalsh(np.array(bad))) < 0
    assert "positive semi-definite" in error_of({**three, "market": {"correlation": bad}})
    # singular but PSD (perfect correlation) is fine
    ones = [[1.0] * 3 for _ in range(3)]
    assert build_config({**three, "market": {"correlation": ones}})


def test_scalar_correlation_range():
    assert "between -1 and 1" in error_of(with_override("market.correlation", 1.2))


def test_shocks_must_name_declared_assets():
    data = small_config(shocks=[{"step": 3, "asset": "ETC", "return": -0.1}])
    assert error_of(data) == "shocks[0].asset: unknown asset 'ETC' (did you mean 'ETH'?)"
    data = small_config(shocks=[{"step": 3, "asset": "BTC", "return": -1.0}])
    assert error_of(data).startswith("shocks[0].return: must be > -1")


def test_duplicate_symbols_and_tier_order():
    data = small_config()
    data["assets"][1]["symbol"] = "BTC"
    assert error_of(data) == "assets[1].symbol: duplicate symbol 'BTC'"
    data = with_override("margin.tiers", [{"cap": 1e6, "rate": 0.01}, {"cap": 1e5, "rate": 0.02}])
    assert error_of(data) == "margin.tiers: caps must increase strictly"
    data = with_override("margin.tiers", [{"cap": 1e6, "rate": 0.02}, {"cap": 1e7, "rate": 0.01}])
    assert error_of(data) == "margin.tiers: rates must not decrease"
    assert (
        error_of(with_override("margin.tiers", [])) == "margin.tiers: must list at least one tier"
    )


def test_strategy_shares():
    assert error_of(with_override("traders.strategies", {"hodl": 1.0})).startswith(
        "traders.strategies.hodl: unknown trading rule (did you mean 'hold'?)"
    )
    assert "must be >= 0" in error_of(with_override("traders.strategies", {"hold": -1.0}))
    assert "more than 0" in error_of(with_override("traders.strategies", {"hold": 0.0}))
    assert "at least one" in error_of(with_override("traders.strategies", {}))


def test_assets_per_trader_cannot_exceed_assets():
    message = error_of(with_override("traders.assets_per_trader", 3))
    assert message == "traders.assets_per_trader: 3 is more than the 2 assets declared"


@pytest.mark.parametrize("name", ["a/b", "..", "x\\y", "tab\there", " padded"])
def test_name_must_be_usable_as_a_folder(name):
    assert error_of(with_override("name", name)).startswith("name:")


# --------------------------------------------------------------------------------------------
# --set values parsed by the field's type
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("name", "2024", "2024"),
        ("name", '"quoted name"', "quoted name"),
        ("steps", "1e3", 1000),
        ("steps", "1_000", 1000),
        ("market.volatility", ".5", 0.5),
        ("market.volatility", "2", 2),
        ("margin.mode", "isolated", "isolated"),
        ("margin.adl", "False", False),
        ("margin.adl", "true", True),
        ("margin.maintenance", "none", None),
        ("traders.population", "", None),
        ("traders.population", "accounts.csv", "accounts.csv"),
        ("assets.BTC.depth", "1e7", 1e7),
        ("assets.0.symbol", "123", "123"),
        ("traders.strategies.hold", "0.5", 0.5),
        ("traders.rules.momentum.lookback", "1e2", 100),
        ("traders.rules.noise.size", ".2", 0.2),
        ("traders.rules.target_leverage.target", "none", None),
        ("market.correlation", "[[1, 0.2], [0.2, 1]]", [[1, 0.2], [0.2, 1]]),
        ("market.correlation", "0.3", 0.3),
    ],
)
def test_set_values_are_parsed_by_the_field_type(key, text, expected):
    value = parse_for_key(key, text)
    assert value == expected and type(value) is type(expected)


def test_set_overrides_build_the_expected_config():
    cfg = build_config(
        apply_overrides(
            small_config(),
            {
                "assets.ETH.depth": "5e5",
                "margin.mode": "isolated",
                "margin.maintenance": "0.01",
                "seed": "11",
                "name": "007",
            },
        )
    )
    assert cfg.assets[1].depth == 5e5
    assert cfg.margin.mode == "isolated" and cfg.margin.maintenance == 0.01
    assert cfg.seed == 11 and cfg.name == "007"


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        ("seed", "abc", "seed: expected a whole number, got 'abc'"),
        ("steps", "2.5", "steps: expected a whole number, got 2.5"),
        ("market.volatility", "nan", "market.volatility: must be finite, got nan"),
        ("margin.adl", "yes", "margin.adl: expected true or false, got 'yes'"),
        ("market.volatilty", "1", "market.volatilty: unknown key (did you mean 'volatility'?)"),
        ("assets.XRP.depth", "1", "assets.XRP: no such entry (indices 0..1 or symbols BTC, ETH)"),
        ("shocks.4.step", "1", "shocks.4: no such entry (indices 0..0)"),
        ("market.volatility.x", "1", "market.volatility.x: cannot set a key inside a non-table"),
        ("market..x", "1", "'market..x': not a dotted key"),
        ("traders.rules.noize.size", "1", "traders.rules.noize: unknown trading rule (did you"),
        ("traders.rules.noise.sise", "1", "traders.rules.noise.sise: unknown key (did you mean"),
        ("traders.rules.noise.size", "200", "traders.rules.noise.size: must be <= 100, got 200"),
        ("traders.noise_size", "0.2", "traders.noise_size: moved to traders.rules.noise.size"),
    ],
)
def test_bad_set_values_are_one_line_errors(key, text, expected):
    with pytest.raises(ConfigError) as info:
        build_config(apply_overrides(small_config(), {key: text}))
    assert str(info.value).startswith(expected), str(info.value)


def test_overrides_do_not_touch_the_input():
    data = small_config()
    before = copy.deepcopy(data)
    apply_overrides(data, {"market.volatility": "0.9", "assets.BTC.price": 1.0})
    assert data == before


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def test_file_errors_name_the_file(tmp_path):
    cases = {
        "missing.toml": (None, "file not found"),
        "bad.toml": (b"steps = = 3\n", "invalid TOML"),
        "latin1.toml": ('name = "caf\xe9"\n'.encode("latin-1"), "not a UTF-8 text file"),
        "huge.toml": (b"steps = 1" + b"0" * 5000 + b"\n", "invalid TOML"),
        "typo.toml": (b"stesp = 3\n", "stesp: unknown key (did you mean 'steps'?)"),
    }
    for name, (content, words) in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        message = str(info.value)
        assert "\n" not in message and words in message, message
        if name != "typo.toml":
            assert message.startswith(str(path))
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


def test_round_trip_through_toml_is_exact(tmp_path):
    cfg = build_config(
        with_override("margin.tiers", [{"cap": 1e6, "rate": 0.01}, {"cap": 1e7, "rate": 0.02}])
    )
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(to_dict(cfg)))
    again = load_config(path)
    assert to_dict(again) == to_dict(cfg)


def test_default_config_is_valid():
    cfg = build_config({})
    assert cfg.symbols == ["BTC"] and math.isfinite(cfg.market.volatility)


# --------------------------------------------------------------------------------------------
# Trading rules' parameter sections
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("target_leverage", "traders.rules.target_leverage.target"),
        ("rebalance", "traders.rules.target_leverage.rebalance"),
        ("momentum_lookback", "traders.rules.momentum.lookback"),
        ("momentum_leverage", "traders.rules.momentum.leverage"),
        ("value_leverage", "traders.rules.value.leverage"),
        ("value_scale", "traders.rules.value.scale"),
        ("noise_size", "traders.rules.noise.size"),
    ],
)
def test_old_flat_rule_keys_name_their_new_place(old, new):
    data = small_config()
    data["traders"][old] = 3
    assert error_of(data).startswith(f"traders.{old}: moved to {new}")


def test_rule_sections_are_validated_like_every_other_key():
    data = small_config(traders={"strategies": {"hold": 1.0}})
    data["traders"]["rules"] = {"noise": {"size": 0.2, "decay": 0.25}, "value": {"scale": 0.1}}
    cfg = build_config(data)
    assert cfg.traders.rules["noise"].size == 0.2 and cfg.traders.rules["noise"].decay == 0.25
    assert cfg.traders.rules["value"].scale == 0.1 and cfg.traders.rules["value"].leverage == 2.0
    data["traders"]["rules"] = {"nois": {"size": 0.2}}
    assert error_of(data) == "traders.rules.nois: unknown trading rule (did you mean 'noise'?)"
    data["traders"]["rules"] = {"noise": {"sizes": 0.2}}
    assert error_of(data) == "traders.rules.noise.sizes: unknown key (did you mean 'size'?)"
    data["traders"]["rules"] = {"momentum": {"lookback": 0}}
    assert error_of(data) == "traders.rules.momentum.lookback: must be >= 1, got 0"
    data["traders"]["rules"] = {"noise": 0.2}
    assert error_of(data) == "traders.rules.noise: expected a table, got 0.2"


def test_rules_in_use_get_their_defaults_written_out():
    cfg = build_config(small_config(traders={"strategies": {"hold": 0.5, "noise": 0.5}}))
    assert set(cfg.traders.rules) == {"hold", "noise"}
    noise = {"size": 0.1, "decay": 0.5, "persistence": 0.0}
    assert to_dict(cfg)["traders"]["rules"] == {"hold": {}, "noise": noise}
    assert to_dict(build_config(to_dict(cfg))) == to_dict(cfg)


def test_describe_lists_every_rule_parameter():
    rows = {row["key"]: row for row in describe()}
    for key in (
        "traders.rules.target_leverage.target",
        "traders.rules.target_leverage.rebalance",
        "traders.rules.momentum.lookback",
        "traders.rules.momentum.leverage",
        "traders.rules.value.leverage",
        "traders.rules.value.scale",
        "traders.rules.noise.size",
        "traders.rules.noise.decay",
    ):
        assert rows[key]["doc"], key
    assert rows["traders.rules.momentum.lookback"]["type"] == "a whole number"
    assert rows["traders.rules.noise.size"]["checks"] == {"ge": 0, "le": 100}
    assert not any(k.startswith("traders.noise") or k == "traders.rebalance" for k in rows)
