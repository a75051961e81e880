"""The optimizers: one interface, implemented by SGD, SAGA, averaged SGD, L-BFGS and the
class-sharded SGD."""
