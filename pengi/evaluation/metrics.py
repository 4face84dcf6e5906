"""Evaluation metrics for the paper's downstream tasks (Table 2).

- Captioning: BLEU-1..4, METEOR 1.5, ROUGE-L and CIDEr-D through ``pycocoevalcap`` (the DCASE /
  COCO caption-evaluation conventions: PTB tokenisation with punctuation removal first; its
  jars run offline with Java), SPICE and SPIDEr only when the Stanford CoreNLP 3.6.0 jars are
  present in a configured folder; otherwise they are reported as unavailable, never
  substituted.
- Classification: accuracy, mAP (scikit-learn macro), F1 (DCASE 2017 task 4 style).
- Audio question answering: exact-match accuracy (ClothoAQA).
- Retrieval: R@1/5/10, median/mean rank and mAP@10 in both directions from a similarity matrix
  (the same function serves generative caption-indexing and contrastive CLAP similarities).

The conventions are those of ``shared/reference/caption_metrics.json`` and
``shared/reference/cls_retrieval_metrics.json``; the tests check the values recorded there.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

SPICE_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
CAPTION_METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider_d")


# --------------------------------------------------------------------------------------------
# Captioning
# --------------------------------------------------------------------------------------------


def _check_caption_inputs(
    candidates: Mapping[Any, str], references: Mapping[Any, Sequence[str]]
) -> list[Any]:
    if set(candidates) != set(references):
        missing = set(references) ^ set(candidates)
        differing = sorted(map(str, missing))[:5]
        raise ValueError(f"candidates and references must have the same ids; differing: {differing}")
    if not candidates:
        raise ValueError("no captions to evaluate")
    for k, c in candidates.items():
        if not isinstance(c, str):
            raise ValueError(f"candidate {k!r} is not a string")
    for k, refs in references.items():
        if isinstance(refs, str) or len(refs) == 0 or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"references of {k!r} must be a non-empty list of strings")
    return list(candidates)


def ptb_tokenize(texts: Mapping[Any, Sequence[str]]) -> dict[Any, list[str]]:
    """PTB-tokenise (lower-cased, punctuation removed) with pycocoevalcap's CoreNLP 3.4.1 jar.

    Args:
        texts: id -> list of raw strings.

    Returns:
        id -> list of tokenised strings (tokens joined by single spaces).
    """
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # newlines would shift the one-sentence-per-line alignment of the jar's output
    payload = {k: [{"caption": " ".join(s.split())} for s in v] for k, v in texts.items()}
    return PTBTokenizer().tokenize(payload)


def caption_metrics(
    candidates: Mapping[Any, str],
    references: Mapping[Any, Sequence[str]],
    spice_jars_dir: str | Path | None = None,
    *,
    per_item: bool = False,
) -> dict[str, Any]:
    """Corpus caption metrics: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D (+ SPICE, SPIDEr).

    Conventions (as pycocoevalcap 1.2 / aac-metrics, DCASE): candidates and references are
    PTB-tokenised and punctuation is removed first; BLEU uses the 'closest' reference length;
    METEOR's corpus value is the jar's aggregate over summed statistics (not the mean of items);
    ROUGE-L uses beta 1.2 with independent max-P/max-R; CIDEr-D is pycocoevalcap's ``Cider``
    (CIDEr-D: clipping, Gaussian length penalty sigma 6, x10) with IDF over the evaluated set,
    so an item's value depends on the whole set.

    SPICE runs only when ``spice_jars_dir`` holds ``stanford-corenlp-3.6.0.jar`` and
    ``stanford-corenlp-3.6.0-models.jar`` (pycocoevalcap would try to download them); SPIDEr
    is ``(CIDEr-D + SPICE) / 2``. Otherwise both are ``None`` and ``unavailable`` says why.

    Args:
        candidates: id -> generated caption.
        references: id -> list of reference captions (same ids).
        spice_jars_dir: folder with the CoreNLP 3.6.0 jars (``evaluate.coco_jars_dir``).
        per_item: also return ``per_item`` (metric -> list in ``ids`` order) and ``ids``.

    Returns:
        dict with the metric values (floats), ``spice``/``spider`` (float or None),
        ``unavailable`` (metric -> reason) and, with ``per_item``, per-item lists.

    Raises:
        ValueError: ids differ, or a caption is not a string / a reference list is empty.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge

    ids = _check_caption_inputs(candidates, references)
    # one tokenizer run (one JVM start) for candidates and references together
    texts = {("c", k): [candidates[k]] for k in ids} | {("r", k): list(references[k]) for k in ids}
    tok = ptb_tokenize(texts)
    res = {k: tok[("c", k)] for k in ids}
    gts = {k: tok[("r", k)] for k in ids}

    result: dict[str, Any] = {}
    items: dict[str, list[float]] = {}
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its counts
        bleu, bleu_items = Bleu(4).compute_score(gts, res, verbose=0)
    for n in range(4):
        result[f"bleu_{n + 1}"] = float(bleu[n])
        items[f"bleu_{n + 1}"] = [float(x) for x in bleu_items[n]]
    meteor_scorer = Meteor()
    try:
        meteor, meteor_items = meteor_scorer.compute_score(gts, res)
    finally:
        del meteor_scorer  # its __del__ stops the Java process
    result["meteor"], items["meteor"] = float(meteor), [float(x) for x in meteor_items]
    rouge, rouge_items = Rouge().compute_score(gts, res)
    result["rouge_l"], items["rouge_l"] = float(rouge), [float(x) for x in rouge_items]
    cider, cider_items = Cider().compute_score(gts, res)
    result["cider_d"], items["cider_d"] = float(cider), [float(x) for x in cider_items]

    unavailable: dict[str, str] = {}
    reason = spice_unavailable_reason(spice_jars_dir)
    if reason is None:
        assert spice_jars_dir is not None
        spice, spice_items = _spice(gts, res, ids, Path(spice_jars_dir))
        result["spice"], items["spice"] = spice, spice_items
        result["spider"] = (result["cider_d"] + spice) / 2
        items["spider"] = [(c + s) / 2 for c, s in zip(items["cider_d"], spice_items)]
    else:
        logger.info("SPICE/SPIDEr unavailable: %s", reason)
        result["spice"] = result["spider"] = None
        unavailable = {"spice": reason, "spider": "requires SPICE"}
    result["unavailable"] = unavailable
    if per_item:
        result["ids"] = ids
        result["per_item"] = items
    return result


def spice_unavailable_reason(spice_jars_dir: str | Path | None) -> str | None:
    """Why SPICE cannot run (``None`` when it can): Java and the two CoreNLP 3.6.0 jars."""
    if spice_jars_dir is None:
        return (
            "no folder configured for the Stanford CoreNLP 3.6.0 jars (evaluate.coco_jars_dir); "
            "SPICE needs " + " and ".join(SPICE_JARS) + ", which no reachable registry provides"
        )
    missing = [j for j in SPICE_JARS if not (Path(spice_jars_dir) / j).is_file()]
    if missing:
        return f"missing in {spice_jars_dir}: {', '.join(missing)}"
    if shutil.which("java") is None:
        return "java is not on PATH"
    return None


def _spice(gts: dict, res: dict, ids: list, jars_dir: Path) -> tuple[float, list[float]]:
    """Run pycocoevalcap's SPICE 1.0 jar with the CoreNLP jars from ``jars_dir``.

    pycocoevalcap's own wrapper insists on downloading the jars into site-packages; this runs
    the same scorer class with an explicit classpath and a temporary folder instead.
    """
    import pycocoevalcap.spice as spice_pkg

    spice_dir = Path(spice_pkg.__file__).parent
    classpath = [str(spice_dir / "spice-1.0.jar")]
    classpath += [str(jars_dir / j) for j in SPICE_JARS]
    classpath += [str(p) for p in sorted((spice_dir / "lib").glob("*.jar"))]
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.json", Path(tmp) / "out.json"
        data = [{"image_id": str(i), "test": res[k][0], "refs": gts[k]} for i, k in enumerate(ids)]
        inp.write_text(json.dumps(data))
        cmd = ["java", "-Xmx8G", "-cp", ":".join(classpath), "edu.anu.spice.SpiceScorer",
               str(inp), "-out", str(out), "-subset", "-silent"]  # fmt: skip
        subprocess.run(cmd, check=True, cwd=tmp, capture_output=True)
        results = {r["image_id"]: r for r in json.loads(out.read_text())}
    per = [float(results[str(i)]["scores"]["All"]["f"]) for i in range(len(ids))]
    return float(np.mean(per)), per


# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------


def accuracy(scores_or_pred: Any, labels: Any) -> float:
    """Single-label accuracy: ``mean(argmax(scores, 1) == label)``; ties go to the first index.

    Args:
        scores_or_pred: ``(n, C)`` scores/logits or ``(n,)`` predicted class indices.
        labels: ``(n,)`` true class indices.
    """
    s = np.asarray(scores_or_pred)
    y = np.asarray(labels)
    pred = s.argmax(axis=1) if s.ndim == 2 else s
    if pred.shape != y.shape or y.size == 0:
        raise ValueError(f"predictions {pred.shape} and labels {y.shape} must be equal, non-empty")
    return float(np.mean(pred == y))


def average_precision_per_class(y_true: Any, y_score: Any) -> np.ndarray:
    """Average precision of every class (scikit-learn: no interpolation, ties one threshold).

    A class without positives gets AP 0, as scikit-learn gives it (with a logged warning).
    """
    from sklearn.metrics import average_precision_score

    t = np.asarray(y_true)
    s = np.asarray(y_score, dtype=float)
    if t.shape != s.shape or t.ndim != 2:
        raise ValueError(f"y_true {t.shape} and y_score {s.shape} must be equal (n, C)")
    empty = np.flatnonzero(t.sum(0) == 0)
    if empty.size:
        logger.warning("classes without positives get AP 0 (scikit-learn convention): %s", empty.tolist())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ap = average_precision_score(t, s, average=None)
    return np.nan_to_num(np.asarray(ap, dtype=float), nan=0.0)


def mean_average_precision(y_true: Any, y_score: Any, *, drop_empty: bool = False) -> float:
    """Multi-label mAP: the unweighted mean of per-class AP (scikit-learn ``average='macro'``).

    Args:
        y_true: ``(n, C)`` binary labels.
        y_score: ``(n, C)`` scores (any monotone scale: log-likelihoods, cosines, probabilities).
        drop_empty: leave classes without positives out of the mean (many papers do); the
            default keeps them with AP 0, exactly as scikit-learn's macro average.
    """
    ap = average_precision_per_class(y_true, y_score)
    if drop_empty:
        keep = np.asarray(y_true).sum(0) > 0
        if not keep.any():
            raise ValueError("no class has a positive example")
        ap = ap[keep]
    return float(ap.mean())


def binarize_scores(scores: Any, *, threshold: float | None = None, top_k: int | None = None) -> np.ndarray:
    """Multi-label decisions from per-class scores (for :func:`f1_score`).

    Exactly one rule: ``threshold`` (score >= threshold) or ``top_k`` (the k best classes of
    each clip; ties broken by class order).
    """
    s = np.asarray(scores, dtype=float)
    if (threshold is None) == (top_k is None):
        raise ValueError("give exactly one of threshold or top_k")
    if threshold is not None:
        return s >= threshold
    assert top_k is not None
    if not 1 <= top_k <= s.shape[1]:
        raise ValueError(f"top_k must be in [1, {s.shape[1]}]")
    idx = np.argsort(-s, axis=1, kind="stable")[:, :top_k]
    out = np.zeros_like(s, dtype=bool)
    np.put_along_axis(out, idx, True, axis=1)
    return out


def f1_score(y_true: Any, y_pred: Any, *, average: str = "micro") -> float:
    """F1 for multi-label tagging, DCASE 2017 task 4 (subtask A) style.

    DCASE 2017 task 4 ranked audio tagging by the **instance-based (micro) F1**: true/false
    positives and false negatives are pooled over all (clip, class) pairs,
    ``F1 = 2 TP / (2 TP + FP + FN)``. ``average='macro'`` gives the class-wise mean instead
    (a class with no positives and no predictions scores 0, scikit-learn's ``zero_division=0``).

    Args:
        y_true: ``(n, C)`` binary labels.
        y_pred: ``(n, C)`` binary predictions.
    """
    t = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} differ")
    tp = (t & p).sum(0).astype(float)
    fp = (~t & p).sum(0).astype(float)
    fn = (t & ~p).sum(0).astype(float)
    if average == "micro":
        denom = 2 * tp.sum() + fp.sum() + fn.sum()
        return float(2 * tp.sum() / denom) if denom else 0.0
    if average == "macro":
        denom = 2 * tp + fp + fn
        per = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
        return float(per.mean())
    raise ValueError(f"average must be 'micro' or 'macro', got {average!r}")


# --------------------------------------------------------------------------------------------
# Audio question answering
# --------------------------------------------------------------------------------------------


def normalise_answer(text: str) -> str:
    """Lower-case, drop punctuation except inside words, collapse whitespace."""
    text = re.sub(r"[^\w\s'-]", " ", text.lower())
    return " ".join(w.strip("'-") for w in text.split() if w.strip("'-"))


def majority_answer(answers: Sequence[str]) -> str:
    """The most frequent normalised answer (ClothoAQA has 3 annotators); ties: first given."""
    if not answers:
        raise ValueError("no answers")
    norm = [normalise_answer(a) for a in answers]
    return max(norm, key=lambda a: (norm.count(a), -norm.index(a)))


def aqa_exact_match(
    predictions: Sequence[str], answers: Sequence[str | Sequence[str]], *, mode: str = "majority"
) -> float:
    """ClothoAQA exact-match accuracy, after :func:`normalise_answer` on both sides.

    Args:
        predictions: one generated answer per question.
        answers: one answer, or the annotators' answers, per question.
        mode: with several answers, ``"majority"`` (the common ClothoAQA practice) compares
            with their majority vote; ``"any"`` accepts any annotator's answer.
    """
    if len(predictions) != len(answers) or not predictions:
        raise ValueError("predictions and answers must have the same non-zero length")
    if mode not in ("majority", "any"):
        raise ValueError(f"mode must be 'majority' or 'any', got {mode!r}")
    hits = 0
    for pred, ans in zip(predictions, answers):
        options = [ans] if isinstance(ans, str) else list(ans)
        accepted = {majority_answer(options)} if mode == "majority" else {normalise_answer(a) for a in options}
        hits += normalise_answer(pred) in accepted
    return hits / len(predictions)


# --------------------------------------------------------------------------------------------
# Retrieval
# --------------------------------------------------------------------------------------------


def _ranks(scores: np.ndarray) -> np.ndarray:
    """0-based rank of every column per row (descending scores; ties by index order)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(scores.shape[1])[None, :].repeat(scores.shape[0], 0), axis=1)
    return ranks


def _summary(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    out = {f"R@{k}": float(100 * np.mean(ranks < k)) for k in ks}
    out["medR"] = float(np.floor(np.median(ranks)) + 1)
    out["meanR"] = float(np.mean(ranks) + 1)
    return out


def retrieval_metrics(
    similarity: Any, caption_audio: Sequence[int] | None = None, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, Any]:
    """Text-to-audio and audio-to-text retrieval from a similarity matrix.

    Conventions (audio retrieval papers, values in percent):

    - text-to-audio: every caption is a query ranked against all audios; one relevant audio;
      ``R@K`` = % of captions whose audio ranks < K (0-based); ``mAP@10`` = mean of
      ``1/(rank+1)`` when rank < 10, else 0 (DCASE language-based audio retrieval).
    - audio-to-text: every audio is a query ranked against all captions; ``R@K`` = % of audios
      with *any* of their captions ranked < K; ``mAP@10`` = mean over audios of
      ``sum_{m: rank_m < 10} m / (rank_m + 1)`` over its captions in rank order, divided by its
      number of captions (WavCaps / Mei et al.).
    - ``medR = floor(median rank) + 1``, ``meanR = mean rank + 1`` (audio-to-text: best rank).

    Args:
        similarity: ``(A, C)`` score of audio i with caption j; higher = more similar. From
            CLAP embeddings (contrastive) or from generated-caption indexing (generative, see
            :func:`pengi.inference.caption_index_similarity`).
        caption_audio: audio index of each caption; default ``j // (C // A)`` (captions of
            audio i in columns ``i*n .. i*n+n-1``).
        ks: recall cut-offs.

    Returns:
        ``{"text_to_audio": {...}, "audio_to_text": {...}, "t2a_ranks": [...],
        "a2t_ranks": [[...] per audio, sorted]}``.
    """
    sim = np.asarray(similarity, dtype=float)
    if sim.ndim != 2:
        raise ValueError("similarity must be (num_audios, num_captions)")
    A, C = sim.shape
    if caption_audio is None:
        if C % A:
            raise ValueError("pass caption_audio when captions per audio are not uniform")
        gt = np.arange(C) // (C // A)
    else:
        gt = np.asarray(caption_audio)
        if gt.shape != (C,) or gt.min() < 0 or gt.max() >= A:
            raise ValueError("caption_audio must give an audio index in [0, A) for every caption")

    t2a_all = _ranks(sim.T)  # (C, A)
    t2a = t2a_all[np.arange(C), gt]  # (C,)
    text_to_audio = _summary(t2a, ks)
    text_to_audio["mAP@10"] = float(100 * np.mean(np.where(t2a < 10, 1.0 / (t2a + 1), 0.0)))

    a2t_all = _ranks(sim)  # (A, C)
    per_audio = [np.sort(a2t_all[i, gt == i]) for i in range(A)]
    if any(r.size == 0 for r in per_audio):
        raise ValueError("every audio needs at least one caption")
    best = np.array([r[0] for r in per_audio])
    audio_to_text = _summary(best, ks)
    ap10 = [sum((m + 1) / (r + 1) for m, r in enumerate(rs) if r < 10) / rs.size for rs in per_audio]
    audio_to_text["mAP@10"] = float(100 * np.mean(ap10))
    return {
        "text_to_audio": text_to_audio,
        "audio_to_text": audio_to_text,
        "t2a_ranks": t2a.tolist(),
        "a2t_ranks": [r.tolist() for r in per_audio],
    }
