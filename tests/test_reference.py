"""The reference: `contagion config` prints what the validator enforces, and the generated
pages (docs/configuration.md, docs/outputs.md) are what the code renders now."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest

from agents.params import spec
from agents.strategies import STRATEGIES
from experiments.cli import main
from experiments.reference import REGENERATE, config_markdown, config_reference, outputs_markdown
from model.config import (
    Config,
    ConfigError,
    MarginConfig,
    apply_overrides,
    build_config,
    build_section,
    describe,
)
from tests.helpers import small_config

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _config(capsys, *args) -> tuple[int, str, str]:
    code = main(["config", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _field(cls, name):
    return next(f for f in dataclasses.fields(cls) if f.name == name)


# --------------------------------------------------------------------------------------------
# contagion config
# --------------------------------------------------------------------------------------------


def test_a_key_prints_its_type_default_range_unit_and_meaning(capsys):
    code, out, _ = _config(capsys, "margin.fee")
    assert code == 0
    f = _field(MarginConfig, "fee")
    lines = out.splitlines()
    assert lines[0] == "margin.fee"
    assert lines[1].strip() == f.metadata["doc"]
    fields = dict(line.split(None, 1) for line in lines[2:])
    assert fields == {
        "type": "a number",
        "default": repr(MarginConfig().fee),
        "range": ">= 0 and < 1",
        "unit": f.metadata["unit"],
    }


def test_the_printed_range_is_the_one_the_validator_enforces():
    """margin.fee: ">= 0 and < 1": 0 and just under 1 pass; just under 0 and 1 fail."""
    base = small_config()

    def ok(value):
        try:
            build_config(apply_overrides(base, {"margin.fee": value}))
            return True
        except ConfigError:
            return False

    assert ok(0.0) and ok(0.999999)
    assert not ok(-1e-12) and not ok(1.0)


@pytest.mark.parametrize("form", ["assets.BTC.depth", "assets.0.depth", "assets[].depth"])
def test_list_items_are_found_by_symbol_index_or_marker(capsys, form):
    code, out, _ = _config(capsys, form)
    assert code == 0
    assert out.splitlines()[0] == "assets[].depth"
    assert "quote currency (notional at the initial price)" in out
    assert "default  required" in out


def test_a_section_prints_every_key_of_it_and_no_other(capsys):
    code, out, _ = _config(capsys, "margin")
    assert code == 0
    printed = [line for line in out.splitlines() if line.startswith("margin.")]
    fields = [f.name for f in dataclasses.fields(MarginConfig)]
    tiers = [f"margin.tiers[].{f.name}" for f in dataclasses.fields(type(_tier()))]
    assert printed == [f"margin.{name}" for name in fields] + tiers
    assert out.startswith("[margin]  How the venue margins")
    assert "[[margin.tiers]]" in out


def _tier():
    from model.config import TierConfig

    return TierConfig(cap=1.0, rate=0.0)


def test_a_rule_section_comes_from_the_rule_params_class(capsys):
    code, out, _ = _config(capsys, "traders.rules.momentum")
    assert code == 0
    params = STRATEGIES["momentum"].Params
    printed = [line for line in out.splitlines() if line.startswith("traders.")]
    assert printed == [f"traders.rules.momentum.{f.name}" for f in dataclasses.fields(params)]
    assert f"default  {params().lookback}" in out


def test_no_argument_prints_every_key(capsys):
    code, out, _ = _config(capsys)
    assert code == 0
    printed = {line for line in out.splitlines() if line and not line.startswith((" ", "["))}
    printed.discard("top level  A whole run.")
    assert printed == {row["key"] for row in describe()}


@pytest.mark.parametrize(
    ("query", "suggestion"),
    [("margin.fe", "margin.fee"), ("market.volatilty", "market.volatility"), ("margn", "margin")],
)
def test_an_unknown_key_is_one_line_exit_2_with_did_you_mean(capsys, query, suggestion):
    code, out, err = _config(capsys, query)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert query in lines[0] and f"did you mean '{suggestion}'" in lines[0]


def test_markdown_takes_no_key(capsys):
    code, _, err = _config(capsys, "margin", "--markdown")
    assert code == 2 and "--markdown" in err


def test_every_number_of_the_config_declares_its_unit():
    """Every field whose value is or holds a number says what it is measured in (the rules'
    parameters included)."""

    def numeric(tp) -> bool:
        if tp in (int, float):
            return True
        return any(numeric(a) for a in typing.get_args(tp))

    missing = []
    for row in describe():
        section = Config
        key = row["key"]
        tp = _annotation(section, key)
        if numeric(tp) and not row["unit"]:
            missing.append(key)
    assert not missing, f"numbers without a unit: {missing}"


def _annotation(cls, key: str):
    """The annotation of a dotted describe() key, found by walking the dataclasses."""
    parts = key.replace("[]", "").split(".")
    tp = cls
    i = 0
    while i < len(parts):
        tp = _inner(tp)
        if parts[i] == "rules" and tp.__name__ == "TradersConfig":
            tp = STRATEGIES[parts[i + 1]].Params
            i += 2
            continue
        tp = typing.get_type_hints(tp)[{"return": "return_"}.get(parts[i], parts[i])]
        i += 1
    return tp


def _inner(tp):
    if dataclasses.is_dataclass(tp):
        return tp
    for a in typing.get_args(tp):
        if dataclasses.is_dataclass(a) or typing.get_args(a):
            found = _inner(a)
            if found is not None:
                return found
    return tp


# --------------------------------------------------------------------------------------------
# Named choices
# --------------------------------------------------------------------------------------------


def test_choices_are_printed_with_their_descriptions(capsys):
    code, out, _ = _config(capsys, "margin.mode")
    assert code == 0
    choices = _field(MarginConfig, "mode").metadata["choices"]
    assert set(choices) == set(typing.get_args(typing.get_type_hints(MarginConfig)["mode"]))
    for name, doc in choices.items():
        assert any(
            line.split()[-len(doc.split()) - 1 :] == [name, *doc.split()]
            for line in out.splitlines()
        )


# A registry of presets that grows after the field is declared, as a venue module's would.
_PRESETS = {"binance": "Binance's USD-M futures"}


@dataclass
class _VenueTable:
    venue: str | None = spec(None, doc="a named preset", choices=lambda: _PRESETS)


def test_choices_from_a_function_are_looked_up_when_used_and_enforced():
    assert build_section(_VenueTable, {"venue": "binance"}).venue == "binance"
    with pytest.raises(ConfigError) as info:
        build_section(_VenueTable, {"venue": "binanse"}, "margin")
    assert str(info.value) == (
        "margin.venue: expected one of 'binance', got 'binanse' (did you mean 'binance'?)"
    )
    _PRESETS["bybit"] = "Bybit's linear perpetuals"
    try:
        assert build_section(_VenueTable, {"venue": "bybit"}).venue == "bybit"
        row = next(r for r in describe(_VenueTable))
        assert row["choices"] == _PRESETS
    finally:
        del _PRESETS["bybit"]


# --------------------------------------------------------------------------------------------
# The generated pages
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("page", "render"),
    [("configuration.md", config_markdown), ("outputs.md", outputs_markdown)],
)
def test_generated_page_is_what_the_code_renders(page, render):
    text = (DOCS / page).read_text(encoding="utf-8")
    assert text == render(), f"docs/{page} is out of date: regenerate it with `{REGENERATE}`"


def test_configuration_page_has_a_row_for_every_key_of_the_package():
    text = config_markdown()
    own = [
        r["key"]
        for r in describe()
        if not r["key"].startswith("traders.rules.")
        or STRATEGIES[r["key"].split(".")[2]].__module__.startswith("agents.")
    ]
    for key in own:
        assert f"| `{key}` |" in text, key


def test_text_and_markdown_agree_on_a_key():
    text = config_reference("market.volatility")
    lines = config_markdown().splitlines()
    row = next(line for line in lines if line.startswith("| `market.volatility`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] in text and cells[3] in text and cells[4] in text
