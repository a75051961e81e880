"""Logistic regression numerics: the steps, the objective and the full-batch sums, in pure
numpy, no Spark, no I/O.

Conventions: ``W`` is the K x D weight matrix, ``b`` the K intercepts, ``X`` a B x D block of
rows, ``y`` integer class indices and ``weights`` the per-row instance weights. Every function
works in the dtype of ``W`` so that float64 runs can be compared exactly with a reference.

The objective is MLlib's::

    sum_i w_i * loss(W x_i + b, y_i) / sum_i w_i  +  0.5 * regParam * sum_kj c_j W_kj^2

where ``c_j`` (``reg_scale``) is 1 in the standardized space, or 1 / std_j^2 on the original
coefficients (``standardization=False``); L1 and bounds: :mod:`svb_spark.core.penalty`. The
loss, and so the family, is a :class:`~svb_spark.core.loss.Loss` the caller passes (the
multinomial cross-entropy unless told): this module never decides it.
"""

from __future__ import annotations

import numpy as np

from svb_spark.core.loss import MULTINOMIAL, Loss
from svb_spark.core.sparse import sparse_product, subtract_sparse_product


def raw_margins(W: np.ndarray, b: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Class scores ``X W^T + b`` (B x K)."""
    return X @ W.T + b


def sufficient_vectors(
    W: np.ndarray,
    b: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray,
    loss: Loss = MULTINOMIAL,
) -> tuple[np.ndarray, float]:
    """Sufficient vectors of a minibatch.

    Returns ``(U, loss_sum)`` where, for the multinomial loss, ``U = diag(weights) (P - Y)``
    (B x K) and ``loss_sum`` is the weighted cross-entropy summed over the rows (see
    :meth:`Loss.vectors`). The weight gradient of the batch is ``U^T X`` and the intercept
    gradient is the column sums of ``U``; ``X`` itself is the second sufficient vector.
    """
    return loss.vectors(raw_margins(W, b, X), y, weights)


def _decay(W: np.ndarray, learning_rate: float, reg_param: float, reg_scale) -> None:
    """The L2 part of a step: ``W <- (1 - lr * regParam * c) W``."""
    if reg_param > 0.0:
        factor = 1.0 - learning_rate * reg_param * np.asarray(reg_scale, dtype=np.float64)
        W *= factor.astype(W.dtype) if isinstance(factor, np.ndarray) else W.dtype.type(factor)


def apply_sufficient_vectors(
    W: np.ndarray,
    b: np.ndarray,
    U: np.ndarray,
    V: np.ndarray,
    total_weight: float,
    learning_rate: float,
    reg_param: float,
    reg_scale: np.ndarray | float = 1.0,
    fit_intercept: bool = True,
) -> None:
    """One SGD step from the sufficient vectors of the whole global batch, in place.

    ``W <- (1 - lr * regParam * c) W - lr * U^T V / total_weight`` and, with an intercept,
    ``b <- b - lr * colsum(U) / total_weight``. ``U`` and ``V`` are every worker's vectors
    concatenated in rank order, so all replicas perform the same floating-point operations.
    """
    _decay(W, learning_rate, reg_param, reg_scale)
    if total_weight <= 0.0 or U.shape[0] == 0:
        return
    descend(W, b, learning_rate / total_weight, ("vectors", U, V), fit_intercept)


def descend(W, b, coefficient: float, update: tuple, fit_intercept: bool = True, intercept=None):
    """The move every SGD step makes once its penalty is applied, in place:
    ``W -= coefficient * U^T V`` and ``b -= coefficient * colsum(U)``. Every update path
    (dense and sparse sufficient vectors, the dense baseline's gradients, SAGA, the lazy
    penalty's gathered columns) goes through it.

    ``update`` is ``("vectors", U, V)`` with dense rows V (one BLAS gemm into W, no K x D
    temporary), ``("sparse", U, V)`` with CSR rows V, or a list of CSR blocks of consecutive
    rows (every worker's, in rank order: the same floating-point operations as the stacked
    rows), applied to a feature-major ``W`` (D x K rows: a replica's transpose or a gathered
    block of columns), or ``("gradient", G, g)``: a summed ``G = U^T V`` and ``g =
    colsum(U)``. ``intercept`` is b's coefficient where it differs from W's (a scaled
    replica's). Returns the column sums of U.
    """
    kind, first, second = update
    scale = W.dtype.type(coefficient)
    if kind == "gradient":
        W -= scale * first
        sums = second
    elif kind == "vectors":
        _subtract_outer_products(W, scale, first, second)
        sums = first.sum(axis=0)
    else:  # "sparse": each row of W takes its terms in V's row order, block by block
        start = 0
        for block in second if isinstance(second, (list, tuple)) else [second]:
            stop = start + block.shape[0]
            if block.nnz:
                subtract_sparse_product(W, scale, first[start:stop], block)
            start = stop
        sums = first.sum(axis=0)
    if fit_intercept:
        b -= b.dtype.type(coefficient if intercept is None else intercept) * sums
    return sums


def _subtract_outer_products(W: np.ndarray, scale, U: np.ndarray, V: np.ndarray) -> None:
    """``W -= scale * U^T V`` in place with one BLAS gemm (beta = 1), no K x D temporary.

    A C-ordered W is a Fortran-ordered W^T, so gemm accumulates ``-scale * V^T U`` into it.
    """
    from scipy.linalg import blas

    gemm = {np.dtype(np.float32): blas.sgemm, np.dtype(np.float64): blas.dgemm}.get(W.dtype)
    if gemm is None or not W.flags.c_contiguous:
        W -= scale * (U.T @ V)
        return
    updated = gemm(alpha=-scale, a=V.T, b=U, beta=1.0, c=W.T, overwrite_c=True)
    if not np.shares_memory(updated, W):  # gemm had to copy (unusual strides): write back
        W[...] = updated.T


def objective(
    W: np.ndarray,
    b: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray,
    reg_param: float,
    reg_scale: np.ndarray | float = 1.0,
    loss: Loss = MULTINOMIAL,
) -> float:
    """The full regularized objective on ``(X, y, weights)`` (see the module docstring)."""
    _, loss_sum = sufficient_vectors(W, b, X, y, weights, loss)
    return loss_sum / float(weights.sum()) + regularization(W, reg_param, reg_scale)


def regularization(
    W: np.ndarray, reg_param: float, reg_scale: np.ndarray | float = 1.0, factor: float = 1.0
) -> float:
    """The L2 penalty ``0.5 * regParam * sum_kj c_j (factor W_kj)^2``.

    Summed one class row at a time in float64, so that no K x D temporary is made.
    """
    if reg_param == 0.0:
        return 0.0
    # Walk the contiguous axis in blocks: a sparse replica is stored feature-major (D x K).
    feature_major = not W.flags.c_contiguous and W.T.flags.c_contiguous
    rows = W.T if feature_major else W
    scale = np.broadcast_to(np.asarray(reg_scale, dtype=np.float64), (W.shape[1],))
    total = 0.0
    for start in range(0, rows.shape[0], 1024):
        block = rows[start : start + 1024].astype(np.float64)
        squares = np.einsum("ij,ij->i", block, block) if feature_major else block * block
        if feature_major:
            total += float(squares @ scale[start : start + 1024])
        else:
            total += float((squares * scale).sum())
    return 0.5 * reg_param * factor * factor * total


def gradient(
    W: np.ndarray,
    b: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray,
    reg_param: float,
    reg_scale: np.ndarray | float = 1.0,
    loss: Loss = MULTINOMIAL,
) -> tuple[np.ndarray, np.ndarray]:
    """Dense gradient of :func:`objective`: ``(dW, db)``."""
    U, _ = sufficient_vectors(W, b, X, y, weights, loss)
    total = float(weights.sum())
    dW = U.T @ X / total + reg_param * W * reg_scale
    return dW, U.sum(axis=0) / total


def base_learning_rate(
    step_size: float, curvature_bound: float, hessian_bound: float = 0.5
) -> float:
    """Learning rate of the first epoch: ``stepSize`` in units of ``1 / L``.

    ``L = hessian_bound * curvature`` bounds the Lipschitz constant of the gradient (the
    loss's :attr:`~Loss.hessian_bound`, 1/2 for the softmax; see :func:`curvature`), so the
    default ``stepSize = 1`` is the classic safe step, and one default serves data of any
    scale and dimension.
    """
    return step_size / (hessian_bound * max(curvature_bound, 1e-12))


def learning_rate(base: float, epoch: int) -> float:
    """Step size in epoch ``epoch`` (0-based): ``base / sqrt(1 + epoch)``.

    The decay makes SGD settle on the optimum instead of orbiting it, while staying large enough
    in the first epochs to make fast progress.
    """
    return base / np.sqrt(1.0 + epoch)


def curvature(
    X: np.ndarray,
    weights: np.ndarray,
    fit_intercept: bool,
    iterations: int = 30,
    rtol: float = 1e-9,
) -> float:
    """Largest eigenvalue of the weighted second-moment matrix of the rows (plus a bias column).

    With the loss's bound on its second derivative (the softmax Jacobian's norm is at most
    1/2) it bounds the Hessian, so ``2 / curvature`` is a safe, data-adapted step. Power
    iteration: at most ``iterations`` passes of two matrix-vector products, fewer once an
    estimate moves by less than ``rtol`` of itself (sparse text rows settle within about 8).
    """
    total = float(weights.sum())
    if X.shape[0] == 0 or total <= 0.0:
        return 0.0
    Xw = X.astype(np.float64, copy=False)
    w = weights.astype(np.float64, copy=False)
    v = np.ones(X.shape[1] + (1 if fit_intercept else 0)) / np.sqrt(X.shape[1] + 1.0)
    eigenvalue = 0.0
    for _ in range(iterations):
        projected = Xw @ v[: X.shape[1]]
        if fit_intercept:
            projected = projected + v[-1]
        projected *= w
        nxt = Xw.T @ projected
        if fit_intercept:
            nxt = np.append(nxt, projected.sum())
        nxt /= total
        previous, eigenvalue = eigenvalue, float(np.linalg.norm(nxt))
        if eigenvalue == 0.0:
            return 0.0
        if abs(eigenvalue - previous) <= rtol * eigenvalue:
            return eigenvalue
        v = nxt / eigenvalue
    return eigenvalue


def apply_gradient(
    W: np.ndarray,
    b: np.ndarray,
    G: np.ndarray,
    g: np.ndarray,
    total_weight: float,
    learning_rate: float,
    reg_param: float,
    reg_scale: np.ndarray | float = 1.0,
    fit_intercept: bool = True,
) -> None:
    """The same SGD step as :func:`apply_sufficient_vectors`, from a summed K x D gradient.

    ``G = sum_r U_r^T V_r`` and ``g = sum_r colsum(U_r)``: what the dense baseline exchanges.
    """
    _decay(W, learning_rate, reg_param, reg_scale)
    if total_weight <= 0.0:
        return
    descend(W, b, learning_rate / total_weight, ("gradient", G, g), fit_intercept)


# Below this, the scalar of a scaled sparse replica is folded back into W (an O(K D) pass that
# happens about once per log(1e-6) / log(1 - lr * regParam) steps).
_MIN_FACTOR = 1e-6

# Rows per block when a whole partition is scored at once (L-BFGS), so that its B x K scores
# stay small.
FULL_BATCH_BLOCK_ROWS = 65536


def loss_and_gradient_sums(
    W: np.ndarray, b: np.ndarray, X, y: np.ndarray, weights: np.ndarray, loss: Loss = MULTINOMIAL
) -> tuple[float, np.ndarray]:
    """The weighted loss sum and the K x (D + 1) gradient sum ``[U^T X | colsum U]`` (float64)
    of all rows ``X`` (dense or CSR) at ``(W, b)``, scored block by block in ``X``'s dtype."""
    K, D = W.shape
    total = np.zeros((K, D + 1))
    loss_sum = 0.0
    W, b = W.astype(X.dtype, copy=False), b.astype(X.dtype, copy=False)
    for start in range(0, X.shape[0], FULL_BATCH_BLOCK_ROWS):
        rows = slice(start, start + FULL_BATCH_BLOCK_ROWS)
        block = X[rows]
        if isinstance(block, np.ndarray):
            # Class-major margins seen as rows x K in Fortran order: the softmax reduces along
            # contiguous memory (8,000 rows: 0.9 ms, not 3.2, at K = 26; 22, not 32, at K = 200).
            margins = (W @ block.T + b[:, None]).T
        else:
            margins = np.asarray(block @ W.T) + b
        U, block_loss = loss.vectors(margins, y[rows], weights[rows])
        total += batch_gradient(U, block)
        loss_sum += block_loss
    return loss_sum, total


def objective_and_gradient(
    loss_sum: float,
    gradient_sum: np.ndarray,
    W: np.ndarray,
    total_weight: float,
    reg_param: float,
    reg_scale: np.ndarray | float = 1.0,
    fit_intercept: bool = True,
) -> tuple[float, np.ndarray]:
    """The objective of the module docstring and its K x (D + 1) gradient, from the loss and
    gradient sums of all rows (see :func:`loss_and_gradient_sums`) at ``W``. ``gradient_sum``
    is divided in place."""
    gradient_sum /= total_weight
    if not fit_intercept:
        gradient_sum[:, -1] = 0.0
    objective = loss_sum / total_weight
    if reg_param > 0.0:
        objective += regularization(W, reg_param, reg_scale)
        gradient_sum[:, :-1] += reg_param * reg_scale * W
    return float(objective), gradient_sum


def fold_into_mean(mean: np.ndarray, current: np.ndarray, count: int) -> None:
    """``mean = (1 - 1/count) mean + current / count``, in place and without a temporary:
    the running mean of ``count`` iterates (averaged SGD)."""
    mean -= current
    mean *= mean.dtype.type(1.0 - 1.0 / count)
    mean += current


def feature_major_zeros(num_classes: int, num_features: int, dtype) -> np.ndarray:
    """A K x D zero matrix stored feature-major, the layout sparse updates want."""
    return np.zeros((num_features, num_classes), dtype=dtype).T


def sparse_raw_margins(W: np.ndarray, b: np.ndarray, X, factor: float = 1.0) -> np.ndarray:
    """Class scores ``X (factor W)^T + b`` of CSR rows, reading only the columns they use.

    Fastest when W is a view of a feature-major (D x K) array, see :func:`feature_major_zeros`:
    the columns of a batch are then contiguous rows of ``W.T``, not K scattered reads each.
    """
    return sparse_product(X, W.T) * W.dtype.type(factor) + b


def sparse_sufficient_vectors(
    W: np.ndarray,
    factor: float,
    b: np.ndarray,
    X,
    y: np.ndarray,
    weights: np.ndarray,
    loss: Loss = MULTINOMIAL,
) -> tuple[np.ndarray, float]:
    """:func:`sufficient_vectors` for CSR rows and the scaled replica ``factor * W``.

    Only the columns that occur in the batch are read, so the cost is O(B K + nnz K).
    """
    margins = sparse_raw_margins(W, b, X, factor).astype(W.dtype, copy=False)
    return loss.vectors(margins, y, weights)


def apply_sparse_sufficient_vectors(
    W: np.ndarray,
    factor: float,
    b: np.ndarray,
    U: np.ndarray,
    V,
    total_weight: float,
    learning_rate: float,
    reg_param: float,
    reg_scale: np.ndarray | float = 1.0,
    fit_intercept: bool = True,
) -> float:
    """:func:`apply_sufficient_vectors` for CSR ``V`` on the scaled replica ``factor * W``.

    The L2 decay multiplies the scalar ``factor`` (O(1) instead of O(K D)), and ``U^T V`` only
    touches the columns present in the batch. Returns the new factor. A per-feature penalty
    (``reg_scale`` an array) cannot be a scalar, so it decays ``W`` itself. ``V`` may be a list
    of CSR blocks of consecutive rows (every worker's, in rank order): that takes the same
    floating-point operations as the stacked rows, without stacking them.
    """
    if reg_param > 0.0:
        if isinstance(reg_scale, np.ndarray):
            _decay(W, learning_rate, reg_param, reg_scale)
        else:
            factor *= 1.0 - learning_rate * reg_param * float(reg_scale)
    if factor < _MIN_FACTOR:
        W *= W.dtype.type(factor)
        factor = 1.0
    if total_weight <= 0.0 or U.shape[0] == 0:
        return factor
    step = learning_rate / total_weight
    descend(W.T, b, step / factor, ("sparse", U, V), fit_intercept, intercept=step)
    return factor


def batch_gradient(U: np.ndarray, X) -> np.ndarray:
    """``[U^T X | colsum(U)]``: a batch's K x (D + 1) gradient sum, for dense or CSR rows."""
    gradient = (X.T @ U).T if not isinstance(X, np.ndarray) else U.T @ X
    return np.hstack([np.asarray(gradient), U.sum(axis=0)[:, None]])


# SAGA on sufficient vectors. Each worker keeps the last U row it computed for each of its own
# rows and sends dU = U_new - U_old instead of U (the same bytes); every replica keeps the
# average gradient A (K x D) and a (K): the sums of all stored U_i^T x_i and U_i over the total
# weight N of the data, updated by the same rebuilt outer products, and steps along
# dU^T V / batch_weight + s A. A constant step then converges, where SGD needs a decay.


def saga_delta(memory: np.ndarray, rows: np.ndarray, U: np.ndarray) -> np.ndarray:
    """Worker side of SAGA: ``dU = U - memory[rows]``, then ``memory[rows] = U`` (in place).

    ``rows`` are the batch's local row numbers (distinct within a batch); ``dU`` is what goes
    on the wire instead of ``U``.
    """
    dU = U - memory[rows]
    memory[rows] = U
    return dU


def saga_seen_scale(weight_seen: float, total_weight: float) -> float:
    """``s`` of :func:`apply_saga`: A is a sum over all data divided by N,
    but in the first epoch it holds only the rows seen so far, so it is scaled up to their
    average (as scikit-learn's SAG and SAGA do)."""
    if weight_seen <= 0.0:
        return 0.0
    return total_weight / min(weight_seen, total_weight)


def apply_saga(
    W: np.ndarray,
    b: np.ndarray,
    A: np.ndarray,
    a: np.ndarray,
    update: tuple,
    batch_weight: float,
    total_weight: float,
    learning_rate: float,
    reg_param: float,
    reg_scale: np.ndarray | float = 1.0,
    seen_scale: float = 1.0,
    fit_intercept: bool = True,
) -> None:
    """One SAGA step from the global batch, in place on ``W``, ``b``, ``A`` and ``a``.

    ``update`` is ``("vectors", dU, V)``: the batch's U differences and (dense) rows, or
    ``("gradient", G, g)``: their summed ``G = dU^T V`` and ``g = colsum(dU)``, what the dense
    baseline exchanges. ``W <- (1 - lr regParam c) W - lr (G / batch_weight + s A_old)`` and
    ``A <- A + G / N`` (intercepts alike), computed as ``A += G / N`` followed by
    ``W -= lr (1 / batch_weight - s / N) G + lr s A_new``, so that from vectors G is never
    formed: two in-place gemms of the batch and one pass over A.
    """
    _decay(W, learning_rate, reg_param, reg_scale)
    if batch_weight > 0.0 and update[1].shape[0]:
        coefficient = learning_rate * (1.0 / batch_weight - seen_scale / total_weight)
        column_sums = descend(A, None, -1.0 / total_weight, update, fit_intercept=False)
        descend(W, b, coefficient, update, fit_intercept)
        a += a.dtype.type(1.0 / total_weight) * column_sums
    _step_along_average(W, b, A, a, learning_rate * seen_scale, fit_intercept)


def _step_along_average(W, b, A, a, scale: float, fit_intercept: bool) -> None:
    """``W -= scale A`` (and ``b -= scale a``) without a K x D temporary (BLAS axpy)."""
    if scale == 0.0:
        return
    from scipy.linalg import blas

    axpy = {np.dtype(np.float32): blas.saxpy, np.dtype(np.float64): blas.daxpy}[W.dtype]
    if W.flags.c_contiguous and A.flags.c_contiguous:
        axpy(A.ravel(), W.ravel(), a=-scale)
    else:
        W -= W.dtype.type(scale) * A
    if fit_intercept:
        b -= b.dtype.type(scale) * a
