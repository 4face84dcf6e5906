"""FSD50K: ``FSD50K.ground_truth/{vocabulary,dev,eval}.csv`` + ``FSD50K.{dev,eval}_audio/<fname>.wav``.

* clip_id: ``fname`` (the Freesound id); identity ``freesound:<fname>``.
* split: dev.csv ``split`` column train/val; eval.csv -> test.
* labels: the (smeared) ``labels`` column, ``_and_`` naming as released; the vocabulary is
  ``vocabulary.csv`` (header-less ``index,label,mid``).
* attrs: ``mids``; with ``FSD50K.metadata/{dev,eval}_clips_info_FSD50K.json`` also ``title``,
  ``tags`` (comma-joined), ``license``, ``uploader``, ``description``.
"""

from __future__ import annotations

from collections.abc import Mapping

from pengi import storage
from pengi.sources.base import (
    AudioIndex, MetadataError, SourceRead, clean_text, freesound_key, keys, locate, make_row, map_split, quarantine,
    read_csv, read_json, register,
)

GT = "FSD50K.ground_truth"


@register("fsd50k")
def read_fsd50k(root: str, options: Mapping[str, str]) -> SourceRead:
    voc_uri = storage.join(root, GT, "vocabulary.csv")
    vocab_rows = read_csv(voc_uri, header=False, columns=("index", "label", "mid"))
    vocab = frozenset(r["label"].strip() for r in vocab_rows)
    files = [voc_uri]
    index = AudioIndex(root)
    rows = []
    for part in ("dev", "eval"):
        uri = storage.join(root, GT, f"{part}.csv")
        if not storage.exists(uri):
            continue
        files.append(uri)
        cols = ("fname", "labels", "mids", "split") if part == "dev" else ("fname", "labels", "mids")
        info_uri = storage.join(root, "FSD50K.metadata", f"{part}_clips_info_FSD50K.json")
        info = read_json(info_uri) if storage.exists(info_uri) else {}
        if info:
            files.append(info_uri)
        for r in read_csv(uri, columns=cols):
            fname = r["fname"].strip()
            if not fname.isdigit():
                raise MetadataError(uri, r.line, 1, f"fname must be a Freesound id, got {fname!r}")
            split = map_split(r["split"], {"train": "train", "val": "val"}, uri, r.line, 4) if part == "dev" else "test"
            row = make_row("fsd50k", fname, split, "")
            locate(index, f"FSD50K.{part}_audio/{fname}.wav", row)
            row["labels"] = [x.strip() for x in r["labels"].split(",") if x.strip()]
            row["identity"] = keys(freesound_key(fname))
            attrs = {"mids": r["mids"]}
            meta = info.get(fname) if isinstance(info, dict) else None
            if isinstance(meta, dict):
                for k in ("title", "license", "uploader", "description"):
                    if meta.get(k):
                        attrs[k] = clean_text(str(meta[k]))
                if meta.get("tags"):
                    attrs["tags"] = ",".join(map(str, meta["tags"]))
            row["attrs"] = attrs
            if len(row["labels"]) != len([m for m in r["mids"].split(",") if m.strip()]):
                quarantine(row, "inconsistent_metadata:labels_vs_mids")
            rows.append(row)
    if len(files) == 1:
        raise MetadataError(storage.join(root, GT, "dev.csv"), None, None, "no FSD50K dev.csv/eval.csv found")
    return SourceRead(rows, vocab, files)
