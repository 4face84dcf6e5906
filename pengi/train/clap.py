"""The ``train-clap`` stage: contrastive pre-training of the audio and text encoders (paper app. D).

Pairs are the distinct (clip, target text) pairs of the triples (:func:`pengi.data.clap_pairs`;
``train_clap.tasks`` can restrict them to the descriptive tasks). Loss: symmetric
cross-entropy over the similarity matrix ``C = tau * E_t E_a^T`` of L2-normalised projections,
``L = 0.5 (CE_text(C) + CE_audio(C))``. Under DDP the embeddings of every rank are gathered
(with gradients) so the negatives are the whole global batch, as with one large batch.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from pengi.config import Config, TextEncoderConfig, flatten
from pengi.data import Collator, TripleDataset, clap_pairs
from pengi.models.clap import l2_normalize
from pengi.train.common import data_fingerprint, open_stage_data, write_data_report
from pengi.train.loop import Tracker, set_cpu_threads, train, unwrap

log = logging.getLogger(__name__)


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """(B, D) per rank -> (world * B, D), differentiable (every rank's part gets its gradient)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def contrastive_loss(audio_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Symmetric cross-entropy of paper eq. (4)-(5) over the (global) batch.

    Args:
        audio_embeds, text_embeds: (B, D) L2-normalised embeddings of matching pairs.
        logit_scale: the temperature tau (a multiplier, already exponentiated).

    Returns:
        (loss, {"acc_a2t", "acc_t2a"}): top-1 retrieval accuracy within the batch.
    """
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    all_audio = gather_with_grad(audio_embeds)  # (N, D)
    all_text = gather_with_grad(text_embeds)  # (N, D)
    # Local rows against global columns (open_clip's "local loss"): the same gradient as the
    # full N x N matrix, at 1/world of the cost.
    b = audio_embeds.shape[0]
    labels = torch.arange(b, device=audio_embeds.device) + rank * b  # (B,)
    logits_t = logit_scale * text_embeds @ all_audio.T  # (B, N): text -> audio
    logits_a = logit_scale * audio_embeds @ all_text.T  # (B, N): audio -> text
    loss = 0.5 * (F.cross_entropy(logits_t.float(), labels) + F.cross_entropy(logits_a.float(), labels))
    with torch.no_grad():
        acc_a2t = (logits_a.argmax(-1) == labels).float().mean()
        acc_t2a = (logits_t.argmax(-1) == labels).float().mean()
    return loss, {"acc_a2t": acc_a2t, "acc_t2a": acc_t2a}


class CLAPTrainStep(nn.Module):
    """CLAP plus, when its text-encoder body is frozen, a cache of that body's features for
    every distinct text; ``forward(batch) -> (loss, metrics)`` so DDP sees one forward.

    With ``model.text.train_in_clap: false`` the body's output for a text never changes, so it
    is computed once (like Pengi's prompt cache) and only the projection runs per step: on a
    CPU this removes most of the step's cost. The cache is a non-persistent buffer.
    """

    def __init__(self, model: nn.Module, text_features: torch.Tensor | None = None):
        super().__init__()
        self.model = model
        self.cached = text_features is not None
        self.register_buffer("text_features", text_features, persistent=False)  # (T, F) or None

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        m = self.model
        audio = m.audio_embed(batch["audio"].float())  # (B, d) unit norm; the loader may ship float16
        if self.cached:
            text = l2_normalize(m.text_encoder.project(self.text_features[batch["text_index"]]))  # (B, d)
        else:
            text = m.text_embed(batch["text_input_ids"], batch["text_attention_mask"])  # (B, d)
        scale = m.logit_scale.clamp(max=math.log(100.0)).exp()  # as CLAP.forward: scale <= 100
        loss, metrics = contrastive_loss(audio, text, scale)
        return loss, {**metrics, "logit_scale": scale.detach()}


def clap_step(net: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    return net(batch)


@torch.no_grad()
def encode_text_cache(model: nn.Module, cfg: TextEncoderConfig, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    """The frozen text-encoder body's pooled features of every text, in order: (T, F)."""
    tokenize = TextTokenizer(cfg)
    was_training = model.training
    model.eval()
    chunks = []
    for i in range(0, len(texts), batch_size):
        enc = tokenize(texts[i : i + batch_size])
        chunks.append(model.text_encoder.encode_features(enc["input_ids"], enc["attention_mask"]))  # (b, F)
    model.train(was_training)
    return torch.cat(chunks)


class TextTokenizer:
    """Picklable text-encoder tokenizer for DataLoader workers: texts -> ids/mask (max_length)."""

    def __init__(self, cfg: TextEncoderConfig):
        from pengi.models.text import load_text_tokenizer

        self.cfg = cfg
        self.tokenizer = load_text_tokenizer(cfg)

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        from pengi.models.text import tokenize_prompts

        ids, mask = tokenize_prompts(self.tokenizer, texts, self.cfg)
        return {"input_ids": ids, "attention_mask": mask}


def train_clap(
    cfg: Config,
    triples_dir: str | Path,
    store_dir: str | Path,
    out_dir: str | Path,
    tracker: Tracker | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Train CLAP on the triples' (audio, target text) pairs; write ``out_dir/model`` and logs.

    Resumes from ``out_dir/checkpoints`` when present (same command, same result).

    Returns:
        The final metrics (``metrics.json``) plus ``model`` (the saved model folder).
    """
    from pengi.models import build_clap

    tc = cfg.train_clap
    set_cpu_threads(tc)  # before the feature caches, which run here on CPU
    data = open_stage_data(cfg, tc, triples_dir, store_dir)
    train_pairs = clap_pairs(data.train)
    val_pairs = clap_pairs(data.val) if data.val is not None else None
    write_data_report(out_dir, {"train": train_pairs, "val": val_pairs})
    torch.manual_seed(tc.seed)  # the random initialisation of the projections
    model = build_clap(cfg)
    if cfg.model.text.train_in_clap:
        step_model, collate = CLAPTrainStep(model), Collator(text_tokenizer=TextTokenizer(cfg.model.text))
    else:
        texts = sorted(set(train_pairs.columns["target"]) | set(val_pairs.columns["target"] if val_pairs else []))
        log.info("text encoder frozen: caching its features of %d distinct texts", len(texts))
        step_model = CLAPTrainStep(model, encode_text_cache(model, cfg.model.text, texts))
        collate = Collator(text_vocab=texts)
    # float16 audio from the loader (the stored samples; upcast on the device in the step)
    train_ds = TripleDataset(train_pairs, data.store, data.clip_samples, train=True, seed=tc.seed, audio_dtype=np.float16)
    val_ds = TripleDataset(val_pairs, data.store, data.clip_samples, False, audio_dtype=np.float16) if val_pairs else None
    result = train(
        step_model, clap_step, train_ds, val_ds, collate, tc, out_dir, tracker,
        run_config={**flatten(cfg), **data_fingerprint(triples_dir, store_dir)}, device=device,
    )  # fmt: skip
    model_dir = Path(out_dir) / "model"
    if _is_main():
        unwrap(step_model).model.save_pretrained(model_dir)
        if tracker is not None:
            tracker.set_tag("pengi.model", str(model_dir.resolve()))
    return {**result, "model": str(model_dir)}


def _is_main() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
