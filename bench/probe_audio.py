"""Benchmark: audio probing throughput (files per second per core) of ``pengi.audio.probe``.

Generates N FLAC and N WAV files (mono, 44.1 kHz, 16-bit, ``--seconds`` long) in a temp
folder, then probes each set single-threaded in every verify mode (``header``, ``tail``,
``full``), reporting files/s of wall time and of process CPU time (= per core). The
requirement in issue #3 is >= 100 FLAC/WAV files per second per core for ingest's default
mode (``tail``).

    python bench/probe_audio.py --files 250 --seconds 5 [--json out.json]

It also times the whole ``ingest_source`` (audiofolder adapter + probing with one worker +
Parquet manifest) over the same files, which is what ``python -m pengi ingest`` costs per file.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from pengi.audio import probe
from pengi.config import DataConfig, SourceConfig
from pengi.ingest import ingest_source


def make_files(folder: Path, n: int, seconds: float, sr: int) -> dict[str, list[str]]:
    rng = np.random.default_rng(0)
    out: dict[str, list[str]] = {"flac": [], "wav": []}
    for i in range(n):
        x = (rng.normal(0, 0.1, int(seconds * sr))).astype(np.float32)  # (T,)
        for ext in out:
            p = folder / f"{ext}_{i:04d}.{ext}"
            sf.write(p, x, sr, subtype="PCM_16")
            out[ext].append(str(p))
    return out


def measure(paths: list[str], verify: str, repeats: int) -> dict[str, float]:
    best_wall, best_cpu = float("inf"), float("inf")
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        for p in paths:
            probe(p, verify=verify)
        best_wall = min(best_wall, time.perf_counter() - w0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return {"files_per_s_wall": len(paths) / best_wall, "files_per_s_cpu": len(paths) / max(best_cpu, 1e-9)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=250, help="files per format")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--sample-rate", type=int, default=44100)
    ap.add_argument("--repeats", type=int, default=3, help="best of N passes (page cache warm after the first)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pengi-bench-") as tmp:
        files = make_files(Path(tmp), args.files, args.seconds, args.sample_rate)
        results = {}
        for ext, paths in files.items():
            for verify in ("header", "tail", "full"):
                r = measure(paths, verify, args.repeats)
                results[f"{ext}/{verify}"] = r
                print(f"{ext:5s} verify={verify:6s} {r['files_per_s_wall']:8.0f} files/s wall  {r['files_per_s_cpu']:8.0f} files/s per core (CPU)")
        names = [Path(p).name for ps in files.values() for p in ps]
        (Path(tmp) / "metadata.csv").write_text("file_name,caption\n" + "".join(f"{n},noise\n" for n in names))
        w0, c0 = time.perf_counter(), time.process_time()
        report = ingest_source(
            SourceConfig(name="bench", root=tmp, adapter="audiofolder"),
            DataConfig(probe_workers=1, verify_audio="tail"),
            Path(tmp) / "out" / "bench.parquet",
        )
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        assert report.kept == len(names), report.reasons
        results["ingest/tail"] = {"files_per_s_wall": len(names) / wall, "files_per_s_cpu": len(names) / cpu}
        print(f"ingest_source (audiofolder, 1 worker, tail) {len(names) / wall:8.0f} files/s wall  {len(names) / cpu:8.0f} files/s per core (CPU)")
    meta = {"files_per_format": args.files, "seconds": args.seconds, "sample_rate": args.sample_rate, "cpus": os.cpu_count()}
    if args.json:
        Path(args.json).write_text(json.dumps({"config": meta, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
