"""Benchmark: one forward+backward of the paper-size Pengi on CPU (random weights, no downloads).

The model is the authors' ``base`` architecture built locally from configs
(``pengi.checkpoint.reference_config``): HTSAT 31M, CLIP ViT-B/16 text tower (frozen), two
transformer mappers 1024 -> 40 x 768, GPT-2 base (frozen). Inputs: batch 2 of 7 s at 44.1 kHz,
40 prompt tokens, 40 target tokens. Reported: seconds per fwd+bwd step (median over the timed
steps) and the peak resident memory of the process.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/model_step.py --threads 2 --steps 5
    .venv/bin/python bench/model_step.py --threads 1 --steps 5
    .venv/bin/python bench/model_step.py --front-end paper --mapper-layers 8   # the paper's text

On a shared, oversubscribed machine, OpenMP's default spin-waiting makes 2-thread runs several
times slower than 1-thread runs (threads spin at barriers while their peer is descheduled);
``OMP_WAIT_POLICY=PASSIVE`` (read when torch loads) avoids that.

The authors' implementation took 1.91 s per fwd+bwd step at batch 2 on this kind of machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import time

import torch


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up step)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--target-tokens", type=int, default=40)
    parser.add_argument("--mapper-layers", type=int, default=4, help="per mapper (the authors' base has 4)")
    parser.add_argument(
        "--front-end",
        choices=("reference", "paper"),
        default="reference",
        help="reference: stored DFT kernels, conv STFT, 32 kHz filterbank; paper: torch.stft",
    )
    parser.add_argument("--cached-prompts", action="store_true", help="feed precomputed prompt features")
    parser.add_argument(
        "--full-logits", action="store_true", help="LM head over every position (what the reference computes)"
    )
    parser.add_argument("--json", default=None, help="also write the result to this JSON file")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from pengi.checkpoint import reference_config
    from pengi.config import AudioConfig
    from pengi.models import Pengi

    audio_cfg, model_cfg = reference_config("base")
    mapper = dataclasses.replace(model_cfg.mapper, num_layers=args.mapper_layers)
    model_cfg = dataclasses.replace(model_cfg, mapper=mapper)
    if args.front_end == "paper":
        audio_cfg = AudioConfig()  # 44.1 kHz, 50-8000 Hz, torch.stft
    rss_start = peak_rss_mib()
    t0 = time.perf_counter()
    model = Pengi(audio_cfg, model_cfg)
    build_s = time.perf_counter() - t0
    model.train()
    rss_built = peak_rss_mib()
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.trainable_parameters())

    B = args.batch
    wave = 0.1 * torch.randn(B, int(audio_cfg.sample_rate * audio_cfg.clip_seconds))
    prompt = torch.randint(0, 49406, (B, 40))
    prompt[:, 0], prompt[:, 10] = 49406, 49407  # BOS, EOS (pooled at argmax)
    pmask = torch.zeros(B, 40, dtype=torch.long)
    pmask[:, :11] = 1
    target = torch.randint(0, 50257, (B, args.target_tokens))
    tmask = torch.ones_like(target)
    feats = model.encode_prompt_features(prompt, pmask) if args.cached_prompts else None

    def step() -> tuple[float, float]:
        model.zero_grad(set_to_none=True)
        start, cpu = time.perf_counter(), time.process_time()
        if feats is not None:
            out = model(wave, target, tmask, prompt_features=feats, full_logits=args.full_logits)
        else:
            out = model(wave, target, tmask, prompt, pmask, full_logits=args.full_logits)
        out.loss.backward()
        return time.perf_counter() - start, time.process_time() - cpu

    step()  # warm-up (allocator, kernels)
    load_before = os.getloadavg()[0]
    runs = [step() for _ in range(args.steps)]
    times = [r[0] for r in runs]
    result = {
        "seconds_per_step_median": round(statistics.median(times), 3),
        "seconds_per_step_min": round(min(times), 3),
        "cpu_seconds_per_step_median": round(statistics.median(r[1] for r in runs), 3),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "steps": args.steps,
        "batch": B,
        "threads": args.threads,
        "front_end": args.front_end,
        "mapper_layers": args.mapper_layers,
        "target_tokens": args.target_tokens,
        "cached_prompts": args.cached_prompts,
        "full_logits": args.full_logits,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
        "parameters": total,
        "trainable": trainable,
        "build_seconds": round(build_s, 1),
        "peak_rss_mib_after_build": round(rss_built, 0),
        "peak_rss_mib": round(peak_rss_mib(), 0),
        "peak_rss_mib_at_start": round(rss_start, 0),
        "torch": torch.__version__,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
