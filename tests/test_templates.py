"""Templates (paper Table 1) and the render stage: each template renders as specified."""

from __future__ import annotations

import json

import polars as pl
import pytest

from pengi import tasks as T
from pengi.cli import main
from pengi.config import RenderConfig
from pengi.manifest import read_manifest_frame, write_manifest
from pengi.templates import TEMPLATES, TRIPLE_COLUMNS, render_triples, source_tasks


def row(source: str, clip_id: str, split: str = "train", **kw) -> dict:
    return {
        "source": source, "clip_id": clip_id, "split": split, "audio_uri": f"/audio/{source}/{clip_id}.wav",
        "duration_s": 5.0, "sample_rate": 44100, "channels": 1, **kw,
    }  # fmt: skip


def frame(tmp_path, rows: list[dict], name: str = "m") -> pl.DataFrame:
    path = tmp_path / f"{name}.parquet"
    write_manifest(rows, path)
    return read_manifest_frame(path)


def pairs(df: pl.DataFrame) -> list[tuple[str, str, str]]:
    return [(r["clip_id"], r["prompt"], r["target"]) for r in df.iter_rows(named=True)]


def test_every_training_task_has_a_template_and_the_paper_prompt():
    assert set(TEMPLATES) == set(T.TRAIN_TASKS)
    assert T.TRAIN_PROMPTS[T.SOUND_EVENT] == "this is a sound of"
    assert T.TRAIN_PROMPTS[T.METADATA] == "generate metadata"


def test_captioning_one_triple_per_caption(tmp_path):
    df = frame(tmp_path, [row("clotho", "a", captions=["a dog barks", "  a dog barks loudly "]), row("clotho", "b")])
    out = TEMPLATES[T.CAPTIONING](df)
    assert pairs(out) == [
        ("a", "generate audio caption", "a dog barks"),
        ("a", "generate audio caption", "a dog barks loudly"),
    ]
    assert out.get_column("k").to_list() == [0, 1]


def test_aqa_prompt_carries_the_question(tmp_path):
    df = frame(tmp_path, [row("clotho_aqa", "a", qa=[("is a dog barking?", "yes"), ("what animal is it?", "dog")])])
    assert pairs(TEMPLATES[T.AQA](df)) == [
        ("a", "question: is a dog barking?", "yes"),
        ("a", "question: what animal is it?", "dog"),
    ]


def test_sound_event_joins_multiple_labels_in_order(tmp_path):
    df = frame(tmp_path, [row("fsd50k", "a", labels=["Dog", "Bark", "Animal"]), row("fsd50k", "b", labels=[])])
    assert pairs(TEMPLATES[T.SOUND_EVENT](df)) == [("a", "this is a sound of", "Dog, Bark, Animal")]


def test_label_identifiers_become_words(tmp_path):
    df = frame(tmp_path, [row("esc50", "a", labels=["clock_tick", "crying_baby"], attrs={"scene": "city_center"})])
    assert pairs(TEMPLATES[T.SOUND_EVENT](df)) == [("a", "this is a sound of", "clock tick, crying baby")]
    assert pairs(TEMPLATES[T.ACOUSTIC_SCENE](df)) == [("a", "this acoustic scene is", "city center")]


def test_label_tasks_prefer_attrs_so_a_two_task_source_is_unambiguous(tmp_path):
    # MELD-like: labels hold the emotion, attrs hold both emotion and sentiment.
    df = frame(tmp_path, [row("meld", "a", labels=["joy"], attrs={"emotion": "joy", "sentiment": "positive"})])
    assert pairs(TEMPLATES[T.EMOTION](df)) == [("a", "this emotion is", "joy")]
    assert pairs(TEMPLATES[T.SENTIMENT](df)) == [("a", "this sentiment is", "positive")]
    scenes = frame(tmp_path, [row("cochlscene", "s", labels=["Park"]), row("cochlscene", "t", attrs={"scene": "Bus"})], "s")
    assert pairs(TEMPLATES[T.ACOUSTIC_SCENE](scenes)) == [
        ("s", "this acoustic scene is", "Park"),
        ("t", "this acoustic scene is", "Bus"),
    ]


def test_music_analysis_template(tmp_path):
    df = frame(
        tmp_path,
        [
            row("fma", "1", labels=["Rock"], attrs={"genre": "Rock", "language": "en"}),
            row("fma", "2", labels=["Jazz"], attrs={"genre": "Jazz"}),
            row("fma", "3"),
        ],
    )
    assert pairs(TEMPLATES[T.MUSIC_ANALYSIS](df)) == [
        ("1", "music analysis", "this is a sound of music in language en and genre Rock"),
        ("2", "music analysis", "this is a sound of music in genre Jazz"),
    ]


def test_music_note_template(tmp_path):
    attrs = {"pitch": "60", "velocity": "100", "instrument_source": "acoustic"}
    df = frame(
        tmp_path,
        [
            row("nsynth", "n1", labels=["keyboard"], attrs={**attrs, "qualities": "bright,percussive"}),
            row("nsynth", "n2", labels=["guitar"], attrs={**attrs, "qualities": ""}),
            row("nsynth", "n3", labels=["guitar"], attrs={"pitch": "60"}),  # required fields missing
        ],
    )
    assert pairs(TEMPLATES[T.MUSIC_NOTE](df)) == [
        ("n1", "this music note is",
         "produced by keyboard, pitch 60, velocity 100, source acoustic, and having qualities like bright, percussive"),
        ("n2", "this music note is", "produced by guitar, pitch 60, velocity 100, source acoustic"),
    ]  # fmt: skip


def test_metadata_renders_captions_then_tags(tmp_path):
    df = frame(
        tmp_path,
        [
            row("wavtext5k", "a", captions=["Thunder", "rolling thunder in the distance"], labels=["storm", "weather"]),
            row("wavtext5k", "b", labels=["bell"]),
        ],
    )
    out = TEMPLATES[T.METADATA](df)
    assert pairs(out) == [
        ("a", "generate metadata", "Thunder"),
        ("a", "generate metadata", "rolling thunder in the distance"),
        ("a", "generate metadata", "storm, weather"),
        ("b", "generate metadata", "bell"),
    ]
    assert out.get_column("k").to_list() == [0, 1, 2, 0]


def _corpus(tmp_path, n: int = 40) -> dict[str, pl.DataFrame]:
    caps = [row("clotho", f"c{i}", "train" if i % 4 else "val", captions=[f"cap {i}", f"other {i}"]) for i in range(n)]
    caps += [row("clotho", "t0", "test", captions=["held out"]), row("clotho", "q0", captions=["bad"], status="quarantined", reason="x")]
    tags = [row("wavcaps", f"w{i}", captions=[f"wav {i}"]) for i in range(n)]  # no val split
    return {"clotho": frame(tmp_path, caps, "clotho"), "wavcaps": frame(tmp_path, tags, "wavcaps")}


def test_render_excludes_quarantine_test_and_leakage_and_accounts_for_them(tmp_path):
    m = _corpus(tmp_path)
    excluded = pl.DataFrame({"source": ["clotho"], "clip_id": ["c1"]})
    res = render_triples(m, RenderConfig(val_fraction=0.2), excluded)
    train, val = res.splits["train"], res.splits["val"]
    assert tuple(train.columns) == TRIPLE_COLUMNS
    clips = set(train.get_column("clip_id")) | set(val.get_column("clip_id"))
    assert {"t0", "q0", "c1"}.isdisjoint(clips)
    assert set(val.filter(pl.col("source") == "clotho").get_column("clip_id")) == {f"c{i}" for i in range(0, 40, 4)}
    src = res.report["sources"]["clotho"]
    assert (src["quarantined"], src["test_rows_skipped"], src["leakage_excluded"]) == (1, 1, 1)
    # wavcaps has no val split: a stable 20% of its clips is carved into val, never into both.
    carved = set(val.filter(pl.col("source") == "wavcaps").get_column("clip_id"))
    assert res.report["sources"]["wavcaps"]["val_carved"] == len(carved) > 0
    assert carved.isdisjoint(set(train.filter(pl.col("source") == "wavcaps").get_column("clip_id")))
    assert set(train.get_column("task")) == {T.CAPTIONING, T.METADATA}
    assert train.get_column("triple_id").is_unique().all()


def test_weights_are_repetition_factors_on_train_only(tmp_path):
    m = _corpus(tmp_path, 400)
    base = render_triples(m, RenderConfig(val_fraction=0.2))
    cfg = RenderConfig(val_fraction=0.2, source_weights={"clotho": 3.0}, task_weights={T.METADATA: 0.5}, seed=1)
    res = render_triples(m, cfg)
    count = lambda r, s, src: r.splits[s].filter(pl.col("source") == src).height  # noqa: E731
    assert count(res, "train", "clotho") == 3 * count(base, "train", "clotho")
    assert count(res, "val", "clotho") == count(base, "val", "clotho")
    half = count(res, "train", "wavcaps") / count(base, "train", "wavcaps")
    assert 0.35 < half < 0.65
    assert res.splits["train"].get_column("triple_id").is_unique().all()
    again = render_triples(m, cfg)
    assert again.splits["train"].equals(res.splits["train"])  # deterministic for a seed
    other = render_triples(m, RenderConfig(val_fraction=0.2, source_weights={"clotho": 3.0}, task_weights={T.METADATA: 0.5}, seed=2))
    assert not other.splits["train"].equals(res.splits["train"])


def test_config_errors_are_explicit(tmp_path):
    m = _corpus(tmp_path, 4)
    with pytest.raises(ValueError, match="no task mapping"):
        render_triples({"mystery": m["clotho"]}, RenderConfig())
    with pytest.raises(ValueError, match="source_weights"):
        render_triples(m, RenderConfig(source_weights={"clothoo": 2.0}))
    with pytest.raises(ValueError, match="not a training source"):
        render_triples(m, RenderConfig(source_tasks={"esc50": ("sound_event",)}))
    with pytest.raises(ValueError, match=">= 0"):
        render_triples(m, RenderConfig(task_weights={"captioning": -1.0}))
    with pytest.raises(ValueError, match="unknown task"):
        source_tasks("clotho", RenderConfig(source_tasks={"clotho": ("captions",)}))
    assert source_tasks("clotho", RenderConfig(source_tasks={"clotho": (T.METADATA,)})) == (T.METADATA,)
    off = render_triples(m, RenderConfig(metadata_task=False))
    assert T.METADATA not in set(off.splits["train"].get_column("task"))


def test_render_command_writes_triples_and_report(tmp_path):
    mdir = tmp_path / "manifests"
    write_manifest([row("clotho", f"c{i}", captions=[f"cap {i}"], identity=[f"freesound:{i}"]) for i in range(6)], mdir / "clotho.parquet")
    write_manifest([row("esc50", "e1", "test", labels=["dog"], identity=["freesound:3"])], mdir / "esc50.parquet")
    params = tmp_path / "params.yaml"
    params.write_text(
        "data:\n  sources:\n    - {name: clotho, root: x, role: train}\n    - {name: esc50, root: y, role: eval}\n"
        "render:\n  val_fraction: 0.0\n",
        encoding="utf-8",
    )
    rc = main(["render", "--params", str(params), "--manifests", str(mdir), "--out", str(tmp_path / "triples"),
               "--report", str(tmp_path / "render.json")])  # fmt: skip
    assert rc == 0
    train = pl.read_parquet(tmp_path / "triples" / "train.parquet")
    assert sorted(train.get_column("clip_id")) == ["c0", "c1", "c2", "c4", "c5"]  # c3 leaks into esc50
    report = json.loads((tmp_path / "render.json").read_text())
    pair = report["leakage"]["pairs"][0]
    assert (pair["train"], pair["eval"], pair["train_rows"], pair["shared_keys"]) == ("clotho", "esc50", 1, 1)
    assert report["render"]["triples"] == {"train": 5, "val": 0}


def test_render_refuses_to_run_after_a_failed_gate(tmp_path):
    mdir = tmp_path / "manifests"
    write_manifest([row("clotho", "c0", captions=["cap"])], mdir / "clotho.parquet")
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  sources:\n    - {name: clotho, root: x, role: train}\n", encoding="utf-8")
    gate = tmp_path / "validate.json"
    args = ["render", "--params", str(params), "--manifests", str(mdir), "--gate", str(gate),
            "--out", str(tmp_path / "triples"), "--report", str(tmp_path / "render.json")]  # fmt: skip
    gate.write_text(json.dumps({"passed": False}))
    with pytest.raises(SystemExit, match="data gate failed"):
        main(args)
    assert not (tmp_path / "triples").exists()
    gate.write_text(json.dumps({"passed": True}))
    assert main(args) == 0


def test_eval_answer_forms_read_the_class_back_from_rendered_targets(tmp_path):
    """Every evaluation task's ``answer`` form finds its class in the targets the model trains on."""
    from pengi.inference import extract_answer

    attrs = {"pitch": "60", "velocity": "100", "instrument_source": "acoustic"}
    notes = frame(tmp_path, [
        row("nsynth", "n1", labels=["keyboard"], attrs={**attrs, "qualities": "bright,percussive"}),
        row("nsynth", "n2", labels=["guitar"], attrs=attrs),
    ], name="notes")  # fmt: skip
    note_targets = TEMPLATES[T.MUSIC_NOTE](notes).get_column("target").to_list()
    genres = frame(tmp_path, [row("gtzan_genres", "g1", labels=["jazz"], attrs={"genre": "jazz"})], name="g")
    genre_target = TEMPLATES[T.MUSIC_ANALYSIS](genres).get_column("target").to_list()[0]
    want = {
        "nsynth_instrument": ["keyboard", "guitar"],
        "nsynth_pitch": ["60", "60"],
        "nsynth_velocity": ["100", "100"],
        "nsynth_sonic": ["bright, percussive", note_targets[1]],  # no qualities clause: the whole text
    }
    for name, classes in want.items():
        task = T.EVAL_TASKS[name]
        got = [extract_answer(t, task.answer, multilabel=task.kind == "multilabel") for t in note_targets]
        assert got == classes, name
        # log-likelihood scores answer.format(class) only where the answer starts the target
        assert task.answer_leads == all(t.startswith(task.answer.split("{}")[0]) for t in note_targets), name
    task = T.EVAL_TASKS["gtzan_genres"]
    assert extract_answer(genre_target, task.answer) == "jazz" and genre_target == task.answer.format("jazz")
    for name in ("esc50", "tut2017", "crema_d"):  # bare-label targets
        assert T.EVAL_TASKS[name].answer == "{}"
