"""Linear probes (paper section 5.5): classifiers trained on frozen audio features.

Three probes share one protocol per classification task: leave-one-fold-out cross-validation
averaged over folds when the evaluation set has official folds, else train on the task source's
train rows and test on the evaluation set. Fold-based sets whose source also has a train split
get the L1 and log-mel probes on that split too (:meth:`pengi.evaluation.harness.Evaluator._probes`):

- ``L1``: standardised logistic regression on the frozen Pengi audio-encoder embedding;
- ``L3``: a 3-layer MLP (two hidden ReLU layers) on the same embedding;
- ``logmel``: the baseline, the L1 protocol on pooled log-mel statistics
  (:func:`pengi.corpus.probe.logmel_stats`, the features of ``bench/probe_logmel.py``).

Single-label tasks report accuracy; multi-label tasks mAP (one-vs-rest). Everything is seeded.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pengi.evaluation.metrics import accuracy, mean_average_precision

log = logging.getLogger(__name__)

PROBES = ("L1", "L3", "logmel")


@dataclass(frozen=True)
class ProbeSplit:
    """Features and targets of one train/test split.

    ``y_*`` are class indices ``(n,)`` (single-label) or multi-hot ``(n, C)`` (multi-label).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _classifier(kind: str, multilabel: bool, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "L3":
        # 3 layers: two hidden layers + the output layer; early stopping needs >= 2 classes per
        # fold, which small sets do not guarantee, so a fixed iteration budget is used instead.
        clf: Any = MLPClassifier(hidden_layer_sizes=(256, 256), max_iter=300, random_state=seed, alpha=1e-3)
    else:
        clf = LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
        if multilabel:
            clf = OneVsRestClassifier(clf)
    return make_pipeline(StandardScaler(), clf)


def fit_predict(kind: str, split: ProbeSplit, seed: int = 0) -> np.ndarray:
    """Train probe ``kind`` (``L1``/``L3``/``logmel``) and return test scores ``(n_test, C)``.

    Single-label: class probabilities over the *global* class indices (columns of classes
    absent from the training split stay 0). Multi-label: per-class scores.
    """
    with warnings.catch_warnings():
        # small probe sets trigger sklearn's "looks like regression" and convergence warnings;
        # the probe is a fixed protocol, so they are noise in the stage log
        warnings.simplefilter("ignore", UserWarning)
        from sklearn.exceptions import ConvergenceWarning

        warnings.simplefilter("ignore", ConvergenceWarning)
        return _fit_predict(kind, split, seed)


def _fit_predict(kind: str, split: ProbeSplit, seed: int) -> np.ndarray:
    multilabel = split.y_train.ndim == 2
    model = _classifier("L3" if kind == "L3" else "L1", multilabel, seed)
    if multilabel:
        n_classes = split.y_train.shape[1]
        present = np.flatnonzero((split.y_train.sum(0) > 0) & (split.y_train.sum(0) < len(split.y_train)))
        scores = np.zeros((len(split.x_test), n_classes))
        if present.size == 0:
            return scores
        model.fit(split.x_train, split.y_train[:, present])
        p = model.predict_proba(split.x_test)
        scores[:, present] = p if p.ndim == 2 else p[:, None]
        return scores
    classes = np.unique(split.y_train)
    n_classes = int(max(split.y_train.max(), split.y_test.max())) + 1
    scores = np.zeros((len(split.x_test), n_classes))
    if classes.size == 1:  # one training class: a constant prediction
        scores[:, classes[0]] = 1.0
        return scores
    model.fit(split.x_train, split.y_train)
    scores[:, model.classes_] = model.predict_proba(split.x_test)
    return scores


def probe_score(kind: str, split: ProbeSplit, seed: int = 0) -> float:
    """Accuracy (single-label) or mAP (multi-label) of one probe on one split."""
    scores = fit_predict(kind, split, seed)
    if split.y_test.ndim == 2:
        return mean_average_precision(split.y_test, scores)
    return accuracy(scores, split.y_test)


def fold_splits(x: np.ndarray, y: np.ndarray, folds: Sequence[str]) -> list[ProbeSplit]:
    """Leave-one-fold-out splits (the official folds of ESC-50, UrbanSound8K, ...)."""
    folds_arr = np.asarray(folds)
    out = []
    for f in sorted(set(folds_arr.tolist())):
        test = folds_arr == f
        if test.all() or not test.any():
            continue
        out.append(ProbeSplit(x[~test], y[~test], x[test], y[test]))
    return out


def run_probes(splits: Sequence[ProbeSplit], kinds: Sequence[str], seed: int = 0) -> dict[str, float]:
    """Mean score of each probe over the splits (one split, or the folds)."""
    if not splits:
        raise ValueError("no probe splits")
    out = {}
    for kind in kinds:
        out[kind] = float(np.mean([probe_score(kind, s, seed) for s in splits]))
        log.info("probe %s: %.4f over %d split(s)", kind, out[kind], len(splits))
    return out
