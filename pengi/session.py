"""The user-facing inference session: one place that loads audio, builds prefixes and generates.

:class:`PengiSession` wraps a trained :class:`~pengi.models.Pengi` (and optionally a
:class:`~pengi.models.CLAP`) with its tokenizers. It is used by the ``pengi`` CLI
(``caption``, ``ask``, ``classify``, ``describe``, ``embed``) and by the evaluation harness,
so both decode, crop and batch audio the same way:

- audio comes from the audio store when one is given and holds the clip (decoded once by the
  ``audio-store`` stage), else from :func:`pengi.audio.decode` (mono, the model's rate);
- every clip is cut to ``audio.clip_seconds`` with a **deterministic** crop (``"start"`` by
  default; the reference crops at random at inference, which makes results irreproducible);
- prefixes ``[m1(audio) | m2(prompt)]`` are built in batches, prompt features are computed
  once per distinct prompt, and :func:`pengi.inference.generate` decodes them.

Unreadable audio never stops a batch: the high-level methods return one record per input,
with ``error`` (the :class:`pengi.audio.AudioError` reason and message) instead of a result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from pengi.audio import AudioError, crop, decode
from pengi.models.clap import CLAP, l2_normalize
from pengi.models.pengi import Pengi
from pengi.precision import autocast_context, native_bf16

log = logging.getLogger(__name__)

CropMode = Literal["start", "center"]
DEFAULT_CLASSIFY_PROMPT = "this is a sound of"
CAPTION_PROMPT = "generate audio caption"


@dataclass(frozen=True)
class LoadedClip:
    """One input after decoding: ``wave`` (samples,) float32, or ``error`` with the reason."""

    uri: str
    wave: np.ndarray | None = None
    error: str | None = None


class ClipLoader:
    """Decode (or read from the audio store) and crop clips deterministically.

    Args:
        sample_rate: the model's rate (``audio.sample_rate``).
        clip_seconds: crop length (``audio.clip_seconds``).
        store: optional :class:`pengi.audio_store.AudioStore` (used when its rate matches).
        crop_mode: ``"start"`` or ``"center"``; never random.
    """

    def __init__(self, sample_rate: int, clip_seconds: float, store: Any = None, crop_mode: CropMode = "start"):
        if crop_mode not in ("start", "center"):
            raise ValueError(f"inference crops are deterministic: 'start' or 'center', not {crop_mode!r}")
        self.sample_rate = sample_rate
        self.num_samples = int(round(sample_rate * clip_seconds))
        self.crop_mode = crop_mode
        if store is not None and store.sample_rate != sample_rate:
            log.warning("audio store at %d Hz != model %d Hz: decoding files instead", store.sample_rate, sample_rate)
            store = None
        self.store = store

    def load(self, uri: str) -> LoadedClip:
        """One clip, cropped/padded to ``num_samples``; decoding failures become ``error``."""
        uri = str(uri)
        try:
            if self.store is not None and uri in self.store:
                wave, _ = self.store.crop(uri, self.num_samples, self.crop_mode)
            else:
                wave = crop(decode(uri, self.sample_rate), self.num_samples, self.crop_mode)
        except AudioError as exc:
            return LoadedClip(uri, error=str(exc))  # the message starts with the reason
        except (OSError, RuntimeError, ValueError) as exc:  # an unreadable file in any decoder
            return LoadedClip(uri, error=f"unreadable: {uri}: {exc}")
        return LoadedClip(uri, wave=np.ascontiguousarray(wave, dtype=np.float32))


class PengiSession:
    """A loaded model with its tokenizers; batched, deterministic inference.

    Args:
        model: a :class:`Pengi` (generation, classification) or ``None`` (embeddings only).
        clap: optional :class:`CLAP` (contrastive embeddings and retrieval).
        batch_size: clips per forward pass.
        beam_size: beams for generation (1 = greedy).
        max_new_tokens: generation length cap.
        store: optional audio store to read clips from.
        crop_mode: deterministic crop (``"start"`` or ``"center"``).
        device: torch device (default: CUDA when available, else CPU).
        progress: show tqdm progress bars (stderr).
        precision: ``"bf16"`` runs the models under bf16 autocast where the device computes
            bf16 natively (:mod:`pengi.precision`); ``"fp32"`` (default) everywhere else.
    """

    def __init__(
        self,
        model: Pengi | None,
        clap: CLAP | None = None,
        *,
        batch_size: int = 16,
        beam_size: int = 5,
        max_new_tokens: int = 30,
        store: Any = None,
        crop_mode: CropMode = "start",
        device: str | torch.device | None = None,
        progress: bool = False,
        precision: Literal["fp32", "bf16"] = "fp32",
    ) -> None:
        if model is None and clap is None:
            raise ValueError("a session needs a Pengi model, a CLAP model, or both")
        if batch_size < 1 or beam_size < 1 or max_new_tokens < 1:
            raise ValueError("batch_size, beam_size and max_new_tokens must be >= 1")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval() if model is not None else None
        if self.model is not None:
            self.model.lm.use_attention_for(self.device)
        self.clap = clap.to(self.device).eval() if clap is not None else None
        ref = self.model if self.model is not None else self.clap
        self.audio_cfg = ref.audio_cfg
        self.batch_size = batch_size
        self.beam_size = beam_size
        self.max_new_tokens = max_new_tokens
        self.progress = progress
        # bf16 autocast only where it is native (pengi.precision); results come back as float32
        self.use_bf16 = precision == "bf16" and native_bf16(self.device)
        self.loader = ClipLoader(self.audio_cfg.sample_rate, self.audio_cfg.clip_seconds, store, crop_mode)
        self._lm_tokenizer = None
        self._text_tokenizers: dict[int, Any] = {}
        self._prompt_cache: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_pretrained(
        cls, model_dir: str | Path | None, clap_dir: str | Path | None = None, **kwargs: Any
    ) -> PengiSession:
        """Load a session from checkpoint folders (:func:`pengi.checkpoint.load_pretrained`).

        ``model_dir`` may hold a Pengi or a CLAP checkpoint (a CLAP folder gives an
        embeddings-only session); ``clap_dir`` adds a CLAP model for contrastive embeddings.
        """
        from pengi.checkpoint import load_pretrained

        model = load_pretrained(model_dir) if model_dir is not None else None
        clap = load_pretrained(clap_dir) if clap_dir is not None else None
        if isinstance(model, CLAP):
            if clap is not None:
                raise ValueError(f"{model_dir} and {clap_dir} both hold CLAP models")
            model, clap = None, model
        if clap is not None and not isinstance(clap, CLAP):
            raise ValueError(f"{clap_dir} holds a {type(clap).__name__}, not a CLAP model")
        return cls(model, clap, **kwargs)

    # ------------------------------------------------------------------ parts

    def require_model(self) -> Pengi:
        """The Pengi model; raises ``ValueError`` for a CLAP-only session."""
        if self.model is None:
            raise ValueError("this session has no Pengi model (only CLAP): generation is unavailable")
        return self.model

    @property
    def lm(self) -> torch.nn.Module:
        """The HF causal LM inside the Pengi model."""
        return self.require_model().lm.model

    @property
    def lm_tokenizer(self) -> Any:
        """The LM's tokenizer (loaded on first use)."""
        if self._lm_tokenizer is None:
            from pengi.models.lm import load_lm_tokenizer

            self._lm_tokenizer = load_lm_tokenizer(self.require_model().config.lm)
        return self._lm_tokenizer

    def _text_tokenize(self, owner: torch.nn.Module, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        from pengi.models.text import load_text_tokenizer, tokenize_prompts

        cfg = owner.config.text
        key = id(owner)
        if key not in self._text_tokenizers:
            self._text_tokenizers[key] = load_text_tokenizer(cfg)
        ids, mask = tokenize_prompts(self._text_tokenizers[key], texts, cfg)
        return ids.to(self.device), mask.to(self.device)

    @torch.no_grad()
    def prompt_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """Frozen features of each prompt, computed once per distinct prompt: ``(B, F)`` from a
        text encoder, or ``(B, L, D)`` LM token embeddings (``text.kind == "lm_embed"``)."""
        model = self.require_model()
        new = sorted({p for p in prompts if p not in self._prompt_cache})
        for i in range(0, len(new), 256):
            chunk = new[i : i + 256]
            if model.text_encoder is None:  # lm_embed: LM tokens embedded by the LM, (b, L, D)
                ids, mask = model.tokenize_prompts(chunk, lm_tokenizer=self.lm_tokenizer)
                feats = model.encode_prompt_features(ids.to(self.device), mask.to(self.device))
            else:
                feats = model.encode_prompt_features(*self._text_tokenize(model, chunk))  # (b, F)
            self._prompt_cache.update(zip(chunk, feats))
        return torch.stack([self._prompt_cache[p] for p in prompts])

    @torch.no_grad()
    def prefix(self, waves: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """``(B, T)`` waves + B prompts -> ``(B, P, D)`` prefixes."""
        model = self.require_model()
        return model.prefix(waves.to(self.device), prompt_features=self.prompt_features(prompts))

    @torch.no_grad()
    def text_embed(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Unit-norm text embeddings ``(n, d_proj)`` for text matching.

        Pengi's own text encoder (the paper embeds outputs and class names with it); a CLAP
        model's when the Pengi model has none (``lm_embed``) or the session is CLAP-only.
        """
        owner: Any = self.model if self.model is not None and self.model.text_encoder is not None else self.clap
        if owner is None or owner.text_encoder is None:
            raise ValueError("text matching needs a text encoder (Pengi's or a CLAP model's)")
        out = []
        for i in range(0, len(texts), batch_size):
            ids, mask = self._text_tokenize(owner, list(texts[i : i + batch_size]))
            out.append(l2_normalize(owner.text_encoder(ids, mask)).cpu())  # (b, d_proj)
        if not out:
            return torch.zeros(0, owner.config.d_proj)
        return torch.cat(out)

    # ------------------------------------------------------------------ batching

    def batches(
        self, uris: Sequence[str], desc: str = ""
    ) -> Iterator[tuple[list[int], torch.Tensor, list[LoadedClip]]]:
        """Yield ``(indices of readable clips, (b, T) waves, every loaded clip of the chunk)``.

        Failed clips of a chunk are reported through the ``LoadedClip`` list (with ``error``).
        """
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=len(uris), desc=desc or "clips", unit="clip")
        try:
            for start in range(0, len(uris), self.batch_size):
                clips = [self.loader.load(u) for u in uris[start : start + self.batch_size]]
                ok = [start + i for i, c in enumerate(clips) if c.wave is not None]
                if ok:
                    waves = torch.from_numpy(np.stack([clips[i - start].wave for i in ok]))  # (b, T)
                else:
                    waves = torch.zeros(0, self.loader.num_samples)
                yield ok, waves, clips
                if bar is not None:
                    bar.update(len(clips))
        finally:
            if bar is not None:
                bar.close()

    # ------------------------------------------------------------------ core operations

    @torch.no_grad()
    def generate(self, uris: Sequence[str], prompts: Sequence[str] | str) -> tuple[list[str | None], dict[int, str]]:
        """Generate one text per clip with its prompt (beam search, ``beam_size`` beams).

        Returns:
            ``(texts, errors)``: texts (``None`` where the audio failed) and index -> error.
        """
        from pengi.inference import generate

        prompt_list = [prompts] * len(uris) if isinstance(prompts, str) else list(prompts)
        if len(prompt_list) != len(uris):
            raise ValueError(f"{len(uris)} clips but {len(prompt_list)} prompts")
        tok = self.lm_tokenizer

        def run(idx: list[int], waves: torch.Tensor) -> list[str]:
            prefix = self.prefix(waves, [prompt_list[i] for i in idx])  # (b, P, D)
            gen = generate(
                self.lm, prefix, tok, batch_size=self.batch_size, method="beam", beam_size=self.beam_size,
                max_new_tokens=self.max_new_tokens, stop_token_ids=tok.eos_token_id,
            )  # fmt: skip
            return gen.best

        return self.map_clips(uris, run, "generate")

    def map_clips(
        self, uris: Sequence[str], fn: Callable[[list[int], torch.Tensor], Sequence[Any]], desc: str = ""
    ) -> tuple[list[Any], dict[int, str]]:
        """Apply ``fn(indices, waves)`` (one result per readable clip) over batches of clips.

        Returns:
            ``(results, errors)``: one result per input, ``None`` where its audio failed, and
            input index -> error message for those.
        """
        results: list[Any] = [None] * len(uris)
        errors: dict[int, str] = {}
        start = 0
        for idx, waves, clips in self.batches(uris, desc):
            for j, c in enumerate(clips):
                if c.error is not None:
                    errors[start + j] = c.error
                    log.warning("skipping %s", c.error)
            if idx:
                # inference only: no autograd graph over the batch
                with torch.no_grad(), autocast_context(self.device, self.use_bf16):
                    out = fn(idx, waves)
                if len(out) != len(idx):
                    raise RuntimeError(f"batch function returned {len(out)} results for {len(idx)} clips")
                for i, r in zip(idx, out):
                    results[i] = r
            start += len(clips)
        return results, errors

    @torch.no_grad()
    def class_scores(
        self,
        uris: Sequence[str],
        labels: Sequence[str],
        method: Literal["text", "loglik"] = "text",
        prompts: Sequence[str] | str = DEFAULT_CLASSIFY_PROMPT,
        multilabel: bool = False,
        answer: str = "{}",
        answer_leads: bool = True,
    ) -> tuple[list[torch.Tensor | None], dict[int, str], list[str | None]]:
        """Per-class scores ``(N,)`` for every clip (paper Fig. 3).

        ``text``: generate with the prompt, then cosine between the output and each label
        (:func:`pengi.inference.text_match_scores`; multi-label outputs are split into
        phrases). ``loglik``: log-likelihood of each label after the prefix.
        ``answer``: the form the model states a class in (``{}`` = the class, see
        :class:`pengi.tasks.EvalTask`): text matching compares the extracted class part of each
        output (:func:`pengi.inference.extract_answer`; a multi-label output that states no label
        in the form scores -1 for every class); log-likelihood scores
        ``answer.format(label)`` when ``answer_leads``, else the bare label.

        Returns:
            ``(scores, errors, texts)``: per clip a ``(N,)`` tensor (``None`` on error), errors,
            and the generated texts (``text`` method; ``None`` for ``loglik``).
        """
        from pengi.inference import (
            class_scores,
            extract_answer,
            match_answer,
            multilabel_text_match_scores,
        )

        if not labels:
            raise ValueError("classification needs at least one label")
        prompt_list = [prompts] * len(uris) if isinstance(prompts, str) else list(prompts)
        if method == "text":
            texts, errors = self.generate(uris, prompt_list)
            ok = [i for i, t in enumerate(texts) if t is not None]
            scores: list[torch.Tensor | None] = [None] * len(uris)
            if ok:
                if multilabel:
                    # an output that states no label in the answer form asserts none: every
                    # class gets the lowest cosine (-1) rather than the match of unrelated words
                    parts = [match_answer(texts[i], answer, multilabel=True) for i in ok]
                    s = torch.full((len(ok), len(labels)), -1.0)
                    stated = [r for r, part in enumerate(parts) if part is not None]
                    if stated:
                        s[stated] = multilabel_text_match_scores(
                            [parts[r] for r in stated], list(labels), self.text_embed
                        ).float()
                else:
                    good = [extract_answer(texts[i], answer) for i in ok]
                    s = class_scores("text", list(labels), texts=good, embed_fn=self.text_embed)
                for row, i in enumerate(ok):
                    scores[i] = s[row]
            return scores, errors, texts
        if method != "loglik":
            raise ValueError(f"method must be 'text' or 'loglik', got {method!r}")
        tok = self.lm_tokenizer
        template = answer if answer_leads else "{}"

        def run(idx: list[int], waves: torch.Tensor) -> list[torch.Tensor]:
            prefix = self.prefix(waves, [prompt_list[i] for i in idx])
            s = class_scores("loglik", list(labels), lm=self.lm, prefix=prefix, tokenizer=tok, template=template)
            return list(s.cpu())

        scores, errors = self.map_clips(uris, run, "loglik")
        return scores, errors, [None] * len(uris)

    @torch.no_grad()
    def audio_embeddings(self, uris: Sequence[str], source: Literal["clap", "pengi", "auto"] = "auto"):
        """Unit-norm audio embeddings ``(d_proj,)`` per clip.

        ``clap``: the CLAP audio tower (contrastive space); ``pengi``: the Pengi audio encoder
        (what the linear probes use); ``auto``: CLAP when loaded, else Pengi.

        Returns:
            ``(embeddings, errors)``: per clip a float32 numpy vector (``None`` on error).
        """
        if source == "auto":
            source = "clap" if self.clap is not None else "pengi"
        if source == "clap":
            if self.clap is None:
                raise ValueError("no CLAP model loaded (pass --clap / clap_dir)")
            encode = self.clap.audio_embed
        else:
            encode = self.require_model().audio_embedding

        def run(idx: list[int], waves: torch.Tensor) -> list[np.ndarray]:
            # unit norm in fp32 (under bf16 autocast a bf16 division leaves norms 1 +- 1e-3)
            return list(l2_normalize(encode(waves.to(self.device)).float()).cpu().numpy())  # (b, d)

        return self.map_clips(uris, run, f"embed ({source})")

    @torch.no_grad()
    def clap_text_embeddings(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Unit-norm CLAP text embeddings ``(n, d_proj)`` (contrastive retrieval)."""
        if self.clap is None:
            raise ValueError("no CLAP model loaded")
        out = []
        for i in range(0, len(texts), batch_size):
            ids, mask = self._text_tokenize(self.clap, list(texts[i : i + batch_size]))
            out.append(self.clap.text_embed(ids, mask).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.clap.config.d_proj)

    # ------------------------------------------------------------------ user API (records)

    def _records(self, uris: Sequence[str], values: list[Any], errors: dict[int, str], key: str) -> list[dict]:
        out = []
        for i, u in enumerate(uris):
            if i in errors:
                out.append({"input": str(u), "error": errors[i]})
            else:
                out.append({"input": str(u), key: values[i]})
        return out

    def caption(self, paths: Sequence[str]) -> list[dict]:
        """``[{"input", "caption"} | {"input", "error"}]`` with the prompt ``generate audio caption``."""
        texts, errors = self.generate(list(map(str, paths)), CAPTION_PROMPT)
        return self._records(paths, texts, errors, "caption")

    def ask(self, paths: Sequence[str], question: str) -> list[dict]:
        """Audio question answering: the prompt ``question: {question}``."""
        if not question.strip():
            raise ValueError("the question is empty")
        texts, errors = self.generate(list(map(str, paths)), f"question: {question.strip()}")
        records = self._records(paths, texts, errors, "answer")
        return [dict(r, question=question) if "error" not in r else r for r in records]

    def describe(self, paths: Sequence[str], prompt: str) -> list[dict]:
        """Generate with any prompt (e.g. ``this acoustic scene is``)."""
        if not prompt.strip():
            raise ValueError("the prompt is empty")
        texts, errors = self.generate(list(map(str, paths)), prompt)
        return [dict(r, prompt=prompt) if "error" not in r else r for r in self._records(paths, texts, errors, "text")]

    def classify(
        self,
        paths: Sequence[str],
        labels: Sequence[str],
        method: Literal["text", "loglik"] = "text",
        prompt: str = DEFAULT_CLASSIFY_PROMPT,
        answer: str = "{}",
    ) -> list[dict]:
        """Zero-shot classification: ``label`` (best), ``scores`` (label -> score), ``text`` (``text`` method).

        ``answer``: the form the model states a label in (``{}`` = the label), as in
        :meth:`class_scores`.
        """
        labels = [str(lbl) for lbl in labels]
        scores, errors, texts = self.class_scores(list(map(str, paths)), labels, method, prompt, answer=answer)
        out = []
        for i, p in enumerate(paths):
            if i in errors:
                out.append({"input": str(p), "error": errors[i]})
                continue
            s = scores[i].tolist()
            rec: dict[str, Any] = {"input": str(p), "label": labels[int(np.argmax(s))], "scores": dict(zip(labels, s))}
            if texts[i] is not None:
                rec["text"] = texts[i]
            out.append(rec)
        return out

    def embed(self, paths: Sequence[str]) -> list[dict]:
        """Audio embeddings (CLAP when loaded, else Pengi's audio encoder): ``embedding`` lists."""
        vecs, errors = self.audio_embeddings(list(map(str, paths)))
        return self._records(paths, [None if v is None else v.tolist() for v in vecs], errors, "embedding")
