"""CMU-MOSI and CMU-MOSEI (sentiment; MOSEI also emotions), from the CMU Multimodal SDK.

Labels come from the SDK's computational sequence (``.csd``, HDF5: ``<name>/data/<video>/
{features, intervals}``): MOSI ``CMU_MOSI_Opinion_Labels.csd`` (1 value: sentiment in [-3, 3]),
MOSEI ``CMU_MOSEI_Labels.csd`` (7 values: sentiment, happy, sad, anger, surprise, disgust,
fear). Splits: the SDK standard folds (``cmu_mosi_std_folds.json`` / ``cmu_mosei_std_folds.json``,
keys ``standard_{train,valid,test}_fold``, by video); a video in no fold is quarantined
``no_split``. Reading ``.csd`` needs ``h5py``.

One row per labelled segment, clip_id ``<video>_<k>`` (k = 1-based segment order in the
label file). Audio: the segmented WAV ``<video>_<k>.<ext>`` when the release has it; else the
full-video WAV ``<video>.<ext>`` with ``attrs["clip_start_s"]``/``attrs["clip_end_s"]`` giving
the segment to cut (``duration_s`` then is the whole file's).
labels: ``[negative|neutral|positive]`` by the sign of the sentiment (Acc-2/3 convention);
MOSEI adds every emotion whose score is > 0. attrs ``sentiment`` (the raw score), for MOSEI also
``happy``, ``sad``, ``anger``, ``surprise``, ``disgust``, ``fear``; ``video``; ``start_s``/``end_s``
(the segment in the video). Identity ``youtube:<video>@<start>`` for 11-character YouTube ids
(MOSEI's numeric legacy ids get none).
"""

from __future__ import annotations

import io
from collections.abc import Mapping

from pengi import storage
from pengi.sources.base import (
    AudioIndex, MetadataError, SourceRead, keys, make_row, quarantine, read_json, register, youtube_key,
)

MOSEI_EMOTIONS = ("happy", "sad", "anger", "surprise", "disgust", "fear")
FOLDS = {"standard_train_fold": "train", "standard_valid_fold": "val", "standard_test_fold": "test"}


def _polarity(v: float) -> str:
    return "negative" if v < 0 else "positive" if v > 0 else "neutral"


def _read_csd(uri: str) -> dict[str, tuple[list[list[float]], list[list[float]]]]:
    """video id -> (features rows, intervals rows) of a computational sequence file."""
    try:
        import h5py
    except ImportError:
        raise MetadataError(uri, None, None, "reading .csd files needs the h5py package") from None
    try:
        with storage.open_binary(uri) as fh, h5py.File(io.BytesIO(fh.read()), "r") as f:
            top = next(iter(f.values()))
            data = top["data"]
            return {str(vid): (g["features"][()].tolist(), g["intervals"][()].tolist()) for vid, g in data.items()}
    except FileNotFoundError:
        raise MetadataError(uri, None, None, "metadata file not found") from None
    except (OSError, KeyError, StopIteration) as exc:
        raise MetadataError(uri, None, None, f"not a computational sequence (HDF5 <name>/data/<video>/...): {exc}") from None


def _read_sdk(name: str, root: str, csd_name: str, folds_name: str, emotions: bool) -> SourceRead:
    folds_uri = storage.join(root, folds_name)
    folds = read_json(folds_uri)
    split_of = {}
    for key, split in FOLDS.items():
        if key not in folds:
            raise MetadataError(folds_uri, None, None, f"missing key {key!r}")
        for vid in folds[key]:
            split_of[str(vid)] = split
    csd_uri = next((u for u in storage.list_files(root, (".csd",)) if u.endswith(csd_name)), storage.join(root, csd_name))
    labels = _read_csd(csd_uri)
    index = AudioIndex(root)
    rows = []
    for vid in sorted(labels):
        feats, ivals = labels[vid]
        order = sorted(range(len(ivals)), key=lambda i: ivals[i][0])
        for k, i in enumerate(order, start=1):
            f, (s, e) = feats[i], ivals[i]
            seg = index.find_name(f"{vid}_{k}")
            row = make_row(name, f"{vid}_{k}", split_of.get(vid, "train"), "")
            attrs = {"video": vid, "start_s": f"{s:.3f}", "end_s": f"{e:.3f}", "sentiment": f"{f[0]:.4f}"}
            if seg:
                row["audio_uri"] = seg[0]
            else:
                full = index.find_name(vid)
                if full:
                    row["audio_uri"] = full[0]
                    attrs.update(clip_start_s=f"{s:.3f}", clip_end_s=f"{e:.3f}")
                else:
                    row["audio_uri"] = storage.join(root, f"{vid}_{k}.wav")
                    quarantine(row, "missing_audio")
            labs = [_polarity(f[0])]
            if emotions:
                if len(f) != 7:
                    raise MetadataError(csd_uri, None, None, f"{vid}: expected 7 label values, found {len(f)}")
                for emo, v in zip(MOSEI_EMOTIONS, f[1:]):
                    attrs[emo] = f"{v:.4f}"
                    if v > 0:
                        labs.append(emo)
            row["labels"] = labs
            row["attrs"] = attrs
            row["identity"] = keys(youtube_key(vid, s))
            if vid not in split_of:
                quarantine(row, "no_split")
            rows.append(row)
    vocab = {"negative", "neutral", "positive"} | (set(MOSEI_EMOTIONS) if emotions else set())
    return SourceRead(rows, frozenset(vocab), [folds_uri, csd_uri])


@register("cmu_mosi")
def read_cmu_mosi(root: str, options: Mapping[str, str]) -> SourceRead:
    return _read_sdk("cmu_mosi", root, "CMU_MOSI_Opinion_Labels.csd", "cmu_mosi_std_folds.json", emotions=False)


@register("cmu_mosei")
def read_cmu_mosei(root: str, options: Mapping[str, str]) -> SourceRead:
    return _read_sdk("cmu_mosei", root, "CMU_MOSEI_Labels.csd", "cmu_mosei_std_folds.json", emotions=True)
