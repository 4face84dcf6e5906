"""The log-mel front end: filterbank, STFT paths, dB conversion, both named settings."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pengi.config import AudioConfig
from pengi.features import LogMelFrontEnd, _hz_to_mel, _mel_to_hz, dft_kernels, mel_filterbank

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "pengi_parity"
HTSAT = "audio_encoder.base.htsat."
PAPER = AudioConfig()  # 44.1 kHz, 50-8000 Hz, torch.stft
REFERENCE = AudioConfig(f_max=14000.0, filterbank_sample_rate=32000, stft_kernels=True)


def test_slaney_mel_scale():
    assert _hz_to_mel(np.array(1000.0)) == pytest.approx(15.0)
    assert _hz_to_mel(np.array(200.0)) == pytest.approx(3.0)
    f = np.array([0.0, 50.0, 999.0, 1000.0, 4000.0, 14000.0])
    np.testing.assert_allclose(_mel_to_hz(_hz_to_mel(f)), f, rtol=1e-12, atol=1e-9)


def test_filterbank_shape_and_band():
    fb = mel_filterbank(44100, 1024, 64, 50.0, 8000.0)
    assert fb.shape == (513, 64) and fb.dtype == torch.float32
    assert (fb >= 0).all()
    freqs = torch.linspace(0, 22050, 513)
    assert fb[freqs > 8000].abs().sum() == 0  # nothing above f_max
    assert fb[freqs < 50].abs().sum() == 0
    assert (fb.sum(0) > 0).all()  # every band catches some bin


def test_reference_filterbank_spans_up_to_19k_on_44k1_audio():
    """The authors' 32 kHz / 14 kHz filterbank read as 44.1 kHz bins reaches about 19.3 kHz."""
    fb = LogMelFrontEnd(REFERENCE).mel_basis
    last_bin = int(torch.nonzero(fb.sum(1)).max())
    assert 19000 < last_bin * 44100 / 1024 < 19300
    paper_last = int(torch.nonzero(LogMelFrontEnd(PAPER).mel_basis.sum(1)).max())
    assert paper_last * 44100 / 1024 <= 8000


@pytest.mark.skipif(not (FIXTURE / "weights.safetensors").exists(), reason="parity fixture absent")
def test_computed_tensors_match_the_reference_checkpoint():
    w = load_file(str(FIXTURE / "weights.safetensors"))
    fe = LogMelFrontEnd(REFERENCE)
    assert (fe.mel_basis - w[HTSAT + "logmel_extractor.melW"]).abs().max() < 1e-8
    assert (fe.stft_real - w[HTSAT + "spectrogram_extractor.stft.conv_real.weight"]).abs().max() < 1e-7
    assert (fe.stft_imag - w[HTSAT + "spectrogram_extractor.stft.conv_imag.weight"]).abs().max() < 1e-7


def test_dft_kernels_give_the_fft():
    real, imag = dft_kernels(64)
    x = torch.randn(64, dtype=torch.float64)
    spec = torch.fft.rfft(x * torch.hann_window(64, periodic=True, dtype=torch.float64))
    torch.testing.assert_close((real[:, 0].double() @ x), spec.real, atol=1e-5, rtol=0)
    torch.testing.assert_close((imag[:, 0].double() @ x), spec.imag, atol=1e-5, rtol=0)


def test_conv_and_fft_paths_agree():
    torch.manual_seed(0)
    wave = 0.3 * torch.randn(2, 44100)
    a = LogMelFrontEnd(REFERENCE)(wave)
    b = LogMelFrontEnd(AudioConfig(f_max=14000.0, filterbank_sample_rate=32000, stft_kernels=False))(wave)
    assert a.shape == b.shape == (2, 44100 // 320 + 1, 64)
    assert (a - b).abs().max() < 5e-3  # dB


def test_db_floor_frames_and_sine_peak():
    fe = LogMelFrontEnd(PAPER)
    assert fe(torch.zeros(1, 3200)).eq(-100.0).all()  # digital silence: exactly 10 log10(1e-10)
    t = torch.arange(308700) / 44100
    logmel = fe(torch.sin(2 * math.pi * 1000 * t)[None])
    assert logmel.shape == (1, 965, 64)
    peak = int(logmel[0, 400].argmax())
    centre = fe.mel_basis[:, peak].argmax() * 44100 / 1024
    assert abs(centre - 1000) < 150


def test_front_end_state_and_gradients():
    ref = LogMelFrontEnd(REFERENCE)
    assert set(ref.state_dict()) == {"stft_real", "stft_imag", "mel_basis"}
    assert not any(p.requires_grad for p in ref.parameters())
    assert LogMelFrontEnd(PAPER).state_dict() == {}  # recomputed, not stored


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="Nyquist"):
        LogMelFrontEnd(AudioConfig(sample_rate=16000, f_max=14000.0))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        LogMelFrontEnd(PAPER)(torch.zeros(1, 1, 4410))
