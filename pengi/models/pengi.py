"""Pengi (paper section 3): audio + prompt -> prefix for a frozen causal LM.

``prefix = [m1(audio_embedding) | m2(prompt_embedding)]`` (each ``prefix_length`` vectors of the
LM's width), optionally followed by an additional text embedded by the LM itself (paper
appendix A). The LM is fed ``inputs_embeds = [prefix | extra text | target tokens]``; the loss
is the cross-entropy on real target tokens only: the prefix and extra text never enter it, and
target padding has label -100 (from an explicit mask, never from a token id).

Trainable: the audio encoder (HTSAT, the log-mel statistics' BatchNorm when
``model.logmel_stats``, the projection; not the front end), the text projection
(and CLIP's ``text_projection`` when ``trainable_projection``), m1 and m2. Frozen and kept in
eval mode whatever ``train()`` says: the text encoder body and the LM.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pengi.config import AudioConfig, ModelConfig
from pengi.models import packing
from pengi.models.clap import CLAP, AudioEncoder, l2_normalize
from pengi.models.lm import LanguageModel
from pengi.models.mapper import build_mapper
from pengi.models.pretrained import PretrainedMixin
from pengi.models.text import TextEncoder

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


@dataclass
class PengiOutput:
    loss: torch.Tensor  # mean cross-entropy over the real target tokens
    logits: torch.Tensor  # (B, Lt, V): logits[:, j] predicts target_ids[:, j]; packed: (N, V)
    labels: torch.Tensor  # (B, Lt): target ids, -100 on padding (no loss there); packed: (N,)
    prefix_length: int  # LM input positions before the targets (prefix + extra text)
    lm_logits: torch.Tensor | None = None  # (B, L, V) over the whole LM input, with full_logits=True


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(B, Lt, V)`` logits, ``(B, Lt)`` labels (-100 = no loss) -> ``(B,)`` mean token loss."""
    tok = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none")
    counts = (labels != IGNORE_INDEX).sum(dim=1).clamp(min=1)  # (B,)
    return tok.sum(dim=1) / counts  # (B,)


class Pengi(PretrainedMixin, nn.Module):
    """The Pengi model; see the module docstring."""

    model_class = "pengi"

    def __init__(self, audio_cfg: AudioConfig, model_cfg: ModelConfig) -> None:
        super().__init__()
        self.audio_cfg = audio_cfg
        self.config = model_cfg
        self.audio_encoder = AudioEncoder(audio_cfg, model_cfg)
        self.lm = LanguageModel(model_cfg.lm)
        dim = self.lm.hidden_size
        if model_cfg.text.kind == "lm_embed":
            # The authors' base_no_text_enc: LM-embedded prompt tokens, mapped as a sequence.
            self.text_encoder = None
            self.m2 = build_mapper(None, dim, model_cfg.mapper)
        else:
            self.text_encoder = TextEncoder(model_cfg.text, model_cfg.d_proj, train_body=False)
            self.m2 = build_mapper(model_cfg.d_proj, dim, model_cfg.mapper)
        self.m1 = build_mapper(model_cfg.d_proj, dim, model_cfg.mapper)
        self.audio_encoder.frontend.requires_grad_(False)

    # ------------------------------------------------------------------ parts

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters an optimizer should get (frozen parts are left out)."""
        return [p for p in self.parameters() if p.requires_grad]

    def load_clap_encoders(self, clap: CLAP) -> None:
        """Initialise the audio and text towers from a trained CLAP (paper: CLAP first, then Pengi)."""
        self.audio_encoder.load_state_dict(clap.audio_encoder.state_dict())
        if self.text_encoder is not None:
            self.text_encoder.load_state_dict(clap.text_encoder.state_dict())

    def audio_embedding(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, T) waveform -> (B, d_proj) projected audio embedding (not normalised)."""
        return self.audio_encoder(wave)

    @torch.no_grad()
    def encode_prompt_features(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> torch.Tensor:
        """Output of the frozen part of the prompt path, cacheable per unique prompt.

        Returns ``(B, hidden)`` pooled encoder output, or ``(B, L, D)`` LM token embeddings for
        ``text.kind == "lm_embed"``. Feed it back as ``prompt_features``.
        """
        if self.text_encoder is None:
            return self.lm.embed_tokens(prompt_ids)
        return self.text_encoder.encode_features(prompt_ids, prompt_mask)

    def tokenize_prompts(self, texts: list[str], text_tokenizer=None, lm_tokenizer=None):
        """``(ids, mask)`` of prompts for :meth:`encode_prompt_features`: the text encoder's
        tokenizer, or for ``text.kind == "lm_embed"`` the LM's (:func:`tokenize_lm_prompts`)."""
        from pengi.models.lm import tokenize_lm_prompts
        from pengi.models.text import tokenize_prompts

        if self.text_encoder is None:
            if lm_tokenizer is None:
                raise ValueError("text.kind 'lm_embed' tokenizes prompts with the LM's tokenizer: pass lm_tokenizer")
            return tokenize_lm_prompts(lm_tokenizer, texts, self.config.text.max_length)
        if text_tokenizer is None:
            raise ValueError("pass the text encoder's tokenizer (text_tokenizer)")
        return tokenize_prompts(text_tokenizer, texts, self.config.text)

    def prompt_embedding(self, prompt_features: torch.Tensor) -> torch.Tensor:
        """Frozen features -> what m2 maps: ``(B, d_proj)`` (not normalised), or the LM sequence."""
        if self.text_encoder is None:
            return prompt_features
        return self.text_encoder.project(prompt_features)

    def prefix(
        self,
        wave: torch.Tensor,
        prompt_ids: torch.Tensor | None = None,
        prompt_mask: torch.Tensor | None = None,
        *,
        prompt_features: torch.Tensor | None = None,
        reference_wrapper_prompt: bool = False,
    ) -> torch.Tensor:
        """``[m1(audio) | m2(prompt)]``: ``(B, 2 * prefix_length, D)``.

        Give either ``prompt_ids`` + ``prompt_mask`` or precomputed ``prompt_features`` (from
        :meth:`encode_prompt_features`). ``reference_wrapper_prompt`` reproduces the authors'
        ``PengiWrapper.generate()`` defect (D4): the prompt embedding is *not* L2-normalised
        there, although the model was trained with it normalised. Off by default.
        """
        audio = self.audio_embedding(wave)  # (B, d_proj)
        prompt = self.prompt_embedding(self._features(prompt_ids, prompt_mask, prompt_features))
        if self.config.mapper.normalize_prefix:
            audio = l2_normalize(audio)
            if self.text_encoder is not None and not reference_wrapper_prompt:
                prompt = l2_normalize(prompt)
        return torch.cat([self.m1(audio), self.m2(prompt)], dim=1)  # (B, 2k, D)

    def _features(self, ids, mask, features) -> torch.Tensor:
        if features is not None:
            return features
        if ids is None or mask is None:
            raise ValueError("give prompt_ids and prompt_mask, or prompt_features")
        return self.encode_prompt_features(ids, mask)

    # ------------------------------------------------------------------ training forward

    def forward(
        self,
        wave: torch.Tensor,
        target_ids: torch.Tensor,
        target_mask: torch.Tensor | None = None,
        prompt_ids: torch.Tensor | None = None,
        prompt_mask: torch.Tensor | None = None,
        *,
        prompt_features: torch.Tensor | None = None,
        extra_ids: torch.Tensor | None = None,
        extra_mask: torch.Tensor | None = None,
        full_logits: bool = False,
        loss_reduction: str = "token",
        pack_capacity: int = 0,
        target_lengths: Sequence[int] | None = None,
    ) -> PengiOutput:
        """Teacher-forced LM pass and loss.

        Args:
            wave: (B, T) float waveform.
            target_ids: (B, Lt) LM token ids, right-padded, ending with the LM's EOS.
            target_mask: (B, Lt) 1 on real tokens, which come first (right padding). It selects
                the loss positions; the LM itself runs unmasked, as the reference's does, which
                under causal attention gives real positions exactly the masked logits. None =
                every position is real.
            prompt_ids, prompt_mask: (B, Lp) text-encoder tokens; or ``prompt_features``.
            extra_ids, extra_mask: optional (B, Le) additional text (LM tokens, paper appendix A),
                placed after the prefix, padding anywhere; never in the loss.
            loss_reduction: ``"token"``: mean over every real target token of the batch (the
                reference's loss); ``"sample"``: mean over samples of each target's mean token
                loss (:func:`per_sample_loss`), so a one-word label weighs as much as a caption.
            full_logits: also return the logits of every LM input position (``lm_logits``,
                what the reference's ``PENGI.forward`` returns). Off by default: only the
                ``Lt`` positions that predict targets go through the LM head, which at GPT-2
                size saves most of the vocabulary projection's cost.
            pack_capacity: > 0: the LM runs on the samples' real positions only, packed into
                rows of at most this many positions (:mod:`pengi.models.packing`): the same
                loss without the padding's cost. The output's ``logits`` and ``labels`` are then
                flat over the real target tokens, ``(N, V)`` and ``(N,)``, in (sample, position)
                order. 0: the padded batch.
            target_lengths: the real target tokens per sample (what ``target_mask`` says), known
                on the host, so packing needs no device-to-host copy of the mask; without it the
                plan reads the masks.
        """
        prefix = self.prefix(wave, prompt_ids, prompt_mask, prompt_features=prompt_features)  # (B, P, D)
        B, P, _ = prefix.shape
        device = prefix.device
        embeds = [prefix]
        masks = [torch.ones(B, P, dtype=torch.long, device=device)]
        if extra_ids is not None:
            emask = extra_mask.long() if extra_mask is not None else torch.ones_like(extra_ids)
            # Move the extra text's padding in front of its tokens (stable), so that the first
            # target token is predicted from the last real extra token, not from a pad.
            order = torch.argsort(emask, dim=1, stable=True)  # (B, Le): pads first, order kept
            embeds.append(self.lm.embed_tokens(extra_ids.gather(1, order)))
            masks.append(emask.gather(1, order))
        n_context = sum(e.shape[1] for e in embeds)
        embeds.append(self.lm.embed_tokens(target_ids))  # (B, Lt, D)
        tmask = target_mask.long() if target_mask is not None else torch.ones_like(target_ids)
        masks.append(tmask)
        inputs = torch.cat(embeds, dim=1)  # (B, L, D)
        if pack_capacity > 0:
            if full_logits:
                raise ValueError("full_logits needs the padded batch (pack_capacity=0)")
            if target_lengths is not None and extra_ids is None:
                real = torch.ones(B, n_context + target_ids.shape[1], dtype=torch.bool)
                real[:, n_context:] = torch.arange(target_ids.shape[1]) < torch.as_tensor(target_lengths)[:, None]
            else:
                real = torch.cat(masks, dim=1).bool().cpu()  # a device-to-host copy
            plan = packing.plan_packing(real, n_context, pack_capacity, packing.ROW_MULTIPLE).to(device)
            return self._packed_forward(inputs, target_ids, plan, n_context, loss_reduction)
        labels = torch.where(tmask.bool(), target_ids, IGNORE_INDEX)  # (B, Lt)
        if extra_ids is None:
            # Only the targets can be padded, and only on the right (the documented contract, the
            # collator's layout): under causal attention a trailing pad never reaches a real
            # position, so the reference's unmasked call gives every real position the logits a
            # masked call gives. No mask keeps the causal flash kernel and needs no host sync.
            attn, positions = None, None
        else:
            # Padding inside the extra text must not shift the positions of what follows.
            attn = torch.cat(masks, dim=1)  # (B, L)
            positions = (attn.cumsum(dim=1) - 1).clamp(min=0)
        Lt = target_ids.shape[1]
        # Target j sits at position n_context + j and is predicted from the position before it:
        # the last Lt + 1 positions minus the very last one.
        keep = 0 if full_logits else Lt + 1
        all_logits = self.lm(
            inputs_embeds=inputs, attention_mask=attn, position_ids=positions, logits_to_keep=keep
        ).logits  # (B, L or Lt + 1, V)
        logits = all_logits[:, -(Lt + 1) : -1]  # (B, Lt, V)
        if loss_reduction == "sample":
            loss = per_sample_loss(logits, labels).mean()
        else:
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=IGNORE_INDEX
            )
        return PengiOutput(
            loss=loss, logits=logits, labels=labels, prefix_length=n_context,
            lm_logits=all_logits if full_logits else None,
        )  # fmt: skip

    def _packed_forward(
        self, inputs: torch.Tensor, target_ids: torch.Tensor, plan: packing.PackPlan, n_context: int, loss_reduction: str
    ) -> PengiOutput:
        B, L, D = inputs.shape
        flat = torch.cat([inputs.reshape(B * L, D), inputs.new_zeros(1, D)])  # the last row: row-end padding
        packed = flat.index_select(0, plan.index).view(plan.rows, plan.width, D)  # (R, C, D)
        hidden = self.lm.hidden_states(packed, plan.positions)  # (R, C, D)
        hidden = hidden.reshape(plan.rows * plan.width, -1).index_select(0, plan.predictor)  # (N, D)
        logits = self.lm.logits_from_hidden(hidden)  # (N, V)
        labels = target_ids.reshape(-1).index_select(0, plan.target_index)  # (N,)
        tok = F.cross_entropy(logits.float(), labels, reduction="none")  # (N,)
        # "sample": the mean over samples of each sample's mean token loss (per_sample_loss)
        loss = (tok * plan.sample_weight).sum() if loss_reduction == "sample" else tok.mean()
        return PengiOutput(loss=loss, logits=logits, labels=labels, prefix_length=n_context)

    # ------------------------------------------------------------------ mode and IO

    def train(self, mode: bool = True) -> Pengi:
        """Train mode for the trainable parts; the LM and text-encoder body stay in eval mode."""
        super().train(mode)
        self.lm.train(False)
        if self.text_encoder is not None:
            self.text_encoder.model.eval()
        return self
