"""Batched inference over prefix embeddings: generation, log-likelihood ranking, text matching.

Every function here takes a Hugging Face causal LM (any ``PreTrainedModel`` with
``get_input_embeddings()``) and a batch of prefix embeddings ``(B, P, D)`` (Pengi's
``[m1(audio) | m2(prompt)]``), plus an optional ``(B, P)`` mask for prefixes of different
lengths. Nothing here knows about audio encoders or mappers, so the same code serves the
evaluation stage, the CLI and the Prefect flows.

Why not ``model.generate(inputs_embeds=...)``: the reference (ClipCap/Pengi) beam search ranks
*live* beams by their length-normalised mean log-prob at every step and lets stopped beams keep
their slot with a frozen score; transformers' beam search ranks live beams by the running sum,
moves finished hypotheses to a separate pool and applies ``length_penalty`` only there. The two
give different beams, and the official checkpoints were tuned with the reference rule. The loop
below implements the reference rule over a KV cache, batched across clips, so one function
serves both the parity mode and the default mode. Greedy decoding (``beam_size=1``) matches
``model.generate(do_sample=False)`` token for token (tested).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from pengi import kv_cache

logger = logging.getLogger(__name__)

EmbedFn = Callable[[list[str]], torch.Tensor]


# --------------------------------------------------------------------------------------------
# LM call path
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _forward_params(lm_type: type) -> frozenset[str]:
    """Keyword names of an LM class's ``forward`` (cached: inspected once per class)."""
    try:
        return frozenset(inspect.signature(lm_type.forward).parameters)
    except (TypeError, ValueError):
        return frozenset()


def lm_forward(
    lm: torch.nn.Module,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    past_key_values: Any = None,
    last_only: bool = False,
) -> tuple[torch.Tensor, Any]:
    """Run the LM on embeddings and return ``(logits, cache)``.

    With ``attention_mask`` and ``position_ids`` left ``None`` this is exactly the reference's
    call (GPT-2 on ``inputs_embeds``, positions ``0..L-1``, no mask). ``last_only`` asks the LM
    for the last position's logits only (``logits_to_keep=1``), which skips the vocabulary
    projection of the prefix positions.

    Returns:
        logits ``(B, L, V)`` (``(B, 1, V)`` with ``last_only``) in float32, and the KV cache.
    """
    params = _forward_params(type(lm))
    # transformers >= 5.x names the KV cache ``cache``; older releases ``past_key_values``
    cache_kw = "cache" if "cache" in params else "past_key_values"
    kwargs: dict[str, Any] = {"inputs_embeds": inputs_embeds, "use_cache": True}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    if position_ids is not None:
        kwargs["position_ids"] = position_ids
    if past_key_values is not None:
        kwargs[cache_kw] = past_key_values
    if last_only and "logits_to_keep" in params:
        kwargs["logits_to_keep"] = 1
    out = lm(**kwargs)
    logits = out.logits
    if last_only:
        logits = logits[:, -1:, :]
    new_cache = out["cache"] if cache_kw == "cache" else out["past_key_values"]
    return logits.float(), new_cache


def _left_pack(
    prefix: torch.Tensor, prefix_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Move every row's padding to the left so that all rows end at the same position.

    Generation then appends each new token at the same column for every row; positions are
    counted from each row's first real vector, so a padded row computes what it would alone.

    Returns:
        packed prefix ``(B, P, D)``, packed mask ``(B, P)`` long (``None`` if no mask given),
        and the number of real vectors per row ``(B,)``.
    """
    B, P, _ = prefix.shape
    if prefix_mask is None:
        return prefix, None, torch.full((B,), P, dtype=torch.long, device=prefix.device)
    if prefix_mask.shape != (B, P):
        raise ValueError(f"prefix_mask must have shape {(B, P)}, got {tuple(prefix_mask.shape)}")
    mask = prefix_mask.to(device=prefix.device).long()
    n_real = mask.sum(1)  # (B,)
    if bool((n_real == 0).any()):
        raise ValueError("every prefix needs at least one unmasked vector")
    # stable sort on the mask value puts padding (0) first and keeps the real vectors in order
    order = torch.sort(mask, dim=1, stable=True).indices  # (B, P)
    packed = prefix.gather(1, order[..., None].expand_as(prefix))  # (B, P, D)
    return packed, mask.gather(1, order), n_real


def _positions(mask: torch.Tensor | None) -> torch.Tensor | None:
    """Position ids ``(B, P)`` counted from each row's first real vector (left padding)."""
    if mask is None:
        return None
    return (mask.cumsum(1) - 1).clamp(min=0)


# Decoding caches (pengi/kv_cache.py). transformers' ``DynamicLayer`` appends each step with
# ``torch.cat`` (a copy of the whole cache per step) and holds the prefix once per beam: on an
# H100 at batch 1,024 x beam 5 the concatenations alone took 50 % of the device time of a
# paper-size caption run (bench/RESULTS_generation.md, GPU profile).
# SHARE_PREFIX_KV: beams (and log-likelihood candidates) of one clip share one copy of the
# prefix's keys and values, and a beam reorder copies only the generated positions.
# RESERVE_KV_CACHE: where the prefix is not shared (greedy, or an LM that cannot switch its
# attention function), appends go into reserved capacity instead of ``torch.cat``.
SHARE_PREFIX_KV = True
RESERVE_KV_CACHE = True


def _reserve_kv(cache: Any, extra: int) -> None:
    """Give every plain ``DynamicLayer`` of ``cache`` room for ``extra`` more positions."""
    if RESERVE_KV_CACHE:
        kv_cache.reserve(cache, extra)


def _rows_after_prefix(
    lm: torch.nn.Module, cache: Any, group: int, extra: int, stack: contextlib.ExitStack
) -> bool:
    """Prepare ``cache`` (one row per clip) for ``group`` rows per clip and ``extra`` positions.

    Shares the prefix across the rows when possible (the LM then runs the shared-prefix attention
    until ``stack`` closes) and returns True; otherwise repeats it per row (reserved capacity)
    and returns False."""
    shareable = SHARE_PREFIX_KV and group > 1 and kv_cache.shareable(cache)
    if shareable and stack.enter_context(kv_cache.shared_prefix_decoding(lm, cache)):
        kv_cache.share_prefix(cache, group, extra)
        return True
    _reserve_kv(cache, extra)
    if group > 1:
        cache.batch_repeat_interleave(group)  # rows b*group + g
    return False


def _warn_if_training(lm: torch.nn.Module) -> None:
    if lm.training:
        logger.warning("the LM is in training mode: dropout makes decoding and scores random; call lm.eval()")


def _embed_tokens(lm: torch.nn.Module, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return lm.get_input_embeddings()(ids).to(dtype)


def _resolve_stop_ids(lm: torch.nn.Module, stop_token_ids: int | Sequence[int] | None) -> list[int]:
    if stop_token_ids is None:
        eos = getattr(getattr(lm, "generation_config", None), "eos_token_id", None)
        if eos is None:
            eos = getattr(lm.config, "eos_token_id", None)
        if eos is None:
            raise ValueError("the LM has no eos_token_id: pass stop_token_ids explicitly")
        stop_token_ids = eos
    if isinstance(stop_token_ids, int):
        return [stop_token_ids]
    return [int(s) for s in stop_token_ids]


# --------------------------------------------------------------------------------------------
# Beam search
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BeamSearchOutput:
    """Result of :func:`beam_search` for a batch of B clips and K beams.

    Attributes:
        tokens: ``(B, K, N)`` int64, ranked best first; positions after a beam stopped hold the
            filler token (``pad_token_id``; 0 in reference mode), N = steps actually run.
        lengths: ``(B, K)`` int64, tokens up to and including the stop token.
        scores: ``(B, K)`` float32 ranking scores, best first (mean log-prob per token with
            ``length_normalise``, else the sum).
        order: ``(B, K)`` int64, rank -> internal beam index.
        internal_scores: ``(B, K)`` the same scores in internal beam order (what the
            reference's ``_generate_beam`` returns).
        texts: ``B`` lists of K decoded strings (best first) when a tokenizer was given.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    scores: torch.Tensor
    order: torch.Tensor
    internal_scores: torch.Tensor
    texts: list[list[str]] | None = None

    def sequences(self, b: int, strip_stop: Sequence[int] = ()) -> list[list[int]]:
        """Token ids of clip ``b``'s beams (best first), cut at their lengths."""
        out = []
        for k in range(self.tokens.shape[1]):
            seq = self.tokens[b, k, : int(self.lengths[b, k])].tolist()
            if seq and seq[-1] in strip_stop:
                seq = seq[:-1]
            out.append(seq)
        return out


@torch.no_grad()
def beam_search(
    lm: torch.nn.Module,
    prefix: torch.Tensor,
    prefix_mask: torch.Tensor | None = None,
    *,
    beam_size: int = 5,
    max_new_tokens: int = 30,
    stop_token_ids: int | Sequence[int] | None = None,
    temperature: float = 1.0,
    length_normalise: bool = True,
    reference_compat: bool = False,
    pad_token_id: int | None = None,
    tokenizer: Any = None,
) -> BeamSearchOutput:
    """Beam search (or greedy, ``beam_size=1``) from prefix embeddings, batched, KV-cached.

    The search rule is the reference's (ClipCap / Pengi ``_generate_beam``, see
    ``shared/reference/pengi_parity/README.md``): step 1 takes the top-K tokens of the prefix's
    last position; at every later step each stopped beam offers one candidate (the filler token
    at log-prob 0, so its score is frozen), each live beam offers every token, all K x V
    candidates are ranked by ``(sum log-prob) / length`` (length counts the stop token) and the
    top K survive, several possibly from one parent. A clip is done when all its beams stopped;
    the batch is done when every clip is, or after ``max_new_tokens`` steps.

    ``reference_compat=True`` reproduces the reference bit for bit in its decisions:
    ``log(softmax(.))``, filler token 0, texts that keep the stop token. The default mode
    differs only where the reference is fragile or wasteful:

    - log-probs come from ``log_softmax`` (no ``log(0) = -inf`` from underflow);
    - it stops on the LM's eos id(s) (the reference resolves ``' <|endoftext|>'`` to a space);
    - the filler after a stop is ``pad_token_id`` (default: the first stop id), and returned
      texts drop the stop token and surrounding whitespace;
    - ``length_normalise=False`` ranks by the sum of log-probs instead (reference mode
      requires normalisation).

    Stopped-beam handling is the reference's in both modes, on purpose: a stopped beam keeps
    its slot and competes with a frozen mean score (so a short, confident caption can hold a
    slot to the end, as in the recorded ``beam_c0_model_stop2`` case), instead of moving to a
    separate pool of finished hypotheses while K live beams continue (transformers' rule). The
    consequence is fewer live beams once some have stopped; the benefit is that official
    checkpoints decode as their authors saw them.

    In both modes clips are batched (K beams x B clips as one LM batch), the prefix is run once
    per clip and its keys and values are cached once per clip, shared by the clip's K beams
    (:mod:`pengi.kv_cache`; ``SHARE_PREFIX_KV``), clips whose beams have all stopped leave the
    batch (their results are frozen, as the reference's early break freezes them), and
    prefixes of different lengths are left-packed with an attention mask and per-row
    positions, so a clip gets the same result in a batch as alone.

    Args:
        lm: causal LM with ``get_input_embeddings()``; used in eval mode, no gradients.
        prefix: ``(B, P, D)`` prefix embeddings (dtype of the LM).
        prefix_mask: optional ``(B, P)`` 1 = real vector, 0 = padding (any layout).
        beam_size: K (the paper uses 5; 1 is greedy).
        max_new_tokens: N, the reference's ``entry_length``.
        stop_token_ids: id or ids that end a beam; default the LM's eos id.
        temperature: logits are divided by it when > 0 (as the reference does).
        length_normalise: rank by mean log-prob per token (True) or by the sum.
        reference_compat: reproduce the reference's numerics and conventions exactly.
        pad_token_id: filler token after a stop (ignored in reference mode, where it is 0).
        tokenizer: if given, ``texts`` are decoded with it.

    Returns:
        :class:`BeamSearchOutput`.

    Raises:
        ValueError: on bad shapes or arguments.
    """
    if prefix.dim() != 3:
        raise ValueError(f"prefix must be (B, P, D), got shape {tuple(prefix.shape)}")
    if beam_size < 1 or max_new_tokens < 1:
        raise ValueError("beam_size and max_new_tokens must be >= 1")
    if reference_compat and not length_normalise:
        raise ValueError("reference_compat requires length_normalise=True")
    stop_ids = _resolve_stop_ids(lm, stop_token_ids)
    _warn_if_training(lm)
    if reference_compat:
        filler = 0  # the reference forces token 0 after a stop
    elif pad_token_id is not None:
        filler = pad_token_id
    else:
        filler = stop_ids[0] if stop_ids else 0
    K, N = beam_size, max_new_tokens
    device = prefix.device
    B = prefix.shape[0]
    stop_t = torch.tensor(stop_ids, dtype=torch.long, device=device)
    temp = temperature if temperature > 0 else 1.0

    def log_probs(logits: torch.Tensor) -> torch.Tensor:
        if temp != 1.0:
            logits = logits / temp
        if reference_compat:
            return torch.softmax(logits, dim=-1).log()  # the reference's order: softmax, then log
        return torch.log_softmax(logits, dim=-1)

    packed, mask, n_real = _left_pack(prefix, prefix_mask)
    logits, cache = lm_forward(lm, packed, mask, _positions(mask), last_only=True)
    with contextlib.ExitStack() as stack:  # the LM's attention is restored when it closes
        logp = log_probs(logits[:, -1])  # (B, V)
        V = logp.shape[-1]
        if K > V:
            raise ValueError(f"beam_size {K} exceeds the vocabulary size {V}")

        # ---- step 1: the top-K tokens of the single row start K beams (B, K)
        scores, first = logp.topk(K, dim=-1)
        tokens = first[..., None]  # (B, K, 1)
        lengths = torch.ones(B, K, device=device)
        stopped = torch.isin(first, stop_t)
        # the N - 1 cached steps after the first token; rows b*K + k
        shared = _rows_after_prefix(lm, cache, K, N - 1, stack)
        if mask is not None:
            mask = mask.repeat_interleave(K, dim=0)  # (B*K, P)
        next_pos = n_real.repeat_interleave(K)  # (B*K,) position of the next token

        out_tokens = torch.full((B, K, N), filler, dtype=torch.long, device=device)
        out_lengths = torch.zeros(B, K, dtype=torch.long, device=device)
        out_scores = torch.zeros(B, K, device=device)
        active = torch.arange(B, device=device)  # clip ids still in the LM batch
        steps_run = 1

        def freeze(rows: torch.Tensor) -> None:
            # rows index the active set; write those clips' state to the outputs
            clips = active[rows]
            t = tokens.shape[-1]
            out_tokens[clips, :, :t] = tokens[rows]
            out_lengths[clips] = lengths[rows].long()
            out_scores[clips] = scores[rows]

        for step in range(2, N + 1):
            done = stopped.all(dim=1)  # (A,)
            if bool(done.any()):
                freeze(done.nonzero().squeeze(1))
                keep = (~done).nonzero().squeeze(1)
                if keep.numel() == 0:
                    break
                rows = (keep[:, None] * K + torch.arange(K, device=device)).reshape(-1)
                if shared:
                    kv_cache.select_clips(cache, keep)
                else:
                    cache.reorder_cache(rows)  # index_select: shrinks the cache to the live clips
                active, tokens, lengths, scores, stopped = (
                    active[keep], tokens[keep], lengths[keep], scores[keep], stopped[keep]
                )
                next_pos = next_pos[rows]
                if mask is not None:
                    mask = mask[rows]
            A = active.numel()
            steps_run = step

            # ---- one cached LM step on the last token of every beam (A*K, 1, D)
            last = tokens[:, :, -1].reshape(-1)
            emb = _embed_tokens(lm, last, packed.dtype)[:, None, :]
            if mask is not None:
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                pos = next_pos[:, None]
            else:
                pos = None  # reference path: the LM counts positions from its cache
            logits, cache = lm_forward(lm, emb, mask, pos, cache, last_only=True)
            logp = log_probs(logits[:, -1]).view(A, K, V)
            next_pos = next_pos + 1

            # stopped beams: one candidate, the filler token, at log-prob 0 (score frozen)
            if bool(stopped.any()):
                logp = logp.masked_fill(stopped[..., None], float("-inf"))
                logp[..., filler] = torch.where(stopped, 0.0, logp[..., filler])
            # rank = (score + log-prob) [/ length], built in place: logp is this step's own
            # (A, K, V) float32 tensor, and at GPT-2 size each full-vocabulary pass is ~0.5 GB
            rank = logp.add_(scores[..., None])  # (A, K, V) total log-prob
            lengths = lengths + (~stopped).float()
            if length_normalise:
                rank = rank.div_(lengths[..., None])
            top_val, top_idx = rank.reshape(A, K * V).topk(K, dim=-1)  # beam-major flat top-K
            src = top_idx // V  # (A, K) parent beam
            tok = top_idx % V
            lengths = lengths.gather(1, src)
            stopped = stopped.gather(1, src)
            tokens = torch.cat([tokens.gather(1, src[..., None].expand_as(tokens)), tok[..., None]], dim=2)
            scores = top_val * lengths if length_normalise else top_val
            rows = (torch.arange(A, device=device)[:, None] * K + src).reshape(-1)
            if shared:
                kv_cache.reorder_rows(cache, rows)  # the generated positions only
            elif K > 1:  # greedy: every row is its own parent
                cache.reorder_cache(rows)
            next_pos = next_pos[rows]
            if mask is not None:
                mask = mask[rows]
            stopped = stopped | torch.isin(tok, stop_t)

        if active.numel():
            freeze(torch.arange(active.numel(), device=device))

    final = out_scores / out_lengths.float() if length_normalise else out_scores  # (B, K)
    order = torch.sort(final, dim=1, descending=True, stable=True).indices
    ranked_tokens = out_tokens.gather(1, order[..., None].expand_as(out_tokens))[:, :, :steps_run]
    result = BeamSearchOutput(
        tokens=ranked_tokens,
        lengths=out_lengths.gather(1, order),
        scores=final.gather(1, order),
        order=order,
        internal_scores=final,
    )
    if tokenizer is not None:
        strip = () if reference_compat else tuple(stop_ids)
        texts = [
            [tokenizer.decode(seq).strip() for seq in result.sequences(b, strip_stop=strip)]
            for b in range(B)
        ]
        result = BeamSearchOutput(**{**result.__dict__, "texts": texts})
    return result


@dataclass(frozen=True)
class Generation:
    """Texts and scores for a list of clips (best beam first)."""

    texts: list[list[str]]  # per clip, K texts
    scores: torch.Tensor  # (B, K)
    token_ids: list[list[list[int]]]  # per clip, K sequences without the stop token

    @property
    def best(self) -> list[str]:
        """The top-ranked text of every clip."""
        return [t[0] for t in self.texts]


def generate(
    lm: torch.nn.Module,
    prefix: torch.Tensor,
    tokenizer: Any,
    prefix_mask: torch.Tensor | None = None,
    *,
    batch_size: int = 16,
    method: str = "beam",
    beam_size: int = 5,
    max_new_tokens: int = 30,
    stop_token_ids: int | Sequence[int] | None = None,
    temperature: float = 1.0,
    length_normalise: bool = True,
) -> Generation:
    """Caption/answer every clip: :func:`beam_search` in chunks of ``batch_size`` clips.

    Args:
        method: ``"beam"`` (``beam_size`` beams) or ``"greedy"`` (one beam).
        Other arguments as in :func:`beam_search` (default mode).

    Returns:
        :class:`Generation` with texts decoded by ``tokenizer`` (stop token stripped).
    """
    if method not in ("beam", "greedy"):
        raise ValueError(f"method must be 'beam' or 'greedy', got {method!r}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    k = 1 if method == "greedy" else beam_size
    stop_ids = _resolve_stop_ids(lm, stop_token_ids)
    texts: list[list[str]] = []
    ids: list[list[list[int]]] = []
    scores = []
    for start in range(0, prefix.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        out = beam_search(
            lm,
            prefix[sl],
            None if prefix_mask is None else prefix_mask[sl],
            beam_size=k,
            max_new_tokens=max_new_tokens,
            stop_token_ids=stop_ids,
            temperature=temperature,
            length_normalise=length_normalise,
            tokenizer=tokenizer,
        )
        assert out.texts is not None
        texts.extend(out.texts)
        ids.extend(out.sequences(b, strip_stop=stop_ids) for b in range(out.tokens.shape[0]))
        scores.append(out.scores)
    all_scores = torch.cat(scores) if scores else torch.zeros(0, k)
    logger.debug("generated %d clips (method=%s, K=%d)", len(texts), method, k)
    return Generation(texts=texts, scores=all_scores, token_ids=ids)


def generation_settings(cfg: Any) -> dict[str, Any]:
    """Keyword arguments for :func:`generate` from an ``EvaluateConfig``.

    Reads ``batch_size``, ``beam_size`` and ``max_new_tokens``.
    """
    return {"batch_size": cfg.batch_size, "beam_size": cfg.beam_size, "max_new_tokens": cfg.max_new_tokens}


# --------------------------------------------------------------------------------------------
# Close-ended inference
# --------------------------------------------------------------------------------------------


def tokenize_candidates(
    tokenizer: Any,
    candidates: Sequence[str],
    *,
    template: str = "{}",
    eos_token_id: int | None = -1,
) -> list[list[int]]:
    """Token ids of each candidate continuation (class name in ``template``, then eos).

    Args:
        eos_token_id: id appended to every candidate; ``-1`` (default) uses the tokenizer's
            eos, ``None`` appends nothing. Scoring the eos says "the text ends here", which
            keeps a short class name from winning as the prefix of a longer one.

    Returns:
        one list of ids per candidate.

    Raises:
        ValueError: if a candidate tokenizes to nothing.
    """
    eos = tokenizer.eos_token_id if eos_token_id == -1 else eos_token_id
    out = []
    for name in candidates:
        ids = list(tokenizer(template.format(name), add_special_tokens=False)["input_ids"])
        if not ids:
            raise ValueError(f"candidate {name!r} tokenizes to no tokens")
        out.append(ids + ([eos] if eos is not None else []))
    return out


@dataclass(frozen=True)
class ContinuationScores:
    """Log-likelihood of N candidate continuations for B clips."""

    total: torch.Tensor  # (B, N) sum of log-probs over the candidate's tokens
    mean: torch.Tensor  # (B, N) total / candidate length
    lengths: torch.Tensor  # (N,) candidate lengths in tokens


@torch.no_grad()
def score_continuations(
    lm: torch.nn.Module,
    prefix: torch.Tensor,
    candidates: Sequence[Sequence[int]],
    prefix_mask: torch.Tensor | None = None,
    *,
    max_logits: int | None = None,
) -> ContinuationScores:
    """Log-likelihood ranking (paper Fig. 3): score every candidate after one shared prefix.

    The prefix runs once per clip (KV cache); its last position gives the first token's
    log-prob. All candidates then run as one batch of N short sequences (right-padded,
    masked) that attend to one shared copy of the prefix's keys and values
    (:mod:`pengi.kv_cache`; a per-candidate copy where the LM cannot switch attention
    functions), so the cost is one prefix pass plus ``N x (L-1)`` cached token positions,
    not N full passes. The last candidate token is
    never fed (its logits are not needed).

    Args:
        candidates: N token-id sequences (e.g. from :func:`tokenize_candidates`).
        max_logits: clips are processed in chunks so that one chunk's candidate logits hold
            at most this many floats (memory bound for large vocabularies). Default: 2**25
            (128 MB of float32) on CPU, 2**28 (1 GiB) on CUDA, where small chunks leave the
            device idle (paper-size model, 50 classes: 3 clips per chunk at 2**25).

    Returns:
        :class:`ContinuationScores` with ``(B, N)`` sums and means.
    """
    if not candidates or any(len(c) == 0 for c in candidates):
        raise ValueError("candidates must be non-empty token sequences")
    _warn_if_training(lm)
    Nc = len(candidates)
    device = prefix.device
    lengths = torch.tensor([len(c) for c in candidates], device=device)
    L = int(lengths.max())
    cand = torch.zeros(Nc, L, dtype=torch.long, device=device)
    for i, c in enumerate(candidates):
        cand[i, : len(c)] = torch.tensor(list(c), dtype=torch.long)
    cand_mask = torch.arange(L, device=device)[None, :] < lengths[:, None]  # (N, L)

    if max_logits is None:
        max_logits = 2**28 if device.type == "cuda" else 2**25
    vocab = lm.get_input_embeddings().weight.shape[0]
    per_clip = Nc * max(L - 1, 1) * vocab
    chunk = max(1, max_logits // per_clip)
    totals = []
    for start in range(0, prefix.shape[0], chunk):
        sl = slice(start, start + chunk)
        pm = None if prefix_mask is None else prefix_mask[sl]
        totals.append(_score_chunk(lm, prefix[sl], pm, cand, cand_mask))
    total = torch.cat(totals)  # (B, N)
    return ContinuationScores(total=total, mean=total / lengths.float(), lengths=lengths)


def _score_chunk(
    lm: torch.nn.Module,
    prefix: torch.Tensor,
    prefix_mask: torch.Tensor | None,
    cand: torch.Tensor,
    cand_mask: torch.Tensor,
) -> torch.Tensor:
    B = prefix.shape[0]
    Nc, L = cand.shape
    packed, mask, n_real = _left_pack(prefix, prefix_mask)
    if mask is None:
        mask = torch.ones(packed.shape[:2], dtype=torch.long, device=packed.device)
    logits, cache = lm_forward(lm, packed, mask, _positions(mask), last_only=True)
    first = torch.log_softmax(logits[:, -1], dim=-1)[:, cand[:, 0]]  # (B, N)
    if L == 1:
        return first
    feed = cand[:, :-1].repeat(B, 1)  # (B*N, L-1): every token but the last
    feed_mask = cand_mask[:, :-1].repeat(B, 1).long()
    attn = torch.cat([mask.repeat_interleave(Nc, dim=0), feed_mask], dim=1)  # (B*N, P+L-1)
    pos = n_real.repeat_interleave(Nc)[:, None] + torch.arange(L - 1, device=cand.device)[None, :]
    emb = _embed_tokens(lm, feed, packed.dtype)  # (B*N, L-1, D)
    with contextlib.ExitStack() as stack:
        _rows_after_prefix(lm, cache, Nc, L - 1, stack)  # rows b*N + n, the prefix shared if possible
        logits, _ = lm_forward(lm, emb, attn, pos, cache)
    target = cand[:, 1:].repeat(B, 1)  # (B*N, L-1)
    # log_softmax at the targets only: gather - logsumexp, no second (B*N, L-1, V) tensor
    tok_lp = logits.gather(2, target[..., None]).squeeze(2) - torch.logsumexp(logits, dim=-1)
    tok_lp = tok_lp * cand_mask[:, 1:].repeat(B, 1)  # (B*N, L-1), padding contributes 0
    return first + tok_lp.sum(1).view(B, Nc)


def loglik_classify(
    lm: torch.nn.Module,
    prefix: torch.Tensor,
    tokenizer: Any,
    class_names: Sequence[str],
    prefix_mask: torch.Tensor | None = None,
    *,
    template: str = "{}",
    normalise: bool = False,
) -> torch.Tensor:
    """Per-class log-likelihood scores ``(B, N)`` (single-label: argmax; multi-label: mAP).

    ``normalise=True`` uses the mean log-prob per token (favours nothing by length), else the
    sum (the probability of the whole class text). For multi-label tasks the same per-class
    scores rank clips within each class, which is what mAP needs.
    """
    cands = tokenize_candidates(tokenizer, class_names, template=template)
    s = score_continuations(lm, prefix, cands, prefix_mask)
    return s.mean if normalise else s.total


def class_scores(
    method: str,
    class_names: Sequence[str],
    *,
    texts: Sequence[str] | None = None,
    embed_fn: EmbedFn | None = None,
    lm: torch.nn.Module | None = None,
    prefix: torch.Tensor | None = None,
    tokenizer: Any = None,
    prefix_mask: torch.Tensor | None = None,
    template: str = "{}",
) -> torch.Tensor:
    """Close-ended scores ``(B, N)`` by the configured method (``evaluate.classification_method``).

    ``"text"``: :func:`text_match_scores` of the generated ``texts`` (needs ``embed_fn``).
    ``"loglik"``: :func:`loglik_classify` from the prefixes (needs ``lm``, ``prefix``,
    ``tokenizer``). Argmax gives the single-label prediction; the per-class columns are the
    multi-label scores for mAP.

    Raises:
        ValueError: unknown method or missing inputs for it.
    """
    if method == "text":
        if texts is None or embed_fn is None:
            raise ValueError("text matching needs texts and embed_fn")
        return text_match_scores(texts, class_names, embed_fn)
    if method == "loglik":
        if lm is None or prefix is None or tokenizer is None:
            raise ValueError("log-likelihood ranking needs lm, prefix and tokenizer")
        return loglik_classify(lm, prefix, tokenizer, class_names, prefix_mask, template=template)
    raise ValueError(f"classification method must be 'text' or 'loglik', got {method!r}")


def cosine_similarity_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity ``(n, m)`` between rows of ``a (n, d)`` and ``b (m, d)``."""
    a = F.normalize(a.float(), dim=-1)
    b = F.normalize(b.float(), dim=-1)
    return a @ b.T


def match_answer(text: str, answer: str = "{}", *, multilabel: bool = False) -> str | None:
    """The class part of a generated ``text`` whose trained form is ``answer`` (``{}`` = class),
    or ``None`` when the text does not state one in that form.

    ``match_answer("this is a sound of music in genre jazz", "this is a sound of music in genre {}")``
    is ``"jazz"``; ``match_answer("produced by organ, pitch 62", "pitch {}")`` is ``"62"``. The
    class runs to the literal text after ``{}``, else to the next comma (single-label) or to the
    end (multi-label: ``", "``-joined classes). ``answer == "{}"``: the whole text.
    """
    if answer.count("{}") != 1:
        raise ValueError(f"an answer template holds exactly one '{{}}': {answer!r}")
    if answer == "{}":
        return text
    before, after = answer.split("{}")
    end = re.escape(after) if after else ("$" if multilabel else r"(?=,|$)")
    m = re.search(re.escape(before) + r"(.+?)" + end, text)
    return m.group(1).strip() if m and m.group(1).strip() else None


def extract_answer(text: str, answer: str = "{}", *, multilabel: bool = False) -> str:
    """:func:`match_answer`, or the whole ``text`` when it does not match: nothing is dropped."""
    found = match_answer(text, answer, multilabel=multilabel)
    return text if found is None else found


def text_match_scores(texts: Sequence[str], class_names: Sequence[str], embed_fn: EmbedFn) -> torch.Tensor:
    """Text matching (paper Fig. 3): cosine between output-text and class-name embeddings.

    Args:
        texts: B generated outputs.
        class_names: N class names (or any candidate texts).
        embed_fn: text encoder, ``list[str] -> (n, d)`` tensor.

    Returns:
        ``(B, N)`` cosine similarities: argmax for single-label, per-class scores for mAP.
    """
    t = torch.as_tensor(embed_fn(list(texts)))
    c = torch.as_tensor(embed_fn(list(class_names)))
    if t.shape[0] != len(texts) or c.shape[0] != len(class_names):
        raise ValueError("embed_fn must return one row per input string")
    return cosine_similarity_matrix(t, c)


def multilabel_text_match_scores(
    texts: Sequence[str], class_names: Sequence[str], embed_fn: EmbedFn, separators: str = r",|;| and "
) -> torch.Tensor:
    """Multi-label text matching: split each output into phrases, score each class by its best phrase.

    Pengi answers "this is a sound of" with lists ("dog barking, speech and rain"); embedding
    the whole list blurs it, so each phrase is embedded alone and a class takes the maximum
    cosine over the phrases of that output. Outputs without a separator reduce to
    :func:`text_match_scores`.

    Returns:
        ``(B, N)`` per-class scores (for mAP, or thresholds for F1).
    """
    phrases: list[str] = []
    owner: list[int] = []
    for i, t in enumerate(texts):
        parts = [p.strip() for p in re.split(separators, t) if p.strip()] or [t]
        phrases.extend(parts)
        owner.extend([i] * len(parts))
    sim = text_match_scores(phrases, class_names, embed_fn)  # (n_phrases, N)
    idx = torch.tensor(owner)
    out = torch.full((len(texts), len(class_names)), float("-inf"))
    return out.scatter_reduce(0, idx[:, None].expand_as(sim), sim, reduce="amax")  # (B, N)


def caption_index_similarity(
    generated: Sequence[str], queries: Sequence[str], embed_fn: EmbedFn
) -> torch.Tensor:
    """Generative retrieval (paper section 5.4): index each audio by its generated caption.

    Returns:
        ``(A, C)`` similarity between audio i (through its caption) and text query j, the
        layout :func:`pengi.evaluation.metrics.retrieval_metrics` takes.
    """
    return text_match_scores(generated, queries, embed_fn)


# --------------------------------------------------------------------------------------------
# Appendix A and B
# --------------------------------------------------------------------------------------------


def append_text_to_prefix(
    lm: torch.nn.Module,
    prefix: torch.Tensor,
    token_ids: Sequence[Sequence[int]],
    prefix_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Additional text input (paper appendix A): ``[prefix | LM-embedded extra text]``.

    The whole extra text is tokenized with the LM tokenizer and embedded with the LM's input
    embeddings (the reference embeds it character by character, a defect). Each row's real
    prefix vectors come first, then its text tokens, then padding on the right.

    Args:
        token_ids: B token-id sequences (may be empty).

    Returns:
        ``(prefix, mask)`` of shapes ``(B, P', D)`` and ``(B, P')`` (1 = real), ready for
        :func:`beam_search` or :func:`score_continuations`.
    """
    B, P, D = prefix.shape
    if len(token_ids) != B:
        raise ValueError(f"need {B} token sequences, got {len(token_ids)}")
    mask = (
        torch.ones(B, P, dtype=torch.long, device=prefix.device)
        if prefix_mask is None
        else prefix_mask.to(prefix.device).long()
    )
    n_real = mask.sum(1).tolist()
    width = max(n + len(t) for n, t in zip(n_real, token_ids))
    out = prefix.new_zeros(B, width, D)
    out_mask = torch.zeros(B, width, dtype=torch.long, device=prefix.device)
    emb = lm.get_input_embeddings()
    for b, ids in enumerate(token_ids):
        real = prefix[b][mask[b].bool()]  # (n_b, D), original order
        n = real.shape[0]
        out[b, :n] = real
        if len(ids):
            t = torch.tensor(list(ids), dtype=torch.long, device=prefix.device)
            out[b, n : n + len(ids)] = emb(t).to(prefix.dtype)
        out_mask[b, : n + len(ids)] = 1
    return out, out_mask


@torch.no_grad()
def interpret_prefix(
    lm: torch.nn.Module, prefix: torch.Tensor, tokenizer: Any = None, top_k: int = 1
) -> list[list[list[str]]] | torch.Tensor:
    """Prefix interpretation (paper appendix B): nearest LM vocabulary tokens of each vector.

    Nearness is cosine similarity between a prefix vector and the rows of the LM's input
    embedding matrix (ClipCap's method).

    Returns:
        with a tokenizer, ``[clip][position]`` lists of ``top_k`` token strings; without one,
        the ``(B, P, top_k)`` token ids.
    """
    wte = lm.get_input_embeddings().weight  # (V, D)
    sim = cosine_similarity_matrix(prefix.reshape(-1, prefix.shape[-1]), wte)  # (B*P, V)
    ids = sim.topk(top_k, dim=-1).indices.view(*prefix.shape[:2], top_k)  # (B, P, top_k)
    if tokenizer is None:
        return ids
    return [[tokenizer.convert_ids_to_tokens(row.tolist()) for row in clip] for clip in ids]
