"""Log-mel front end in torch, shared by every audio encoder.

Two settings, both explicit in :class:`pengi.config.AudioConfig`:

* the paper's: 44.1 kHz input, 64 mels over 50-8000 Hz, window 1024, hop 320
  (``filterbank_sample_rate: null``, ``stft_kernels: false``, FFT via ``torch.stft``);
* the authors' code (reference-compatible): the same STFT, but a mel filterbank *designed for
  32 kHz, 50-14000 Hz* applied to 44.1 kHz input (``filterbank_sample_rate: 32000``,
  ``f_max: 14000``), with the STFT computed as a convolution with DFT kernels that are frozen
  parameters stored in the checkpoint (``stft_kernels: true``), as torchlibrosa does.

No torchaudio or librosa at run time: the Slaney mel filterbank is computed here in float64.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pengi.config import AudioConfig

log = logging.getLogger(__name__)

AMIN = 1e-10  # power floor before the dB conversion (digital silence gives exactly -100 dB)


def _hz_to_mel(freqs: np.ndarray) -> np.ndarray:
    """Slaney mel scale (librosa's default, ``htk=False``): linear below 1 kHz, log above."""
    freqs = np.asarray(freqs, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = freqs / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    log_region = freqs >= min_log_hz
    mels = np.where(log_region, min_log_mel + np.log(np.maximum(freqs, 1e-12) / min_log_hz) / logstep, mels)
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), freqs)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    """Slaney-scale, Slaney-normalised triangular mel filterbank.

    Equal to ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax, htk=False, norm="slaney").T``
    up to float32 rounding (librosa rounds twice; this computes in float64 and rounds once).

    Returns:
        float32 tensor ``(n_fft // 2 + 1, n_mels)``: ``power @ melW`` gives mel power.
    """
    if not 0 <= f_min < f_max:
        raise ValueError(f"mel filterbank needs 0 <= f_min < f_max, got {f_min}, {f_max}")
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    mel_pts = np.linspace(_hz_to_mel(np.array(f_min)), _hz_to_mel(np.array(f_max)), n_mels + 2)
    mel_f = _mel_to_hz(mel_pts)  # (n_mels + 2,) band edges in Hz
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]  # (n_mels + 2, n_freq)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))  # (n_mels, n_freq)
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])  # Slaney area normalisation
    weights = weights * enorm[:, None]
    return torch.from_numpy(weights.T.astype(np.float32))


def periodic_hann(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``0.5 - 0.5 cos(2 pi k / n)``, the periodic Hann window (scipy/librosa ``fftbins=True``)."""
    return torch.hann_window(n, periodic=True, dtype=dtype)


def dft_kernels(n_fft: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windowed DFT kernels as torchlibrosa builds them: ``(n_fft // 2 + 1, 1, n_fft)`` each.

    real = window * cos(2 pi k n / N), imag = -window * sin(2 pi k n / N), in float64 rounded once.
    """
    n = torch.arange(n_fft, dtype=torch.float64)
    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    angle = 2 * math.pi * torch.outer(k, n) / n_fft  # (n_freq, n_fft)
    window = periodic_hann(n_fft)
    real = (torch.cos(angle) * window).float()[:, None, :]
    imag = (-torch.sin(angle) * window).float()[:, None, :]
    return real, imag


class LogMelFrontEnd(nn.Module):
    """Waveform ``(B, T)`` -> log-mel power in dB ``(B, frames, n_mels)``.

    STFT: centred with reflect padding of ``n_fft // 2``, periodic Hann, power = re^2 + im^2;
    ``frames = T // hop + 1``. dB: ``10 log10(max(mel, 1e-10))`` (ref 1, no top_db clipping).
    The front end has nothing to train: its tensors never require grad.
    """

    def __init__(self, cfg: AudioConfig) -> None:
        super().__init__()
        self.n_fft = cfg.n_fft
        self.hop_length = cfg.hop_length
        self.stft_kernels = cfg.stft_kernels
        fb_rate = cfg.filterbank_sample_rate or cfg.sample_rate
        if cfg.f_max > fb_rate / 2:
            raise ValueError(f"audio.f_max {cfg.f_max} is above the filterbank's Nyquist frequency {fb_rate / 2}")
        mel = mel_filterbank(fb_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max)  # (n_freq, n_mels)
        if cfg.stft_kernels:
            # Stored in checkpoints, as the official weights store them (they hold whatever
            # training used, so loading them beats recomputing).
            real, imag = dft_kernels(cfg.n_fft)
            self.stft_real = nn.Parameter(real, requires_grad=False)  # (n_freq, 1, n_fft)
            self.stft_imag = nn.Parameter(imag, requires_grad=False)
            self.mel_basis = nn.Parameter(mel, requires_grad=False)  # (n_freq, n_mels)
        else:
            self.register_buffer("window", periodic_hann(cfg.n_fft, torch.float32), persistent=False)
            self.register_buffer("mel_basis", mel, persistent=False)

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` input samples (centred STFT)."""
        return num_samples // self.hop_length + 1

    def power_spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` -> ``(B, frames, n_fft // 2 + 1)`` power."""
        if wave.dim() != 2:
            raise ValueError(f"expected a waveform batch (B, T), got shape {tuple(wave.shape)}")
        if self.stft_kernels:
            pad = self.n_fft // 2
            x = F.pad(wave[:, None, :], (pad, pad), mode="reflect")  # (B, 1, T + n_fft)
            real = F.conv1d(x, self.stft_real, stride=self.hop_length)  # (B, n_freq, frames)
            imag = F.conv1d(x, self.stft_imag, stride=self.hop_length)
            return (real**2 + imag**2).transpose(1, 2)  # (B, frames, n_freq)
        spec = torch.stft(
            wave,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.n_fft,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )  # (B, n_freq, frames)
        return (spec.real**2 + spec.imag**2).transpose(1, 2)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` float waveform -> ``(B, frames, n_mels)`` log-mel in dB."""
        power = self.power_spectrogram(wave)  # (B, frames, n_freq)
        mel = power @ self.mel_basis  # (B, frames, n_mels)
        return 10.0 * torch.log10(torch.clamp(mel, min=AMIN))
