"""Captioning throughput of the paper-size Pengi: waveforms in, beam-5 token sequences out.

``bench/generation.py`` times the decoder alone on the offline SmolLM2; this script times what a
user of the paper's model runs, at the authors' ``base`` sizes with random weights (no
download): 7-s clips at 44.1 kHz -> log-mel -> HTSAT -> projection -> m1, a cached prompt
feature (one prompt, as in captioning) -> m2, then :func:`pengi.inference.beam_search` on
GPT-2 base (beam 5, KV cache, batched clips) — under bf16 autocast on CUDA, as
``PengiSession(precision="bf16")`` runs it.

Measured in one run, on one device:

1. the baseline: the reference ``_generate_beam`` algorithm (``bench/generation.py``), one clip
   at a time, the whole sequence recomputed at every step;
2. the project's path (prefix + ``beam_search``) at each ``--batch`` size, and greedy; the same
   beam search with the prefix's keys and values copied per beam (``SHARE_PREFIX_KV = False``)
   and with transformers' own KV cache (also ``RESERVE_KV_CACHE = False``: ``torch.cat`` per
   step), and, on CUDA, with the LM's weights cast to bf16 instead of autocast;
3. 50-class log-likelihood scoring (:func:`pengi.inference.score_continuations`) per clip,
   relative to one beam-5 caption at the same batch size.

Random weights never emit the end-of-text token, so every beam runs the full
``--max-new-tokens`` steps: a fixed, pessimistic amount of work per clip (trained models stop
captions at 10-20 tokens and clips leave the batch when done).

    python bench/generation_paper.py --device cuda --batch 64 256 512 --out bench/generation_paper_h100.json
    python bench/generation_paper.py --batch 2 --clips 2 --baseline-clips 1   # CPU smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generation import reference_generate_beam, timed  # bench/ is not a package: found via sys.path
from train_throughput import build_step_model

log = logging.getLogger("bench.generation_paper")

SAMPLE_RATE = 44100
CLIP_SECONDS = 7.0


def build_model(device: torch.device):
    """The paper-size Pengi of ``bench/train_throughput.py`` (4-layer mappers), in eval mode."""
    model = build_step_model(mapper_layers=4)[0].model.eval().to(device)
    model.lm.use_attention_for(device)
    return model


@contextlib.contextmanager
def cache_mode(mode: str):
    """``shared`` (the default: one prefix copy per clip), ``per_row`` (a prefix copy per beam
    or candidate, reserved capacity) or ``transformers`` (its DynamicCache: torch.cat per step)."""
    from pengi import inference

    saved = inference.SHARE_PREFIX_KV, inference.RESERVE_KV_CACHE
    inference.SHARE_PREFIX_KV = mode == "shared"
    inference.RESERVE_KV_CACHE = mode in ("shared", "per_row")
    try:
        yield
    finally:
        inference.SHARE_PREFIX_KV, inference.RESERVE_KV_CACHE = saved


def seconds(fn) -> float:
    """Wall seconds of ``fn()`` (``generation.timed`` synchronises CUDA before and after)."""
    return timed(fn)[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, nargs="+", default=[16], help="clips per batch (one run each)")
    ap.add_argument("--clips", type=int, default=0, help="clips per measurement (default: 2 x the batch)")
    ap.add_argument("--beam-size", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=30)
    ap.add_argument("--baseline-clips", type=int, default=4)
    ap.add_argument("--classes", type=int, default=50)
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16", help="bf16 autocast (CUDA) or fp32")
    ap.add_argument("--profile", help="write the top operators of one beam run at the last batch size here")
    ap.add_argument("--compile-prefix", action="store_true",
                    help="also time the prefix (audio tower + mappers) under torch.compile")  # fmt: skip
    ap.add_argument("--out", help="also write the result as JSON here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from pengi.inference import beam_search, score_continuations

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    model = build_model(device)
    lm = model.lm.model
    stop = lm.config.eos_token_id
    bf16 = args.precision == "bf16" and device.type == "cuda"
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    feature = torch.randn(1, model.text_encoder.frozen_feature_dim, device=device)  # the cached prompt feature
    gen = torch.Generator(device="cpu").manual_seed(0)
    K, N = args.beam_size, args.max_new_tokens
    # 50 candidate continuations of 1-4 tokens + eos (random ids: timing only)
    lens = torch.randint(1, 5, (args.classes,), generator=gen).tolist()
    cands = [torch.randint(0, stop, (n,), generator=gen).tolist() + [stop] for n in lens]

    def waves(n: int) -> torch.Tensor:
        return (0.1 * torch.randn(n, int(SAMPLE_RATE * CLIP_SECONDS), generator=gen)).to(device)

    @torch.no_grad()
    def prefix(w: torch.Tensor, encode=model.prefix) -> torch.Tensor:
        with amp():
            return encode(w, prompt_features=feature.expand(w.shape[0], -1))

    @torch.no_grad()
    def caption(w: torch.Tensor, k: int):
        p = prefix(w)
        with amp():
            return beam_search(lm, p, beam_size=k, max_new_tokens=N, stop_token_ids=stop)

    cprefix = torch.compile(model.prefix) if args.compile_prefix else None

    # variant: the LM's weights cast to bf16 once (no per-step autocast casts), prefix under autocast
    lm16 = copy.deepcopy(lm).to(torch.bfloat16) if bf16 else None

    @torch.no_grad()
    def caption16(w: torch.Tensor, k: int):
        return beam_search(lm16, prefix(w).to(torch.bfloat16), beam_size=k, max_new_tokens=N, stop_token_ids=stop)

    @torch.no_grad()
    def loglik(w: torch.Tensor):
        p = prefix(w)
        with amp():
            return score_continuations(lm, p, cands)

    result: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "model": "pengi.models.Pengi, reference 'base' sizes (HTSAT, 4-layer mappers, 40 + 40 prefix, GPT-2 base), random weights",
        "precision": "bf16 autocast" if bf16 else "fp32",
        "attention": lm.config._attn_implementation,
        "beam_size": K,
        "max_new_tokens": N,
        "note": "random weights never emit eos: every beam runs max_new_tokens steps",
        "runs": [],
    }

    # 1. baseline: the reference algorithm, one clip at a time, full recomputation each step
    w = waves(max(1, args.baseline_clips))
    reference_generate_beam(lm, prefix(w[:1]), K, 2, 1.0, stop)  # warm-up
    per = []
    for i in range(args.baseline_clips):
        p = prefix(w[i : i + 1])
        with amp():
            s = seconds(lambda p=p: reference_generate_beam(lm, p, K, N, 1.0, stop))
        s_p = seconds(lambda i=i: prefix(w[i : i + 1]))
        per.append(s + s_p)
    if per:
        result["baseline"] = {
            "what": "reference _generate_beam (full recompute, 1 clip at a time) + the clip's prefix",
            "clips": len(per),
            "seconds_per_clip": round(statistics.mean(per), 4),
            "clips_per_s": round(1 / statistics.mean(per), 2),
        }
        log.info("baseline %s", result["baseline"])

    # 2-3. ours, per batch size
    for B in args.batch:
        n = args.clips or 2 * B
        w = waves(B)
        caption(w, K), loglik(w), caption(w, 1)  # warm-up (kernels, allocator) at this shape
        reps = max(1, n // B)
        s_prefix = seconds(lambda: [prefix(w) for _ in range(reps)])
        if cprefix is not None:
            s_compile = seconds(lambda: prefix(w, cprefix))  # compiles for this batch shape
            s_cprefix = seconds(lambda: [prefix(w, cprefix) for _ in range(reps)])
        out, s_beam, _ = timed(lambda: [caption(w, K) for _ in range(reps)])
        s_greedy = seconds(lambda: [caption(w, 1) for _ in range(reps)])
        s_ll = seconds(lambda: [loglik(w) for _ in range(reps)])
        # the same search with the prefix copied per beam (reserved capacity), and with
        # transformers' own cache (prefix per beam, torch.cat per step), for comparison
        with cache_mode("per_row"):
            caption(w, K), loglik(w)
            s_row = seconds(lambda: [caption(w, K) for _ in range(reps)])
            s_ll_row = seconds(lambda: [loglik(w) for _ in range(reps)])
        with cache_mode("transformers"):
            caption(w, K)
            s_cat = seconds(lambda: [caption(w, K) for _ in range(reps)])
        if lm16 is not None:
            caption16(w, K)  # warm-up
            s_beam16 = seconds(lambda: [caption16(w, K) for _ in range(reps)])
        clips = B * reps
        run = {
            "batch": B,
            "clips": clips,
            "prefix_clips_per_s": round(clips / s_prefix, 1),
            "beam_clips_per_s": round(clips / s_beam, 1),
            "beam_per_row_cache_clips_per_s": round(clips / s_row, 1),
            "beam_cat_cache_clips_per_s": round(clips / s_cat, 1),
            "loglik_per_row_cache_clips_per_s": round(clips / s_ll_row, 1),
            "greedy_clips_per_s": round(clips / s_greedy, 1),
            "loglik_clips_per_s": round(clips / s_ll, 1),
            "loglik_over_caption": round(s_ll / s_beam, 3),
            "tokens_per_beam": int(out[-1].lengths[:, 0].float().mean()),
        }
        if cprefix is not None:
            run["prefix_compiled_clips_per_s"] = round(clips / s_cprefix, 1)
            run["prefix_compile_s"] = round(s_compile, 1)
        if lm16 is not None:
            run["beam_bf16_weights_clips_per_s"] = round(clips / s_beam16, 1)
        if "baseline" in result:
            run["speedup_vs_baseline"] = round(run["beam_clips_per_s"] / result["baseline"]["clips_per_s"], 1)
        if device.type == "cuda":
            run["max_memory_GiB"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            torch.cuda.reset_peak_memory_stats(device)
        result["runs"].append(run)
        log.info("batch %d: %s", B, run)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            seconds(lambda: caption(w, K))
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        Path(args.profile).write_text(prof.key_averages().table(sort_by=key, row_limit=40, max_name_column_width=60) + "\n")
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
