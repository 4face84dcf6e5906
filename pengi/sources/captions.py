"""Web-crawled caption sources: WavCaps (4 parts), WavText5K, SoundDescs.

None has an official split except SoundDescs; the others use the stable hash of the clip id
(DESIGN.md §4). Leakage against evaluation sets is handled by ``pengi.leakage`` through the
identity keys (and WavCaps' own blacklists, ``data.wavcaps_blacklists``).

WavCaps (``json_files/<Part>/<x>_final.json`` = ``{"num_captions_per_audio", "data": [...]}``;
audio ``<stem of id>.flac`` under a folder named after the part, e.g. ``Zip_files/SoundBible/``
or ``SoundBible/``): one adapter per part - ``wavcaps_freesound`` (FreeSound/fsd_final.json,
identity ``freesound:<id>``), ``wavcaps_bbc`` (BBC_Sound_Effects/bbc_final.json,
``bbc:<id>``), ``wavcaps_soundbible`` (SoundBible/sb_final.json, ``soundbible:<id>``),
``wavcaps_audioset_sl`` (AudioSet_SL/as_final.json, id ``Y<ytid>[_<start ms>].wav``,
``youtube:<ytid>[@<start s>]`` - without a start in the id the key has no ``@`` part).
captions ``[caption]``; attrs ``title``, ``description``, ``author``, ``tags``, ``category``
and ``duration_meta`` when present.
WavText5K (``WavText5K.csv``: view_link,download_link,title,description,fname,tags; audio
``<fname>`` anywhere under the root, e.g. ``Webcrawl/``): captions ``[description]`` (or the
title when there is none); labels = tags (SoundBible rows); attrs ``title``, ``site``
(soundbible/bigsoundbank), ``view_link``; identity ``soundbible:<id>`` from the SoundBible URL.
SoundDescs (``sounddescs_data/{descriptions,categories,extra_info}.pkl`` - pickled dicts read
with a restricted unpickler that only builds dicts, lists and ``collections.defaultdict`` -
or ``.json`` files of the same content; ``{train,val,test}_list.txt``; audio ``<ID>.wav`` in any
case): captions ``[description]``; labels = categories; attrs ``file_info``; identity
``bbc:<id>``; official split from the lists (ids in no list are quarantined ``no_split``).
"""

from __future__ import annotations

import ast
import io
import pickle
import posixpath
import re
from collections.abc import Mapping
from typing import Any

from pengi import storage
from pengi.manifest import stable_split
from pengi.sources.base import (
    AudioIndex, MetadataError, SourceRead, bbc_key, clean_text, freesound_key, keys, make_row, quarantine, read_csv,
    read_json, register, soundbible_key, youtube_key,
)

WAVCAPS_PARTS = {
    "wavcaps_freesound": ("FreeSound", "fsd_final.json"),
    "wavcaps_bbc": ("BBC_Sound_Effects", "bbc_final.json"),
    "wavcaps_soundbible": ("SoundBible", "sb_final.json"),
    "wavcaps_audioset_sl": ("AudioSet_SL", "as_final.json"),
}
_AS_SL = re.compile(r"^Y?([A-Za-z0-9_-]{11})(?:_(\d+))?$")


def _wavcaps_identity(name: str, item_id: str) -> list[str]:
    if name == "wavcaps_freesound":
        return keys(freesound_key(item_id))
    if name == "wavcaps_bbc":
        return keys(bbc_key(item_id))
    if name == "wavcaps_soundbible":
        return keys(soundbible_key(item_id))
    m = _AS_SL.match(posixpath.splitext(item_id)[0])
    if not m:
        return []
    # AudioSet-SL segment ids carry the start in milliseconds (<ytid>_<start_ms>).
    return keys(youtube_key(m.group(1), int(m.group(2)) / 1000 if m.group(2) else None))


def _read_wavcaps(name: str, root: str, options: Mapping[str, str]) -> SourceRead:
    part, fname = WAVCAPS_PARTS[name]
    meta = storage.join(root, "json_files", part, fname)
    data = read_json(meta)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise MetadataError(meta, 1, 1, "expected {'num_captions_per_audio': ..., 'data': [...]}")
    index = AudioIndex(root)
    # Numeric ids repeat across parts (Freesound 2219 vs SoundBible 2219): only the part's folder counts.
    by_stem: dict[str, str] = {}
    for rel in index.relpaths():
        if part in rel.split("/")[:-1] and not rel.startswith("json_files/"):
            by_stem.setdefault(posixpath.basename(rel), index.uri(rel))
    rows = []
    for i, item in enumerate(data["data"]):
        if not isinstance(item, dict) or "id" not in item or "caption" not in item:
            raise MetadataError(meta, None, None, f"data[{i}]: expected an object with 'id' and 'caption'")
        item_id = str(item["id"]).strip()
        stem = posixpath.splitext(item_id)[0]
        row = make_row(name, stem, stable_split(f"{name}/{stem}"), by_stem.get(stem, storage.join(root, part, f"{stem}.flac")))
        if stem not in by_stem:
            quarantine(row, "missing_audio")
        cap = item["caption"]
        row["captions"] = [clean_text(str(cap))] if not isinstance(cap, list) else [clean_text(str(c)) for c in cap]
        row["identity"] = _wavcaps_identity(name, item_id)
        attrs = {}
        for k in ("title", "description", "author", "category"):
            if item.get(k):
                attrs[k] = clean_text(str(item[k]))
        if item.get("tags"):
            attrs["tags"] = ",".join(map(str, item["tags"])) if isinstance(item["tags"], list) else str(item["tags"])
        if item.get("duration") is not None:
            attrs["duration_meta"] = str(item["duration"])
        row["attrs"] = attrs
        if not row["identity"]:
            quarantine(row, f"bad_id:{item_id}")
        rows.append(row)
    return SourceRead(rows, None, [meta])


def _wavcaps_adapter(name: str):
    def adapter(root: str, options: Mapping[str, str]) -> SourceRead:
        return _read_wavcaps(name, root, options)

    adapter.__name__ = f"read_{name}"
    adapter.__doc__ = f"WavCaps part {WAVCAPS_PARTS[name][0]} (see the module docstring)."
    return adapter


for _name in WAVCAPS_PARTS:
    register(_name)(_wavcaps_adapter(_name))


WAVTEXT5K_COLUMNS = ("view_link", "download_link", "title", "description", "fname", "tags")
_SB_LINK = re.compile(r"soundbible\.com/(\d+)-")


@register("wavtext5k")
def read_wavtext5k(root: str, options: Mapping[str, str]) -> SourceRead:
    meta = storage.join(root, "WavText5K.csv")
    index = AudioIndex(root)
    rows = []
    for r in read_csv(meta, columns=WAVTEXT5K_COLUMNS):
        fname = r["fname"].strip()
        if not fname:
            raise MetadataError(meta, r.line, 5, "empty fname")
        stem = posixpath.splitext(fname)[0]
        hits = index.find_name(fname)
        row = make_row("wavtext5k", stem, stable_split(stem), hits[0] if hits else storage.join(root, fname))
        if not hits:
            quarantine(row, "missing_audio")
        desc, title = clean_text(r["description"]), clean_text(r["title"])
        row["captions"] = [desc or title]
        tags: list[str] = []
        if r["tags"].strip():
            try:
                tags = [str(t) for t in ast.literal_eval(r["tags"])]
            except (ValueError, SyntaxError):
                raise MetadataError(meta, r.line, 6, f"tags is not a Python list literal: {r['tags'][:40]!r}") from None
        row["labels"] = tags
        m = _SB_LINK.search(r["view_link"])
        site = "soundbible" if "soundbible.com" in r["view_link"] else "bigsoundbank" if "bigsoundbank.com" in r["view_link"] else ""
        row["identity"] = keys(soundbible_key(m.group(1)) if m else None)
        row["attrs"] = {"title": title, "site": site, "view_link": r["view_link"]}
        if r.bad_text:
            quarantine(row, "bad_text_encoding")
        rows.append(row)
    return SourceRead(rows, None, [meta])


class _DictUnpickler(pickle.Unpickler):
    """Builds only dicts, lists, strings and ``collections.defaultdict``: no code runs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in (("collections", "defaultdict"), ("builtins", "list"), ("builtins", "dict")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_mapping(base: str, name: str) -> tuple[dict[str, Any], str | None]:
    for fname in (f"{name}.pkl", f"{name}.json"):
        uri = storage.join(base, fname)
        if not storage.exists(uri):
            continue
        if fname.endswith(".json"):
            data = read_json(uri)
        else:
            try:
                data = _DictUnpickler(io.BytesIO(storage.read_bytes(uri))).load()
            except Exception as exc:  # noqa: BLE001 - any unpickling failure means a malformed file
                raise MetadataError(uri, None, None, f"cannot read pickle: {exc}") from None
        if not isinstance(data, dict):
            raise MetadataError(uri, None, None, f"expected a dict id -> value, found {type(data).__name__}")
        return {str(k).lower(): v for k, v in data.items()}, uri
    return {}, None


@register("sounddescs")
def read_sounddescs(root: str, options: Mapping[str, str]) -> SourceRead:
    base = storage.join(root, "sounddescs_data") if storage.exists(storage.join(root, "sounddescs_data")) else root
    descriptions, d_uri = _load_mapping(base, "descriptions")
    if d_uri is None:
        raise MetadataError(storage.join(base, "descriptions.pkl"), None, None, "metadata file not found")
    categories, c_uri = _load_mapping(base, "categories")
    extra, e_uri = _load_mapping(base, "extra_info")
    files = [u for u in (d_uri, c_uri, e_uri) if u]
    split_of: dict[str, str] = {}
    for split in ("train", "val", "test"):
        for cand in (storage.join(root, f"{split}_list.txt"), storage.join(root, "data", "SoundDescs", f"{split}_list.txt")):
            if storage.exists(cand):
                files.append(cand)
                for line in storage.read_text(cand).splitlines():
                    if line.strip():
                        split_of[line.strip().lower()] = split
                break
    index = AudioIndex(root)
    by_lower = {posixpath.basename(rel).lower(): index.uri(rel) for rel in index.relpaths()}
    rows = []
    for sid, desc in descriptions.items():
        uri = by_lower.get(sid)
        row = make_row("sounddescs", sid, split_of.get(sid, "train"), uri or storage.join(root, f"{sid.upper()}.wav"))
        if sid not in split_of:
            quarantine(row, "no_split")
        if uri is None:
            quarantine(row, "missing_audio")
        row["captions"] = [clean_text(str(desc))]
        cats = categories.get(sid) or []
        row["labels"] = [str(c) for c in (cats if isinstance(cats, list) else [cats]) if str(c) != "None"]
        row["identity"] = keys(bbc_key(sid))
        if sid in extra:
            row["attrs"] = {"file_info": clean_text(str(extra[sid]))}
        rows.append(row)
    return SourceRead(rows, None, files)
