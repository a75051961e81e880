"""The multi-label family: rows that carry any set of labels (none included), trained as K
independent sigmoids in one fit (:class:`MultiLabel`), and what scoring keeps of such a
model's rows over its label blocks (:class:`RunningSigmoids`).

A row's labels are a set, so ``y`` is the rows' label sets as a rows x K CSR matrix of ones
(:func:`label_sets`): a dense K-wide ``Y`` is never built, in training or in scoring. No
normalizer couples the labels, so a block of labels trains on its own in the class-sharded
mode, and the loss of a block is this loss on the block's labels.
"""

from __future__ import annotations

import numpy as np

from svb_spark.core.loss import Loss, RunningTop, sigmoid, softplus


class MultiLabel(Loss):
    """K independent sigmoids, one per label, for rows that carry any set of labels (none
    included): ``U = diag(w) (sigmoid(M) - Y)`` and the loss ``w sum_k (log(1 + e^m_k) - y_k
    m_k)``. ``y`` is the rows' label sets as a rows x K CSR matrix (:func:`label_sets`), so
    ``Y`` is never dense: its few ones are taken from ``U`` where they sit. A row counts as
    correct in proportion to its F1 (its predicted set, probability above 1/2, against its
    labels), so held-out rows judge a fit by their mean F1: MLlib's example-based f1Measure.

    Examples
    --------
    >>> y = label_sets([[0, 2], []], 3)
    >>> U, loss_sum = MultiLabel().vectors(np.zeros((2, 3)), y, np.ones(2))
    >>> U.tolist(), bool(np.isclose(loss_sum, 6 * np.log(2)))
    ([[-0.5, 0.5, -0.5], [0.5, 0.5, 0.5]], True)
    """

    name = "multilabel"
    label_sets = True
    blocks = True  # no normalizer couples the labels: a block of them trains on its own
    hessian_bound = 0.25  # sigmoid' is at most 1/4, in each margin apart

    def vectors(self, margins, y, weights):
        rows, columns = label_positions(y)
        w = weights.astype(margins.dtype, copy=False)
        log_one_plus = softplus(margins)
        loss_sum = float(weights @ log_one_plus.sum(axis=1, dtype=np.float64))
        loss_sum -= float((weights[rows] * margins[rows, columns]).sum(dtype=np.float64))
        # sigmoid(m) = exp(m - log(1 + e^m)): no overflow for large |m|.
        np.subtract(margins, log_one_plus, out=margins)
        np.exp(margins, out=margins)
        margins[rows, columns] -= 1.0
        margins *= w[:, None]
        return margins, loss_sum

    def correct_weight(self, U, y, weights):
        """The rows' weights times their F1: ``2 |labels and predicted| / (|labels| +
        |predicted|)``, the predicted labels those of probability above 1/2, and 1 where both
        sets are empty. The exact set alone is rarely right among many labels, too coarse to
        stop on; the held-out loss kept falling for 28 epochs on 1,000 generated labels where
        the F1 was best after 3 (benchmarks.multilabel's set, 20k rows).

        >>> y = label_sets([[0, 1], [], [2]], 3)
        >>> U, _ = MULTILABEL.vectors(np.array([[3.0, -3, 3], [-3, -3, -3], [-3, -3, -3]]),
        ...                           y, np.ones(3))
        >>> MULTILABEL.correct_weight(U, y, np.ones(3))  # F1 1/2, 1 and 0
        1.5
        """
        rows, columns = label_positions(y)
        w = weights.astype(U.dtype, copy=False)
        # Off a row's labels U = w sigmoid(m); on them U + w, and U itself is never above w / 2.
        extra = (U > 0.5 * w[:, None]).sum(axis=1)
        hits = np.bincount(rows, U[rows, columns] + w[rows] > 0.5 * w[rows], len(extra))
        return float(weights @ row_f1(hits, np.diff(y.indptr), extra))

    def outputs(self, margins):
        return margins, sigmoid(np.asarray(margins, dtype=np.float64)), None

    # The class-sharded decomposition (see Multinomial's): the sigmoids need no normalizer, so
    # a block's vectors and loss are this loss's on the block's own labels.

    @staticmethod
    def label_margins(margins: np.ndarray, y, first_class: int):
        """The rows' label sets among the block's classes ``first_class ..``, renumbered."""
        return y[:, first_class : first_class + margins.shape[1]]

    @staticmethod
    def partial_normalizers(margins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nothing to share (zeros, two a row, as the sharded messages carry them); the
        margins are left as they are."""
        zeros = np.zeros(margins.shape[0], dtype=margins.dtype)
        return zeros, zeros

    @staticmethod
    def log_normalizers(row_maxes: list[np.ndarray], row_sums: list[np.ndarray]) -> None:
        return None

    def block_vectors(self, margins, row_max, log_normalizer, labels, weights):
        """One block's ``(U_block, loss_sum)``: :meth:`vectors` on the block's classes."""
        return self.vectors(margins, labels, weights)

    def block_verdicts(self, margins: np.ndarray, y, first_class: int) -> np.ndarray:
        """What one block of classes knows of held-out rows it scored (``margins``): per row
        its classes' loss, its labels predicted, and its classes predicted that are not
        labels. A 3 x rows float64 array, for :meth:`held_out_sums`."""
        rows, columns = label_positions(self.label_margins(margins, y, first_class))
        count, picked = margins.shape[0], margins[rows, columns]
        verdicts = np.zeros((3, count))
        verdicts[0] = softplus(margins).sum(axis=1, dtype=np.float64)
        verdicts[0] -= np.bincount(rows, weights=picked, minlength=count)
        verdicts[1] = np.bincount(rows, weights=picked > 0, minlength=count)  # sigmoid > 1/2
        verdicts[2] = (margins > 0).sum(axis=1) - verdicts[1]
        return verdicts

    @staticmethod
    def held_out_sums(blocks: list[np.ndarray], y, w: np.ndarray) -> list[float]:
        """The held-out (loss, weight, correctly predicted weight) sums from every block's
        :meth:`block_verdicts`: a row's correct weight is its weight times its F1, as in
        :meth:`correct_weight`."""
        loss = np.sum([b[0] for b in blocks], axis=0)
        hits = np.sum([b[1] for b in blocks], axis=0)
        extra = np.sum([b[2] for b in blocks], axis=0)
        correct = float(w @ row_f1(hits, np.diff(y.indptr), extra))
        return [float(w @ loss), float(w.sum(dtype=np.float64)), correct]

    # From zero intercepts every label starts at probability 1/2, so the many rows without a
    # label push the shared features down in every label, and SGD's decaying steps do not
    # bring the rare labels back to calibrated probabilities, which the 1/2 threshold needs:
    # on 200 generated Zipfian labels (5k rows) SGD reached micro F1 0.907 from zero and
    # 0.975 from each label's log odds (L-BFGS 0.978).
    intercepts_for_every_solver = True

    def start_intercepts(self, class_weights, rows, total_weight):
        """Each label's log odds, ``log((n_k + 1/2) / (n - n_k + 1/2))`` (MLlib's binomial
        start, smoothed so that a label no row carries starts finite).

        >>> np.round(MULTILABEL.start_intercepts(np.array([1.0, 0.0]), 3, 4.0), 3).tolist()
        [-0.847, -2.197, -2.197]
        """
        counts = np.zeros(rows)
        counts[: min(rows, len(class_weights))] = class_weights[:rows]
        return np.log((counts + 0.5) / (total_weight - counts + 0.5))

    def predictions(self, probabilities, thresholds=None, threshold=None):
        """Each row's predicted label set (a rows x K CSR matrix, see :func:`label_sets`): the
        labels whose probability exceeds their ``thresholds`` value, or else ``threshold``
        (1/2 by default), as MLlib's binary models decide on their one probability."""
        from scipy import sparse

        cut = label_cuts(thresholds, threshold, logits=False)
        with np.errstate(invalid="ignore"):
            return sparse.csr_matrix(probabilities > cut, dtype=np.float64)

    def running(self, num_rows, thresholds=None, threshold=None, top_k=0):
        return RunningSigmoids(num_rows, thresholds, threshold, top_k)


def row_f1(hits: np.ndarray, labels: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """Each row's F1 from its labels predicted (``hits``), its labels and its predicted
    labels that are not its (``extra``); 1 where it has neither labels nor predictions."""
    both = labels + hits + extra
    return np.where(both > 0, 2.0 * hits / np.maximum(both, 1), 1.0)


def label_cuts(thresholds, threshold, logits: bool) -> np.ndarray:
    """The probability (or, with ``logits``, the margin) each label must exceed to be
    predicted: ``thresholds`` per label, or else ``threshold`` (1/2 by default) for all."""
    cut = np.asarray(thresholds if thresholds else 0.5 if threshold is None else threshold, float)
    if not logits:
        return cut
    with np.errstate(divide="ignore"):
        return np.log(cut) - np.log1p(-cut)  # logit: -inf at 0, +inf at 1


def label_sets(labels: list, num_classes: int, dtype=np.float32):
    """Rows' label sets (a list of label lists) as a rows x ``num_classes`` CSR matrix of
    ones, the ``y`` of :class:`MultiLabel`; a label a row repeats counts once."""
    offsets = np.cumsum([0] + [len(row) for row in labels])
    flat = np.fromiter((int(k) for row in labels for k in row), dtype=np.int32, count=offsets[-1])
    return label_sets_of_parts(offsets, flat, num_classes, dtype)


def label_sets_of_parts(offsets: np.ndarray, labels: np.ndarray, num_classes: int, dtype):
    """:func:`label_sets` of rows whose labels are ``labels[offsets[i]:offsets[i + 1]]``
    (integer-valued, any dtype): sorted within each row, a repeated label counted once."""
    from scipy import sparse

    y = sparse.csr_matrix(
        (np.ones(len(labels), dtype=dtype), np.asarray(labels).astype(np.int32), offsets),
        shape=(len(offsets) - 1, num_classes),
    )
    y.sum_duplicates()  # sorts each row's labels and adds up repeats
    y.data[:] = 1
    return y


def label_positions(y) -> tuple[np.ndarray, np.ndarray]:
    """The (row, label) of every label in CSR label sets ``y``."""
    return np.repeat(np.arange(y.shape[0]), np.diff(y.indptr)), y.indices


class RunningSigmoids:
    """What scoring keeps of a multi-label model's rows over its label blocks in order: the
    labels each row is predicted to carry (see :meth:`MultiLabel.predictions`) and its
    ``top_k`` most probable labels, so the rows' K-wide margins are never needed.

    Examples
    --------
    >>> raw = np.array([[2.0, -1.0, 0.5, 3.0]])
    >>> running = RunningSigmoids(1, top_k=2)
    >>> running.add(raw[:, :2], 0)
    >>> running.add(raw[:, 2:], 2)
    >>> running.predictions().indices.tolist()
    [0, 2, 3]
    >>> classes, probabilities = running.top()
    >>> classes.tolist(), bool(np.allclose(probabilities, sigmoid(raw[:, [3, 0]])))
    ([[3.0, 0.0]], True)
    """

    def __init__(self, num_rows: int, thresholds=None, threshold=None, top_k: int = 0):
        self.num_rows, self.num_labels = num_rows, 0
        self.cut = label_cuts(thresholds, threshold, logits=True)
        self.ranking = RunningTop(num_rows, top_k)
        self._rows: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    def add(self, raw: np.ndarray, first_class: int) -> None:
        """Fold in the margins ``raw`` (rows x block labels) of labels ``first_class`` on."""
        width = raw.shape[1]
        cut = self.cut if self.cut.ndim == 0 else self.cut[first_class : first_class + width]
        with np.errstate(invalid="ignore"):
            rows, labels = np.nonzero(raw > cut)
        self._rows.append(rows)
        self._labels.append(labels + first_class)
        self.num_labels = max(self.num_labels, first_class + width)
        self.ranking.add(raw, first_class)

    def top(self) -> tuple[np.ndarray, np.ndarray]:
        """Each row's ``top_k`` most probable labels (float64, best first) and their
        probabilities, over the labels added so far."""
        return self.ranking.classes.astype(np.float64), sigmoid(self.ranking.margins)

    def probabilities(self, raw: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Every label's probability from the full margins ``raw``, written to ``out``."""
        if out is None:
            return sigmoid(raw)
        out[...] = sigmoid(raw)
        return out

    def predictions(self):
        """The rows' predicted label sets (CSR), labels in increasing order."""
        from scipy import sparse

        rows = np.concatenate(self._rows) if self._rows else np.zeros(0, np.int64)
        labels = np.concatenate(self._labels) if self._labels else np.zeros(0, np.int64)
        order = np.argsort(rows, kind="stable")  # blocks come in order: labels stay sorted
        indptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=self.num_rows))]
        return sparse.csr_matrix(
            (np.ones(len(order)), labels[order], indptr), shape=(self.num_rows, self.num_labels)
        )


MULTILABEL = MultiLabel()
