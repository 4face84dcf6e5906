"""Training throughput of the paper-size Pengi step: samples/s, model FLOPs per sample, MFU.

The step is what ``train-pengi`` runs on every batch (``pengi.train.pengi.PengiTrainStep`` over
``pengi.models.Pengi``), at the paper's sizes, with random weights (no downloads): 7-s clips at
44.1 kHz -> log-mel -> HTSAT (31M, trained) -> audio projection -> m1; cached prompt features
(the frozen CLIP text tower's pooled output, computed once per unique prompt, so no text
encoder runs in the step) -> CLIP text projection + projection -> m2; prefix (40 + 40) +
target tokens -> frozen GPT-2 base (124M), loss on the target tokens, backward to everything
trainable, Adam step (fused on CUDA).

    python bench/train_throughput.py                                   # CPU, small batch
    python bench/train_throughput.py --device cuda --bf16 --compile --batch-size 256 --peak-tflops 989
    python bench/train_throughput.py --loader --workers 8             # can the data path keep up?

Model FLOPs per sample are counted by ``torch.utils.flop_counter.FlopCounterMode`` over one
forward + backward (fp32, eager) and divided by the batch size; MFU = FLOPs/sample x samples/s /
peak FLOP/s (``--peak-tflops``: 989 for an H100 SXM's dense bf16). Timed steps run without host
synchronisation; the clock stops after one ``synchronize`` at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger("bench.train_throughput")

SAMPLE_RATE = 44100
CLIP_SECONDS = 7.0


def build_step_model(mapper_layers: int) -> tuple[nn.Module, int]:
    """The project's Pengi at the paper's sizes (random weights), wrapped as train-pengi wraps it.

    Configs come from ``pengi.checkpoint.reference_config("base")`` (HTSAT 31M, CLIP ViT-B/16
    text tower, GPT-2 base; no download) with the paper's front end (44.1 kHz, torch.stft) and
    no TS-CAM head (Pengi never uses it). Returns the step module and the cached feature width.
    """
    from pengi.checkpoint import reference_config
    from pengi.config import AudioConfig
    from pengi.models import Pengi
    from pengi.train.pengi import PengiTrainStep

    _, model_cfg = reference_config("base")
    model_cfg = dataclasses.replace(
        model_cfg,
        htsat=dataclasses.replace(model_cfg.htsat, num_classes=0),
        mapper=dataclasses.replace(model_cfg.mapper, num_layers=mapper_layers),
    )
    model = Pengi(AudioConfig(), model_cfg)
    width = model.text_encoder.frozen_feature_dim
    # the frozen CLIP tower never runs in a training step (its outputs are cached per prompt)
    cache = torch.randn(64, width)
    return PengiTrainStep(model, cache), width


def make_batch(
    batch_size: int, target_tokens: int, device: torch.device, gen: torch.Generator, lengths: list[int] | None = None
) -> dict:
    """Random targets of ``target_tokens`` each, or of lengths drawn uniformly from ``lengths``
    (right-padded to the longest, as the collator pads them)."""
    if lengths:
        n = [lengths[i] for i in torch.randint(0, len(lengths), (batch_size,), generator=gen).tolist()]
    else:
        n = [target_tokens] * batch_size
    ids = torch.randint(0, 50257, (batch_size, max(n)), generator=gen)
    batch = {
        "audio": torch.randn(batch_size, int(SAMPLE_RATE * CLIP_SECONDS), generator=gen) * 0.1,
        "prompt_index": torch.randint(0, 64, (batch_size,), generator=gen),
        "input_ids": ids,
        "attention_mask": (torch.arange(max(n)) < torch.tensor(n)[:, None]).long(),
    }
    return {**{k: v.to(device, non_blocking=True) for k, v in batch.items()}, "target_lengths": n}


def count_flops(model: nn.Module, batch: dict) -> float:
    """Model FLOPs of one forward + backward, per sample."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model(batch).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch["audio"].shape[0]


def bench_step(args) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model, _ = build_step_model(args.mapper_layers)
    model.pack_tokens = args.pack_tokens
    model = model.to(device).train()
    model.model.lm.use_attention_for(device)  # SDPA on CUDA (flash / efficient kernels), as train-pengi does
    params = [p for p in model.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in params)
    n_all = sum(p.numel() for p in model.parameters())
    gen = torch.Generator().manual_seed(0)
    lengths = [int(n) for n in args.target_lengths.split(",")] if args.target_lengths else None
    flop_batch = make_batch(min(2, args.batch_size), args.target_tokens, device, gen, lengths)
    flops = count_flops(model, flop_batch)
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, fused=device.type == "cuda")
    step_model = torch.compile(model, mode=args.compile_mode) if args.compile else model
    use_bf16 = args.bf16 and device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
    # Distinct batches resident on the device, cycled: the data path is measured separately (--loader).
    batches = [make_batch(args.batch_size, args.target_tokens, device, gen, lengths) for _ in range(2)]

    def step(batch):
        with autocast():
            loss = step_model(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t_warm = time.perf_counter()
    for i in range(args.warmup):
        step(batches[i % 2])
    sync()
    warmup_s = time.perf_counter() - t_warm
    if args.profile:
        profile_steps(step, batches, device, args.profile)
    t0 = time.perf_counter()
    losses = [step(batches[i % 2]) for i in range(args.steps)]
    sync()
    elapsed = time.perf_counter() - t0
    sps = args.batch_size * args.steps / elapsed
    prefix = 2 * model.model.config.mapper.prefix_length  # LM positions before the targets
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "model": f"pengi.models.Pengi, reference 'base' sizes, {args.mapper_layers}-layer mappers, cached prompt features (random weights)",
        "params_total_M": round(n_all / 1e6, 2),
        "params_trainable_M": round(n_train / 1e6, 2),
        "batch_size": args.batch_size,
        "target_tokens": args.target_tokens if not lengths else f"uniform over {lengths}",
        "real_position_fraction": round(
            sum(prefix + n for b in batches for n in b["target_lengths"])
            / sum(len(b["target_lengths"]) * (prefix + b["input_ids"].shape[1]) for b in batches), 3
        ),
        "pack_tokens": args.pack_tokens,
        "bf16": use_bf16,
        "compile": args.compile and (args.compile_mode or "default"),
        "htsat_matrix_rewrites_on": list(_rewrite_devices()),
        "attention": model.model.lm.model.config._attn_implementation,
        "warmup_steps": args.warmup,
        "warmup_seconds": round(warmup_s, 2),
        "steps": args.steps,
        "seconds": round(elapsed, 3),
        "samples_per_s": round(sps, 3),
        "gflops_per_sample": round(flops / 1e9, 2),
        "achieved_tflops": round(flops * sps / 1e12, 4),
        "final_loss": float(torch.stack(losses)[-1]),
    }
    if device.type == "cuda":
        result["max_memory_GiB"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    if args.peak_tflops:
        result["peak_tflops"] = args.peak_tflops
        result["mfu"] = round(flops * sps / (args.peak_tflops * 1e12), 4)
    return result


def profile_steps(step, batches, device: torch.device, path: str, n: int = 3) -> None:
    """Write the top operators of ``n`` steps by device time (CPU time on CPU) to ``path``."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for i in range(n):
            step(batches[i % 2])
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    Path(path).write_text(prof.key_averages().table(sort_by=key, row_limit=40, max_name_column_width=60) + "\n")
    log.info("profile of %d steps written to %s", n, path)


def _synthetic_clips(monkeypatch_target, seconds: float) -> None:
    """Stand-in decode task for machines without soundfile/ffmpeg: seeded noise per uri."""

    def decode_task(args: tuple[str, int]) -> tuple[str, np.ndarray, None]:
        uri, sample_rate = args
        rng = np.random.default_rng(int(Path(uri).stem))
        return uri, (0.1 * rng.standard_normal(int(sample_rate * seconds))).astype(monkeypatch_target.STORE_DTYPE), None

    monkeypatch_target._decode_task = decode_task


def bench_data_path(args) -> dict:
    """Samples/s of the training data path: audio store -> random 7-s crops -> batches."""
    from pengi.audio_store import AudioStore, build_store
    from pengi.data import Collator, ResumableBatchSampler, TripleDataset, TripleTable, make_loader

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            import soundfile as sf
        except ImportError:  # e.g. a bare GPU image: the store's content is noise either way
            sf = None
        uris = []
        for i in range(args.clips):
            path = Path(tmp, f"{i}.flac")
            if sf is not None:
                sf.write(path, (0.1 * rng.standard_normal(int(SAMPLE_RATE * 10))).astype(np.float32), SAMPLE_RATE)
            uris.append(str(path))
        if sf is None:
            import pengi.audio_store

            _synthetic_clips(pengi.audio_store, 10.0)
        build_store(uris, Path(tmp, "store"), SAMPLE_RATE, workers=max(1, args.workers) if sf is not None else 1)
        store = AudioStore(Path(tmp, "store"))
        n = args.batch_size * (args.steps + args.warmup)
        cols = {
            "triple_id": [str(i) for i in range(n)], "source": ["b"] * n, "clip_id": [str(i % len(uris)) for i in range(n)],
            "audio_uri": [uris[i % len(uris)] for i in range(n)], "task": ["caption"] * n,
            "prompt": ["generate audio caption"] * n, "target": ["a sound"] * n,
        }  # fmt: skip
        table = TripleTable(cols)
        ds = TripleDataset(table, store, int(SAMPLE_RATE * CLIP_SECONDS), train=True, audio_dtype=np.dtype(args.audio_dtype))
        sampler = ResumableBatchSampler(n, args.batch_size, shuffle=True)
        loader = make_loader(ds, sampler, Collator(prompt_vocab=table.unique_prompts()), args.workers)
        it = iter(loader)
        for _ in range(args.warmup):
            next(it)
        t0 = time.perf_counter()
        count = sum(b["audio"].shape[0] for b in it)
        elapsed = time.perf_counter() - t0
    return {
        "mode": "data path (store -> random 7-s crop -> collate)",
        "workers": args.workers,
        "store_built_from": "FLAC files" if sf is not None else "seeded noise (no soundfile here)",
        "audio_dtype": args.audio_dtype,
        "batch_size": args.batch_size,
        "samples": count,
        "seconds": round(elapsed, 3),
        "samples_per_s": round(count / elapsed, 1),
    }


def _rewrite_devices() -> tuple[str, ...]:
    from pengi.models import htsat

    return htsat.MATRIX_REWRITE_DEVICES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--target-tokens", type=int, default=24, help="target length incl. eos (captions ~ 15-25)")
    parser.add_argument("--target-lengths", default="",
                        help="comma-separated target lengths drawn per sample (a label/caption mix), e.g. 3,3,4,11,16,24")
    parser.add_argument("--pack-tokens", type=int, default=0, help="train_pengi.pack_tokens: packed LM rows (0 = padded)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA only)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the step's model")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode (e.g. max-autotune-no-cudagraphs)")
    parser.add_argument("--profile", help="write the top operators of 3 profiled steps to this file")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="peak dense TFLOP/s of the device, for MFU")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    parser.add_argument("--loader", action="store_true", help="benchmark the data path instead of the step")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (--loader)")
    parser.add_argument("--clips", type=int, default=32, help="10-s clips in the temporary store (--loader)")
    parser.add_argument("--audio-dtype", default="float16", choices=("float16", "float32"),
                        help="what the loader ships (--loader; training ships float16)")  # fmt: skip
    parser.add_argument("--mapper-layers", type=int, default=4, help="per mapper (the authors' base model has 4)")
    parser.add_argument("--rewrite-devices", default=None,
                        help="HTSAT matrix rewrites on these device types, comma-separated ('' = none; "
                             "default: pengi.models.htsat.MATRIX_REWRITE_DEVICES, CUDA)")  # fmt: skip
    parser.add_argument("--out", help="also write the result as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.rewrite_devices is not None:
        from pengi.models import htsat

        htsat.MATRIX_REWRITE_DEVICES = tuple(d for d in args.rewrite_devices.split(",") if d)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    result = bench_data_path(args) if args.loader else bench_step(args)
    result["torch"] = torch.__version__
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
