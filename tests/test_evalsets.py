"""Evaluation sets (paper Table 2): registry, items, references, class lists, files."""

from __future__ import annotations

import json

import polars as pl
import pytest

from pengi.cli import main
from pengi.evalsets import build_eval_set, build_eval_sets, select_tasks, write_eval_sets
from pengi.manifest import read_manifest_frame, write_manifest
from pengi.tasks import EVAL_TASKS, TRAIN_PROMPTS

PAPER_TABLE_2 = {
    "clotho_captioning", "audiocaps_captioning", "clotho_aqa", "esc50", "fsd50k", "urbansound8k", "dcase2017_task4",
    "gtzan_music_speech", "gtzan_genres", "beijing_opera", "nsynth_instrument", "nsynth_pitch", "nsynth_velocity",
    "nsynth_sonic", "tut2017", "crema_d", "ravdess", "vocalsound", "sesa", "clotho_retrieval", "audiocaps_retrieval",
}  # fmt: skip


def row(source: str, clip_id: str, split: str = "test", **kw) -> dict:
    return {"source": source, "clip_id": clip_id, "split": split, "audio_uri": f"/a/{clip_id}.wav", **kw}


def frame(tmp_path, rows, name) -> pl.DataFrame:
    write_manifest(rows, tmp_path / f"{name}.parquet")
    return read_manifest_frame(tmp_path / f"{name}.parquet")


def test_registry_covers_table_2_with_metrics_and_prompts():
    assert set(EVAL_TASKS) == PAPER_TABLE_2
    metrics = {n: t.metric for n, t in EVAL_TASKS.items()}
    assert metrics["clotho_captioning"] == metrics["audiocaps_captioning"] == "spider"
    assert metrics["fsd50k"] == metrics["nsynth_sonic"] == "map"
    assert metrics["dcase2017_task4"] == "f1"
    assert metrics["clotho_retrieval"] == metrics["audiocaps_retrieval"] == "recall@1"
    assert {m for n, m in metrics.items()} == {"spider", "accuracy", "map", "f1", "recall@1"}
    prompts = set(TRAIN_PROMPTS.values())
    for t in EVAL_TASKS.values():  # every evaluation prompt is one the model was trained with
        assert t.prompt in prompts, t.name
        assert not t.vocabulary or t.num_classes is None or len(t.vocabulary) == t.num_classes, t.name


def test_classification_items_fold_and_quarantine(tmp_path):
    esc = frame(
        tmp_path,
        [
            row("esc50", "1-1-A-0", labels=["dog"], attrs={"fold": "1"}),
            row("esc50", "2-2-A-1", labels=["rooster"], attrs={"fold": "2"}),
            row("esc50", "3-3-A-0", labels=["dog"], attrs={"fold": "3"}, status="quarantined", reason="undecodable"),
        ],
        "esc50",
    )
    s = build_eval_set(EVAL_TASKS["esc50"], esc)
    assert s.items.columns == ["item_id", "clip_id", "audio_uri", "source", "task", "metric", "prompt", "references", "fold"]
    assert s.items.select("clip_id", "references", "fold").rows() == [("1-1-A-0", ["dog"], "1"), ("2-2-A-1", ["rooster"], "2")]
    assert set(s.items.get_column("prompt")) == {"this is a sound of"}
    assert s.meta["rows_quarantined"] == 1
    # The references are spelled in the official vocabulary, so the class list is all 50 classes.
    assert len(s.meta["classes"]) == 50 and "chirping_birds" in s.meta["classes"]


def test_observed_classes_when_not_in_the_vocabulary(tmp_path):
    df = frame(tmp_path, [row("sesa", "a", labels=["gunshot"]), row("sesa", "b", labels=["casual"]), row("sesa", "c", "train", labels=["x"])], "sesa")
    s = build_eval_set(EVAL_TASKS["sesa"], df)
    assert s.meta["classes"] == ["casual", "gunshot"]  # the train row is not part of the test set


def test_captioning_retrieval_and_aqa(tmp_path):
    caps = [f"caption {i}" for i in range(5)]
    clotho = frame(tmp_path, [row("clotho", "e/a", captions=caps), row("clotho", "d/b", "train", captions=["train only"])], "clotho")
    aqa = frame(tmp_path, [row("clotho_aqa", "x", qa=[("is it raining?", "yes"), ("what is heard?", "rain")])], "clotho_aqa")
    sets, skipped = build_eval_sets({"clotho": clotho, "clotho_aqa": aqa})
    assert set(sets) == {"clotho_captioning", "clotho_retrieval", "clotho_aqa"}
    assert skipped["esc50"].startswith("source 'esc50'")
    cap = sets["clotho_captioning"]
    assert cap.items.select("clip_id", "references").rows() == [("e/a", caps)]
    assert cap.meta["classes"] == [] and cap.meta["metric"] == "spider"
    assert sets["clotho_retrieval"].meta["metric"] == "recall@1"
    qa = sets["clotho_aqa"].items
    assert qa.select("item_id", "prompt", "references").rows() == [
        ("x#0", "question: is it raining?", ["yes"]),
        ("x#1", "question: what is heard?", ["rain"]),
    ]
    assert sets["clotho_aqa"].meta["classes"] == ["rain", "yes"]


def test_nsynth_tasks_from_attrs(tmp_path):
    a = {"velocity": "100", "instrument_source": "acoustic"}
    df = frame(
        tmp_path,
        [
            row("nsynth", "n1", labels=["keyboard"], attrs={**a, "pitch": "9", "qualities": "bright,reverb"}),
            row("nsynth", "n2", labels=["bass"], attrs={**a, "pitch": "100", "qualities": ""}),
        ],
        "nsynth",
    )
    sets, _ = build_eval_sets({"nsynth": df})
    refs = {n: sets[n].items.get_column("references").to_list() for n in sets}
    assert refs["nsynth_instrument"] == [["keyboard"], ["bass"]]
    assert refs["nsynth_pitch"] == [["9"], ["100"]]
    assert sets["nsynth_pitch"].meta["classes"] == ["9", "100"]  # numeric order
    assert refs["nsynth_velocity"] == [["100"], ["100"]]
    assert refs["nsynth_sonic"] == [["bright", "reverb"], []]  # a note without qualities stays
    assert len(sets["nsynth_sonic"].meta["classes"]) == 10


def test_requested_tasks(tmp_path):
    assert [t.name for t in select_tasks(["esc50", "clotho"], ["esc50"])[0]] == ["esc50"]
    with pytest.raises(ValueError, match="unknown task"):
        select_tasks(["esc50"], ["esc-50"])
    with pytest.raises(ValueError, match="needs source 'ravdess'"):
        select_tasks(["esc50"], ["ravdess"])


def test_evalsets_command_writes_parquet_sidecars_and_index(tmp_path):
    mdir = tmp_path / "manifests"
    write_manifest([row("ravdess", "r1", labels=["calm"], attrs={"emotion": "calm", "fold": "1"})], mdir / "ravdess.parquet")
    write_manifest([row("clotho", "c1", "train", captions=["a"])], mdir / "clotho.parquet")
    params = tmp_path / "params.yaml"
    params.write_text(
        "data:\n  sources:\n    - {name: ravdess, root: x, role: eval}\n    - {name: clotho, root: y, role: train}\n", encoding="utf-8"
    )
    out = tmp_path / "eval"
    assert main(["evalsets", "--params", str(params), "--manifests", str(mdir), "--out", str(out)]) == 0
    items = pl.read_parquet(out / "ravdess.parquet")
    assert items.get_column("references").to_list() == [["calm"]]
    meta = json.loads((out / "ravdess.json").read_text())
    assert (meta["metric"], meta["prompt"], len(meta["classes"])) == ("accuracy", "this emotion is", 8)
    index = json.loads((out / "index.json").read_text())
    assert list(index["tasks"]) == ["ravdess"]  # clotho is a training source here
    assert "clotho_captioning" in index["skipped"]
    written = write_eval_sets({}, {}, tmp_path / "empty")
    assert written == {"tasks": {}, "skipped": {}}


def test_a_source_that_also_trains_is_evaluated_on_its_test_split_only(tmp_path):
    from pengi.config import DataConfig, SourceConfig
    from pengi.evalsets import build_corpus_eval_sets

    rows = [
        row("esc50", "1-1-A-0", split="train", labels=["dog"], attrs={"fold": "1"}),
        row("esc50", "4-1-A-0", split="val", labels=["dog"], attrs={"fold": "4"}),
        row("esc50", "5-2-A-1", split="test", labels=["rooster"], attrs={"fold": "5"}),
    ]
    write_manifest(rows, tmp_path / "esc50.parquet")
    as_eval = DataConfig(sources=(SourceConfig(name="esc50", root="x", role="eval"),))
    both = DataConfig(sources=(SourceConfig(name="esc50", root="x", role="both"),))
    # An evaluation-only source keeps every fold (the paper's cross-validation protocol) ...
    sets, _ = build_corpus_eval_sets(tmp_path, as_eval)
    assert sorted(sets["esc50"].items.get_column("clip_id")) == ["1-1-A-0", "4-1-A-0", "5-2-A-1"]
    # ... one that also trains the model is scored on its held-out rows only.
    sets, _ = build_corpus_eval_sets(tmp_path, both)
    assert sets["esc50"].items.get_column("clip_id").to_list() == ["5-2-A-1"]
