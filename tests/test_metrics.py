"""Tests for pengi.evaluation.metrics against the values recorded in shared/reference/."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pengi.evaluation.metrics import (
    CAPTION_METRICS,
    accuracy,
    binarize_scores,
    aqa_exact_match,
    average_precision_per_class,
    caption_metrics,
    f1_score,
    majority_answer,
    mean_average_precision,
    normalise_answer,
    retrieval_metrics,
    spice_unavailable_reason,
)

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="java is needed by pycocoevalcap")


def load(name: str) -> dict:
    path = REFERENCE / name
    if not path.is_file():
        pytest.skip(f"reference file not found: {path}")
    return json.loads(path.read_text())


# ------------------------------------------------------------------------------ captioning


@needs_java
@pytest.mark.parametrize("subset", ["all", "first5"])
def test_caption_metrics_match_reference(subset):
    ref = load("caption_metrics.json")
    items = ref["items"]
    expected_corpus, expected_items = ref["corpus"], ref["per_item"]
    if subset == "first5":  # CIDEr-D's IDF depends on the evaluated set
        ids = ref["subset_first5"]["ids"]
        items = [it for it in items if it["id"] in ids]
        expected_corpus, expected_items = ref["subset_first5"]["corpus"], ref["subset_first5"]["per_item"]
    got = caption_metrics(
        {it["id"]: it["candidate"] for it in items},
        {it["id"]: it["references"] for it in items},
        per_item=True,
    )
    assert got["ids"] == [it["id"] for it in items]
    for m in CAPTION_METRICS:
        assert got[m] == pytest.approx(expected_corpus[m], abs=1e-9), m
        assert got["per_item"][m] == pytest.approx(expected_items[m], abs=1e-9), m
    assert got["spice"] is None and got["spider"] is None
    assert "spice" in got["unavailable"] and got["unavailable"]["spider"] == "requires SPICE"


def test_spice_unavailable_reasons(tmp_path):
    assert "no folder configured" in spice_unavailable_reason(None)
    reason = spice_unavailable_reason(tmp_path)
    assert "stanford-corenlp-3.6.0.jar" in reason and "models" in reason
    (tmp_path / "stanford-corenlp-3.6.0.jar").write_bytes(b"")
    assert spice_unavailable_reason(tmp_path) == f"missing in {tmp_path}: stanford-corenlp-3.6.0-models.jar"


def test_caption_metrics_rejects_bad_input():
    with pytest.raises(ValueError, match="same ids"):
        caption_metrics({"a": "x"}, {"b": ["y"]})
    with pytest.raises(ValueError, match="non-empty list"):
        caption_metrics({"a": "x"}, {"a": []})
    with pytest.raises(ValueError, match="non-empty list"):
        caption_metrics({"a": "x"}, {"a": "y"})
    with pytest.raises(ValueError, match="not a string"):
        caption_metrics({"a": None}, {"a": ["y"]})


# -------------------------------------------------------------------------- classification


def test_accuracy_matches_reference():
    ref = load("cls_retrieval_metrics.json")["single_label_accuracy"]
    assert accuracy(ref["logits"], ref["labels"]) == pytest.approx(ref["accuracy"], abs=1e-12)
    assert accuracy([[1.0, 1.0], [0.0, 2.0]], [0, 1]) == 1.0  # ties -> first index
    assert accuracy([2, 0, 1], [2, 1, 1]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        accuracy([[1.0, 0.0]], [0, 1])


def test_map_matches_reference():
    ref = load("cls_retrieval_metrics.json")["multilabel_map"]
    assert mean_average_precision(ref["y_true"], ref["y_score"]) == pytest.approx(ref["mAP_macro"], abs=1e-12)
    assert average_precision_per_class(ref["y_true"], ref["y_score"]) == pytest.approx(ref["AP_per_class"], abs=1e-12)
    ties = ref["ties_example"]
    assert mean_average_precision(ref["y_true"], ties["y_score"]) == pytest.approx(ties["mAP_macro"], abs=1e-12)
    assert average_precision_per_class(ref["y_true"], ties["y_score"]) == pytest.approx(ties["AP_per_class"], abs=1e-12)


def test_map_class_without_positives():
    ref = load("cls_retrieval_metrics.json")["multilabel_map"]
    y = np.array(ref["y_true"])
    y[:, 4] = 0
    ex = ref["no_positive_class_example"]
    assert average_precision_per_class(y, ref["y_score"]) == pytest.approx(ex["AP_per_class"], abs=1e-12)
    assert mean_average_precision(y, ref["y_score"]) == pytest.approx(ex["mAP_macro_sklearn"], abs=1e-12)
    assert mean_average_precision(y, ref["y_score"], drop_empty=True) == pytest.approx(
        np.mean(ex["AP_per_class"][:4]), abs=1e-12
    )


def test_f1_micro_and_macro():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    t = rng.random((40, 6)) < 0.3
    p = rng.random((40, 6)) < 0.3
    t[:, 5] = False  # a class with no positives
    p[:, 5] = False  # ... and no predictions
    assert f1_score(t, p) == pytest.approx(sk.f1_score(t, p, average="micro", zero_division=0))
    assert f1_score(t, p, average="macro") == pytest.approx(sk.f1_score(t, p, average="macro", zero_division=0))
    # hand-computed: TP 1, FP 1, FN 1 -> 2/4
    assert f1_score([[1, 0], [1, 0]], [[1, 1], [0, 0]]) == pytest.approx(0.5)
    assert f1_score([[0, 0]], [[0, 0]]) == 0.0
    with pytest.raises(ValueError):
        f1_score(t, p, average="weighted")


# ------------------------------------------------------------------------------------ AQA


def test_aqa_exact_match():
    assert normalise_answer("  Yes. ") == "yes"
    assert normalise_answer("A Dog's bark!") == "a dog's bark"
    assert majority_answer(["no", "Yes", "yes."]) == "yes"
    assert majority_answer(["two", "three"]) == "two"  # tie: first given
    preds = ["Yes", "two", "a car", "no"]
    answers = ["yes", ["2", "Two.", "two"], "car", ["no", "yes", "yes"]]
    assert aqa_exact_match(preds, answers) == pytest.approx(0.5)
    assert aqa_exact_match(preds, answers, mode="any") == pytest.approx(0.75)
    with pytest.raises(ValueError):
        aqa_exact_match(["yes"], [])
    with pytest.raises(ValueError):
        aqa_exact_match(["yes"], ["yes"], mode="best")


# ------------------------------------------------------------------------------ retrieval


def test_retrieval_matches_reference():
    ref = load("cls_retrieval_metrics.json")["retrieval"]
    got = retrieval_metrics(ref["similarity"])
    for direction in ("text_to_audio", "audio_to_text"):
        for key, value in ref[direction].items():
            assert got[direction][key] == pytest.approx(value, abs=1e-9), (direction, key)
    assert got["t2a_ranks"] == ref["t2a_ranks_0based"]
    assert got["a2t_ranks"] == ref["a2t_all_ranks_0based_sorted"]
    assert [r[0] for r in got["a2t_ranks"]] == ref["a2t_best_ranks_0based"]


def test_retrieval_explicit_caption_mapping_and_errors():
    ref = load("cls_retrieval_metrics.json")["retrieval"]
    sim = np.array(ref["similarity"])
    gt = np.arange(sim.shape[1]) // 5
    perm = np.random.default_rng(1).permutation(sim.shape[1])  # shuffled caption columns
    got = retrieval_metrics(sim[:, perm], caption_audio=gt[perm])
    assert got["text_to_audio"] == pytest.approx(retrieval_metrics(sim)["text_to_audio"], abs=1e-9)
    assert got["audio_to_text"]["R@1"] == ref["audio_to_text"]["R@1"]
    perfect = retrieval_metrics(np.eye(4))
    assert perfect["text_to_audio"]["R@1"] == 100.0 and perfect["audio_to_text"]["mAP@10"] == 100.0
    with pytest.raises(ValueError):
        retrieval_metrics(np.zeros((3, 7)))
    with pytest.raises(ValueError):
        retrieval_metrics(np.zeros((2, 2)), caption_audio=[0, 5])


def test_binarize_scores():
    s = np.array([[0.9, 0.2, 0.6], [0.1, 0.5, 0.5]])
    assert binarize_scores(s, threshold=0.5).tolist() == [[True, False, True], [False, True, True]]
    assert binarize_scores(s, top_k=1).tolist() == [[True, False, False], [False, True, False]]
    with pytest.raises(ValueError):
        binarize_scores(s)
    with pytest.raises(ValueError):
        binarize_scores(s, top_k=4)


@needs_java
def test_spice_runs_with_configured_jars(tmp_path, monkeypatch):
    """With the jars present, SPICE runs the scorer class and SPIDEr averages it with CIDEr-D.

    The CoreNLP jars cannot be fetched here, so the Java call itself is replaced by a stub that
    checks the command and writes the scorer's output format.
    """
    import pengi.evaluation.metrics as metrics

    for jar in metrics.SPICE_JARS:
        (tmp_path / jar).write_bytes(b"")
    calls = []

    def fake_run(cmd, check, cwd, capture_output):
        calls.append(cmd)
        assert "edu.anu.spice.SpiceScorer" in cmd
        assert all(str(tmp_path / jar) in cmd[cmd.index("-cp") + 1] for jar in metrics.SPICE_JARS)
        items = json.loads(Path(cmd[cmd.index("edu.anu.spice.SpiceScorer") + 1]).read_text())
        scores = [{"image_id": it["image_id"], "scores": {"All": {"f": 0.25 * (i + 1)}}} for i, it in enumerate(items)]
        Path(cmd[cmd.index("-out") + 1]).write_text(json.dumps(scores))

    monkeypatch.setattr(metrics.subprocess, "run", fake_run)
    got = caption_metrics(
        {"a": "a dog barks", "b": "rain falls"},
        {"a": ["a dog is barking"], "b": ["rain is falling on a roof"]},
        spice_jars_dir=tmp_path,
        per_item=True,
    )
    assert len(calls) == 1
    assert got["unavailable"] == {}
    assert got["per_item"]["spice"] == [0.25, 0.5]
    assert got["spice"] == pytest.approx(0.375)
    assert got["spider"] == pytest.approx((got["cider_d"] + 0.375) / 2)
