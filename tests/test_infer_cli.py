"""The user CLI (``caption``, ``ask``, ``classify``, ``describe``, ``embed``) on tiny random models.

Inputs: a folder of generated clips with one corrupt file, single files, a Parquet table.
Checks: one record per input in order, JSON/CSV output, per-file error records and the exit
status (1 unless ``--skip-errors``), usage errors (exit 2).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import soundfile as sf
import torch

from pengi.models.tiny import TINY_PARAMS_SAMPLE_RATE, tiny_params_with_offline_tokenizers
from pengi.cli import main
from pengi.commands.infer import InputError, collect_inputs, to_csv
from pengi.config import from_dict

SR = TINY_PARAMS_SAMPLE_RATE
TINY = tiny_params_with_offline_tokenizers()


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    from pengi.models import build_clap, build_pengi
    from pengi.models.lm import smollm2_folder
    from pengi.models.text import minilm_folder

    try:
        minilm_folder()
        smollm2_folder()
    except FileNotFoundError as exc:
        pytest.skip(f"offline tokenizer packages missing: {exc}")
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    cfg = from_dict(TINY)
    build_pengi(cfg).save_pretrained(root / "pengi")
    build_clap(cfg).save_pretrained(root / "clap")
    clips = root / "clips"
    (clips / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate(["a.wav", "b.flac", "sub/c.wav"]):
        sf.write(clips / name, (0.1 * rng.standard_normal(2000 + 700 * i)).astype(np.float32), SR)
    (clips / "sub" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio")
    (clips / "notes.txt").write_text("not audio, not collected from folders")
    return {"root": root, "pengi": root / "pengi", "clap": root / "clap", "clips": clips}


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main([*args, "--no-progress"])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_caption_folder_reports_corrupt_file_and_fails(setup, capsys):
    rc, out, err = _cli(["caption", "--model", str(setup["pengi"]), "--beam-size", "2", "--max-new-tokens", "3",
                         str(setup["clips"])], capsys)  # fmt: skip
    records = json.loads(out)
    assert rc == 1
    assert [Path(r["input"]).name for r in records] == ["a.wav", "b.flac", "c.wav", "corrupt.wav"]
    assert all(isinstance(r["caption"], str) for r in records[:3])
    assert "caption" not in records[3] and "corrupt.wav" in records[3]["error"]
    assert "corrupt.wav" in err  # the error is also on stderr, not only in the data


def test_skip_errors_csv_to_file(setup, capsys, tmp_path):
    out_file = tmp_path / "out" / "cls.csv"
    rc, out, _ = _cli(["classify", "--model", str(setup["pengi"]), "--labels", "dog,cat", "rain", "--method",
                       "loglik", "--format", "csv", "--out", str(out_file), "--skip-errors", str(setup["clips"])],
                      capsys)  # fmt: skip
    assert rc == 0 and out == ""
    rows = list(csv.DictReader(io.StringIO(out_file.read_text())))
    assert len(rows) == 4 and list(rows[0])[-1] == "error"
    ok = rows[:3]
    for r in ok:
        scores = {k: float(r[f"score:{k}"]) for k in ("dog", "cat", "rain")}
        assert r["label"] == max(scores, key=scores.get) and all(v < 0 for v in scores.values())
    assert rows[3]["error"] and rows[3]["label"] == ""


def test_ask_describe_classify_text_and_embed(setup, capsys, tmp_path):
    a = str(setup["clips"] / "a.wav")
    rc, out, _ = _cli(["ask", "--model", str(setup["pengi"]), "--question", "is it loud?", "--beam-size", "1",
                       "--max-new-tokens", "3", a], capsys)  # fmt: skip
    assert rc == 0 and json.loads(out)[0]["question"] == "is it loud?"
    rc, out, _ = _cli(["describe", "--model", str(setup["pengi"]), "--prompt", "this acoustic scene is",
                       "--max-new-tokens", "3", a], capsys)  # fmt: skip
    assert rc == 0 and json.loads(out)[0]["prompt"] == "this acoustic scene is"
    rc, out, _ = _cli(["classify", "--model", str(setup["pengi"]), "--labels", "dog", "cat", "--method", "text",
                       "--max-new-tokens", "3", a], capsys)  # fmt: skip
    rec = json.loads(out)[0]
    assert rc == 0 and rec["label"] in ("dog", "cat") and isinstance(rec["text"], str)
    assert all(-1.0001 <= v <= 1.0001 for v in rec["scores"].values())  # cosines
    # log-likelihood scores the label inside the answer form when one is given
    scores = {}
    for answer in ("{}", "it is a {}"):
        rc, out, _ = _cli(["classify", "--model", str(setup["pengi"]), "--labels", "dog,cat", "--method", "loglik",
                           "--answer", answer, a], capsys)  # fmt: skip
        assert rc == 0
        scores[answer] = json.loads(out)[0]["scores"]
    assert all(v < 0 for s in scores.values() for v in s.values())  # log-probabilities
    assert scores["it is a {}"]["dog"] < scores["{}"]["dog"]  # more tokens to explain: a lower log-probability
    # embed from a Parquet table with a CLAP folder as the model: unit-norm vectors of d_proj
    table = tmp_path / "t.parquet"
    pl.DataFrame({"audio_uri": [a, str(setup["clips"] / "b.flac"), a]}).write_parquet(table)
    rc, out, _ = _cli(["embed", "--model", str(setup["clap"]), str(table)], capsys)
    recs = json.loads(out)
    assert rc == 0 and len(recs) == 2  # distinct URIs of the table
    for r in recs:
        v = np.array(r["embedding"])
        assert v.shape == (32,) and np.linalg.norm(v) == pytest.approx(1.0, abs=1e-4)


def test_usage_errors_exit_2(setup, capsys):
    m = str(setup["pengi"])
    a = str(setup["clips"] / "a.wav")
    assert _cli(["ask", "--model", m, a], capsys)[0] == 2
    assert _cli(["describe", "--model", m, a], capsys)[0] == 2
    assert _cli(["classify", "--model", m, a], capsys)[0] == 2
    rc, _, err = _cli(["classify", "--model", m, "--labels", "dog", "--answer", "genre", a], capsys)
    assert rc == 2 and "exactly one '{}'" in err
    rc, _, err = _cli(["caption", "--model", m, str(setup["root"] / "nope.wav")], capsys)
    assert rc == 2 and "no such file" in err
    rc, _, err = _cli(["caption", "--model", str(setup["clap"]), a], capsys)  # a CLAP model cannot caption
    assert rc == 2 and "no Pengi model" in err
    rc, _, err = _cli(["caption", "--model", str(setup["root"] / "missing"), a], capsys)
    assert rc == 2 and "model.safetensors" in err


def test_collect_inputs_and_csv(setup, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no audio files"):
        collect_inputs([str(empty)])
    bad_table = tmp_path / "x.parquet"
    pl.DataFrame({"path": ["a"]}).write_parquet(bad_table)
    with pytest.raises(InputError, match="audio_uri"):
        collect_inputs([str(bad_table)])
    got = collect_inputs([str(setup["clips"] / "sub"), str(setup["clips"] / "a.wav")])
    assert [Path(p).name for p in got] == ["c.wav", "corrupt.wav", "a.wav"]
    text = to_csv([{"input": "x", "embedding": [0.5, 1.0]}, {"input": "y", "error": "missing: y"}])
    assert text.splitlines() == ["input,e0,e1,error", "x,0.5,1.0,", "y,,,missing: y"]
