"""Mesa agents: traders (thin views onto the account book), the market, trading rules."""

from agents.market import Market
from agents.trader import Trader

__all__ = ["Market", "Trader"]
