"""Transports that give every worker all workers' messages for a step, in rank order."""

from svb_spark.transport.base import Exchange, ExchangeError, ExchangeTimeoutError

__all__ = ["Exchange", "ExchangeError", "ExchangeTimeoutError"]
