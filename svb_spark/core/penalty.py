"""The penalty of a fit in one place: MLlib's elastic net and bounds, for every solver.

MLlib's objective adds to the mean loss::

    regParam * ((1 - alpha) / 2 * sum_kj c_j W_kj^2  +  alpha * sum_kj s_j |W_kj|)

with ``alpha`` the elasticNetParam, ``c_j`` the L2 scale of
:func:`svb_spark.core.numerics.regularization` and ``s_j`` the L1 scale (both 1 in the
standardized space; with ``standardization`` off MLlib penalizes the original coefficients,
so ``c_j = 1 / std_j^2`` and ``s_j = 1 / std_j``), and keeps the weights within the box
``lower_W <= W <= upper_W``, ``lower_b <= b <= upper_b``. The intercepts are never penalized.

A :class:`Penalty` is built once from the config; the solvers use it three ways:

- its value, for the objective every solver reports (:meth:`Penalty.value`);
- the proximal step of the stochastic solvers: after a step with learning rate ``lr``, the
  soft threshold ``W <- sign(W) max(|W| - lr regParam alpha s_j, 0)``, then the projection
  onto the box (:meth:`Penalty.prox`); L-BFGS turns into OWL-QN or a bound-constrained
  L-BFGS from :meth:`Penalty.coordinate_l1` and :meth:`Penalty.coordinate_bounds`;
- on sparse rows, :class:`LazyPenalty`: the replica ``factor * W`` owes each column the
  thresholds of the steps that did not touch it, paid when a step reads or writes it, so a
  sparse step stays O(B K nnz).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np

from svb_spark.core import numerics, sparse

# Elements of W one vectorized pass handles at a time: bounds the temporaries of a K x D
# pass to a few MB whatever the model's size.
_BLOCK_ELEMENTS = 1 << 18


@dataclass(frozen=True, eq=False)
class Penalty:
    """The L2, L1 and box terms of the objective, in the standardized space.

    Parameters
    ----------
    l2 : float
        ``regParam * (1 - alpha)``: the L2 weight.
    l2_scale : float or ndarray
        ``c_j``, per feature (or 1).
    l1 : float
        ``regParam * alpha``: the L1 weight.
    l1_scale : ndarray, optional
        ``s_j``, per feature; None means 1.
    lower_W, upper_W : ndarray, optional
        K x D bounds on the coefficients (None: unbounded).
    lower_b, upper_b : ndarray, optional
        K bounds on the intercepts (None: unbounded).

    Examples
    --------
    >>> import numpy as np
    >>> penalty = Penalty(l1=0.5)
    >>> W, b = np.array([[2.0, -0.1, -3.0]]), np.zeros(1)
    >>> penalty.value(W)
    2.55
    >>> penalty.prox(W, b, learning_rate=1.0)
    >>> W.tolist()
    [[1.5, 0.0, -2.5]]
    """

    l2: float = 0.0
    l2_scale: np.ndarray | float = 1.0
    l1: float = 0.0
    l1_scale: np.ndarray | None = None
    lower_W: np.ndarray | None = None
    upper_W: np.ndarray | None = None
    lower_b: np.ndarray | None = None
    upper_b: np.ndarray | None = None

    @classmethod
    def of(cls, config, dtype=None) -> Penalty:
        """The penalty of a :class:`~svb_spark.core.config.TrainingConfig`, with its arrays
        in ``dtype`` when given (the replica's), else as the config holds them.

        At ``alpha = 0`` the L2 weight is ``regParam`` itself, so that the default fit makes
        exactly the floating-point operations it made before elastic net existed.
        """
        alpha = config.elastic_net
        l2 = config.reg_param if alpha == 0.0 else config.reg_param * (1.0 - alpha)

        def cast(array):
            if array is None or dtype is None:
                return array
            return np.asarray(array).astype(dtype)

        return cls(
            l2=l2,
            l2_scale=1.0 if config.reg_scale is None else cast(config.reg_scale),
            l1=config.reg_param * alpha,
            l1_scale=cast(config.l1_scale),
            lower_W=cast(config.lower_W),
            upper_W=cast(config.upper_W),
            lower_b=cast(config.lower_b) if config.fit_intercept else None,
            upper_b=cast(config.upper_b) if config.fit_intercept else None,
        )

    @property
    def has_l1(self) -> bool:
        return self.l1 > 0.0

    @property
    def bounded(self) -> bool:
        return any(a is not None for a in (self.lower_W, self.upper_W, self.lower_b, self.upper_b))

    @property
    def active(self) -> bool:
        """Whether a step needs more than the L2 decay (an L1 term or bounds)."""
        return self.has_l1 or self.bounded

    @property
    def lazy_ok(self) -> bool:
        """Whether the L1 thresholds of untouched columns can be owed: the L2 decay is one
        scalar (a per-feature decay already makes a sparse step O(K D), and does not commute
        with the thresholds)."""
        return self.l2 == 0.0 or not isinstance(self.l2_scale, np.ndarray)

    def block(self, first: int, stop: int) -> Penalty:
        """The penalty of the classes ``first .. stop - 1`` (a class-sharded worker's)."""

        def rows(array):
            return None if array is None else array[first:stop]

        return dataclasses.replace(
            self,
            lower_W=rows(self.lower_W),
            upper_W=rows(self.upper_W),
            lower_b=rows(self.lower_b),
            upper_b=rows(self.upper_b),
        )

    # -- the objective ------------------------------------------------------------------------

    def value(self, W: np.ndarray, factor: float = 1.0) -> float:
        """The L2 and L1 terms at the model ``factor * W`` (float64 sums, no K x D temporary)."""
        total = numerics.regularization(W, self.l2, self.l2_scale, factor)
        if self.has_l1:
            total += self.l1 * abs(factor) * _weighted_abs_sum(W, self.l1_scale)
        return total

    def l1_thresholds(self, amount: float, dtype) -> np.ndarray | float:
        """Per feature, the soft threshold ``amount * l1 * s_j`` (a scalar without ``s``)."""
        if self.l1_scale is None:
            return np.dtype(dtype).type(amount * self.l1)
        return (amount * self.l1 * self.l1_scale.astype(np.float64)).astype(dtype)

    # -- the proximal step --------------------------------------------------------------------

    def prox(self, W: np.ndarray, b: np.ndarray, learning_rate: float, factor: float = 1.0):
        """After a step of ``learning_rate`` on the model ``factor * W``: the L1 soft threshold
        of the step, then the projection onto the box, in place on all of ``W`` and ``b``.
        Zeros are exact (+0.0)."""
        if self.has_l1:
            soft_threshold(W, self.l1_thresholds(learning_rate / factor, W.dtype))
        if self.bounded:
            self.project(W, b, factor)

    def project(self, W: np.ndarray, b: np.ndarray, factor: float = 1.0) -> None:
        """Clip the model ``factor * W`` and ``b`` to the box, in place."""
        _clip(W, _scaled(self.lower_W, factor), _scaled(self.upper_W, factor))
        _clip(b, self.lower_b, self.upper_b)

    # -- L-BFGS's coordinates: W's rows, then b (see solvers.lbfgs.as_vector) ------------------

    def coordinate_l1(self, num_classes: int, num_features: int) -> np.ndarray | None:
        """The L1 weight of every coordinate (0 on the intercepts), or None without L1."""
        if not self.has_l1:
            return None
        scale = np.ones(num_features) if self.l1_scale is None else self.l1_scale
        per_feature = self.l1 * np.asarray(scale, dtype=np.float64)
        return np.concatenate([np.tile(per_feature, num_classes), np.zeros(num_classes)])

    def coordinate_bounds(
        self, num_classes: int, num_features: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The (lower, upper) bound of every coordinate (infinite where unbounded), or None
        without bounds."""
        if not self.bounded:
            return None
        K, D = num_classes, num_features

        def side(W, b, fill):
            W = np.full(K * D, fill) if W is None else np.asarray(W, np.float64).ravel()
            b = np.full(K, fill) if b is None else np.asarray(b, np.float64).ravel()
            return np.concatenate([W, b])

        return side(self.lower_W, self.lower_b, -np.inf), side(self.upper_W, self.upper_b, np.inf)


def soft_threshold(W: np.ndarray, thresholds) -> None:
    """``W <- sign(W) max(|W| - t_j, 0)`` in place, ``t_j`` per feature (column) or one scalar.

    Computed as ``W - clip(W, -t, t)``, so a weight within its threshold becomes exactly
    +0.0 (``x - x``), never -0.0 or a rounding residue.
    """
    for block, features, feature_major in _blocks(W):
        t = thresholds
        if isinstance(thresholds, np.ndarray):
            t = thresholds[features, None] if feature_major else thresholds
        _subtract_clipped(block, t)


def _subtract_clipped(block: np.ndarray, t, scratch: np.ndarray | None = None) -> None:
    """``block -= clip(block, -t, t)``, through ``scratch`` (an array of block's size and
    dtype) when given; np.minimum and np.maximum are 2-3 times faster than np.clip with array
    bounds."""
    clipped = np.minimum(block, t, out=scratch)
    np.maximum(clipped, -t, out=clipped)
    block -= clipped


def _clip(array: np.ndarray, lower, upper) -> None:
    """Clip ``array`` in place to ``[lower, upper]`` (either None: unbounded)."""
    if lower is not None:
        np.maximum(array, lower, out=array)
    if upper is not None:
        np.minimum(array, upper, out=array)


def _scaled(bound: np.ndarray | None, factor: float):
    """A bound on the model ``factor * W`` as a bound on ``W``."""
    if bound is None or factor == 1.0:
        return bound
    return bound / bound.dtype.type(factor)


def _blocks(W: np.ndarray):
    """``W``'s storage in blocks of contiguous rows: (block, the features it holds, whether
    the rows are features)."""
    feature_major = not W.flags.c_contiguous and W.T.flags.c_contiguous
    storage = W.T if feature_major else W
    rows = max(1, _BLOCK_ELEMENTS // max(1, storage.shape[1]))
    for start in range(0, storage.shape[0], rows):
        block = storage[start : start + rows]
        yield block, (slice(start, start + rows) if feature_major else slice(None)), feature_major


def _weighted_abs_sum(W: np.ndarray, scale: np.ndarray | None) -> float:
    """``sum_kj s_j |W_kj|`` in float64."""
    total = 0.0
    for block, features, feature_major in _blocks(W):
        magnitudes = np.abs(block).astype(np.float64)
        if scale is None:
            total += float(magnitudes.sum())
        elif feature_major:
            total += float(magnitudes.sum(axis=1) @ scale[features].astype(np.float64))
        else:
            total += float((magnitudes @ scale.astype(np.float64)).sum())
    return total


class LazyPenalty:
    """What the columns of a sparse replica ``factor * W`` owe, paid when a step uses them.

    A sparse step reads and writes only the columns of its batch. Every step's L1 threshold
    ``lr_t l1 s_j`` applies to every column, but in ``W``'s units (the model over ``factor``)
    it is ``s_j lr_t l1 / factor_t``, and consecutive thresholds of an untouched column add up
    (the L2 decay lives in ``factor``, so it commutes with them). So the replica keeps their
    running sum ``total`` and, per feature, the sum ``paid`` up to which the column has been
    thresholded; column j owes ``s_j (total - paid_j)``: the cumulative penalty of Tsuruoka,
    Tsujii and Ananiadou (2009) and scikit-learn's just-in-time SAGA updates, exactly the
    eager proximal steps up to rounding. Both live in the replica's state arrays, so replica
    checks and checkpoints see them and every replica pays the same debts at the same step.

    Bounds: a column is clipped at the end of every step that touches it; in between only
    the decay moves it, towards zero. Where its box holds zero it stays in the box; where the
    box excludes zero (a lower bound above 0 or an upper one below), clipping it when it is
    next read gives what clipping it every step would, so only such columns are clipped on
    reads.
    """

    def __init__(self, penalty: Penalty, state: dict, num_features: int):
        self.penalty = penalty
        if penalty.has_l1:
            self.paid = state.setdefault("l1_paid", np.zeros(num_features))
            self.total = state.setdefault("l1_total", np.zeros(1))
        else:
            self.paid = self.total = None
        self.l1_scale = penalty.l1_scale
        self.lower, self.upper = _feature_major(penalty.lower_W), _feature_major(penalty.upper_W)
        # The features whose box excludes zero for some class: the only ones that drift out.
        drifting = np.zeros(num_features, dtype=bool)
        if self.lower is not None:
            drifting |= (self.lower > 0).any(axis=-1)
        if self.upper is not None:
            drifting |= (self.upper < 0).any(axis=-1)
        self.drifting = drifting if drifting.any() else None

    def _scratch(self, block: np.ndarray) -> np.ndarray:
        """A reused buffer of ``block``'s shape: a fresh one every read would cost more page
        faults than the threshold's arithmetic."""
        size = block.size
        buffer = getattr(self, "_buffer", None)
        if buffer is None or buffer.size < size or buffer.dtype != block.dtype:
            buffer = self._buffer = np.empty(max(size, 1), dtype=block.dtype)
        return buffer[:size].reshape(block.shape)

    def _gathered(self, W: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """``W.T[columns]`` (C x K, contiguous) in a buffer kept for the next step, as
        :meth:`_scratch` is; ``W`` feature-major."""
        buffer = getattr(self, "_gather", None)
        size = len(columns) * W.shape[0]
        if buffer is None or buffer.size < size or buffer.dtype != W.dtype:
            buffer = self._gather = np.empty(max(size, 1), dtype=W.dtype)
        block = buffer[:size].reshape(len(columns), W.shape[0])
        # mode="raise" would copy through a buffer of its own; columns are W's already.
        return np.take(W.T, columns, axis=0, out=block, mode="clip")

    def copy(self) -> LazyPenalty:
        """An independent copy (for a worker's scratch steps)."""
        twin = copy.copy(self)
        if self.paid is not None:
            twin.paid, twin.total = self.paid.copy(), self.total.copy()
        return twin

    def owed(self, block: np.ndarray, columns: np.ndarray, factor: float) -> None:
        """Pay the debts of ``block``, the rows ``W.T[columns]`` (features x classes), in
        place; the replica's bookkeeping is not changed."""
        if self.paid is not None and len(columns):
            debt = self.total[0] - self.paid[columns]
            if self.l1_scale is not None:
                debt *= self.l1_scale[columns]
            _subtract_clipped(block, debt.astype(block.dtype)[:, None], self._scratch(block))
        if self.drifting is not None:
            rows = np.flatnonzero(self.drifting[columns])
            if len(rows):
                drifted = block[rows]
                self.clip(drifted, columns[rows], factor)
                block[rows] = drifted

    def clip(self, block: np.ndarray, columns: np.ndarray, factor: float) -> None:
        """Clip ``block`` (the rows ``W.T[columns]``) to the box of the model ``factor * W``."""
        _clip(block, _columns(self.lower, columns, factor), _columns(self.upper, columns, factor))

    def settle(self, W: np.ndarray, factor: float) -> None:
        """Pay every column's debts (O(K D)): before the weights are judged or returned."""
        if self.paid is not None:
            debt = self.total[0] - self.paid
            if self.l1_scale is not None:
                debt = debt * self.l1_scale
            soft_threshold(W, debt.astype(W.dtype))
            self.paid[:] = self.total[0]
        penalty = self.penalty
        _clip(W, _scaled(penalty.lower_W, factor), _scaled(penalty.upper_W, factor))

    def forgive(self) -> None:
        """Mark every column paid: the replica's weights were just replaced by settled ones."""
        if self.paid is not None:
            self.paid[:] = self.total[0]

    def sparse_sufficient_vectors(self, W, factor, b, X, y, weights, loss):
        """:func:`numerics.sparse_sufficient_vectors` of the replica with its debts paid."""
        margins = self.sparse_raw_margins(W, b, X, factor).astype(W.dtype, copy=False)
        return loss.vectors(margins, y, weights)

    def sparse_raw_margins(self, W, b, X, factor: float = 1.0) -> np.ndarray:
        """:func:`numerics.sparse_raw_margins` of the replica with its debts paid."""
        columns, local = sparse.batch_columns(X)
        block = self._gathered(W, columns)
        self.owed(block, columns, factor)
        return sparse.sparse_product(local, block) * W.dtype.type(factor) + b

    def step(
        self,
        W: np.ndarray,
        factor: float,
        b: np.ndarray,
        U: np.ndarray,
        V,
        total_weight: float,
        learning_rate: float,
        fit_intercept: bool = True,
    ) -> float:
        """:func:`numerics.apply_sparse_sufficient_vectors` with this penalty, on a
        feature-major ``W``: the batch's columns are gathered once, pay their debts, take the
        step (the L2 decay into ``factor``) and are clipped, then written back; the step's
        threshold is owed by every column. Returns the new factor. ``V`` may be a list of
        CSR blocks of consecutive rows, as there."""
        penalty = self.penalty
        if isinstance(V, (list, tuple)):
            from scipy.sparse import vstack

            V = vstack(V, format="csr")
        columns, local = sparse.batch_columns(V) if V.nnz else (np.empty(0, np.int64), None)
        block = self._gathered(W, columns)
        # The debts, unless L1's threshold is folded into the update below.
        fused = self.paid is not None and self.drifting is None and len(columns)
        if fused:
            debt = self.total[0] - self.paid[columns]
            if self.l1_scale is not None:
                debt *= self.l1_scale[columns]
            threshold = debt.astype(block.dtype)[:, None]
            self.paid[columns] = self.total[0]
        else:
            self.owed(block, columns, factor)
            if self.paid is not None:
                self.paid[columns] = self.total[0]
        if penalty.l2 > 0.0:
            factor *= 1.0 - learning_rate * penalty.l2 * float(penalty.l2_scale)
        if factor < numerics._MIN_FACTOR:
            # W's units change by factor: so do the debts kept in them.
            W *= W.dtype.type(factor)
            block *= W.dtype.type(factor)
            if fused:
                threshold *= W.dtype.type(factor)
            if self.paid is not None:
                self.paid *= factor
                self.total *= factor
            factor = 1.0
        if total_weight > 0.0 and U.shape[0]:
            step = learning_rate / total_weight
            if V.nnz and fused:  # the debts first: the soft threshold's zeros stay exact
                _subtract_clipped(block, threshold, self._scratch(block))
                fused = False
            update = ("sparse", U, local if V.nnz else V)
            numerics.descend(block, b, step / factor, update, fit_intercept, intercept=step)
        if fused:  # no update to fold the debts into
            _subtract_clipped(block, threshold)
        if self.total is not None:
            self.total += learning_rate * penalty.l1 / factor
        self.clip(block, columns, factor)
        W.T[columns] = block
        _clip(b, penalty.lower_b, penalty.upper_b)
        return factor


def _feature_major(bound: np.ndarray | None) -> np.ndarray | None:
    """A K x D bound as a sparse step gathers it: one row of K when every feature has the
    same bounds (no gather at all), else a feature-major (D x K) copy."""
    if bound is None:
        return None
    if (bound == bound[:, :1]).all():
        return np.ascontiguousarray(bound[:, 0])
    return np.ascontiguousarray(bound.T)


def _columns(bound: np.ndarray | None, columns: np.ndarray, factor: float):
    """The rows of a :func:`_feature_major` bound for ``columns``, on ``W``'s scale."""
    if bound is None:
        return None
    return _scaled(bound if bound.ndim == 1 else bound[columns], factor)
