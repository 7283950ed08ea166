"""Shared fixtures: small configs built in code, so tests do not depend on shipped files."""

from __future__ import annotations

import pytest

from model.config import build_config


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


@pytest.fixture
def small_cfg():
    return build_config(small_config())
