"""The audio tower and CLAP (contrastive language-audio pre-training, paper appendix D).

Audio tower: log-mel front end -> HTSAT -> Projection (``d_proj``). Text tower:
:class:`pengi.models.text.TextEncoder` (HF encoder -> Projection). The similarity matrix is
``exp(logit_scale) * E_a E_t^T`` over L2-normalised embeddings; the loss is the symmetric
cross-entropy ``0.5 (CE over audio->text + CE over text->audio)``. Pengi reuses both towers.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pengi.config import AudioConfig, ModelConfig
from pengi.features import LogMelFrontEnd
from pengi.models.htsat import HTSAT, HTSATOutput
from pengi.models.mapper import Projection
from pengi.models.pretrained import PretrainedMixin
from pengi.models.text import TextEncoder

log = logging.getLogger(__name__)


class LogMelStats(nn.Module):
    """Per-band log-mel statistics, standardised: ``(B, frames, n_mels) -> (B, 3 * n_mels)``.

    Mean and standard deviation over time of each band and the standard deviation of its
    frame-to-frame difference (the features of the mean-log-mel probe baseline,
    :func:`pengi.corpus.probe.logmel_stats`), then a BatchNorm (the probe's standardisation,
    learned). A small HTSAT trained for minutes on a few thousand clips keeps less of this
    than a linear probe on the raw statistics does (``bench/RESULTS_learning.md``); with
    ``model.logmel_stats`` the audio tower feeds them to its projection beside the HTSAT
    embedding. Not part of the paper's encoder (off in ``configs/paper.yaml``).
    """

    def __init__(self, n_mels: int) -> None:
        super().__init__()
        self.num_features = 3 * n_mels
        self.norm = nn.BatchNorm1d(self.num_features)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        diff = logmel[:, 1:] - logmel[:, :-1]
        stats = torch.cat([logmel.mean(1), logmel.std(1, correction=0), diff.std(1, correction=0)], dim=-1)  # (B, 3 * n_mels)
        return self.norm(stats)


class AudioEncoder(nn.Module):
    """Waveform ``(B, T)`` at ``audio.sample_rate`` -> ``(B, d_proj)`` (not normalised)."""

    def __init__(self, audio_cfg: AudioConfig, model_cfg: ModelConfig) -> None:
        super().__init__()
        self.frontend = LogMelFrontEnd(audio_cfg)
        self.htsat = HTSAT(model_cfg.htsat, audio_cfg.n_mels)
        self.stats = LogMelStats(audio_cfg.n_mels) if model_cfg.logmel_stats else None
        d_in = self.htsat.num_features + (self.stats.num_features if self.stats is not None else 0)
        self.projection = Projection(d_in, model_cfg.d_proj)

    def logmel(self, wave: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` waveform -> ``(B, frames, n_mels)`` log-mel, always in fp32, no gradient."""
        # Nothing to train before bn0; and the log-mel is computed in fp32 even under bf16
        # autocast (a bf16 mel matmul loses ~3 significant digits of power before the log).
        with torch.no_grad(), torch.autocast(wave.device.type, enabled=False):
            return self.frontend(wave.float())

    def encode(self, wave: torch.Tensor) -> HTSATOutput:
        """HTSAT outputs (embedding, tokens, TS-CAM clipwise) for a waveform batch."""
        return self.htsat(self.logmel(wave))

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """What the projection reads: the HTSAT embedding, and the log-mel statistics when enabled."""
        logmel = self.logmel(wave)
        emb = self.htsat(logmel).embedding  # (B, C)
        if self.stats is None:
            return emb
        with torch.autocast(wave.device.type, enabled=False):  # statistics of dB values: fp32
            stats = self.stats(logmel)
        return torch.cat([emb, stats.to(emb.dtype)], dim=-1)  # (B, C + 3 * n_mels)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.projection(self.features(wave))  # (B, d_proj)


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """``x / ||x||_2`` over the last axis (the reference divides by the norm, no epsilon)."""
    return x / x.norm(dim=-1, keepdim=True)


@dataclass
class CLAPOutput:
    loss: torch.Tensor  # scalar symmetric cross-entropy
    logits_per_audio: torch.Tensor  # (B, B): row i = audio i against every text
    audio_embeds: torch.Tensor  # (B, d_proj), unit norm
    text_embeds: torch.Tensor  # (B, d_proj), unit norm


class CLAP(PretrainedMixin, nn.Module):
    """Two towers, their projections and a learnable temperature."""

    model_class = "clap"

    def __init__(self, audio_cfg: AudioConfig, model_cfg: ModelConfig) -> None:
        super().__init__()
        if model_cfg.text.kind == "lm_embed":
            raise ValueError("CLAP needs a text encoder: text.kind 'lm_embed' has none")
        self.audio_cfg = audio_cfg
        self.config = model_cfg
        self.audio_encoder = AudioEncoder(audio_cfg, model_cfg)
        self.text_encoder = TextEncoder(model_cfg.text, model_cfg.d_proj, train_body=model_cfg.text.train_in_clap)
        # CLIP's initial temperature 0.07, learned in log space.
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def audio_embed(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, T) waveform -> (B, d_proj) unit-norm audio embedding."""
        return l2_normalize(self.audio_encoder(wave))

    def text_embed(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids + mask -> (B, d_proj) unit-norm text embedding."""
        return l2_normalize(self.text_encoder(ids, mask))

    def forward(self, wave: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> CLAPOutput:
        """Symmetric contrastive loss over the batch; pair i is (wave[i], text i)."""
        a = self.audio_embed(wave)  # (B, d)
        t = self.text_embed(ids, mask)  # (B, d)
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()  # as CLIP: keep the scale <= 100
        logits = scale * a @ t.T  # (B, B)
        target = torch.arange(a.shape[0], device=a.device)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        return CLAPOutput(loss=loss, logits_per_audio=logits, audio_embeds=a, text_embeds=t)
