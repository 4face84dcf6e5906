"""Speech-emotion sets: CREMA-D, RAVDESS (evaluation), MSP-Podcast, MELD (training).

Shared attrs: ``emotion`` (the label as text), ``actor``/``speaker``, ``gender`` where known,
``fold`` for the speaker-independent CV of the evaluation sets.

CREMA-D (``AudioWAV/{actor}_{sentence}_{EMO}_{LEVEL}.wav``; optional ``VideoDemographics.csv``):
  labels ``[anger|disgust|fear|happy|neutral|sad]`` (the acted emotion, as in CLAP/Pengi evals);
  attrs ``actor``, ``sentence``, ``intensity`` (LO/MD/HI/XX), ``gender``, ``age``;
  split ``test``; ``fold`` = ``(actor - 1001) % 5 + 1`` (5 speaker-disjoint folds; no official split).
  An actor split list (option ``actor_splits``, default ``corpus_actor_splits.csv`` if present,
  which the offline corpus writes: ``ActorID,split``) assigns train/val/test per actor instead;
  or options ``test_folds``/``val_folds`` split by the actor fold (also for RAVDESS).
RAVDESS (``Actor_NN/03-VV-EE-II-SS-RR-AA.wav``, audio-only modality 03):
  labels ``[neutral|calm|happy|sad|angry|fearful|disgust|surprised]``; attrs ``actor``, ``gender``
  (odd actor = male), ``vocal_channel`` (speech/song), ``intensity`` (normal/strong),
  ``statement``, ``repetition``; split ``test``; ``fold`` = ``(actor - 1) % 5 + 1``.
  Option ``vocal_channel``: speech (default), song or all.
MSP-Podcast (``Labels/labels_consensus.csv`` + ``Audios/<FileName>``):
  labels ``[emotion]`` from ``EmoClass`` (X = no agreement and O = other are quarantined as
  ``unknown_label`` unless option ``keep_other=true`` keeps O); attrs ``arousal``, ``valence``,
  ``dominance``, ``speaker``, ``gender``, ``split_set``; split Train -> train,
  Development -> val, Test1/Test2/Test3 -> test.
MELD (``{train,dev,test}_sent_emo.csv`` + ``train_splits/``, ``dev_splits_complete/``,
  ``output_repeated_splits_test/`` ``dia{D}_utt{U}.mp4``): labels ``[Emotion]``; attrs
  ``sentiment``, ``speaker``, ``utterance`` (the transcript), ``season``, ``episode``,
  ``start_time``, ``end_time``; clip_id ``<split>/dia{D}_utt{U}``.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping

from pengi import storage
from pengi.sources.base import (
    FOLD_OPTIONS, AudioIndex, MetadataError, SourceRead, clean_text, fold_split, locate, make_row, map_split, quarantine, read_csv, register,
)

CREMA_EMOTIONS = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
_CREMA = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


@register("crema_d", {**FOLD_OPTIONS, "actor_splits": "CSV (ActorID,split) relative to the root assigning actors to train/val/test "
                                     "(default: corpus_actor_splits.csv when present, else every clip is test)"})
def read_crema_d(root: str, options: Mapping[str, str]) -> SourceRead:
    demo_uri = storage.join(root, "VideoDemographics.csv")
    demo, files = {}, []
    if storage.exists(demo_uri):
        files.append(demo_uri)
        demo = {r["ActorID"]: r for r in read_csv(demo_uri, require=("ActorID", "Age", "Sex"))}
    actor_split: dict[str, str] = {}
    split_uri = storage.join(root, options.get("actor_splits", "corpus_actor_splits.csv"))
    if "actor_splits" in options or storage.exists(split_uri):
        files.append(split_uri)
        for r in read_csv(split_uri, require=("ActorID", "split")):
            actor_split[r["ActorID"]] = map_split(r["split"], {"train": "train", "val": "val", "test": "test"}, split_uri, r.line, None)
    index = AudioIndex(root, "AudioWAV")
    rows = []
    for rel, audio_uri in index.entries():
        stem = posixpath.basename(rel)
        row = make_row("crema_d", stem, "test", audio_uri)
        m = _CREMA.match(stem)
        if not m:
            rows.append(quarantine(row, "bad_filename"))
            continue
        actor, sentence, emo, level = m.groups()
        row["split"] = fold_split("crema_d", str((int(actor) - 1001) % 5 + 1), options)
        if actor_split:
            row["split"] = actor_split.get(actor, "")
            if not row["split"]:
                row["split"] = "test"
                quarantine(row, "actor_not_in_split_list")
        row["attrs"] = {"actor": actor, "sentence": sentence, "intensity": level, "fold": str((int(actor) - 1001) % 5 + 1)}
        if actor in demo:
            row["attrs"].update(gender=demo[actor]["Sex"].lower(), age=demo[actor]["Age"])
        if emo not in CREMA_EMOTIONS:
            row["labels"] = [emo]
            quarantine(row, f"unknown_label:{emo}")
        else:
            row["labels"] = [CREMA_EMOTIONS[emo]]
            row["attrs"]["emotion"] = CREMA_EMOTIONS[emo]
        rows.append(row)
    return SourceRead(rows, frozenset(CREMA_EMOTIONS.values()), files)


RAVDESS_EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised"}
_RAVDESS = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


@register("ravdess", {**FOLD_OPTIONS, "vocal_channel": "speech (default), song or all"})
def read_ravdess(root: str, options: Mapping[str, str]) -> SourceRead:
    channel = options.get("vocal_channel", "speech")
    wanted = {"speech": {"01"}, "song": {"02"}, "all": {"01", "02"}}.get(channel)
    if wanted is None:
        raise ValueError(f"ravdess: options.vocal_channel must be speech, song or all, got {channel!r}")
    index = AudioIndex(root)
    rows = []
    for rel, audio_uri in index.entries():
        stem = posixpath.basename(rel)
        m = _RAVDESS.match(stem)
        # Video files (modality 01/02) and the other vocal channel are not part of this source.
        if m and (m.group(1) != "03" or m.group(2) not in wanted):
            continue
        row = make_row("ravdess", stem, "test", audio_uri)
        if not m:
            rows.append(quarantine(row, "bad_filename"))
            continue
        _, vc, emo, inten, stmt, rep, actor = m.groups()
        a = int(actor)
        row["split"] = fold_split("ravdess", str((a - 1) % 5 + 1), options)
        row["attrs"] = {
            "actor": actor, "gender": "male" if a % 2 else "female", "vocal_channel": "speech" if vc == "01" else "song",
            "intensity": {"01": "normal", "02": "strong"}.get(inten, inten), "statement": stmt, "repetition": rep,
            "fold": str((a - 1) % 5 + 1),
        }
        if emo not in RAVDESS_EMOTIONS:
            row["labels"] = [emo]
            quarantine(row, f"unknown_label:{emo}")
        else:
            row["labels"] = [RAVDESS_EMOTIONS[emo]]
            row["attrs"]["emotion"] = RAVDESS_EMOTIONS[emo]
        rows.append(row)
    return SourceRead(rows, frozenset(RAVDESS_EMOTIONS.values()), [])


MSP_EMOTIONS = {"A": "angry", "S": "sad", "H": "happy", "U": "surprise", "F": "fear", "D": "disgust", "C": "contempt", "N": "neutral", "O": "other"}
MSP_SPLITS = {"Train": "train", "Development": "val", "Test1": "test", "Test2": "test", "Test3": "test"}
MSP_COLUMNS = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set")


@register("msp_podcast", {"keep_other": "true keeps EmoClass O (other) as a label (default false)"})
def read_msp_podcast(root: str, options: Mapping[str, str]) -> SourceRead:
    keep_other = options.get("keep_other", "false").lower() == "true"
    meta = storage.join(root, "Labels", "labels_consensus.csv")
    records = read_csv(meta, require=MSP_COLUMNS)
    index = AudioIndex(root, "Audios")
    vocab = {v for k, v in MSP_EMOTIONS.items() if keep_other or k != "O"}
    rows = []
    for r in records:
        split = map_split(r["Split_Set"], MSP_SPLITS, meta, r.line, list(r.values).index("Split_Set") + 1)
        row = make_row("msp_podcast", posixpath.splitext(r["FileName"])[0], split, "")
        locate(index, f"Audios/{r['FileName']}", row)
        code = r["EmoClass"].strip()
        emotion = MSP_EMOTIONS.get(code, code)
        row["labels"] = [emotion]
        row["attrs"] = {
            "emotion": emotion, "arousal": r["EmoAct"], "valence": r["EmoVal"], "dominance": r["EmoDom"],
            "speaker": r["SpkrID"], "gender": r["Gender"].lower(), "split_set": r["Split_Set"],
        }
        if emotion not in vocab:
            quarantine(row, f"unknown_label:{code}")
        rows.append(row)
    return SourceRead(rows, frozenset(vocab), [meta])


MELD_COLUMNS = ("Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season", "Episode", "StartTime", "EndTime")
MELD_SPLITS = {"train": ("train", "train_splits"), "dev": ("val", "dev_splits_complete"), "test": ("test", "output_repeated_splits_test")}
MELD_EMOTIONS = ("neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust")
MELD_SENTIMENTS = ("neutral", "positive", "negative")


@register("meld")
def read_meld(root: str, options: Mapping[str, str]) -> SourceRead:
    index = AudioIndex(root)
    rows, files = [], []
    for native, (split, folder) in MELD_SPLITS.items():
        uri = storage.join(root, f"{native}_sent_emo.csv")
        if not storage.exists(uri):
            continue
        files.append(uri)
        for r in read_csv(uri, columns=MELD_COLUMNS):
            stem = f"dia{r['Dialogue_ID']}_utt{r['Utterance_ID']}"
            row = make_row("meld", f"{native}/{stem}", split, "")
            locate(index, f"{folder}/{stem}.mp4", row)
            emo, sent = r["Emotion"].strip().lower(), r["Sentiment"].strip().lower()
            row["labels"] = [emo]
            row["attrs"] = {
                "emotion": emo, "sentiment": sent, "speaker": clean_text(r["Speaker"]), "utterance": clean_text(r["Utterance"]),
                "season": r["Season"], "episode": r["Episode"], "start_time": r["StartTime"], "end_time": r["EndTime"],
            }
            if r.bad_text:
                quarantine(row, "bad_text_encoding")
            if emo not in MELD_EMOTIONS:
                quarantine(row, f"unknown_label:{emo}")
            elif sent not in MELD_SENTIMENTS:
                quarantine(row, f"unknown_label:sentiment:{sent}")
            rows.append(row)
    if not files:
        raise MetadataError(storage.join(root, "train_sent_emo.csv"), None, None, "no MELD *_sent_emo.csv found under the root")
    return SourceRead(rows, frozenset(MELD_EMOTIONS), files)
