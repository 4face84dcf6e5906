"""Time the ``corpus`` stage for both sizes: wall time, clips, MB.

    .venv/bin/python bench/corpus_time.py --out-root /tmp/corpus_bench --md bench/corpus_time.md

Runs ``python -m pengi corpus`` exactly as the pipeline does, with a throw-away params file per
size, and writes a Markdown table with the machine's load average (the machine is shared, so
wall time is an upper bound). CPU time is not reported: the render workers are children of
multiprocessing's fork server, which ``getrusage(RUSAGE_CHILDREN)`` does not see.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _disk_mb(root: Path) -> float:
    seen, total = set(), 0
    for p in root.rglob("*"):
        if p.is_file():
            st = p.stat()
            if (st.st_dev, st.st_ino) not in seen:  # ClothoAQA audio are hard links
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total / 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-root", default="/tmp/corpus_bench")
    ap.add_argument("--md", default="bench/corpus_time.md")
    ap.add_argument("--sizes", nargs="+", default=["tiny", "default"])
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    rows = []
    for size in args.sizes:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(f"corpus:\n  size: {size}\n  seed: 0\n  workers: {args.workers}\n")
            params = f.name
        out = Path(args.out_root) / size
        cmd = [sys.executable, "-m", "pengi", "corpus", "--params", params, "--out", str(out)]
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        wall = time.perf_counter() - t0
        summary = json.loads((out / "SUMMARY.json").read_text())
        rows.append((size, summary["clips"], wall, _disk_mb(out), load0, os.getloadavg()[0]))
        os.unlink(params)
        print(f"{size}: {summary['clips']} clips, wall {wall:.1f} s, {rows[-1][3]:.0f} MB")
    lines = [
        "# Corpus generation time",
        "",
        f"Command: `.venv/bin/python bench/corpus_time.py --out-root {args.out_root} --md {args.md}` "
        f"(runs `python -m pengi corpus --params <size> --out <dir>` with `workers: {args.workers}`)  ",
        f"Machine: {platform.node()}, {os.cpu_count()} CPUs (shared with other jobs), Python {platform.python_version()}  ",
        f"Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        "| size | clips | wall (s) | disk (MB) | load avg before / after |",
        "|---|---:|---:|---:|---|",
    ]
    lines += [f"| {s} | {n} | {w:.1f} | {mb:.0f} | {l0:.1f} / {l1:.1f} |" for s, n, w, mb, l0, l1 in rows]
    lines += ["", "Budget (issue): default ≤ 3 minutes on 2 cores; tiny well under 30 s.", ""]
    Path(args.md).write_text("\n".join(lines), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
