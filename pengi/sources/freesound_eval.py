"""Evaluation sets cut from Freesound uploads: ESC-50, UrbanSound8K, Beijing Opera Percussion.

All three have folds but no train/test split; Pengi uses them zero-shot, so every row is
``split="test"`` and the official fold goes to ``attrs["fold"]`` (linear probes do k-fold CV
over it). Options ``test_folds``/``val_folds`` turn folds into a train/val/test split instead
(the offline corpus: ``test_folds: "5", val_folds: "4"``). Identity: ``freesound:<id>``.

ESC-50 (``meta/esc50.csv`` + ``audio/{fold}-{src_file}-{take}-{target}.wav``):
  labels ``[category]`` (native snake_case, e.g. ``chirping_birds``); attrs ``fold``,
  ``target``, ``take``, ``esc10`` (true/false). A row whose ``target`` maps to another
  category than the other rows of that target is ``unknown_label``.
UrbanSound8K (``metadata/UrbanSound8K.csv`` + ``audio/fold<N>/<slice_file_name>``):
  labels ``[class]``; attrs ``fold``, ``class_id``, ``salience`` (1 foreground, 2 background),
  ``start_s``, ``end_s`` (in the Freesound original).
Beijing Opera (``<instrument>/<fsid>__ajaysm__<instrument>[-n].wav``): labels
  ``[instrument]`` (bangu, daluo, naobo, xiaoluo); attrs ``fold`` = stable hash of the file
  stem into 5 folds (HEAR uses 5-fold CV; its exact assignment is not published with the data).
"""

from __future__ import annotations

import posixpath
import re
from collections import Counter
from collections.abc import Mapping

from pengi import storage
from pengi.sources.base import (
    FOLD_OPTIONS, AudioIndex, MetadataError, SourceRead, fold_split, freesound_key, hash_fold, keys, locate, make_row, quarantine,
    read_csv, register,
)

ESC50_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")


@register("esc50", FOLD_OPTIONS)
def read_esc50(root: str, options: Mapping[str, str]) -> SourceRead:
    meta = storage.join(root, "meta", "esc50.csv")
    records = read_csv(meta, columns=ESC50_COLUMNS)
    index = AudioIndex(root, "audio")
    # target -> category must be a function; the majority category of a target is the truth.
    votes: dict[str, Counter] = {}
    for r in records:
        votes.setdefault(r["target"], Counter())[r["category"]] += 1
    truth = {t: c.most_common(1)[0][0] for t, c in votes.items()}
    rows = []
    for r in records:
        stem = posixpath.splitext(r["filename"])[0]
        row = make_row("esc50", stem, fold_split("esc50", r["fold"], options), "")
        locate(index, f"audio/{r['filename']}", row)
        row["labels"] = [r["category"].strip()]
        row["identity"] = keys(freesound_key(r["src_file"]))
        row["attrs"] = {"fold": r["fold"], "target": r["target"], "take": r["take"], "esc10": r["esc10"].lower()}
        if r.bad_text:
            quarantine(row, "bad_text_encoding")
        if not r["fold"].isdigit() or not r["target"].isdigit():
            raise MetadataError(meta, r.line, 2 if not r["fold"].isdigit() else 3, "fold and target must be integers")
        if stem != f"{r['fold']}-{r['src_file']}-{r['take']}-{r['target']}":
            quarantine(row, "inconsistent_metadata:filename")
        if truth[r["target"]] != r["category"]:
            quarantine(row, f"unknown_label:{r['category']}")
        rows.append(row)
    return SourceRead(rows, frozenset(truth.values()), [meta])


US8K_COLUMNS = ("slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class")
US8K_CLASSES = (
    "air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling",
    "engine_idling", "gun_shot", "jackhammer", "siren", "street_music",
)


@register("urbansound8k", FOLD_OPTIONS)
def read_urbansound8k(root: str, options: Mapping[str, str]) -> SourceRead:
    meta = storage.join(root, "metadata", "UrbanSound8K.csv")
    records = read_csv(meta, columns=US8K_COLUMNS)
    index = AudioIndex(root, "audio")
    rows = []
    for r in records:
        stem = posixpath.splitext(r["slice_file_name"])[0]
        row = make_row("urbansound8k", stem, fold_split("urbansound8k", r["fold"], options), "")
        if not r["fold"].isdigit() or not r["classID"].isdigit():
            raise MetadataError(meta, r.line, 6 if not r["fold"].isdigit() else 7, "fold and classID must be integers")
        locate(index, f"audio/fold{r['fold']}/{r['slice_file_name']}", row)
        row["labels"] = [r["class"].strip()]
        row["identity"] = keys(freesound_key(r["fsID"]))
        row["attrs"] = {
            "fold": r["fold"], "class_id": r["classID"], "salience": r["salience"],
            "start_s": r["start"], "end_s": r["end"],
        }
        cid = int(r["classID"])
        if cid >= len(US8K_CLASSES) or US8K_CLASSES[cid] != r["class"]:
            quarantine(row, f"unknown_label:{r['class']}")
        rows.append(row)
    return SourceRead(rows, frozenset(US8K_CLASSES), [meta])


BEIJING_CLASSES = ("bangu", "daluo", "naobo", "xiaoluo")
_BEIJING = re.compile(r"^(\d+)__([^_]+)__([a-z]+)(?:-\d+)?$")


@register("beijing_opera", FOLD_OPTIONS)
def read_beijing_opera(root: str, options: Mapping[str, str]) -> SourceRead:
    index = AudioIndex(root)
    rows = []
    for rel, audio_uri in index.entries():
        folder = posixpath.basename(posixpath.dirname(rel))
        stem = posixpath.basename(rel)
        fold = str(hash_fold(stem, 5))
        row = make_row("beijing_opera", stem, fold_split("beijing_opera", fold, options), audio_uri)
        row["labels"] = [folder]
        m = _BEIJING.match(stem)
        row["identity"] = keys(freesound_key(m.group(1))) if m else []
        row["attrs"] = {"fold": fold}
        if folder not in BEIJING_CLASSES:
            quarantine(row, f"unknown_label:{folder}")
        elif not m or m.group(3) != folder:
            quarantine(row, "bad_filename")
        rows.append(row)
    return SourceRead(rows, frozenset(BEIJING_CLASSES), [])
