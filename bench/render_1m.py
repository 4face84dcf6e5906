"""Benchmark: the ``render`` stage on 1M synthetic manifest rows (target: <= 10 s).

The rows (``bench/synthetic_manifests.py``) exercise every template: captions (5 per clip),
multi-label events, AQA, MELD-style emotion + sentiment attrs, NSynth notes, FMA genres and
auxiliary metadata; plus ESC-50/US8K-sized evaluation manifests whose Freesound ids overlap the
training rows, so leakage control has real work to do.

Timed, after the synthetic manifests are written (not timed):
1. ``render_triples`` on the manifest frames already in memory (the templates alone);
2. ``render_corpus`` + ``write_triples``: reading every manifest, leakage control against the
   evaluation sets, the templates and writing ``train.parquet``/``val.parquet`` — the whole stage.

Run: ``.venv/bin/python bench/render_1m.py [--rows 1000000] [--repeat 3]``; it prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from synthetic_manifests import MIX, write_synthetic

from pengi.config import DataConfig, RenderConfig, SourceConfig
from pengi.templates import load_manifests, render_corpus, render_triples, write_triples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mdir = Path(tmp) / "manifests"
        counts = write_synthetic(mdir, args.rows)
        sources = tuple(SourceConfig(name=s, root="-", role="train" if s in MIX else "eval") for s in counts)
        data = DataConfig(sources=sources, exclude_leakage=True)
        render = RenderConfig(source_weights={"clotho": 2.0, "wavcaps": 0.5})
        train = load_manifests(mdir, [s for s in counts if s in MIX])
        n_train = sum(df.height for df in train.values())
        t_templates, t_stage = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            res = render_triples(train, render)
            t_templates.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            res2, leak = render_corpus(mdir, data, render)
            write_triples(res2, Path(tmp) / "triples")
            t_stage.append(time.perf_counter() - t0)
        triples = sum(df.height for df in res2.splits.values())
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
        print(f"training manifest rows: {n_train:,}; eval rows: {sum(counts.values()) - n_train:,}")
        print(f"triples written: {triples:,} (train {res2.report['triples']['train']:,}, val {res2.report['triples']['val']:,}); "
              f"leaking rows excluded: {leak.excluded.height:,}")  # fmt: skip
        print("| step | best (s) | all runs (s) |\n|---|---|---|")
        print(f"| render_triples (templates, in memory) | {min(t_templates):.2f} | {', '.join(f'{t:.2f}' for t in t_templates)} |")
        print(f"| render stage (read + leakage + templates + write) | {min(t_stage):.2f} | {', '.join(f'{t:.2f}' for t in t_stage)} |")


if __name__ == "__main__":
    main()
