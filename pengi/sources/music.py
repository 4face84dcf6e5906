"""Music sets: GTZAN genres, GTZAN music/speech (evaluation) and FMA (training).

GTZAN genres (``genres/<genre>/<genre>.000NN.au``, or the Kaggle ``genres_original`` WAVs):
  labels ``[genre]`` (10 genres); attrs ``genre``, ``fold`` = stable hash of the stem into 10
  folds; split ``test``, unless split lists ``splits/{training,validation,testing}.txt`` (ids
  as torchaudio's fault-filtered subsets) are present: then they decide and unlisted clips are
  quarantined ``not_in_split_lists``. Option ``vocabulary=observed`` accepts genres outside the
  official ten (the offline corpus has ``electronic`` instead of ``pop``).
GTZAN music/speech (``music_speech/{music_wav,speech_wav}/*.wav``): labels ``[music|speech]``;
  attrs ``fold`` (stable hash, 10 folds, as HEAR does); split ``test``.
FMA (``fma_metadata/tracks.csv`` with its two-level header + ``fma_<size>/NNN/NNNNNN.mp3``):
  option ``size`` small|medium|large|full (default small) selects the subset and audio folder.
  labels ``[genre_top]`` (tracks without a top genre are quarantined ``no_label``);
  attrs ``genre``, ``genres_all`` (comma-joined ids), ``title``, ``artist``, ``album``,
  ``subset``; split training/validation/test -> train/val/test.
"""

from __future__ import annotations

import ast
import posixpath
from collections.abc import Mapping

from pengi import storage
from pengi.sources.base import (
    FOLD_OPTIONS, VOCABULARY_OPTION, AudioIndex, fold_split, MetadataError, SourceRead, clean_text, closed_vocabulary, hash_fold, locate, make_row, map_split, quarantine, read_rows,
    register,
)

GTZAN_GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")


GTZAN_LISTS = {"training": "train", "validation": "val", "testing": "test"}


@register("gtzan_genres", {"vocabulary": VOCABULARY_OPTION})
def read_gtzan_genres(root: str, options: Mapping[str, str]) -> SourceRead:
    # Optional split lists named like torchaudio's fault-filtered subsets (splits/{training,
    # validation,testing}.txt, one "<genre>.<index>" per line). With them, unlisted clips
    # are quarantined (the filtered split leaves out faulty excerpts); without them every
    # clip is a test clip.
    lists: dict[str, str] = {}
    files = []
    for name, split in GTZAN_LISTS.items():
        uri = storage.join(root, "splits", f"{name}.txt")
        if storage.exists(uri):
            files.append(uri)
            for line in storage.read_text(uri).splitlines():
                if line.strip():
                    lists[line.strip()] = split
    vocab = closed_vocabulary("gtzan_genres", GTZAN_GENRES, options)
    index = AudioIndex(root)
    rows = []
    for rel, audio_uri in index.entries():
        genre = posixpath.basename(posixpath.dirname(rel))
        stem = posixpath.basename(rel)
        row = make_row("gtzan_genres", stem, lists.get(stem, "test"), audio_uri)
        row["labels"] = [genre]
        row["attrs"] = {"genre": genre, "fold": str(hash_fold(stem, 10))}
        if vocab is not None and genre not in vocab:
            quarantine(row, f"unknown_label:{genre}")
        elif stem.split(".")[0] != genre:
            quarantine(row, "bad_filename")
        elif lists and stem not in lists:
            quarantine(row, "not_in_split_lists")
        rows.append(row)
    return SourceRead(rows, vocab, files)


MS_FOLDERS = {"music_wav": "music", "speech_wav": "speech"}


@register("gtzan_music_speech", FOLD_OPTIONS)
def read_gtzan_music_speech(root: str, options: Mapping[str, str]) -> SourceRead:
    index = AudioIndex(root)
    rows = []
    for rel, audio_uri in index.entries():
        folder = posixpath.basename(posixpath.dirname(rel))
        label = MS_FOLDERS.get(folder, folder)
        clip_id = f"{folder}/{posixpath.basename(rel)}"  # names are only unique within a folder
        fold = str(hash_fold(clip_id, 10))
        row = make_row("gtzan_music_speech", clip_id, fold_split("gtzan_music_speech", fold, options), audio_uri)
        row["labels"] = [label]
        row["attrs"] = {"fold": fold}
        if folder not in MS_FOLDERS:
            quarantine(row, f"unknown_label:{folder}")
        rows.append(row)
    return SourceRead(rows, frozenset(MS_FOLDERS.values()), [])


FMA_SIZES = ("small", "medium", "large", "full")
FMA_SPLITS = {"training": "train", "validation": "val", "test": "test"}
_FMA_SUBSET = {"small": {"small"}, "medium": {"small", "medium"}, "large": {"small", "medium", "large"}, "full": {"small", "medium", "large"}}


@register("fma", {"size": "small (default), medium, large or full: the subset and its audio folder"})
def read_fma(root: str, options: Mapping[str, str]) -> SourceRead:
    size = options.get("size", "small")
    if size not in FMA_SIZES:
        raise ValueError(f"fma: options.size must be one of {FMA_SIZES}, got {size!r}")
    meta = storage.join(root, "fma_metadata", "tracks.csv")
    raw = read_rows(meta)
    if len(raw) < 3:
        raise MetadataError(meta, 1, 1, "tracks.csv needs a 2-level header, an index-name row and data")
    (l1, groups, _), (l2, fields, _), (l3, index_row, _) = raw[:3]
    if len(groups) != len(fields):
        raise MetadataError(meta, l2, min(len(groups), len(fields)) + 1, "the two header rows differ in length")
    # Forward-fill the top-level group names (pandas MultiIndex semantics: blanks repeat the left one).
    cols, last = [], ""
    for g, f in zip(groups, fields):
        last = g.strip() if g.strip() and not g.startswith("Unnamed") else last
        cols.append((last, f.strip()))
    if index_row[0].strip() != "track_id":
        raise MetadataError(meta, l3, 1, "expected the index-name row 'track_id,,,...' on line 3")
    pos = {c: i for i, c in enumerate(cols)}
    for c in [("set", "split"), ("set", "subset"), ("track", "genre_top"), ("track", "genres_all")]:
        if c not in pos:
            raise MetadataError(meta, l1, len(cols) + 1, f"missing column {c}")
    index = AudioIndex(root, f"fma_{size}")
    rows = []
    for line, v, bad in raw[3:]:
        if len(v) != len(cols):
            raise MetadataError(meta, line, min(len(v), len(cols)) + 1, f"expected {len(cols)} fields, found {len(v)}")
        get = lambda g, f: v[pos[(g, f)]].strip() if (g, f) in pos else ""  # noqa: E731
        tid = v[0].strip()
        if not tid.isdigit():
            raise MetadataError(meta, line, 1, f"track_id must be an integer, got {tid!r}")
        if size != "full" and get("set", "subset") not in _FMA_SUBSET[size]:
            continue  # not in the chosen subset: not part of this source
        split = map_split(get("set", "split"), FMA_SPLITS, meta, line, pos[("set", "split")] + 1)
        t = int(tid)
        row = make_row("fma", f"{t:06d}", split, "")
        genre = get("track", "genre_top")
        try:
            genres_all = [str(g) for g in ast.literal_eval(get("track", "genres_all") or "[]")]
        except (ValueError, SyntaxError):
            raise MetadataError(meta, line, pos.get(("track", "genres_all"), 0) + 1, "genres_all is not a Python list literal") from None
        row["labels"] = [genre] if genre else []
        row["attrs"] = {
            "genre": genre, "genres_all": ",".join(genres_all), "title": clean_text(get("track", "title")),
            "artist": clean_text(get("artist", "name")), "album": clean_text(get("album", "title")),
            "subset": get("set", "subset"),
        }
        if bad:
            quarantine(row, "bad_text_encoding")
        if not genre:
            quarantine(row, "no_label")
        locate(index, f"fma_{size}/{t // 1000:03d}/{t:06d}.mp3", row)
        rows.append(row)
    return SourceRead(rows, None, [meta])
