"""Wall time of the evaluation harness (``pengi.evaluation.harness.evaluate``) on a synthetic set.

Builds a random Pengi + CLAP (tiny HTSAT; ``--lm tiny``: a 1-layer random Llama, ``--lm smollm2``:
the frozen SmolLM2-135M and MiniLM of the embedded default), writes synthetic evaluation sets of
every task kind (``--clips`` generated tones per set; captioning, AQA, multi-class with folds,
multi-label mAP and F1, retrieval), then times one full ``evaluate`` call (Java caption metrics,
probes, reports included) and each task.

    .venv/bin/python bench/evaluate_harness.py --lm tiny --clips 8
    .venv/bin/python bench/evaluate_harness.py --lm smollm2 --clips 32 --out bench/RESULTS_evaluate.md

``--eval DIR`` evaluates existing sets instead (e.g. a pipeline's ``data/eval``), with
``--triples`` / ``--manifests`` for the baselines and probes.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import soundfile as sf
import torch

SR = 16000
TINY = {
    "audio": {"sample_rate": SR, "clip_seconds": 1.0, "n_fft": 512, "hop_length": 160, "n_mels": 32,
              "f_min": 50.0, "f_max": 8000.0},
    "model": {
        "htsat": {"spec_size": 64, "patch_size": 4, "patch_stride": 4, "window_size": 4, "embed_dim": 16,
                  "depths": [1, 1], "num_heads": [1, 2], "num_classes": 0},
        "text": {"kind": "bert_mean", "name": "minilm", "max_length": 16,
                 "hf_config": {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1,
                               "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 30522}},
        "lm": {"name": "smollm2", "hf_config": {"model_type": "llama", "vocab_size": 49152, "hidden_size": 32,
               "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
               "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2}},
        "mapper": {"prefix_length": 8, "clip_length": 8, "num_layers": 1, "num_heads": 2},
        "d_proj": 64,
    },
    "evaluate": {"batch_size": 8, "beam_size": 3, "max_new_tokens": 12},
    "tracking": {"enabled": False},
}  # fmt: skip
ANIMALS = ["dog", "cat", "rain", "bird"]


def config(lm: str):
    from pengi.config import from_dict

    d = copy.deepcopy(TINY)
    if lm == "smollm2":
        d["model"]["lm"] = {"name": "smollm2"}
        d["model"]["text"] = {"kind": "bert_mean", "name": "minilm", "max_length": 16}
    return from_dict(d)


def write_sets(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    wav = root / "wav"
    wav.mkdir(parents=True)
    uris = []
    for i in range(n):
        t = np.arange(int(SR * 1.5)) / SR
        sf.write(wav / f"c{i}.wav", (0.3 * np.sin(2 * np.pi * (150 + 40 * i) * t)).astype(np.float32), SR)
        uris.append(str(wav / f"c{i}.wav"))
    ev = root / "eval"
    ev.mkdir()

    def write(name, kind, metric, prompt, refs, classes=(), folds=None, prompts=None):
        pl.DataFrame(
            {"item_id": [f"i{k}" for k in range(n)], "clip_id": [f"c{k}" for k in range(n)], "audio_uri": uris,
             "source": [name] * n, "task": [name] * n, "metric": [metric] * n, "prompt": prompts or [prompt] * n,
             "references": refs, "fold": folds or [None] * n}, schema_overrides={"fold": pl.String},
        ).write_parquet(ev / f"{name}.parquet")  # fmt: skip
        meta = {"task": name, "kind": kind, "metric": metric, "prompt": prompt, "classes": list(classes)}
        (ev / f"{name}.json").write_text(json.dumps(meta))

    labels = [[ANIMALS[int(i)]] for i in rng.integers(0, 4, n)]
    caps = [[f"a {lab[0]} makes a sound", f"{lab[0]} noise"] for lab in labels]
    write("esc50", "multiclass", "accuracy", "this is a sound of", labels, sorted(ANIMALS),
          folds=[str(i % 4) for i in range(n)])  # fmt: skip
    write("fsd50k", "multilabel", "map", "this is a sound of", labels, sorted(ANIMALS))
    write("dcase2017_task4", "multilabel", "f1", "this is a sound of", labels, sorted(ANIMALS))
    write("clotho_captioning", "captioning", "spider", "generate audio caption", caps)
    write("clotho_retrieval", "retrieval", "recall@1", "generate audio caption", caps)
    write("clotho_aqa", "qa", "accuracy", "question: {question}", [["yes"] if i % 2 else ["no"] for i in range(n)],
          prompts=[f"question: is there a {lab[0]}?" for lab in labels])  # fmt: skip
    tri = root / "triples"
    tri.mkdir()
    pl.DataFrame({"triple_id": ["t0", "t1"], "source": ["s", "s"], "clip_id": ["x", "x"], "audio_uri": uris[:2],
                  "task": ["captioning", "aqa"], "prompt": ["generate audio caption", "question: is it loud?"],
                  "target": ["a dog makes a sound", "yes"]}).write_parquet(tri / "train.parquet")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lm", choices=("tiny", "smollm2"), default="tiny")
    ap.add_argument("--clips", type=int, default=8, help="items per evaluation set")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", help="append a markdown result block to this file")
    ap.add_argument("--eval", help="existing evaluation sets folder (default: synthetic sets)")
    ap.add_argument("--triples", help="with --eval: triples folder (baselines)")
    ap.add_argument("--manifests", help="with --eval: manifests folder (probe train splits)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from pengi.evaluation.harness import evaluate
    from pengi.models import build_clap, build_pengi

    cfg = config(args.lm)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        t0 = time.perf_counter()
        build_pengi(cfg).save_pretrained(root / "pengi")
        build_clap(cfg).save_pretrained(root / "clap")
        build_s = time.perf_counter() - t0
        if args.eval:
            eval_dir, triples, manifests = Path(args.eval), args.triples, args.manifests
        else:
            write_sets(root, args.clips)
            eval_dir, triples, manifests = root / "eval", root / "triples", None
        t0 = time.perf_counter()
        summary = evaluate(cfg, root / "pengi", eval_dir, root / "report", clap_dir=root / "clap",
                           triples_dir=triples, manifests_dir=manifests)  # fmt: skip
        wall = time.perf_counter() - t0
    per_task = {k: v["seconds"] for k, v in summary["tasks"].items()}
    items = sum(v["items"] for v in summary["tasks"].values())
    what = f"{args.eval} ({len(per_task)} sets, {items} items)" if args.eval else f"{args.clips} items x 6 sets"
    clips_flag = f" --clips {args.clips}"
    extra = f" --eval {args.eval} --triples {args.triples} --manifests {args.manifests}" if args.eval else ""
    ev = cfg.evaluate
    lines = [
        f"## evaluate harness, lm={args.lm}, {what} "
        f"({datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC)", "",
        f"`.venv/bin/python bench/evaluate_harness.py --lm {args.lm} --threads {args.threads}{extra or clips_flag}` "
        f"on {platform.machine()}, {os.cpu_count()} CPUs (shared, loaded), torch threads {args.threads}; "
        f"beam {ev.beam_size}, max_new_tokens {ev.max_new_tokens}, batch {ev.batch_size}, "
        f"method {ev.classification_method}.", "",
        f"- build + save models: {build_s:.1f} s",
        f"- evaluate (load, {len(per_task)} tasks, Java caption metrics, probes, reports): **{wall:.1f} s**",
        "- per task (s): " + ", ".join(f"{k} {v:.1f}" for k, v in per_task.items()), "",
    ]  # fmt: skip
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
