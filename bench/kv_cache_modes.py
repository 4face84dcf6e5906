"""Beam search and log-likelihood scoring with each KV-cache mode, alternated in one run.

The decoder alone (random prefixes, random LM weights at a real LM's size), so the cache is the
only thing that differs between the timed runs. Modes (``pengi.inference`` switches):

- ``shared``: the default. One copy of the prefix's keys and values per clip; beams (or
  candidates) keep only their own positions, a beam reorder copies only those
  (``pengi.kv_cache.SharedPrefixLayer`` + ``shared_prefix_attention``);
- ``per_row``: the prefix copied once per beam, appends into reserved capacity;
- ``transformers``: transformers' ``DynamicCache`` (prefix per beam, ``torch.cat`` per step).

Every mode decodes the same tokens (tests/test_inference.py); this measures only time. Random
weights never emit end-of-text, so every beam runs all ``--steps`` steps. Modes are alternated
``--repeats`` times (noisy shared machines: compare the medians of one run).

    python bench/kv_cache_modes.py --lm gpt2 --batch 8 32 --repeats 3            # CPU
    python bench/kv_cache_modes.py --device cuda --dtype bf16 --batch 256 1024    # GPU
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generation_paper import cache_mode, seconds  # bench/ is not a package: found via sys.path

log = logging.getLogger("bench.kv_cache_modes")
MODES = ("shared", "per_row", "transformers")


def build_lm(name: str, device: torch.device, dtype: torch.dtype):
    """A randomly initialised LM at a real size: GPT-2 base (the paper's) or SmolLM2-135M's
    Llama shape (the embedded default's: 30 layers, 9 query / 3 key-value heads)."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if name == "gpt2":
        cfg = GPT2Config()
        cfg._attn_implementation = "sdpa"
        lm = GPT2LMHeadModel(cfg)
    else:
        cfg = LlamaConfig(
            vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
            num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
            tie_word_embeddings=True, eos_token_id=2, bos_token_id=1,
        )  # fmt: skip
        cfg._attn_implementation = "sdpa"
        lm = LlamaForCausalLM(cfg)
    return lm.eval().to(device=device, dtype=dtype)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--lm", choices=("gpt2", "smollm2"), default="gpt2")
    ap.add_argument(
        "--dtype",
        choices=("fp32", "bf16"),
        default="fp32",
        help="LM weights and prefixes",
    )
    ap.add_argument("--batch", type=int, nargs="+", default=[8])
    ap.add_argument(
        "--prefix-len",
        type=int,
        default=80,
        help="the paper's 40 audio + 40 text vectors",
    )
    ap.add_argument("--beam-size", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--classes", type=int, default=50, help="log-likelihood candidates (0: skip)")
    ap.add_argument("--candidate-len", type=int, default=4, help="tokens per candidate (with eos)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", help="also write the result as JSON here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    from pengi.inference import beam_search, score_continuations

    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    lm = build_lm(args.lm, device, dtype)
    D, V = lm.config.hidden_size, lm.config.vocab_size
    g = torch.Generator().manual_seed(1)
    cands = [torch.randint(3, V, (args.candidate_len,), generator=g).tolist() for _ in range(args.classes)]
    result = {
        "command": "python bench/kv_cache_modes.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        },
        "lm": args.lm,
        "dtype": args.dtype,
        "runs": [],
    }
    for B in args.batch:
        prefix = (torch.randn(B, args.prefix_len, D, generator=g) * 0.5).to(device=device, dtype=dtype)

        def beam(prefix=prefix):
            return beam_search(
                lm,
                prefix,
                beam_size=args.beam_size,
                max_new_tokens=args.steps,
                stop_token_ids=-1,
            )

        def loglik(prefix=prefix):
            return score_continuations(lm, prefix, cands)

        secs: dict[str, dict[str, list[float]]] = {m: {"beam": [], "loglik": []} for m in MODES}
        toks = {}
        for m in MODES:  # warm-up at this shape, and the tokens each mode decodes
            with cache_mode(m):
                toks[m] = beam().tokens
                if args.classes:
                    loglik()
        same = all(torch.equal(toks[m], toks["transformers"]) for m in MODES)
        for r in range(args.repeats):
            for m in MODES if r % 2 == 0 else MODES[::-1]:
                with cache_mode(m):
                    secs[m]["beam"].append(seconds(beam))
                    if args.classes:
                        secs[m]["loglik"].append(seconds(loglik))
            log.info(
                "batch %d repeat %d: %s",
                B,
                r,
                {m: round(secs[m]["beam"][-1], 3) for m in MODES},
            )
        run = {"batch": B, "same_tokens_in_every_mode": same}
        for m in MODES:
            beam_s = statistics.median(secs[m]["beam"])
            run[m] = {
                "beam_s_per_batch": [round(x, 3) for x in secs[m]["beam"]],
                "beam_clips_per_s": round(B / beam_s, 2),
            }
            if args.classes:
                ll_s = statistics.median(secs[m]["loglik"])
                run[m]["loglik_s_per_batch"] = [round(x, 3) for x in secs[m]["loglik"]]
                run[m]["loglik_clips_per_s"] = round(B / ll_s, 2)
        for m in ("per_row", "transformers"):
            run[f"beam_shared_speedup_vs_{m}"] = round(
                run["shared"]["beam_clips_per_s"] / run[m]["beam_clips_per_s"], 3
            )
            if args.classes:
                run[f"loglik_shared_speedup_vs_{m}"] = round(
                    run["shared"]["loglik_clips_per_s"] / run[m]["loglik_clips_per_s"],
                    3,
                )
        if device.type == "cuda":
            run["max_memory_GiB"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            torch.cuda.reset_peak_memory_stats(device)
        result["runs"].append(run)
        log.info("batch %d: %s", B, json.dumps(run))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
