"""Frozen-LM forward + backward (what a Pengi training step pays): fp32 vs bf16 autocast, and
PyTorch SDPA vs the eager attention kernel.

    python bench/lm_precision.py --threads 1 2 --length 40 --batch-size 8 --attention sdpa eager

Times the SmolLM2-135M (offline GGUF) forward over ``inputs_embeds`` of shape (batch, length,
576) plus the backward to those embeddings (the LM's weights are frozen, as in train-pengi),
keeping the logits of the last half of the positions (the targets). Prints one JSON line per
(threads, precision) with the mean seconds per step over ``--repeats`` steps after one warm-up,
in alternating order so that machine noise hits both precisions alike, for each attention kernel.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from pengi.config import LMConfig
from pengi.models.lm import LanguageModel
from pengi.precision import autocast_context, native_bf16


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--length", type=int, default=36, help="prefix + target positions")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--attention", nargs="+", default=["sdpa", "eager"], help="transformers attn implementations")
    args = ap.parse_args()
    lm = LanguageModel(LMConfig(name="smollm2"))
    lm.requires_grad_(False).eval()
    dim = lm.hidden_size
    cpu = torch.device("cpu")

    def step(bf16: bool) -> None:
        x = (torch.randn(args.batch_size, args.length, dim) * 0.13).requires_grad_(True)  # (B, L, D)
        with autocast_context(cpu, bf16):
            logits = lm(inputs_embeds=x, logits_to_keep=args.length // 2).logits  # (B, L/2, V)
        logits.float().logsumexp(-1).mean().backward()

    for threads, attention in [(t, a) for t in args.threads for a in args.attention]:
        torch.set_num_threads(threads)
        lm.model.set_attn_implementation(attention)
        times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for name in ("fp32", "bf16"):  # warm-up (oneDNN primitive creation)
            step(name == "bf16")
        for _ in range(args.repeats):
            for name, samples in times.items():
                t = time.perf_counter()
                step(name == "bf16")
                samples.append(time.perf_counter() - t)
        mean = {k: sum(v) / len(v) for k, v in times.items()}
        print(json.dumps({"threads": threads, "attention": attention, "batch": args.batch_size, "length": args.length,
                          "native_bf16": native_bf16(cpu), "fp32_s": round(mean["fp32"], 3),
                          "bf16_s": round(mean["bf16"], 3), "speedup": round(mean["fp32"] / mean["bf16"], 2)}))  # fmt: skip


if __name__ == "__main__":
    main()
