"""What the CLAP and Pengi stages share: opening the store and the triples for one stage."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from pengi.audio_store import INDEX_NAME, AudioStore
from pengi.config import Config, TrainConfig
from pengi.data import TripleTable, load_triples

log = logging.getLogger(__name__)


@dataclass
class StageData:
    store: AudioStore
    train: TripleTable
    val: TripleTable | None
    clip_samples: int


def open_stage_data(cfg: Config, train_cfg: TrainConfig, triples_dir: str | Path, store_dir: str | Path) -> StageData:
    """Open the audio store and the train/val triples (filtered to ``train_cfg.tasks``).

    Raises:
        ValueError: the store was decoded at another sample rate than ``audio.sample_rate``,
            or no training triple is left.
    """
    store = AudioStore(store_dir)
    if store.sample_rate != cfg.audio.sample_rate:
        raise ValueError(
            f"{store_dir} holds audio at {store.sample_rate} Hz but audio.sample_rate is {cfg.audio.sample_rate}: "
            "rebuild the store with the audio-store stage"
        )
    triples_dir = Path(triples_dir)
    train = load_triples(triples_dir / "train.parquet", store, train_cfg.tasks)
    val_path = triples_dir / "val.parquet"
    val = load_triples(val_path, store, train_cfg.tasks) if val_path.exists() else None
    if len(train) == 0:
        raise ValueError(f"no training triples left in {triples_dir} (excluded: {train.excluded})")
    return StageData(store, train, val, int(round(cfg.audio.sample_rate * cfg.audio.clip_seconds)))


def data_fingerprint(
    triples_dir: str | Path, store_dir: str | Path, init_model: str | Path | None = None
) -> dict[str, str]:
    """MD5s of the triples, the store index and (Pengi) the CLAP weights it starts from: stored
    with checkpoints so that a run never resumes onto different data or a different starting
    model (DVC persists the checkpoints across a changed input)."""
    out = {}
    paths = [
        ("train_triples", Path(triples_dir) / "train.parquet"),
        ("val_triples", Path(triples_dir) / "val.parquet"),
        ("audio_index", Path(store_dir) / INDEX_NAME),
    ]
    if init_model is not None:
        paths += [(f"init_model_{p.stem}", p) for p in sorted(Path(init_model).glob("*.safetensors"))]
    for name, path in paths:
        if path.exists():
            out[f"_data.{name}_md5"] = hashlib.md5(path.read_bytes()).hexdigest()
    return out


def write_data_report(out_dir: str | Path, data: dict[str, TripleTable | None]) -> None:
    """``data_report.json``: rows used and rows excluded (with reasons) per split."""
    report = {
        split: {"rows": len(t), "excluded": t.excluded} for split, t in data.items() if t is not None
    }
    path = Path(out_dir) / "data_report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
