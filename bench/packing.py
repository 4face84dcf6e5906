"""Benchmark: one Pengi training step (forward + backward) on padded vs packed batches.

    python bench/packing.py --triples data/triples --batches 16 --capacity 0 64 1024 \
        --json bench/cpu/packing.json

The embedded default's model (``params.yaml``: tiny HTSAT, all-MiniLM-L6-v2 prompts,
SmolLM2-135M, offline) with untrained mappers, on the real targets and prompts of the train
triples (random batches of ``train_pengi.batch_size``, seeded) and random 5-s waves (the audio
tower's cost is the same in every mode). Each batch is timed in every mode, the modes in turn
(machine noise hits all alike); medians over the batches. ``--capacity 0`` is the padded batch
(``pack_tokens: 0``), ``C > 0`` packs into rows of at most C positions (``train_pengi.pack_tokens``;
params.yaml uses 256).
Also reported: the fraction of LM positions that are real, and the largest difference of the
loss from the padded one (the modes compute the same loss).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--triples", default="data/triples", help="folder with train.parquet")
    ap.add_argument("--batches", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=0, help="0: train_pengi.batch_size")
    ap.add_argument("--capacity", type=int, nargs="+", default=[0, 64, 1024])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", choices=("config", "fp32"), default="config", help="fp32: no autocast")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from pengi.config import load_config
    from pengi.data import Collator
    from pengi.models import build_pengi, packing
    from pengi.models.lm import load_lm_tokenizer
    from pengi.precision import autocast_context, native_bf16
    from pengi.train.pengi import PengiTrainStep, encode_prompt_cache

    cfg = load_config(args.params)
    tc = cfg.train_pengi
    B = args.batch_size or tc.batch_size
    triples = pl.read_parquet(Path(args.triples) / "train.parquet")
    rng = np.random.default_rng(args.seed)
    rows = [rng.choice(len(triples), B, replace=False) for _ in range(args.batches)]
    torch.manual_seed(args.seed)
    model = build_pengi(cfg)
    cpu = torch.device("cpu")
    model.lm.use_attention_for(cpu)
    prompts = sorted({triples["prompt"][int(i)] for r in rows for i in r})
    model.eval()
    cache = encode_prompt_cache(model, cfg, prompts)
    step = PengiTrainStep(model, cache, tc.loss_reduction, tc.audio_train_mode).train()
    collate = Collator(load_lm_tokenizer(cfg.model.lm), cfg.model.target_max_tokens, prompt_vocab=prompts)
    samples = int(cfg.audio.sample_rate * cfg.audio.clip_seconds)
    bf16 = args.precision == "config" and tc.precision == "bf16" and native_bf16(cpu)
    prefix_positions = 2 * cfg.model.mapper.prefix_length

    def batch_of(r: np.ndarray) -> dict:
        ex = [
            {"audio": torch.from_numpy((0.1 * rng.standard_normal(samples)).astype(np.float32)), "audio_length": samples,
             "prompt": triples["prompt"][int(i)], "target": triples["target"][int(i)], "triple_id": str(i)}
            for i in r
        ]  # fmt: skip
        return collate(ex)

    def run(batch: dict, capacity: int, seed: int = 0) -> tuple[float, float]:
        step.pack_tokens = capacity
        step.zero_grad(set_to_none=True)
        torch.manual_seed(seed)  # the same dropout draws in every mode
        t0 = time.perf_counter()
        with autocast_context(cpu, bf16):
            loss = step(batch)
        loss.backward()
        return time.perf_counter() - t0, loss.item()

    batches = [batch_of(r) for r in rows]
    for c in args.capacity:  # warm-up: oneDNN primitives for each shape family
        run(batches[0], c)
    times: dict[int, list[float]] = {c: [] for c in args.capacity}
    diffs: dict[int, float] = {c: 0.0 for c in args.capacity}
    real = padded = 0
    for k, batch in enumerate(batches):
        lens = np.array(batch["target_lengths"])
        real += int((prefix_positions + lens).sum())
        padded += B * (prefix_positions + int(lens.max()))
        order = args.capacity if k % 2 == 0 else args.capacity[::-1]
        losses = {}
        for c in order:
            t, losses[c] = run(batch, c, seed=k)
            times[c].append(t)
        for c in args.capacity:
            diffs[c] = max(diffs[c], abs(losses[c] - losses[args.capacity[0]]))
    base = statistics.median(times[args.capacity[0]])
    out = {
        "batch_size": B, "batches": args.batches, "threads": args.threads, "precision": "bf16" if bf16 else "fp32",
        "lm": cfg.model.lm.name, "real_position_fraction": round(real / padded, 3), "row_multiple": packing.ROW_MULTIPLE,
        "modes": [
            {"capacity": c, "median_s_per_step": round(statistics.median(times[c]), 4),
             "speedup_vs_first": round(base / statistics.median(times[c]), 3), "max_abs_loss_diff": diffs[c]}
            for c in args.capacity
        ],
    }  # fmt: skip
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
