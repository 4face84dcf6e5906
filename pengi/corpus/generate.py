"""Orchestration: plan every clip, render in a process pool, write the native layouts.

``generate_corpus(cfg, out_dir)`` is the one entry point (the ``corpus`` stage calls it). The
corpus is written into ``<out>.partial`` and moved into place at the end, so a killed run never
leaves a half-written corpus that looks complete; a rerun with the same config reproduces it.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import platform
import shutil
import subprocess
import time
from collections import Counter
from importlib import metadata
from pathlib import Path

import numpy as np
import soundfile as sf

from pengi.config import CorpusConfig
from pengi.corpus import eventclips, layouts, mixtures, music, notes, scenes, speech
from pengi.corpus.common import ClipSpec, peak_limit, rms_db

log = logging.getLogger(__name__)

# clips per task and size (about 3,100 and 310)
SIZES: dict[str, dict[str, int]] = {
    "default": {"notes": 800, "music": 400, "emotion": 400, "spoken": 200, "events": 550, "scenes": 350, "mixtures": 400},
    "tiny": {"notes": 80, "music": 40, "emotion": 40, "spoken": 20, "events": 55, "scenes": 35, "mixtures": 40},
}
TASK_DATASET = {"notes": "nsynth", "music": "gtzan_genres", "emotion": "crema_d", "spoken": "audiofolder",
                "events": "esc50", "scenes": "tut2017", "mixtures": "clotho"}
OWNED = ["nsynth", "gtzan_genres", "crema_d", "audiofolder", "esc50", "tut2017", "clotho", "clotho_aqa",
         "corpus.jsonl", "SUMMARY.json"]
SILENCE_PEAK = 1e-3


def plan_corpus(cfg: CorpusConfig) -> list[ClipSpec]:
    """Every clip's identity, split and held-out factors (cheap; no audio)."""
    counts = SIZES[cfg.size]
    return (notes.plan(counts["notes"], cfg.seed, cfg.sample_rate) + music.plan(counts["music"], cfg.seed)
            + speech.plan_emotion(counts["emotion"], cfg.seed) + speech.plan_spoken(counts["spoken"], cfg.seed)
            + eventclips.plan(counts["events"], cfg.seed) + scenes.plan(counts["scenes"], cfg.seed, cfg.clip_seconds)
            + mixtures.plan(counts["mixtures"], cfg.seed))


def _native(spec: ClipSpec) -> dict:
    f = spec.factors
    if spec.task == "notes":
        return {"note": 100000 + spec.index, "instrument": notes.instrument_id(f["soundfont"], f["program"])}
    if spec.task == "events":
        return {k: f[k] for k in ("fold", "target", "src_file", "take", "esc10")}
    if spec.task == "scenes":
        return {"fold": f["fold"], "recording": f["recording"]}
    if spec.task == "mixtures":
        return {"sound_id": 700000 + spec.index, "clotho_split": f["clotho_split"]}
    if spec.task == "emotion":
        return {"actor": f["actor"]["actor"], "sentence": f["sentence"], "emotion": f["emotion"], "level": f["level"]}
    if spec.task == "spoken":
        return {"speaker": f["actor"]["actor"]}
    return {"genre": f["genre"]}


def render_clip(spec: ClipSpec, cfg: CorpusConfig, out_dir: str) -> dict:
    """Render one clip, write its FLAC, return its corpus.jsonl record (no audio)."""
    sr, sec, seed = cfg.sample_rate, cfg.clip_seconds, cfg.seed
    rel, clip_id = spec.rel_path, spec.clip_id
    if spec.task == "notes":
        clip = notes.render(spec, seed, sr, sec)
    elif spec.task == "music":
        clip = music.render(spec, seed, sr, sec)
    elif spec.task == "emotion":
        clip = speech.render_emotion(spec, seed, sr, sec)
    elif spec.task == "spoken":
        clip = speech.render_spoken(spec, seed, sr, sec)
    elif spec.task == "events":
        clip = eventclips.render(spec, seed, sr, sec)
    elif spec.task == "scenes":
        clip = scenes.render(spec, seed, sr, sec)
    else:
        clip = mixtures.render(spec, seed, sr, sec)
    n = int(round(sec * sr))
    x = peak_limit(np.asarray(clip.audio, dtype=np.float32)[:n])
    if len(x) < n:
        x = np.pad(x, (0, n - len(x)))
    peak = float(np.max(np.abs(x)))
    if peak < SILENCE_PEAK:
        raise RuntimeError(f"{spec.task} clip {spec.index} ({clip_id}) is silent (peak {peak:.2e})")
    path = Path(out_dir) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, sr, format="FLAC", subtype="PCM_16")
    return {
        "clip_id": clip_id, "task": spec.task, "dataset": TASK_DATASET[spec.task], "split": spec.split,
        "path": rel, "duration_s": n / sr, "sample_rate": sr, "channels": 1, "index": spec.index,
        "native": _native(spec), "labels": clip.labels, "captions": clip.captions,
        "qa": [list(p) for p in clip.qa], "params": clip.params, "sources": clip.sources,
        "peak": round(peak, 5), "rms_db": round(rms_db(x), 2),
    }


def _work(args: tuple) -> dict:
    spec, cfg, out_dir = args
    return render_clip(spec, cfg, out_dir)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("numpy", "scipy", "soundfile", "soxr", "pyfluidsynth"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "missing"
    for pkg in ("fluidsynth", "libfluidsynth3", "espeak-ng", "flite", "fluid-soundfont-gm", "timgm6mb-soundfont",
                "musescore-general-soundfont-small", "ufoai-sound"):
        try:
            res = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True, timeout=10)
            out[f"deb:{pkg}"] = res.stdout.strip() or "missing"
        except (OSError, subprocess.SubprocessError):
            out[f"deb:{pkg}"] = "unknown"
    return out


def generate_corpus(cfg: CorpusConfig, out_dir: str | Path) -> dict:
    """Generate the corpus of ``cfg.size`` into ``out_dir``; returns the summary.

    Raises:
        RuntimeError: a clip came out silent or two clips share a file name.
        FileNotFoundError: a Debian package with sources (soundfonts, ufoai-sound) is missing.
    """
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    specs = plan_corpus(cfg)
    log.info("corpus %s: %d clips planned, %d workers", cfg.size, len(specs), cfg.workers)
    jobs = [(s, cfg, str(tmp)) for s in specs]
    if cfg.workers <= 1:
        records = [_work(j) for j in jobs]
    else:
        # forkserver, not fork: the caller may hold threads (a Prefect worker) or a FluidSynth
        # instance; workers fork from a clean server that has imported the renderers once and
        # load the soundfonts once each. Every clip is seeded by (seed, task, index), so the
        # assignment of clips to workers cannot change the result.
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["pengi.corpus.generate"])
        with ctx.Pool(cfg.workers) as pool:
            records = list(pool.imap(_work, jobs, chunksize=8))
    paths = Counter(r["path"] for r in records)
    dup = [p for p, c in paths.items() if c > 1]
    if dup:
        raise RuntimeError(f"{len(dup)} clips share a file name, e.g. {dup[0]}")
    by_task: dict[str, list[dict]] = {t: [r for r in records if r["task"] == t] for t in SIZES[cfg.size]}
    layouts.write_nsynth(tmp, by_task["notes"])
    layouts.write_gtzan(tmp, by_task["music"])
    layouts.write_crema_d(tmp, by_task["emotion"], speech.voices(cfg.seed))
    layouts.write_audiofolder(tmp, by_task["spoken"])
    layouts.write_esc50(tmp, by_task["events"])
    layouts.write_tut2017(tmp, by_task["scenes"])
    layouts.write_clotho(tmp, by_task["mixtures"], cfg.sample_rate)
    for r in by_task["mixtures"]:
        r["extra_paths"] = [f"clotho_aqa/audio_files/{Path(r['path']).name}"]
    versions = _versions()
    with open(tmp / "corpus.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps({**r, "seed": cfg.seed, "size": cfg.size}, sort_keys=True) + "\n")
    summary = {
        "size": cfg.size, "seed": cfg.seed, "sample_rate": cfg.sample_rate, "clip_seconds": cfg.clip_seconds,
        "clips": len(records),
        "per_task_split": {t: dict(sorted(Counter(r["split"] for r in rs).items())) for t, rs in by_task.items()},
        "per_dataset": dict(sorted(Counter(r["dataset"] for r in records).items())),
        "real_recordings": sum(1 for r in records if any(s.get("kind") == "recording" for s in r["sources"])),
        "versions": versions,
    }
    (tmp / "SUMMARY.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    out.mkdir(parents=True, exist_ok=True)
    for name in OWNED:  # replace only what this generator owns inside out_dir
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(tmp / name, target)
    shutil.rmtree(tmp)
    log.info("corpus %s: %d clips in %.1f s -> %s", cfg.size, len(records), time.perf_counter() - t0, out)
    return summary
