"""Text-only and constant baselines for the report (the columns beside the model).

- **Constant caption** (captioning): one training caption given for every test clip. We use
  the *most frequent* training caption (ties: the shorter, then the alphabetically first),
  not the caption that maximises CIDEr-D on the training set: the latter costs a CIDEr-D
  pass per candidate over the whole training set, and on the mini corpus, whose captions
  come from a small grammar, the most frequent caption is the typical one anyway.
- **Question-only** (AQA): the answer a text-only prior gives without hearing the audio:
  the most frequent training answer to the same (normalised) question; for an unseen question
  the most frequent training answer of its question type (yes/no questions vs the rest).
- **Chance / majority** (classification): ``1/K`` and the rate of the most frequent test
  class (the best any constant prediction can do on this test set).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from pengi.evaluation.metrics import normalise_answer

_YES_NO = re.compile(r"^(is|are|was|were|do|does|did|can|could|will|would|has|have|had|should)\b")


def constant_caption(train_captions: Sequence[str]) -> str:
    """The most frequent training caption (ties: shorter, then alphabetical).

    Raises:
        ValueError: no training captions.
    """
    caps = [" ".join(c.split()) for c in train_captions if c and c.strip()]
    if not caps:
        raise ValueError("no training captions for the constant-caption baseline")
    counts = Counter(caps)
    return min(counts, key=lambda c: (-counts[c], len(c), c))


def question_type(question: str) -> str:
    """``"yes_no"`` for questions that open with an auxiliary verb, else ``"open"``."""
    return "yes_no" if _YES_NO.match(normalise_answer(question)) else "open"


class QuestionOnlyBaseline:
    """The text-only AQA prior (see the module doc), fitted on (question, answer) pairs."""

    def __init__(self, questions: Sequence[str], answers: Sequence[str]):
        if len(questions) != len(answers) or not questions:
            raise ValueError("the question-only baseline needs equally many, non-zero questions and answers")
        by_question: dict[str, Counter] = {}
        by_type: dict[str, Counter] = {}
        overall: Counter = Counter()
        for q, a in zip(questions, answers):
            a = normalise_answer(a)
            by_question.setdefault(normalise_answer(q), Counter())[a] += 1
            by_type.setdefault(question_type(q), Counter())[a] += 1
            overall[a] += 1
        self._by_question = {q: _top(c) for q, c in by_question.items()}
        self._by_type = {t: _top(c) for t, c in by_type.items()}
        self._overall = _top(overall)

    def predict(self, question: str) -> str:
        """The prior's answer to one question."""
        q = normalise_answer(question)
        if q in self._by_question:
            return self._by_question[q]
        return self._by_type.get(question_type(question), self._overall)


def _top(counts: Counter) -> str:
    return min(counts, key=lambda a: (-counts[a], a))


def strip_question_prompt(prompt: str) -> str:
    """``"question: is it raining?"`` -> ``"is it raining?"`` (the AQA template's prefix)."""
    return prompt.split(":", 1)[1].strip() if prompt.lower().startswith("question:") else prompt


def chance_accuracy(num_classes: int) -> float:
    """Accuracy of a uniform random guess."""
    if num_classes < 1:
        raise ValueError("num_classes must be >= 1")
    return 1.0 / num_classes


def majority_accuracy(labels: Sequence[int]) -> float:
    """Accuracy of always predicting the most frequent test class."""
    if not len(labels):
        raise ValueError("no labels")
    return float(Counter(labels).most_common(1)[0][1] / len(labels))


def chance_map(y_true: np.ndarray) -> float:
    """Expected mAP of random scores: the mean class prevalence (classes with positives)."""
    t = np.asarray(y_true, dtype=float)
    prev = t.mean(axis=0)
    return float(prev[t.sum(0) > 0].mean()) if (t.sum(0) > 0).any() else 0.0


def chance_recall(num_candidates: int, k: int, num_relevant: int = 1) -> float:
    """R@k (percent) of a random ranking: the chance that one of ``num_relevant`` relevant
    items among ``num_candidates`` lands in the top ``k`` (hypergeometric)."""
    from math import comb

    if not 1 <= num_relevant <= num_candidates:
        raise ValueError("need 1 <= num_relevant <= num_candidates")
    k = min(k, num_candidates)
    return 100.0 * (1.0 - comb(num_candidates - num_relevant, k) / comb(num_candidates, k))
