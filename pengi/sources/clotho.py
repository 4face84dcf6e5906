"""Clotho v2.1 and ClothoAQA.

Clotho (Zenodo layout): ``clotho_captions_{development,validation,evaluation}.csv``
(``file_name,caption_1..caption_5``), optional ``clotho_metadata_<split>.csv`` (ISO-8859-1;
``file_name,keywords,sound_id,sound_link,start_end_samples,manufacturer,license``) and audio in
``<split>/<file_name>``.

* clip_id: ``<native split>/<file stem>`` - file names repeat across splits with different sounds.
* split: development -> train, validation -> val, evaluation -> test.
* captions: the five captions. attrs: ``keywords`` (``;``-separated), ``license``,
  ``manufacturer`` (Freesound uploader) when the metadata file is present.
* identity: ``freesound:<sound_id>`` from the metadata.

ClothoAQA: ``clotho_aqa_{train,val,test}.csv`` (``file_name,QuestionText,answer[,confidence]``,
one line per annotator answer) + ``audio_files/<file_name>`` + optional
``clotho_aqa_metadata.csv``. One manifest row per (split, file): ``qa`` holds each distinct
question once with the majority answer of its annotators (ties: the first answer given);
attrs ``answers_per_question`` records how many answers were pooled.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Mapping

from pengi import storage
from pengi.sources.base import (
    AudioIndex, MetadataError, Record, SourceRead, clean_text, freesound_key, keys, locate, make_row, quarantine,
    read_csv, register,
)

CLOTHO_SPLITS = {"development": "train", "validation": "val", "evaluation": "test"}
CAPTION_COLUMNS = ("file_name", "caption_1", "caption_2", "caption_3", "caption_4", "caption_5")


def _metadata(root: str, name: str, encoding: str) -> tuple[dict[str, Record], str | None]:
    """file_name -> metadata record of one Clotho-style metadata file (absent file: empty)."""
    uri = storage.join(root, name)
    if not storage.exists(uri):
        return {}, None
    # The test-split metadata uses ';' as its delimiter; sniff it from the header line.
    head = storage.read_bytes(uri)[:400].decode(encoding, "replace").splitlines()[0]
    delim = ";" if head.count(";") > head.count(",") else ","
    records = read_csv(uri, encoding=encoding, delimiter=delim, require=("file_name", "sound_id"))
    return {r["file_name"]: r for r in records}, uri


@register(
    "clotho",
    {
        "encoding": "encoding of the caption CSVs (default utf-8)",
        "metadata_encoding": "encoding of the metadata CSVs (default iso-8859-1, as released)",
    },
)
def read_clotho(root: str, options: Mapping[str, str]) -> SourceRead:
    enc = options.get("encoding", "utf-8")
    menc = options.get("metadata_encoding", "iso-8859-1")
    rows, files = [], []
    for native, split in CLOTHO_SPLITS.items():
        cap = storage.join(root, f"clotho_captions_{native}.csv")
        if not storage.exists(cap):
            continue
        files.append(cap)
        meta, meta_uri = _metadata(root, f"clotho_metadata_{native}.csv", menc)
        if meta_uri:
            files.append(meta_uri)
        index = AudioIndex(root, native)
        for r in read_csv(cap, columns=CAPTION_COLUMNS, encoding=enc):
            name = r["file_name"]
            row = make_row("clotho", f"{native}/{posixpath.splitext(name)[0]}", split, "")
            locate(index, f"{native}/{name}", row)
            row["captions"] = [clean_text(r[c]) for c in CAPTION_COLUMNS[1:]]
            m = meta.get(name)
            if m is not None:
                row["identity"] = keys(freesound_key(m["sound_id"]))
                row["attrs"] = {k: clean_text(m.get(k)) for k in ("keywords", "license", "manufacturer") if m.get(k)}
            if r.bad_text:
                quarantine(row, "bad_text_encoding")
            rows.append(row)
    if not files:
        raise MetadataError(storage.join(root, "clotho_captions_development.csv"), None, None, "no Clotho caption file found under the root")
    return SourceRead(rows, None, files)


AQA_SPLITS = {"train": "train", "val": "val", "test": "test"}


@register(
    "clotho_aqa",
    {
        "encoding": "encoding of the QA CSVs (default utf-8; undecodable rows are quarantined)",
        "metadata_encoding": "encoding of clotho_aqa_metadata.csv (default iso-8859-1)",
    },
)
def read_clotho_aqa(root: str, options: Mapping[str, str]) -> SourceRead:
    enc = options.get("encoding", "utf-8")
    meta, meta_uri = _metadata(root, "clotho_aqa_metadata.csv", options.get("metadata_encoding", "iso-8859-1"))
    files = [meta_uri] if meta_uri else []
    index = AudioIndex(root)
    rows = []
    for native, split in AQA_SPLITS.items():
        uri = storage.join(root, f"clotho_aqa_{native}.csv")
        if not storage.exists(uri):
            continue
        files.append(uri)
        records = read_csv(uri, encoding=enc, require=("file_name", "QuestionText", "answer"))
        by_file: dict[str, list[Record]] = {}
        for r in records:
            by_file.setdefault(r["file_name"], []).append(r)
        for name, recs in by_file.items():
            row = make_row("clotho_aqa", f"{native}/{posixpath.splitext(name)[0]}", split, "")
            uri_audio = index.find(f"audio_files/{name}")
            if uri_audio is None:
                # Some copies unpack without the audio_files/ folder.
                found = index.find_name(name)
                uri_audio = found[0] if found else None
            if uri_audio is None:
                locate(index, f"audio_files/{name}", row)
            else:
                row["audio_uri"] = uri_audio
            answers: dict[str, Counter] = {}
            order: dict[str, list[str]] = {}
            for r in recs:
                q, a = clean_text(r["QuestionText"]), clean_text(r["answer"]).lower()
                answers.setdefault(q, Counter())[a] += 1
                order.setdefault(q, []).append(a)
            qa = []
            for q, counts in answers.items():
                top = max(counts.values())
                majority = next(a for a in order[q] if counts[a] == top)  # ties: first answer given
                qa.append({"question": q, "answer": majority})
            row["qa"] = qa
            row["attrs"] = {"answers_per_question": str(round(len(recs) / max(len(qa), 1), 2))}
            m = meta.get(name)
            if m is not None:
                row["identity"] = keys(freesound_key(m["sound_id"]))
            if any(r.bad_text for r in recs):
                quarantine(row, "bad_text_encoding")
            elif any(not x["question"] or not x["answer"] for x in qa):
                quarantine(row, "empty_qa")
            rows.append(row)
    if not any(f.endswith(f"clotho_aqa_{s}.csv") for f in files for s in AQA_SPLITS):
        raise MetadataError(storage.join(root, "clotho_aqa_train.csv"), None, None, "no ClothoAQA split CSV found under the root")
    return SourceRead(rows, None, files)
