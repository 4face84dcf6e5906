"""Short-sound evaluation sets with labels in file names: VocalSound and SESA.

VocalSound (``audio_16k/`` or ``audio_44k/`` ``{f|m}NNNN_<k>_<label>.wav`` +
``datafiles/{tr,val,te}.json`` = ``{"data": [{"wav": <path>, "labels": <MID>, ...}]}``):
  official speaker-disjoint split from the json files (``wav`` paths are the authors' and are
  re-rooted by file name); labels ``[cough|laughter|sigh|sneeze|sniff|throatclearing]``; a json
  MID that disagrees with the file name is ``inconsistent_metadata``; attrs ``speaker``,
  ``gender``. Option ``rate``: 16k (default) or 44k picks the audio folder.
SESA (``train/``, ``test/`` with class-prefixed names ``casual_000.wav`` ...): labels
  ``[casual|gunshot|explosion|siren]`` from the name prefix; official train/test folders.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping

from pengi import storage
from pengi.sources.base import AudioIndex, MetadataError, SourceRead, make_row, quarantine, read_json, register

VS_MIDS = {
    "/m/01j3sz": "laughter", "/m/07plz5l": "sigh", "/m/01b_21": "cough",
    "/m/0dl9sf8": "throatclearing", "/m/01hsr_": "sneeze", "/m/07ppn3j": "sniff",
}
VS_SPLITS = {"tr": "train", "val": "val", "te": "test"}
_VS = re.compile(r"^([fm])(\d+)_(\d+)_([a-z]+)$")


@register("vocalsound", {"rate": "16k (default) or 44k: which audio folder to use"})
def read_vocalsound(root: str, options: Mapping[str, str]) -> SourceRead:
    rate = options.get("rate", "16k")
    if rate not in ("16k", "44k"):
        raise ValueError(f"vocalsound: options.rate must be 16k or 44k, got {rate!r}")
    index = AudioIndex(root, f"audio_{rate}")
    rows, files = [], []
    for native, split in VS_SPLITS.items():
        uri = storage.join(root, "datafiles", f"{native}.json")
        if not storage.exists(uri):
            continue
        files.append(uri)
        data = read_json(uri)
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise MetadataError(uri, 1, 1, "expected {'data': [...]}")
        for i, item in enumerate(data["data"]):
            if not isinstance(item, dict) or "wav" not in item or "labels" not in item:
                raise MetadataError(uri, None, None, f"data[{i}]: expected 'wav' and 'labels'")
            stem = posixpath.splitext(posixpath.basename(str(item["wav"])))[0]
            uri_audio = index.find(f"audio_{rate}/{stem}.wav")
            row = make_row("vocalsound", stem, split, uri_audio or storage.join(root, f"audio_{rate}", f"{stem}.wav"))
            if uri_audio is None:
                quarantine(row, "missing_audio")
            mid = str(item["labels"]).strip()
            label = VS_MIDS.get(mid, mid)
            row["labels"] = [label]
            m = _VS.match(stem)
            if m:
                row["attrs"] = {"speaker": m.group(1) + m.group(2), "gender": "female" if m.group(1) == "f" else "male"}
                if m.group(4) != label:
                    quarantine(row, "inconsistent_metadata:label_vs_filename")
            else:
                quarantine(row, "bad_filename")
            rows.append(row)
    if not files:
        raise MetadataError(storage.join(root, "datafiles", "tr.json"), None, None, "no VocalSound datafiles/*.json found")
    return SourceRead(rows, frozenset(VS_MIDS.values()), files)


SESA_CLASSES = ("casual", "gunshot", "explosion", "siren")


@register("sesa")
def read_sesa(root: str, options: Mapping[str, str]) -> SourceRead:
    index = AudioIndex(root)
    rows = []
    for rel, audio_uri in index.entries():
        parts = rel.split("/")
        if len(parts) < 2 or parts[-2] not in ("train", "test"):
            continue  # only the two official folders hold clips
        stem = parts[-1]
        row = make_row("sesa", f"{parts[-2]}/{stem}", parts[-2], audio_uri)
        label = re.split(r"[_\-\s\d]", stem, maxsplit=1)[0].lower()
        row["labels"] = [label]
        if label not in SESA_CLASSES:
            quarantine(row, f"unknown_label:{label}")
        rows.append(row)
    return SourceRead(rows, frozenset(SESA_CLASSES), [])
