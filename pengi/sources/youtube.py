"""YouTube-segment sets: AudioSet, AudioCaps, DCASE 2017 Task 4.

Audio is not distributed with any of them; community downloads name a segment's file
``Y<ytid>.<ext>`` (PANNs/WavCaps), ``<ytid>_<start>.<ext>`` (AST) or
``<ytid>_<start>_<end>.<ext>`` (DCASE 2017). Adapters look for each of these names anywhere
under the root (any audio extension); a segment with none is quarantined ``missing_audio``
(typically 10% of YouTube videos are gone). Identity: ``youtube:<ytid>@<start_s as int>``.

AudioSet (``{balanced_train,unbalanced_train,eval}_segments.csv`` + ``class_labels_indices.csv``):
  3 comment lines (``# ``; an id mangled to ``#NAME?`` is a row, quarantined ``bad_id``) and
  ``", "`` separators; labels = display names of ``positive_labels`` MIDs
  (a MID outside the 527 classes is ``unknown_label``); attrs ``mids``, ``subset``,
  ``start_s``, ``end_s``; clip_id ``<ytid>_<start int>``; balanced/unbalanced -> train,
  eval -> test. Option ``segments``: comma list of the files to read (default: all present).
AudioCaps (``[dataset/]{train,val,test}.csv``: ``audiocap_id,youtube_id,start_time,caption``):
  rows grouped by (youtube_id, start_time) into one clip with all its captions; attrs
  ``audiocap_ids``; official split.
DCASE 2017 Task 4 (``groundtruth_release/groundtruth_weak_label_{training,testing,evaluation}_set.csv``,
  TAB-separated, one line per (clip, label); falling back to the ``{training,testing}_set.csv``
  download lists, whose MIDs are mapped through ``sound_event_list_17_classes.txt``):
  labels = the clip's classes among the 17; training -> train, testing -> val,
  evaluation -> test; attrs ``start_s``, ``end_s``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping

from pengi import storage
from pengi.sources.base import (
    AudioIndex, MetadataError, SourceRead, clean_text, keys, make_row, quarantine, read_csv, read_rows,
    register, youtube_key,
)


def _fmt_start(start: str) -> str:
    return str(int(float(start)))


def find_segment(index: AudioIndex, ytid: str, start: str, end: str | None = None, under: str | None = None) -> str | None:
    """The audio file of a YouTube segment under any community naming convention."""
    s = float(start)
    names = [f"Y{ytid}", f"{ytid}_{int(s)}", f"{ytid}_{s:.3f}", f"Y{ytid}_{int(s)}", f"{ytid}_{int(s * 1000)}"]
    if end is not None:
        e = float(end)
        names = [f"{ytid}_{s:.3f}_{e:.3f}", f"Y{ytid}_{s:.3f}_{e:.3f}", f"{ytid}_{int(s)}_{int(e)}"] + names
    names.append(ytid)
    for n in names:
        hits = index.find_name(n)
        if under:
            hits = [h for h in hits if f"/{under}/" in h.replace("\\", "/")] or hits
        if hits:
            return hits[0]
    return None


def _place(index: AudioIndex, row: dict, uri: str | None, expected: str) -> None:
    if uri is None:
        row["audio_uri"] = storage.join(index.root, expected)
        quarantine(row, "missing_audio")
    else:
        row["audio_uri"] = uri


AUDIOSET_SEGMENTS = {"balanced_train": "train", "unbalanced_train": "train", "eval": "test"}


@register("audioset", {"segments": "comma list of balanced_train, unbalanced_train, eval (default: every file present)"})
def read_audioset(root: str, options: Mapping[str, str]) -> SourceRead:
    wanted = [s.strip() for s in options.get("segments", ",".join(AUDIOSET_SEGMENTS)).split(",") if s.strip()]
    for s in wanted:
        if s not in AUDIOSET_SEGMENTS:
            raise ValueError(f"audioset: unknown segments file {s!r} (expected {list(AUDIOSET_SEGMENTS)})")
    cls_uri = storage.join(root, "class_labels_indices.csv")
    classes = {r["mid"]: r["display_name"] for r in read_csv(cls_uri, columns=("index", "mid", "display_name"))}
    files = [cls_uri]
    index = AudioIndex(root)
    rows = []
    for subset in wanted:
        uri = storage.join(root, f"{subset}_segments.csv")
        if not storage.exists(uri):
            continue
        files.append(uri)
        records = read_csv(
            uri, header=False, comment="# ", skipinitialspace=True,
            columns=("YTID", "start_seconds", "end_seconds", "positive_labels"),
        )
        for r in records:
            ytid, start, end = r["YTID"].strip(), r["start_seconds"], r["end_seconds"]
            try:
                s, e = float(start), float(end)
            except ValueError:
                raise MetadataError(uri, r.line, 2, f"start/end must be numbers, got {start!r}, {end!r}") from None
            row = make_row("audioset", f"{ytid}_{int(s)}", AUDIOSET_SEGMENTS[subset], "")
            mids = [m.strip() for m in r["positive_labels"].split(",") if m.strip()]
            row["labels"] = [classes.get(m, m) for m in mids]
            row["attrs"] = {"mids": ",".join(mids), "subset": subset, "start_s": f"{s:.3f}", "end_s": f"{e:.3f}"}
            key = youtube_key(ytid, s)
            row["identity"] = keys(key)
            if key is None:  # e.g. '#NAME?' left by a spreadsheet round-trip
                quarantine(row, f"bad_id:{ytid}")
            else:
                _place(index, row, find_segment(index, ytid, start, end), f"Y{ytid}.wav")
            unknown = [m for m in mids if m not in classes]
            if unknown:
                quarantine(row, f"unknown_label:{unknown[0]}")
            rows.append(row)
    if len(files) == 1:
        raise MetadataError(storage.join(root, "eval_segments.csv"), None, None, "no AudioSet segments CSV found under the root")
    return SourceRead(rows, frozenset(classes.values()), files)


AUDIOCAPS_COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")


@register("audiocaps")
def read_audiocaps(root: str, options: Mapping[str, str]) -> SourceRead:
    base = storage.join(root, "dataset") if storage.exists(storage.join(root, "dataset", "val.csv")) else root
    index = AudioIndex(root)
    rows, files = [], []
    for split in ("train", "val", "test"):
        uri = storage.join(base, f"{split}.csv")
        if not storage.exists(uri):
            continue
        files.append(uri)
        clips: dict[tuple[str, str], dict] = {}
        for r in read_csv(uri, columns=AUDIOCAPS_COLUMNS):
            ytid, start = r["youtube_id"].strip(), r["start_time"].strip()
            if not start.lstrip("-").replace(".", "", 1).isdigit():
                raise MetadataError(uri, r.line, 3, f"start_time must be a number, got {start!r}")
            k = (ytid, _fmt_start(start))
            row = clips.get(k)
            if row is None:
                row = make_row("audiocaps", f"{ytid}_{k[1]}", split, "")
                row["identity"] = keys(youtube_key(ytid, start))
                row["attrs"] = {"audiocap_ids": ""}
                if not row["identity"]:
                    quarantine(row, f"bad_id:{ytid}")
                else:
                    _place(index, row, find_segment(index, ytid, start, under=split), f"{split}/Y{ytid}.wav")
                clips[k] = row
            row["captions"].append(clean_text(r["caption"]))
            row["attrs"]["audiocap_ids"] = ",".join(filter(None, [row["attrs"]["audiocap_ids"], r["audiocap_id"]]))
            if r.bad_text:
                quarantine(row, "bad_text_encoding")
        rows.extend(clips.values())
    if not files:
        raise MetadataError(storage.join(root, "dataset", "train.csv"), None, None, "no AudioCaps split CSV found under the root")
    return SourceRead(rows, None, files)


DCASE_CLASSES = (
    "Train horn", "Air horn, truck horn", "Car alarm", "Reversing beeps", "Bicycle", "Skateboard", "Ambulance (siren)",
    "Fire engine, fire truck (siren)", "Civil defense siren", "Police car (siren)", "Screaming", "Car", "Car passing by",
    "Bus", "Truck", "Motorcycle", "Train",
)
DCASE_SETS = {"training": "train", "testing": "val", "evaluation": "test"}


@register("dcase2017_task4")
def read_dcase2017_task4(root: str, options: Mapping[str, str]) -> SourceRead:
    mid_to_label: dict[str, str] = {}
    files = []
    ev = storage.join(root, "sound_event_list_17_classes.txt")
    if storage.exists(ev):
        files.append(ev)
        # The header line is space-separated, the data lines TAB-separated: skip the header.
        for line, f, _ in read_rows(ev, delimiter="\t")[1:]:
            if len(f) != 3:
                raise MetadataError(ev, line, min(len(f), 3) + 1, f"expected 3 TAB-separated fields, found {len(f)}")
            mid_to_label[f[0].strip()] = f[2].strip()
    vocab = frozenset(mid_to_label.values()) or frozenset(DCASE_CLASSES)
    index = AudioIndex(root)
    rows = []
    for native, split in DCASE_SETS.items():
        gt = storage.join(root, "groundtruth_release", f"groundtruth_weak_label_{native}_set.csv")
        lst = storage.join(root, f"{native}_set.csv")
        clips: dict[tuple[str, str, str], list[str]] = {}
        if storage.exists(gt):
            files.append(gt)
            for line, f, _ in read_rows(gt, delimiter="\t"):
                if len(f) != 4:
                    raise MetadataError(gt, line, min(len(f), 4) + 1, f"expected 4 TAB-separated fields, found {len(f)}")
                stem = posixpath.splitext(f[0].strip())[0]
                ytid = stem[:11]
                if stem[11:12] != "_":
                    raise MetadataError(gt, line, 1, f"file name {f[0]!r} is not <ytid>_<start>_<end>.wav")
                clips.setdefault((ytid, f[1].strip(), f[2].strip()), []).append(f[3].strip())
        elif storage.exists(lst):
            if not mid_to_label:
                raise MetadataError(ev, None, None, f"needed to map the MIDs of {lst}")
            files.append(lst)
            for line, f, _ in read_rows(lst):
                if len(f) != 5:
                    raise MetadataError(lst, line, min(len(f), 5) + 1, f"expected 5 fields, found {len(f)}")
                mids = [m.strip() for m in f[4].split(",")]
                # AudioSet parents of the 17 classes (e.g. /m/07jdr 'Train' for 'Train horn') stay out.
                clips[(f[0].strip(), f[1].strip(), f[2].strip())] = [mid_to_label[m] for m in mids if m in mid_to_label]
        else:
            continue
        for (ytid, start, end), labels in clips.items():
            row = make_row("dcase2017_task4", f"{ytid}_{start}_{end}", split, "")
            row["labels"] = list(dict.fromkeys(labels))
            row["attrs"] = {"start_s": start, "end_s": end}
            row["identity"] = keys(youtube_key(ytid, start))
            _place(index, row, find_segment(index, ytid, start, end), f"{ytid}_{start}_{end}.wav")
            if not row["identity"]:
                quarantine(row, f"bad_id:{ytid}")
            rows.append(row)
    if not rows and not any("_set.csv" in f for f in files):
        raise MetadataError(storage.join(root, "groundtruth_release"), None, None, "no DCASE 2017 Task 4 label file found")
    return SourceRead(rows, vocab, files)
