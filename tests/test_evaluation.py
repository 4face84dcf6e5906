"""The evaluation harness, baselines, probes and reports on tiny random models and synthetic sets.

The models are random (tiny HTSAT, a 1-layer BERT and a 1-layer Llama with the real offline
tokenizers), so the model's numbers are meaningless: the tests check the protocol (every task
kind, every baseline, metric ranges, failures counted, reports written), not quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import soundfile as sf
import torch

from pengi.models.tiny import TINY_PARAMS_SAMPLE_RATE, tiny_params_with_offline_tokenizers
from pengi.config import from_dict
from pengi.evaluation import baselines as B
from pengi.evaluation import probe as P
from pengi.evaluation.report import answer_spread, flat_metrics, render_markdown, table3_rows

SR = TINY_PARAMS_SAMPLE_RATE
TINY = tiny_params_with_offline_tokenizers()
TINY["evaluate"] = {"batch_size": 4, "beam_size": 2, "max_new_tokens": 4}
TINY["tracking"] = {"enabled": False}


def tiny_cfg(**evaluate):
    import copy

    d = copy.deepcopy(TINY)
    d["evaluate"].update(evaluate)
    return from_dict(d)


def _offline_models_or_skip() -> None:
    from pengi.models.lm import smollm2_folder
    from pengi.models.text import minilm_folder

    try:
        minilm_folder()
        smollm2_folder()
    except FileNotFoundError as exc:
        pytest.skip(f"offline tokenizer packages missing: {exc}")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A tiny random Pengi and CLAP, saved with save_pretrained."""
    _offline_models_or_skip()
    from pengi.models import build_clap, build_pengi

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("models")
    cfg = tiny_cfg()
    build_pengi(cfg).save_pretrained(root / "pengi")
    build_clap(cfg).save_pretrained(root / "clap")
    return {"pengi": root / "pengi", "clap": root / "clap"}


def _tone(path: Path, freq: float, seconds: float = 0.4, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave.astype(np.float32), SR)
    return str(path)


def _write_set(root: Path, name: str, kind: str, metric: str, uris, refs, classes=(), folds=None, prompts=None):
    n = len(refs)
    prompt = {"captioning": "generate audio caption", "retrieval": "generate audio caption",
              "qa": "question: {question}"}.get(kind, "this is a sound of")  # fmt: skip
    pl.DataFrame(
        {"item_id": [f"{name}-{k}" for k in range(n)], "clip_id": [f"c{k}" for k in range(n)],
         "audio_uri": list(uris[:n]), "source": [name] * n, "task": [name] * n, "metric": [metric] * n,
         "prompt": prompts or [prompt] * n, "references": refs, "fold": folds or [None] * n},
        schema={**{c: pl.String for c in ("item_id", "clip_id", "audio_uri", "source", "task", "metric", "prompt",
                                          "fold")}, "references": pl.List(pl.String)},
    ).select(
        "item_id", "clip_id", "audio_uri", "source", "task", "metric", "prompt", "references", "fold"
    ).write_parquet(root / f"{name}.parquet")  # fmt: skip
    meta = {"task": name, "kind": kind, "metric": metric, "prompt": prompt, "classes": list(classes)}
    (root / f"{name}.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory) -> Path:
    """Eval sets of every kind, train triples, a manifest with a train split, one corrupt clip."""
    from pengi.manifest import write_manifest

    root = tmp_path_factory.mktemp("data")
    wav = root / "wav"
    clips = [_tone(wav / f"c{i}.wav", 200 + 90 * i, seed=i) for i in range(8)]
    bad = wav / "corrupt.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    ev = root / "eval"
    ev.mkdir()
    animals = [["dog"], ["cat"], ["dog"], ["rain"], ["cat"], ["dog"], ["rain"], ["cat"]]
    # esc50: fold-based (leave-one-fold-out probes); its last clip is corrupt
    _write_set(ev, "esc50", "multiclass", "accuracy", [*clips[:7], str(bad)], animals, ["cat", "dog", "rain"],
               folds=["1", "2"] * 4)  # fmt: skip
    multi = [["dog", "rain"], ["cat"], ["dog"], ["rain"], ["cat", "dog"], ["dog"], ["rain"], ["cat"]]
    _write_set(ev, "fsd50k", "multilabel", "map", clips, multi, ["cat", "dog", "rain"])
    _write_set(ev, "dcase2017_task4", "multilabel", "f1", clips, animals, ["cat", "dog", "rain"])
    captions = [["a dog barks loudly", "dog barking"], ["rain falls"], ["a cat meows"], ["rain on a roof"]]
    _write_set(ev, "clotho_captioning", "captioning", "spider", clips, captions)
    _write_set(ev, "clotho_aqa", "qa", "accuracy", clips, [["yes"], ["no"], ["dog"], ["yes", "yes", "no"]],
               prompts=["question: is it raining?", "question: is there a dog?", "question: what animal is it?",
                        "question: is it loud?"])  # fmt: skip
    _write_set(ev, "vocalsound", "multiclass", "accuracy", [], [], ["cough"])  # empty: reported as skipped
    queries = [["a dog barks", "dog"], ["rain falls", "rain"], ["a cat meows", "cat"], ["wind", "breeze"]]
    _write_set(ev, "clotho_retrieval", "retrieval", "recall@1", clips, queries)
    tri = root / "triples"
    tri.mkdir()
    pl.DataFrame({
        "triple_id": ["t1", "t2", "t3", "t4", "t5"], "source": ["s"] * 5, "clip_id": ["x"] * 5,
        "audio_uri": [clips[0]] * 5, "task": ["captioning", "captioning", "captioning", "aqa", "aqa"],
        "prompt": ["generate audio caption"] * 3 + ["question: is it raining?", "question: what animal?"],
        "target": ["a dog barks", "a dog barks", "rain", "yes", "cat"],
    }).write_parquet(tri / "train.parquet")  # fmt: skip
    # fsd50k train split (probes train on it); one train clip carries a class outside the test list
    train_labels = [["dog"], ["cat"], ["rain"], ["dog", "cat"], ["rain"], ["owl"]]
    rows = [
        dict(source="fsd50k", clip_id=f"tr{i}", split="train", audio_uri=_tone(wav / f"tr{i}.wav", 250 + 70 * i),
             labels=lab)
        for i, lab in enumerate(train_labels)
    ]  # fmt: skip
    rows.append(dict(source="fsd50k", clip_id="te0", split="test", audio_uri=clips[0], labels=["dog"]))
    # a train row whose audio is also an evaluation clip must not train the probe
    rows.append(dict(source="fsd50k", clip_id="dup", split="train", audio_uri=clips[1], labels=["cat"]))
    skipped = {"ravdess": "source 'ravdess' is not configured"}
    (ev / "index.json").write_text(json.dumps({"tasks": {}, "skipped": skipped}))
    write_manifest(rows, root / "manifests" / "fsd50k.parquet")
    # esc50 also has a train split: its fold probes get train-split probes beside them
    esc_rows = [
        dict(source="esc50", clip_id=f"e{i}", split="train", audio_uri=str(wav / f"tr{i}.wav"), labels=lab)
        for i, lab in enumerate([["dog"], ["cat"], ["rain"], ["dog"], ["rain"], ["cat"]])
    ]  # fmt: skip
    write_manifest(esc_rows, root / "manifests" / "esc50.parquet")
    return root


def _run(cfg, models, data, out, **kw):
    from pengi.evaluation.harness import evaluate

    return evaluate(cfg, models["pengi"], data / "eval", out, clap_dir=models["clap"], **kw)


@pytest.mark.slow
def test_harness_runs_every_kind_with_baselines_and_reports(models, eval_data, tmp_path):
    out = tmp_path / "report"
    logs = tmp_path / "pengi" / "train_log.csv"
    logs.parent.mkdir()
    logs.write_text("step,epoch,lr,loss\n1,0,0.001,3.2\n2,0,0.001,2.9\n3,0,0.001,2.5\n")
    summary = _run(tiny_cfg(), models, eval_data, out, triples_dir=eval_data / "triples",
                   manifests_dir=eval_data / "manifests", train_logs=[logs])  # fmt: skip
    tasks = summary["tasks"]
    assert set(tasks) == {"esc50", "fsd50k", "dcase2017_task4", "clotho_captioning", "clotho_aqa", "clotho_retrieval"}
    assert summary["skipped"]["vocalsound"] == "the evaluation set is empty"

    # the corrupt clip is counted and named, not dropped silently
    esc = tasks["esc50"]
    assert esc["failed"] == 1 and "esc50-7" in esc["errors"] and esc["items"] == 8
    assert 0 <= esc["model"]["accuracy"] <= 1
    assert esc["baselines"]["chance"]["accuracy"] == pytest.approx(1 / 3)
    assert set(esc["probes"]) == {"Pengi L1 probe", "Pengi L3 probe", "Pengi L1 probe (train split)"}
    assert esc["probe_protocol"]["split"].startswith("leave-one-fold-out")
    assert esc["probe_protocol"]["train_split"]["train_items"] == 6  # the source's train rows, beside the folds
    assert 0 <= esc["baselines"]["log-mel linear probe (train split)"]["accuracy"] <= 1
    assert 0 <= esc["baselines"]["log-mel linear probe"]["accuracy"] <= 1
    m = np.array(esc["confusion"]["matrix"])
    assert m.shape == (3, 3) and m.sum() == 7  # 7 readable clips

    fsd = tasks["fsd50k"]
    assert fsd["headline"] == "map" and 0 <= fsd["model"]["map"] <= 1
    assert fsd["probe_protocol"]["split"] == "train -> eval set"
    assert fsd["probe_protocol"]["train_items"] == 5 and fsd["probe_protocol"]["train_items_outside_class_list"] == 1
    assert fsd["probe_protocol"]["train_items_also_in_eval_set"] == 1
    assert "log-mel linear probe" in fsd["baselines"]
    assert tasks["dcase2017_task4"]["headline"] == "f1" and 0 <= tasks["dcase2017_task4"]["model"]["f1"] <= 1

    cap = tasks["clotho_captioning"]
    assert set(cap["model"]) >= {"bleu_1", "bleu_4", "meteor", "rouge_l", "cider_d"}
    assert "spice" in cap["unavailable"] and "spider" in cap["unavailable"] and cap["headline"] == "cider_d"
    const = cap["baselines"]["constant caption"]
    assert const["caption"] == "a dog barks" and const["cider_d"] > 0  # "a dog barks" matches item 0

    qa = tasks["clotho_aqa"]
    # prior: "is it raining?" -> yes (seen), other yes/no questions -> yes, "what animal" -> cat
    assert qa["baselines"]["question only"]["accuracy"] == pytest.approx(0.5)

    ret = tasks["clotho_retrieval"]["model"]
    for key in ("t2a_R1", "t2a_R5", "t2a_R10", "a2t_R1", "clap_t2a_R1", "clap_a2t_R10"):
        assert 0 <= ret[key] <= 100
    assert ret["t2a_R5"] == 100.0  # 4 audios: every query is within the top 5
    assert tasks["clotho_retrieval"]["baselines"]["chance"]["t2a_R1"] == pytest.approx(25.0)

    metrics = json.loads(json.dumps(summary["metrics"]))
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["esc50.failed_items"] == 1.0 and "clotho_aqa.baseline.question_only.accuracy" in metrics
    assert "esc50.probe.pengi_l1_probe.accuracy" in metrics

    report = (out / "report.md").read_text()
    assert "| Pengi (this run) |" in report and "| constant caption |" in report and "| question only |" in report
    assert "| log-mel linear probe |" in report and "unavailable: **spice**" in report
    assert "`ravdess`: source 'ravdess' is not configured" in report
    for png in ("tasks.png", "confusion_esc50.png", "training_curves.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    preds = json.loads((out / "predictions" / "clotho_aqa.json").read_text())
    assert len(preds) == 4
    saved = json.loads((out / "results.json").read_text())
    assert "predictions" not in saved["tasks"]["esc50"]


def test_loglik_method_and_task_selection(models, eval_data, tmp_path):
    from pengi.evaluation.harness import evaluate, load_eval_sets

    cfg = tiny_cfg(classification_method="loglik", tasks=["esc50"], probes=False)
    summary = evaluate(cfg, models["pengi"], eval_data / "eval", tmp_path / "r")
    assert list(summary["tasks"]) == ["esc50"]
    r = summary["tasks"]["esc50"]
    assert r["method"] == "loglik" and r["samples"][0]["output"] is None
    assert "probes" in r["unavailable"] and not r["probes"]
    with pytest.raises(FileNotFoundError, match="no evaluation set 'ravdess'"):
        load_eval_sets(eval_data / "eval", ["ravdess"])


def test_session_crops_are_deterministic(models, eval_data):
    from pengi.session import ClipLoader, PengiSession

    with pytest.raises(ValueError, match="deterministic"):
        ClipLoader(SR, 0.25, crop_mode="random")
    s = PengiSession.from_pretrained(models["pengi"], batch_size=3, beam_size=1, max_new_tokens=3)
    uris = [str(eval_data / "wav" / f"c{i}.wav") for i in range(4)]
    a, _ = s.audio_embeddings(uris, "pengi")
    b, _ = s.audio_embeddings(uris[::-1], "pengi")  # other batch composition, same crops
    for x, y in zip(a, b[::-1]):
        np.testing.assert_allclose(x, y, atol=1e-5)
    assert s.loader.load(uris[0]).wave.shape == (int(SR * 0.25),)


def test_session_bf16_where_native_matches_fp32(models, eval_data):
    """bf16 autocast (only where the CPU has native bf16) gives the fp32 embeddings to bf16
    accuracy, as float32 arrays; the CPU LM runs the eager attention kernel."""
    from pengi.precision import native_bf16
    from pengi.session import PengiSession

    uris = [str(eval_data / "wav" / f"c{i}.wav") for i in range(3)]
    fp32 = PengiSession.from_pretrained(models["pengi"], batch_size=3, beam_size=1, max_new_tokens=3)
    bf16 = PengiSession.from_pretrained(models["pengi"], batch_size=3, beam_size=1, max_new_tokens=3,
                                        precision="bf16")  # fmt: skip
    assert bf16.use_bf16 == native_bf16(torch.device("cpu")) and not fp32.use_bf16
    assert bf16.model.lm.model.config._attn_implementation == "eager"
    a, _ = fp32.audio_embeddings(uris, "pengi")
    b, _ = bf16.audio_embeddings(uris, "pengi")
    for x, y in zip(a, b):
        assert y.dtype == np.float32
        np.testing.assert_allclose(x, y, atol=0.05)
    texts, errors = bf16.generate(uris, "this is a sound of")
    assert not errors and all(isinstance(t, str) for t in texts)


def test_clip_loader_reads_the_audio_store_like_the_decoder(eval_data, tmp_path):
    from pengi.audio_store import AudioStore, build_store
    from pengi.session import ClipLoader

    uris = [str(eval_data / "wav" / f"c{i}.wav") for i in range(2)]
    build_store(uris, tmp_path / "store", SR)
    store = AudioStore(tmp_path / "store")
    for mode in ("start", "center"):
        from_store = ClipLoader(SR, 0.25, store, mode)
        from_files = ClipLoader(SR, 0.25, None, mode)
        for u in uris:
            # the store keeps float16 samples: equal up to its precision, and the same crop window
            np.testing.assert_allclose(from_store.load(u).wave, from_files.load(u).wave, atol=5e-4)
    assert ClipLoader(16000, 0.25, store).store is None  # another rate: decode the files instead
    missing = ClipLoader(SR, 0.25, store).load(str(tmp_path / "nope.wav"))
    assert missing.wave is None and missing.error.startswith("missing")


# --------------------------------------------------------------------------------------------
# Baselines, probes, report (no model)
# --------------------------------------------------------------------------------------------


def test_constant_caption_and_question_prior():
    assert B.constant_caption(["b c", "a", "b c", "a", "zz"]) == "a"  # tie on count -> shorter
    with pytest.raises(ValueError):
        B.constant_caption(["", "  "])
    prior = B.QuestionOnlyBaseline(["Is it loud?", "is it loud", "what is it?", "are birds there?"],
                                   ["No", "no", "dog", "yes"])  # fmt: skip
    assert prior.predict("is it loud?") == "no"  # the same question, normalised
    assert prior.predict("Does it rain?") in ("no", "yes")  # yes/no type prior
    assert prior.predict("which animal?") == "dog"  # open-question prior
    assert B.strip_question_prompt("question: is it loud?") == "is it loud?"


def test_chance_values():
    assert B.chance_recall(4, 1) == pytest.approx(25.0)
    assert B.chance_recall(10, 10) == pytest.approx(100.0)
    # 2 relevant among 5, top 1: 2/5; top 2: 1 - C(3,2)/C(5,2) = 0.7
    assert B.chance_recall(5, 1, 2) == pytest.approx(40.0) and B.chance_recall(5, 2, 2) == pytest.approx(70.0)
    y = np.array([[1, 0], [0, 0], [1, 1], [0, 0]])
    assert B.chance_map(y) == pytest.approx((0.5 + 0.25) / 2)
    assert B.majority_accuracy([0, 1, 1, 2]) == 0.5


def test_probes_learn_separable_features():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-2, 1, (20, 5)), rng.normal(2, 1, (20, 5))])
    y = np.array([0] * 20 + [1] * 20)
    folds = [str(i % 4) for i in range(40)]
    splits = P.fold_splits(x, y, folds)
    assert len(splits) == 4
    scores = P.run_probes(splits, ("L1", "L3"))
    assert scores["L1"] > 0.9 and scores["L3"] > 0.9
    shuffled = P.run_probes(P.fold_splits(x, rng.permutation(y), folds), ("L1",))
    assert shuffled["L1"] < scores["L1"]
    multi = np.stack([y, 1 - y], 1)
    assert P.probe_score("L1", P.ProbeSplit(x[::2], multi[::2], x[1::2], multi[1::2])) > 0.9


def test_report_layout_and_flat_metrics():
    results = {
        "esc50": {"kind": "multiclass", "headline": "accuracy", "paper_metric": "accuracy", "items": 4, "failed": 0,
                  "method": "text", "answer": "this is a sound of {}", "model": {"accuracy": 0.5}, "probes": {"Pengi L1 probe": {"accuracy": 0.75}},
                  "baselines": {"chance": {"accuracy": 0.25}}, "unavailable": {}, "errors": {}},
        "clotho_captioning": {"kind": "captioning", "headline": "cider_d", "paper_metric": "spider", "items": 2,
                              "failed": 1, "model": {"cider_d": 0.1, "bleu_1": 0.3},
                              "baselines": {"constant caption": {"cider_d": 0.05, "caption": "a dog"}},
                              "unavailable": {"spice": "no jars"}, "errors": {"x": "missing: x"}},
    }  # fmt: skip
    flat = flat_metrics(results)
    assert flat["esc50.accuracy"] == 0.5 and flat["esc50.probe.pengi_l1_probe.accuracy"] == 0.75
    assert flat["clotho_captioning.baseline.constant_caption.cider_d"] == 0.05
    assert "clotho_captioning.baseline.constant_caption.caption" not in flat  # numbers only
    header, rows = table3_rows(results)
    assert header == ["model", "esc50 (accuracy)", "clotho_captioning (cider_d)"]
    assert rows[0] == ("Pengi (this run)", ["0.500", "0.100"])
    assert ("chance", ["0.250", "–"]) in rows and ("constant caption", ["–", "0.050"]) in rows
    md = render_markdown({"tasks": results})
    assert "unavailable: **spice**: no jars" in md and "audio error: `x`" in md
    assert "method `text`, answer form `this is a sound of {}`." in md
    assert "esc50.answer" not in flat  # the answer form is text: not a metric
    assert "Answers:" not in md  # no confusion matrix, no line


def test_report_says_how_the_answers_spread_over_the_classes():
    # rows: true class, columns: predicted; "dog" is answered for 5 of 6 items, "bird" never
    confusion = {"classes": ["cat", "dog", "bird"], "matrix": [[1, 1, 0], [0, 2, 0], [0, 2, 0]]}
    said = "Answers: 2 of 3 classes said; the commonest, `dog`, for 5 of 6 items; never said: `bird`."
    assert answer_spread(confusion) == said
    even = {"classes": ["a", "b"], "matrix": [[1, 0], [0, 1]]}
    assert answer_spread(even) == "Answers: 2 of 2 classes said; the commonest, `a`, for 1 of 2 items."
    assert answer_spread(None) is None and answer_spread({"classes": ["a"], "matrix": [[0]]}) is None
    task = {"kind": "multiclass", "headline": "accuracy", "items": 6, "failed": 0, "model": {"accuracy": 0.5}}
    results = {"esc50": {**task, "confusion": confusion}}
    assert "Answers: 2 of 3 classes said" in render_markdown({"tasks": results})


@pytest.mark.slow
def test_evaluate_command_writes_metrics_and_one_mlflow_run(models, eval_data, tmp_path, monkeypatch):
    """``pengi evaluate``: flat numeric metrics for DVC, the report, one MLflow run with both."""
    import yaml

    from pengi.cli import main

    params = tmp_path / "params.yaml"
    cfg = json.loads(json.dumps(TINY))
    cfg["evaluate"].update({"tasks": ["esc50", "clotho_retrieval"], "probes": False})
    cfg["tracking"] = {"enabled": True, "experiment": "eval-test"}
    params.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_ARTIFACTS_DESTINATION", (tmp_path / "artifacts").as_uri())
    monkeypatch.chdir(tmp_path)
    rc = main(["evaluate", "--params", str(params), "--model", str(models["pengi"]), "--clap", str(models["clap"]),
               "--eval", str(eval_data / "eval"), "--out", "reports/evaluate", "--metrics", "metrics/evaluate.json",
               "--no-progress"])  # fmt: skip
    assert rc == 0
    metrics = json.loads((tmp_path / "metrics" / "evaluate.json").read_text())
    assert {"esc50.accuracy", "clotho_retrieval.t2a_R1", "clotho_retrieval.clap_a2t_R1"} <= set(metrics)
    assert all(isinstance(v, (int, float)) for v in metrics.values())
    assert (tmp_path / "reports" / "evaluate" / "report.md").exists()

    from mlflow.tracking import MlflowClient  # reading back only; the library never does this

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("eval-test").experiment_id])
    assert run.info.run_name == "evaluate" and run.info.status == "FINISHED"
    assert run.data.metrics["esc50.accuracy"] == pytest.approx(metrics["esc50.accuracy"])
    assert run.data.params["evaluate.probes"] == "False"
    logged = {f.path for f in client.list_artifacts(run.info.run_id, "evaluate")}
    assert {"evaluate/report.md", "evaluate/results.json", "evaluate/tasks.png"} <= logged
