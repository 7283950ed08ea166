"""Experiments: configs, sweeps, figures, the command line and the dashboard."""

from pathlib import Path

__all__ = ["DEMO_CONFIG"]

# The teaching demo's market (``contagion demo``), which the dashboard also starts from.
DEMO_CONFIG = Path(__file__).resolve().parent / "configs" / "demo.toml"
