"""Mesa agents: traders (thin views onto the account book), the market, trading rules."""

from agents import leverage_cycle  # noqa: F401 (registers the leverage cycle's rules)
from agents.market import Market
from agents.trader import Trader

__all__ = ["Market", "Trader"]
