"""Model code: HTSAT, text encoders, projections and mappers, CLAP, Pengi, the frozen LM.

Factories build a model from the typed config; nothing here downloads at import time.
"""

from __future__ import annotations

from pengi.config import AudioConfig, Config, ModelConfig
from pengi.models.clap import CLAP, AudioEncoder
from pengi.models.pengi import Pengi, PengiOutput


def _sections(cfg: Config | ModelConfig, audio: AudioConfig | None) -> tuple[AudioConfig, ModelConfig]:
    if isinstance(cfg, Config):
        return cfg.audio, cfg.model
    return (audio or AudioConfig()), cfg


def build_clap(cfg: Config | ModelConfig, audio: AudioConfig | None = None) -> CLAP:
    """CLAP from the whole :class:`Config` (or a ``ModelConfig`` plus an ``AudioConfig``)."""
    audio_cfg, model_cfg = _sections(cfg, audio)
    return CLAP(audio_cfg, model_cfg)


def build_pengi(cfg: Config | ModelConfig, audio: AudioConfig | None = None) -> Pengi:
    """Pengi from the whole :class:`Config` (or a ``ModelConfig`` plus an ``AudioConfig``)."""
    audio_cfg, model_cfg = _sections(cfg, audio)
    return Pengi(audio_cfg, model_cfg)


__all__ = ["CLAP", "AudioEncoder", "Pengi", "PengiOutput", "build_clap", "build_pengi"]
