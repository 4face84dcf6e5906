"""pengi.audio: probing facts and failures, decoding paths agreeing, cropping."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from pengi.audio import AudioError, _decode_ffmpeg, crop, decode, has_nonfinite, probe

SR = 22050
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


def tone(seconds: float, sr: int = SR, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)  # (T,)
    if channels == 1:
        return x
    return np.stack([x * (i + 1) / channels for i in range(channels)], axis=1)  # (T, C)


@pytest.mark.parametrize("ext,subtype", [("wav", "PCM_16"), ("flac", "PCM_16"), ("wav", "FLOAT"), ("ogg", "VORBIS")])
@pytest.mark.parametrize("channels", [1, 2])
def test_probe_reads_header_facts(tmp_path, ext, subtype, channels):
    path = tmp_path / f"a.{ext}"
    sf.write(path, tone(1.5, channels=channels), SR, subtype=subtype)
    info = probe(str(path))
    assert info.sample_rate == SR
    assert info.channels == channels
    assert info.duration_s == pytest.approx(1.5, abs=1e-3)


def _cut(path, frac=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * frac)])


@pytest.mark.parametrize("ext", ["wav", "flac"])
def test_probe_detects_truncation(tmp_path, ext):
    path = tmp_path / f"a.{ext}"
    sf.write(path, np.random.default_rng(0).normal(0, 0.1, SR * 2).astype(np.float32), SR)
    _cut(path)
    with pytest.raises(AudioError) as e:
        probe(str(path), verify="tail")
    assert e.value.reason == "truncated"
    # Header-only probing trusts the header; that is what "header" means.
    if ext == "flac":
        assert probe(str(path), verify="header").duration_s == pytest.approx(2.0)


def test_probe_failures_have_reasons(tmp_path):
    with pytest.raises(AudioError) as e:
        probe(str(tmp_path / "nope.wav"))
    assert e.value.reason == "missing"
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError) as e:
        probe(str(tmp_path / "empty.wav"))
    assert e.value.reason == "empty"
    (tmp_path / "junk.flac").write_bytes(b"this is not audio" * 50)
    with pytest.raises(AudioError) as e:
        probe(str(tmp_path / "junk.flac"))
    assert e.value.reason == "undecodable"
    # A valid header with zero frames.
    sf.write(tmp_path / "zero.wav", np.zeros(0, np.float32), SR)
    with pytest.raises(AudioError) as e:
        probe(str(tmp_path / "zero.wav"))
    assert e.value.reason == "empty"


def test_probe_finds_nan_in_float_files(tmp_path):
    x = tone(1.0)
    x[1000] = np.nan
    sf.write(tmp_path / "nan.wav", x, SR, subtype="FLOAT")
    with pytest.raises(AudioError) as e:
        probe(str(tmp_path / "nan.wav"))
    assert e.value.reason == "nonfinite"
    with pytest.raises(AudioError):
        decode(str(tmp_path / "nan.wav"), SR)


@needs_ffmpeg
@pytest.mark.parametrize("ext", ["m4a", "mp3"])
def test_probe_compressed_via_ffmpeg_or_soundfile(tmp_path, ext):
    path = tmp_path / f"s.{ext}"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=f=440:d=2:sample_rate=44100", "-af", "pan=stereo|c0=c0|c1=0.5*c0", str(path)],
        check=True,
    )
    info = probe(str(path))
    assert info.sample_rate == 44100 and info.channels == 2
    assert info.duration_s == pytest.approx(2.0, abs=0.1)
    wave = decode(str(path), 16000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert len(wave) == pytest.approx(32000, abs=0.1 * 16000)


def test_decode_resamples_and_downmixes_by_averaging(tmp_path):
    st = tone(1.0, sr=44100, channels=2)  # (T, 2): right = 2 x left
    sf.write(tmp_path / "st.wav", st, 44100, subtype="FLOAT")
    mono = decode(str(tmp_path / "st.wav"), 44100)
    np.testing.assert_allclose(mono, st.mean(axis=1), atol=1e-6)
    down = decode(str(tmp_path / "st.wav"), 16000)
    assert down.shape == (16000,)
    both = decode(str(tmp_path / "st.wav"), 44100, mono=False)
    assert both.shape == (2, 44100)


@needs_ffmpeg
def test_ffmpeg_path_matches_soundfile_downmix(tmp_path):
    """Both decoders must use the averaging convention (ffmpeg's default is sqrt(2) louder)."""
    st = tone(1.0, sr=16000, channels=2)
    sf.write(tmp_path / "st.wav", st, 16000, subtype="FLOAT")
    a = decode(str(tmp_path / "st.wav"), 16000)
    b = _decode_ffmpeg(str(tmp_path / "st.wav"), 16000, mono=True)
    n = min(len(a), len(b))
    assert abs(len(a) - len(b)) <= 2
    np.testing.assert_allclose(a[:n], b[:n], atol=1e-4)


def test_crop_modes():
    w = np.arange(10, dtype=np.float32)
    assert crop(w, 4, "start").tolist() == [0, 1, 2, 3]
    assert crop(w, 4, "center").tolist() == [3, 4, 5, 6]
    r1 = crop(w, 4, "random", np.random.default_rng(1))
    r2 = crop(w, 4, "random", np.random.default_rng(1))
    assert r1.tolist() == r2.tolist() and len(r1) == 4
    assert r1[-1] - r1[0] == 3
    padded = crop(w, 12, "center")
    assert padded.tolist() == list(range(10)) + [0, 0]
    assert crop(np.ones((2, 10)), 4).shape == (2, 4)
    with pytest.raises(ValueError):
        crop(w, 4, "random")


def test_has_nonfinite():
    assert not has_nonfinite(np.zeros(3))
    assert has_nonfinite(np.array([0.0, np.inf]))
