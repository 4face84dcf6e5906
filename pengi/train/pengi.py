"""The ``train-pengi`` stage: Pengi initialised from the CLAP encoders (paper section 3).

Trained: the audio encoder (HTSAT, the log-mel statistics' BatchNorm with
``model.logmel_stats``), both projections and the mappers m1/m2. Frozen: the text encoder and
the LM. Because the text encoder is frozen, its output for a prompt never changes: the features
of every distinct prompt of the train and val triples are computed once before training
(``encode_prompt_features``) and looked up per batch, so no text encoder runs in the training
step (``text.kind: lm_embed`` caches the prompts' LM token ids instead, embedded per batch by
the frozen LM). The cache is a non-persistent buffer (not in checkpoints: it is rebuilt from the
frozen encoder and the triples). ``train_pengi.loss_reduction: sample`` averages each target's
tokens before the batch, so short label answers are not outweighed by long captions.
``train_pengi.audio_train_mode: false`` trains the audio encoder in eval mode (no SpecAugment or
projection dropout, CLAP's BatchNorm statistics), so m1 learns from the embedding it will see at inference.
``train_pengi.pack_tokens > 0`` runs the frozen LM on each batch's real positions only, packed into rows
(:mod:`pengi.models.packing`; the same loss, no compute on padding). After
training, a few validation clips are captioned (greedy) into ``samples.json`` as a quick look at
what the model learned.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from pengi.config import Config, flatten
from pengi.data import Collator, TripleDataset
from pengi.train.clap import TextTokenizer
from pengi.train.common import data_fingerprint, open_stage_data, write_data_report
from pengi.train.loop import Tracker, set_cpu_threads, train, unwrap

log = logging.getLogger(__name__)

SAMPLE_COUNT = 8  # validation clips captioned into samples.json


class PengiTrainStep(nn.Module):
    """Pengi plus the prompt-feature cache; ``forward(batch) -> loss`` (so DDP sees one forward).

    ``loss_reduction`` (``"token"`` or ``"sample"``) and ``pack_tokens`` (the model's
    ``pack_capacity``, with the collator's host-side ``target_lengths``) are passed to the model
    (see ``Pengi.forward``).
    """

    def __init__(
        self,
        model: nn.Module,
        prompt_features: torch.Tensor,
        loss_reduction: str = "token",
        audio_train_mode: bool = True,
        pack_tokens: int = 0,
    ):
        super().__init__()
        self.model = model
        self.loss_reduction = loss_reduction
        self.audio_train_mode = audio_train_mode
        self.pack_tokens = pack_tokens
        self.register_buffer("prompt_features", prompt_features, persistent=False)  # (P, ...)

    def train(self, mode: bool = True) -> PengiTrainStep:
        super().train(mode)
        if not self.audio_train_mode:
            self.model.audio_encoder.eval()  # still trained; no SpecAugment, dropout, batch statistics
        return self

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        feats = cached_prompt_features(self.model, self.prompt_features[batch["prompt_index"]])  # (B, F) / (B, L, D)
        wave = batch["audio"].float()  # (B, S); the loader may ship float16
        out = self.model(
            wave, batch["input_ids"], batch["attention_mask"], prompt_features=feats, loss_reduction=self.loss_reduction,
            pack_capacity=self.pack_tokens, target_lengths=batch.get("target_lengths"),
        )  # fmt: skip
        return out.loss


def pengi_step(net: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    return net(batch)


@torch.no_grad()
def encode_prompt_cache(model: nn.Module, cfg: Config, prompts: list[str], batch_size: int = 256) -> torch.Tensor:
    """What the frozen prompt path gives for every prompt, in order.

    Text encoders: their pooled features ``(P, F)``. ``text.kind == "lm_embed"``: the LM token
    ids ``(P, L)`` (int64), embedded per batch by the frozen LM (:func:`cached_prompt_features`):
    ``P x L x D`` floats would not fit for datasets with tens of thousands of distinct questions.
    """
    if cfg.model.text.kind == "lm_embed":
        from pengi.models.lm import load_lm_tokenizer

        ids, _ = model.tokenize_prompts(prompts, lm_tokenizer=load_lm_tokenizer(cfg.model.lm))
        return ids  # (P, L)
    tokenize = TextTokenizer(cfg.model.text)
    chunks = []
    for i in range(0, len(prompts), batch_size):
        enc = tokenize(prompts[i : i + batch_size])
        chunks.append(model.encode_prompt_features(enc["input_ids"], enc["attention_mask"]))  # (b, F)
    return torch.cat(chunks).detach()


def cached_prompt_features(model: nn.Module, cached: torch.Tensor) -> torch.Tensor:
    """Rows of :func:`encode_prompt_cache` -> ``prompt_features`` for the model: features as
    they are, LM token ids embedded by the frozen LM ``(B, L, D)``."""
    if cached.dtype == torch.long:
        return model.encode_prompt_features(cached, None)
    return cached


def train_pengi(
    cfg: Config,
    triples_dir: str | Path,
    store_dir: str | Path,
    clap_checkpoint: str | Path,
    out_dir: str | Path,
    tracker: Tracker | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Train Pengi from the CLAP model in ``clap_checkpoint``; write ``out_dir/model``, logs, samples.

    Resumes from ``out_dir/checkpoints`` when present (same command, same result).

    Returns:
        The final metrics (``metrics.json``) plus ``model`` (the saved model folder).
    """
    from pengi.models import build_pengi
    from pengi.models.clap import CLAP
    from pengi.models.lm import load_lm_tokenizer

    tc = cfg.train_pengi
    set_cpu_threads(tc)  # before the feature caches, which run here on CPU
    data = open_stage_data(cfg, tc, triples_dir, store_dir)
    write_data_report(out_dir, {"train": data.train, "val": data.val})
    torch.manual_seed(tc.seed)  # the random initialisation of the mappers
    model = build_pengi(cfg)
    model.load_clap_encoders(CLAP.from_pretrained(clap_checkpoint))
    run_device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.lm.use_attention_for(run_device)
    prompts = sorted(set(data.train.unique_prompts()) | set(data.val.unique_prompts() if data.val else []))
    log.info("caching the frozen text encoder's features of %d distinct prompts", len(prompts))
    model.eval()
    cache = encode_prompt_cache(model, cfg, prompts)
    step_model = PengiTrainStep(model, cache, tc.loss_reduction, tc.audio_train_mode, tc.pack_tokens)
    lm_tokenizer = load_lm_tokenizer(cfg.model.lm)
    collate = Collator(lm_tokenizer, cfg.model.target_max_tokens, prompt_vocab=prompts)
    # float16 audio from the loader (the stored samples; upcast on the device in the step)
    train_ds = TripleDataset(data.train, data.store, data.clip_samples, train=True, seed=tc.seed, audio_dtype=np.float16)
    val_ds = TripleDataset(data.val, data.store, data.clip_samples, False, audio_dtype=np.float16) if data.val else None
    lengths = None
    if tc.group_by_length:  # the LM's cost of a sample grows with its target's token count
        targets = data.train.columns["target"]
        lengths = [len(ids) for ids in lm_tokenizer(targets, add_special_tokens=False)["input_ids"]]
    result = train(
        step_model, pengi_step, train_ds, val_ds, collate, tc, out_dir, tracker,
        run_config={**flatten(cfg), **data_fingerprint(triples_dir, store_dir, clap_checkpoint)},
        device=device, lengths=lengths,
    )  # fmt: skip
    model_dir = Path(out_dir) / "model"
    if not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0:
        trained = unwrap(step_model).model
        trained.save_pretrained(model_dir)
        if val_ds is not None:
            samples_path = Path(out_dir) / "samples.json"
            write_samples(trained, unwrap(step_model).prompt_features, val_ds, collate, lm_tokenizer,
                          samples_path, max_new_tokens=cfg.model.target_max_tokens)  # fmt: skip
        if tracker is not None:
            tracker.set_tag("pengi.model", str(model_dir.resolve()))
    return {**result, "model": str(model_dir)}


def sample_indices(tasks: list[str], count: int) -> list[int]:
    """Up to ``count`` row indices spread over the tasks: round-robin over the tasks (sorted),
    each task's rows in table order. Deterministic."""
    by_task: dict[str, list[int]] = {}
    for i, t in enumerate(tasks):
        by_task.setdefault(t, []).append(i)
    queues = [by_task[t] for t in sorted(by_task)]
    out: list[int] = []
    depth = 0
    while len(out) < count and any(depth < len(q) for q in queues):
        out += [q[depth] for q in queues if depth < len(q)][: count - len(out)]
        depth += 1
    return out


@torch.no_grad()
def write_samples(
    model: nn.Module,
    prompt_features: torch.Tensor,
    val_ds: TripleDataset,
    collate: Collator,
    tokenizer: Any,
    path: Path,
    max_new_tokens: int = 30,
) -> list[dict]:
    """Greedy outputs for :data:`SAMPLE_COUNT` validation triples spread over the tasks
    (:func:`sample_indices`; deterministic crops)."""
    from pengi.inference import generate

    model.eval()
    batch = collate([val_ds[i] for i in sample_indices(val_ds.triples.columns["task"], SAMPLE_COUNT)])
    device = next(model.parameters()).device
    feats = cached_prompt_features(model, prompt_features[batch["prompt_index"].to(prompt_features.device)].to(device))
    prefix = model.prefix(batch["audio"].to(device).float(), prompt_features=feats)  # (B, P, D)
    gen = generate(
        model.lm.model, prefix, tokenizer, method="greedy", max_new_tokens=max_new_tokens,
        stop_token_ids=tokenizer.eos_token_id,
    )  # fmt: skip
    samples = [
        {"triple_id": t, "prompt": p, "target": y, "generated": g}
        for t, p, y, g in zip(batch["triple_id"], batch["prompt"], batch["target"], gen.best, strict=True)
    ]
    path.write_text(json.dumps(samples, indent=2, ensure_ascii=False) + "\n")
    return samples

