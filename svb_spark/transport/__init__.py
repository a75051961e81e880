"""Transports that give every worker all workers' messages for a step, in rank order: they
implement the core's :class:`~svb_spark.core.exchange.Exchange` contract."""
