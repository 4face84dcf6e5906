"""The audio store: decode once, random access, quarantine, atomic replacement, crops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from pengi.audio_store import AudioStore, build_store, collect_uris, crop

SR = 8000


def write_clips(root: Path, specs: dict[str, tuple[float, int, int]]) -> dict[str, np.ndarray]:
    """Write WAV clips: name -> (seconds, sample rate, channels). Returns the mono signals."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = {}
    for name, (seconds, sr, channels) in specs.items():
        n = int(seconds * sr)
        data = (0.5 * rng.standard_normal((n, channels))).clip(-1, 1).astype(np.float32)
        sf.write(root / name, data, sr, subtype="FLOAT")
        out[str(root / name)] = data.mean(axis=1)
    return out


def test_store_roundtrip_and_quarantine(tmp_path):
    clips = write_clips(tmp_path / "wav", {"a.wav": (1.0, SR, 1), "b.wav": (0.5, SR, 2), "c.wav": (2.0, 16000, 1)})
    broken = tmp_path / "wav" / "broken.wav"
    broken.write_bytes(b"RIFF not really a wav")
    uris = [*clips, str(broken), next(iter(clips))]  # a duplicate is decoded once
    summary = build_store(uris, tmp_path / "store", SR, workers=2)
    assert summary["clips"] == 4 and summary["clips_quarantined"] == 1
    store = AudioStore(tmp_path / "store")
    assert len(store) == 3 and str(broken) in store.quarantined
    a = str(tmp_path / "wav" / "a.wav")
    b = str(tmp_path / "wav" / "b.wav")
    c = str(tmp_path / "wav" / "c.wav")
    # same sample rate: float16 storage is within its precision of the decoded signal
    np.testing.assert_allclose(store.read(a), clips[a], atol=2e-3)
    np.testing.assert_allclose(store.read(b), clips[b], atol=2e-3)  # channels averaged
    assert store.length(c) == 2 * SR  # resampled 16 kHz -> 8 kHz
    np.testing.assert_array_equal(store.read(a, 100, 50), store.read(a)[100:150])
    with pytest.raises(KeyError, match="quarantined"):
        store.read(str(broken))
    with pytest.raises(KeyError, match="not in the audio store"):
        store.read("nope.wav")
    meta = json.loads((tmp_path / "store" / "store.json").read_text())
    assert meta["total_samples"] == SR + SR // 2 + 2 * SR


def test_store_rebuild_replaces_atomically_and_fails_on_bad_rate(tmp_path):
    clips = write_clips(tmp_path / "wav", {"a.wav": (0.2, SR, 1)})
    build_store(list(clips), tmp_path / "store", SR)
    clips2 = write_clips(tmp_path / "wav2", {"x.wav": (0.3, SR, 1), "y.wav": (0.1, SR, 1)})
    build_store(list(clips2), tmp_path / "store", SR)
    store = AudioStore(tmp_path / "store")
    assert sorted(store.uris()) == sorted(clips2)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dirs left
    with pytest.raises(RuntimeError, match="failed to decode"):
        build_store([str(tmp_path / "missing.wav"), *clips2], tmp_path / "store", SR, max_quarantine_rate=0.1)
    assert sorted(AudioStore(tmp_path / "store").uris()) == sorted(clips2)  # old store intact


def test_crops(tmp_path):
    clips = write_clips(tmp_path / "wav", {"long.wav": (1.0, SR, 1), "short.wav": (0.25, SR, 1)})
    build_store(list(clips), tmp_path / "store", SR)
    store = AudioStore(tmp_path / "store")
    long_, short = (str(tmp_path / "wav" / n) for n in ("long.wav", "short.wav"))
    full = store.read(long_)
    w, n = crop(store, long_, 4000, "start")
    np.testing.assert_array_equal(w, full[:4000])
    assert n == 4000
    w, _ = crop(store, long_, 4000, "center")
    np.testing.assert_array_equal(w, full[2000:6000])
    w1, _ = crop(store, long_, 4000, "random", np.random.default_rng(1))
    w2, _ = crop(store, long_, 4000, "random", np.random.default_rng(1))
    np.testing.assert_array_equal(w1, w2)
    starts = {int(np.flatnonzero(full == crop(store, long_, 10, "random", np.random.default_rng(s))[0][0])[0]) for s in range(20)}
    assert len(starts) > 5  # random crops move
    w, n = crop(store, short, 4000, "random", np.random.default_rng(0))
    assert n == 2000 and w.shape == (4000,)
    np.testing.assert_array_equal(w[:2000], store.read(short))
    assert not w[2000:].any()  # zero-padded at the end
    with pytest.raises(ValueError, match="rng"):
        crop(store, long_, 10, "random")


def test_collect_uris_skips_quarantined_manifest_rows(tmp_path):
    t = pa.table({"audio_uri": ["b", "a", "b", "c"], "status": ["ok", "ok", "ok", "quarantined"]})
    pq.write_table(t, tmp_path / "m.parquet")
    pq.write_table(pa.table({"audio_uri": ["d"]}), tmp_path / "t.parquet")
    assert collect_uris([tmp_path / "m.parquet", tmp_path / "t.parquet"]) == ["a", "b", "d"]
    pq.write_table(pa.table({"x": [1]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="audio_uri"):
        collect_uris([tmp_path / "bad.parquet"])


def test_audio_store_command_reads_triples_and_globbed_tables(tmp_path, monkeypatch):
    from pengi.cli import main

    clips = write_clips(tmp_path / "wav", {"a.wav": (0.2, SR, 1), "b.wav": (0.2, SR, 1), "c.wav": (0.2, SR, 1)})
    a, b, c = sorted(clips)
    (tmp_path / "triples").mkdir()
    pq.write_table(pa.table({"audio_uri": [a, b]}), tmp_path / "triples" / "train.parquet")
    pq.write_table(pa.table({"audio_uri": [b]}), tmp_path / "triples" / "val.parquet")
    (tmp_path / "eval").mkdir()
    pq.write_table(pa.table({"audio_uri": [c]}), tmp_path / "eval" / "esc50.parquet")
    (tmp_path / "params.yaml").write_text(f"audio: {{sample_rate: {SR}}}\ndata: {{probe_workers: 1}}\n")
    monkeypatch.chdir(tmp_path)
    argv = ["audio-store", "--params", "params.yaml", "--triples", "triples", "--tables", "eval/*.parquet",
            "nothing/*.parquet", "--out", "store"]  # fmt: skip
    assert main(argv) == 0
    assert sorted(AudioStore(tmp_path / "store").uris()) == [a, b, c]
    with pytest.raises(SystemExit, match="no such table"):
        main(["audio-store", "--params", "params.yaml", "--triples", "triples", "--tables", "missing.parquet", "--out", "s2"])
