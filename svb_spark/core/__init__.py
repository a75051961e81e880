"""The training core: numerics, solvers, the loop, the replica's weights and the cost model.

Pure numpy and Arrow: it imports no pyspark, opens no socket and touches no filesystem, so the
whole training loop runs in tests over an in-process exchange.
"""
