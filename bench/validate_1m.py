"""Benchmark: the ``validate`` stage (Great Expectations gate) on 1M synthetic manifest rows (target: <= 30 s).

Uses the manifests of ``bench/synthetic_manifests.py`` (every template's columns filled,
1% quarantined rows, ESC-50/US8K-sized evaluation manifests) and times
``validate_manifests`` end to end: reading the manifests, the polars reductions, the pandas
conversion, every suite's checkpoint and the Data Docs rendering.

Run: ``.venv/bin/python bench/validate_1m.py [--rows 1000000] [--repeat 2]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from synthetic_manifests import MIX, write_synthetic

from pengi.config import DataConfig, SourceConfig
from pengi.validation import validate_manifests


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mdir = Path(tmp) / "manifests"
        counts = write_synthetic(mdir, args.rows)
        sources = tuple(SourceConfig(name=s, root="-", role="train" if s in MIX else "eval") for s in counts)
        cfg = DataConfig(sources=sources, max_quarantine_rate=0.05)
        times = []
        for i in range(args.repeat):
            t0 = time.perf_counter()
            report = validate_manifests(mdir, cfg, Path(tmp) / f"docs{i}")
            times.append(time.perf_counter() - t0)
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
        print(f"manifest rows validated: {sum(counts.values()):,} in {len(counts)} manifests; suites: {len(report['suites'])}; "
              f"passed: {report['passed']} ({len(report['failed_expectations'])} failed expectations)")  # fmt: skip
        print("| step | best (s) | all runs (s) |\n|---|---|---|")
        print(f"| validate_manifests (read + suites + Data Docs) | {min(times):.2f} | {', '.join(f'{t:.2f}' for t in times)} |")


if __name__ == "__main__":
    main()
