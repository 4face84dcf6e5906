"""Acoustic scenes: TUT Acoustic Scenes 2017 (evaluation), CochlScene and MACS (training).

TUT2017: the root holds ``TUT-acoustic-scenes-2017-development/`` and/or
``TUT-acoustic-scenes-2017-evaluation/``, or is itself one of them (``meta.txt`` at the root;
option ``set`` says which, default: development when ``evaluation_setup/fold1_train.txt``
exists). ``meta.txt`` is TAB-separated without header: ``audio/<file>``, scene label and
(optionally) the recording id. Option ``vocabulary=observed`` accepts scenes outside the 15
official ones (the offline corpus has its own scenes). Development rows are ``split=train`` with ``attrs["fold"]`` =
the official CV fold (1-4) whose ``fold<k>_evaluate.txt`` lists the file; evaluation rows are
``split=test``. labels ``[scene]`` (15 classes; ``cafe/restaurant`` keeps its slash);
attrs ``scene``, ``recording``, ``set``.

CochlScene: ``{Train,Val,Test}/<Class>/<Class>_user<NNNN>_<rec>_<seg>.wav``; labels ``[Class]``
(13 classes); attrs ``scene``, ``user``, ``recording``, ``segment``; official split.

MACS: ``MACS.yaml`` (files -> annotations{annotator_id, sentence, tags}) with audio from TAU
Urban Acoustic Scenes 2019 development (``audio/<filename>`` or anywhere under the root, by
file name). captions = the sentences; labels = the union of annotator tags; attrs ``scene``
(from the TAU file name), ``city``; split by stable hash of the clip id (no official split).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping

import yaml

from pengi import storage
from pengi.manifest import stable_split
from pengi.sources.base import (
    VOCABULARY_OPTION, AudioIndex, MetadataError, SourceRead, clean_text, closed_vocabulary, locate, make_row, quarantine, read_csv, register,
)

TUT_SCENES = (
    "beach", "bus", "cafe/restaurant", "car", "city_center", "forest_path", "grocery_store", "home",
    "library", "metro_station", "office", "park", "residential_area", "train", "tram",
)
TUT_DIRS = {"development": "TUT-acoustic-scenes-2017-development", "evaluation": "TUT-acoustic-scenes-2017-evaluation"}


def _tut_set(root: str, kind: str, rows: list, files: list, vocab: frozenset[str] | None) -> None:
    meta = storage.join(root, "meta.txt")
    records = read_csv(meta, header=False, delimiter="\t", columns=("file", "scene", "recording"), min_fields=2)
    files.append(meta)
    folds: dict[str, str] = {}
    if kind == "development":
        for k in range(1, 5):
            uri = storage.join(root, "evaluation_setup", f"fold{k}_evaluate.txt")
            if storage.exists(uri):
                files.append(uri)
                for r in read_csv(uri, header=False, delimiter="\t", columns=("file", "scene", "recording"), min_fields=1):
                    folds[r["file"].strip()] = str(k)
    index = AudioIndex(root, "audio")
    for r in records:
        rel = r["file"].strip()
        stem = posixpath.splitext(posixpath.basename(rel))[0]
        row = make_row("tut2017", f"{kind}/{stem}", "train" if kind == "development" else "test", "")
        locate(index, rel, row)
        scene = r["scene"].strip()
        recording = r["recording"].strip() or stem.split("_")[0]
        row["labels"] = [scene]
        row["attrs"] = {"scene": scene, "recording": recording, "set": kind}
        if rel in folds:
            row["attrs"]["fold"] = folds[rel]
        if vocab is not None and scene not in vocab:
            quarantine(row, f"unknown_label:{scene}")
        rows.append(row)


@register("tut2017", {"set": "development or evaluation, when the root is one set's folder", "vocabulary": VOCABULARY_OPTION})
def read_tut2017(root: str, options: Mapping[str, str]) -> SourceRead:
    rows: list = []
    files: list[str] = []
    vocab = closed_vocabulary("tut2017", TUT_SCENES, options)
    if storage.exists(storage.join(root, "meta.txt")):
        kind = options.get("set") or (
            "development" if storage.exists(storage.join(root, "evaluation_setup", "fold1_train.txt")) else "evaluation"
        )
        if kind not in TUT_DIRS:
            raise ValueError(f"tut2017: options.set must be development or evaluation, got {kind!r}")
        _tut_set(root, kind, rows, files, vocab)
    else:
        for kind, d in TUT_DIRS.items():
            if storage.exists(storage.join(root, d, "meta.txt")):
                _tut_set(storage.join(root, d), kind, rows, files, vocab)
    if not files:
        raise MetadataError(storage.join(root, "meta.txt"), None, None, "no TUT2017 meta.txt found under the root")
    return SourceRead(rows, vocab, files)


COCHL_SCENES = (
    "Bus", "Cafe", "Car", "CrowdedIndoor", "Elevator", "Kitchen", "Park", "ResidentialArea",
    "Restaurant", "Restroom", "Street", "Subway", "SubwayStation",
)
COCHL_SPLITS = {"Train": "train", "Val": "val", "Test": "test"}
_COCHL = re.compile(r"^([A-Za-z]+)_user(\d+)_([^_]+)_(\d+)$")


@register("cochlscene")
def read_cochlscene(root: str, options: Mapping[str, str]) -> SourceRead:
    index = AudioIndex(root)
    rows = []
    for rel, audio_uri in index.entries():
        parts = rel.split("/")
        if len(parts) < 3 or parts[-3] not in COCHL_SPLITS:
            continue  # not a clip of the official layout (e.g. a stray file at the root)
        native, scene, stem = parts[-3], parts[-2], parts[-1]
        row = make_row("cochlscene", f"{native}/{stem}", COCHL_SPLITS[native], audio_uri)
        row["labels"] = [scene]
        m = _COCHL.match(stem)
        row["attrs"] = {"scene": scene}
        if m:
            row["attrs"].update(user=m.group(2), recording=m.group(3), segment=m.group(4))
        if scene not in COCHL_SCENES:
            quarantine(row, f"unknown_label:{scene}")
        elif not m or m.group(1) != scene:
            quarantine(row, "bad_filename")
        rows.append(row)
    return SourceRead(rows, frozenset(COCHL_SCENES), [])


@register("macs")
def read_macs(root: str, options: Mapping[str, str]) -> SourceRead:
    meta = storage.join(root, "MACS.yaml")
    try:
        data = yaml.safe_load(storage.read_text(meta))
    except FileNotFoundError:
        raise MetadataError(meta, None, None, "metadata file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise MetadataError(meta, mark.line + 1 if mark else None, mark.column + 1 if mark else None, f"invalid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise MetadataError(meta, 1, 1, "expected a mapping with a 'files' list")
    index = AudioIndex(root)
    rows = []
    for i, item in enumerate(data["files"]):
        if not isinstance(item, dict) or "filename" not in item or not isinstance(item.get("annotations"), list):
            raise MetadataError(meta, None, None, f"files[{i}]: expected filename and an annotations list")
        name = str(item["filename"])
        stem = posixpath.splitext(name)[0]
        row = make_row("macs", stem, stable_split(stem), "")
        found = index.find_name(name)
        if found:
            row["audio_uri"] = found[0]
        else:
            locate(index, f"audio/{name}", row)
        caps, tags = [], []
        for a in item["annotations"]:
            caps.append(clean_text(str(a.get("sentence", "") or "")))
            for t in a.get("tags") or []:
                if str(t) not in tags:
                    tags.append(str(t))
        row["captions"] = caps
        row["labels"] = tags
        scene, _, rest = stem.partition("-")
        row["attrs"] = {"scene": scene, "city": rest.split("-")[0] if rest else ""}
        rows.append(row)
    return SourceRead(rows, None, [meta])
