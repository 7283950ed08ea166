"""The narration tells what the insurance fund could not pay and who paid it instead, with the
amounts the run's tables record."""

from __future__ import annotations

import re

import pytest

from experiments.narration import CascadeNarrator, _money
from model import ContagionModel
from model.config import build_config
from tests.helpers import small_config


def _told(adl: bool):
    """A crash the fund cannot cover (no fund, high leverage, a 30% fall), narrated."""
    data = small_config(
        steps=12,
        traders={"count": 400, "leverage": 25.0},
        margin={"insurance_fund": 0.0, "adl": adl, "liquidation": "full"},
        shocks=[{"step": 5, "asset": "BTC", "return": -0.3}],
    )
    model = ContagionModel(build_config(data))
    text = []
    narrator = CascadeNarrator(model, text.append)
    model.run()
    return model, narrator, "\n".join(text)


def _amounts(pattern: str, text: str) -> list[float]:
    units = {"k": 1e3, "M": 1e6, "B": 1e9, "": 1.0}
    return [
        float(m.group(1).replace(",", "")) * units[m.group(2)] for m in re.finditer(pattern, text)
    ]


def test_auto_deleveraging_is_told_with_its_notional():
    model, narrator, text = _told(adl=True)
    steps = model.tables()["steps"]
    assert steps["adl_notional"].sum() > 0, "the crash should need auto-deleveraging"
    told = _amounts(r"auto-deleveraging closed \$([\d.,]+)([kMB]?) of profitable", text)
    stories = [s for s in narrator.stories if s.adl_notional > 0]
    assert len(told) == len(stories) > 0
    for amount, story in zip(told, stories, strict=True):
        assert f"auto-deleveraging closed {_money(story.adl_notional)}" in text
        assert amount == pytest.approx(story.adl_notional, rel=5e-3)
    assert sum(s.adl_notional for s in narrator.stories) == pytest.approx(
        steps["adl_notional"].sum()
    )
    assert "the fund is empty" in text


def test_unpaid_bad_debt_is_told_when_nobody_covers_it():
    model, narrator, text = _told(adl=False)
    unfunded = float(model.tables()["steps"]["unfunded_bad_debt"].iloc[-1])
    assert unfunded > 0
    told = _amounts(r"\$([\d.,]+)([kMB]?) left unpaid", text)
    assert told, "unpaid bad debt is not told"
    assert sum(s.unfunded for s in narrator.stories) == pytest.approx(unfunded)
    assert sum(told) == pytest.approx(unfunded, rel=5e-3)
    assert "auto-deleveraging" not in text


def test_the_fund_paid_what_it_had():
    """Each round's "paid X of Y bad debt": X is the fund before the round plus its fees."""
    model, narrator, _ = _told(adl=True)
    fund = 0.0
    for s in narrator.stories:
        assert s.fund_paid == pytest.approx(min(fund + s.fees, s.bad_debt), abs=1e-6)
        fund = s.fund


def test_money_is_never_minus_zero():
    assert _money(-1e-9) == "$0" and _money(0.4) == "$0" and _money(-2500.0) == "$-2.5k"
