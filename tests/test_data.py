"""Datasets, sampler and collation over the triples and the audio store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from pengi.audio_store import AudioStore, build_store
from pengi.data import (
    IGNORE_INDEX,
    Collator,
    ResumableBatchSampler,
    TripleDataset,
    clap_pairs,
    load_triples,
    make_loader,
)

SR = 8000


class CharTokenizer:
    """A stand-in LM tokenizer: one id per character (ids 3..), eos 2, pad 0."""

    eos_token_id = 2
    pad_token_id = 0

    def __call__(self, texts, add_special_tokens=False):
        assert add_special_tokens is False
        return {"input_ids": [[3 + (ord(c) % 50) for c in t] for t in texts]}


def make_store(tmp_path: Path, n_clips: int = 6) -> tuple[AudioStore, list[str]]:
    rng = np.random.default_rng(0)
    uris = []
    for i in range(n_clips):
        path = tmp_path / "wav" / f"c{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.1 * rng.standard_normal(int(SR * (0.3 + 0.2 * i)))).astype(np.float32), SR)
        uris.append(str(path))
    bad = tmp_path / "wav" / "bad.wav"
    bad.write_bytes(b"junk")
    build_store([*uris, str(bad)], tmp_path / "store", SR)
    return AudioStore(tmp_path / "store"), [*uris, str(bad)]


def write_triples(path: Path, uris: list[str]) -> None:
    rows = []
    for i, u in enumerate(uris):
        rows.append(dict(triple_id=f"t{i}a", source="s", clip_id=f"c{i}", audio_uri=u, task="caption",
                         prompt="generate audio caption", target=f"sound number {i}"))  # fmt: skip
        rows.append(dict(triple_id=f"t{i}b", source="s", clip_id=f"c{i}", audio_uri=u, task="metadata",
                         prompt="generate metadata", target=f"sound number {i}"))  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), path)


def test_load_triples_excludes_with_counts(tmp_path):
    store, uris = make_store(tmp_path)
    write_triples(tmp_path / "train.parquet", uris)
    t = load_triples(tmp_path / "train.parquet", store)
    assert len(t) == 12 and t.excluded == {"audio quarantined": 2}
    t = load_triples(tmp_path / "train.parquet", store, tasks=["caption"])
    assert len(t) == 6 and t.excluded == {"task not selected": 7, "audio quarantined": 1}
    assert t.unique_prompts() == ["generate audio caption"]
    pairs = clap_pairs(load_triples(tmp_path / "train.parquet", store))
    assert len(pairs) == 6 and pairs.excluded["duplicate (clip, target) pair"] == 6
    write_triples(tmp_path / "stale.parquet", [*uris, str(tmp_path / "not_stored.wav")])
    with pytest.raises(ValueError, match="not in the audio store"):
        load_triples(tmp_path / "stale.parquet", store)
    pq.write_table(pa.table({"audio_uri": ["x"]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="lack columns"):
        load_triples(tmp_path / "bad.parquet")


def test_dataset_crops_are_functions_of_position(tmp_path):
    store, uris = make_store(tmp_path)
    write_triples(tmp_path / "train.parquet", uris)
    t = load_triples(tmp_path / "train.parquet", store)
    ds = TripleDataset(t, store, clip_samples=2000, train=True, seed=3)
    a, b = ds[(5, 0)], ds[(5, 0)]
    assert torch.equal(a["audio"], b["audio"])
    assert not torch.equal(ds[(5, 1)]["audio"], a["audio"])  # a new epoch draws a new crop
    assert not torch.equal(TripleDataset(t, store, 2000, train=True, seed=4)[(5, 0)]["audio"], a["audio"])
    ev = TripleDataset(t, store, clip_samples=2000, train=False)
    assert torch.equal(ev[(5, 0)]["audio"], ev[(5, 7)]["audio"])
    assert torch.equal(ev[5]["audio"], torch.from_numpy(store.read(t.columns["audio_uri"][5], 0, 2000)))
    short = ev[0]  # clip 0 is 0.3 s = 2400 samples: a 4000-sample crop is padded
    ev4k = TripleDataset(t, store, clip_samples=4000, train=False)[0]
    assert ev4k["audio_length"] == 2400 and not ev4k["audio"][2400:].any()
    assert short["audio"].shape == (2000,)


def test_sampler_shards_shuffles_and_resumes():
    full = ResumableBatchSampler(23, batch_size=2, shuffle=True, seed=1, drop_last=True, world_size=1)
    full.set_epoch(0)
    batches = list(full)
    assert len(batches) == 11 and len({i for b in batches for i, _ in b}) == 22
    full.set_epoch(0, start_batch=4)
    assert list(full) == batches[4:] and len(full) == 7
    full.set_epoch(1)
    assert [i for b in full for i, _ in b] != [i for b in batches for i, _ in b]
    assert all(e == 1 for b in full for _, e in b)
    shards = []
    for rank in range(3):
        s = ResumableBatchSampler(23, 2, shuffle=True, seed=1, drop_last=True, rank=rank, world_size=3)
        s.set_epoch(0)
        shards.append([i for b in s for i, _ in b])
    assert all(len(x) == 6 for x in shards)
    assert len(set().union(*map(set, shards))) == 18  # disjoint
    val = [ResumableBatchSampler(7, 2, shuffle=False, drop_last=False, rank=r, world_size=2) for r in range(2)]
    seen = sorted(i for s in val for b in s for i, _ in b)
    assert seen == list(range(7))  # nothing dropped or repeated


def test_sampler_groups_by_length_and_still_resumes():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 40, size=203).tolist()

    def padded_cost(batches):  # what the LM pays: every sample padded to its batch's longest
        return sum(len(b) * max(lengths[i] for i, _ in b) for b in batches)

    plain = list(ResumableBatchSampler(203, 4, shuffle=True, seed=3, world_size=2, rank=0))
    ranks = [ResumableBatchSampler(203, 4, shuffle=True, seed=3, world_size=2, rank=r, lengths=lengths,
                                   group_batches=8) for r in range(2)]  # fmt: skip
    grouped = [list(s) for s in ranks]
    # the same samples per epoch (drop_last: 200 of 203), each once, disjoint over the ranks
    seen = [i for g in grouped for b in g for i, _ in b]
    assert len(seen) == len(set(seen)) == 200
    assert padded_cost(grouped[0]) < 0.8 * padded_cost(plain)
    # batches are shuffled (not sorted end to end) and differ per epoch
    maxima = [max(lengths[i] for i, _ in b) for b in grouped[0]]
    assert maxima != sorted(maxima)
    ranks[0].set_epoch(1)
    assert list(ranks[0]) != grouped[0]
    # resuming mid-epoch yields exactly the rest of the epoch
    ranks[0].set_epoch(0, start_batch=9)
    assert list(ranks[0]) == grouped[0][9:]
    with pytest.raises(ValueError, match="lengths"):
        ResumableBatchSampler(10, 2, shuffle=True, lengths=[1, 2])


def test_collate_labels_and_prompt_index(tmp_path):
    store, uris = make_store(tmp_path)
    write_triples(tmp_path / "train.parquet", uris)
    t = load_triples(tmp_path / "train.parquet", store)
    ds = TripleDataset(t, store, 1000, train=False)
    coll = Collator(CharTokenizer(), max_target_tokens=8, prompt_vocab=t.unique_prompts())
    batch = coll([ds[0], ds[1]])
    assert batch["audio"].shape == (2, 1000) and batch["input_ids"].shape == (2, 8)
    # truncated to 7 tokens + eos; labels equal the ids where the mask is on
    assert batch["input_ids"][0, -1].item() == 2
    assert torch.equal(batch["labels"][batch["attention_mask"] == 1], batch["input_ids"][batch["attention_mask"] == 1])
    assert batch["prompt_index"].tolist() == [t.unique_prompts().index(p) for p in batch["prompt"]]
    short = Collator(CharTokenizer(), 40)([{**ds[0], "target": "ab"}, {**ds[1], "target": "abcd"}])
    assert short["labels"][0].tolist() == [3 + ord("a") % 50, 3 + ord("b") % 50, 2, IGNORE_INDEX, IGNORE_INDEX]
    assert short["input_ids"][0, 3:].tolist() == [0, 0]
    assert short["target_lengths"] == [3, 5] == short["attention_mask"].sum(1).tolist()  # host-side, for packing
    with pytest.raises(KeyError, match="prompt vocabulary"):
        Collator(prompt_vocab=["x"])([ds[0]])


def test_loader_with_workers_matches_in_process(tmp_path):
    store, uris = make_store(tmp_path)
    write_triples(tmp_path / "train.parquet", uris)
    t = load_triples(tmp_path / "train.parquet", store)
    ds = TripleDataset(t, store, 1500, train=True, seed=0)
    outs = []
    for workers in (0, 2):
        s = ResumableBatchSampler(len(ds), 3, shuffle=True, seed=0)
        s.set_epoch(2)
        outs.append(torch.cat([b["audio"] for b in make_loader(ds, s, Collator(), workers)]))
    assert torch.equal(outs[0], outs[1])


def test_collate_text_index_for_cached_text_features(tmp_path):
    store, uris = make_store(tmp_path)
    write_triples(tmp_path / "train.parquet", uris)
    t = load_triples(tmp_path / "train.parquet", store)
    ds = TripleDataset(t, store, 1000, train=False)
    vocab = sorted(set(t.columns["target"]))
    batch = Collator(text_vocab=vocab)([ds[0], ds[3], ds[4]])
    assert [vocab[i] for i in batch["text_index"].tolist()] == batch["target"]


def test_float16_audio_is_the_stored_samples(tmp_path):
    store, uris = make_store(tmp_path)
    write_triples(tmp_path / "train.parquet", uris)
    t = load_triples(tmp_path / "train.parquet", store)
    half = TripleDataset(t, store, 3000, train=True, seed=1, audio_dtype=np.float16)[(7, 2)]
    full = TripleDataset(t, store, 3000, train=True, seed=1)[(7, 2)]
    assert half["audio"].dtype == torch.float16 and full["audio"].dtype == torch.float32
    assert torch.equal(half["audio"].float(), full["audio"])  # same crop, exact upcast
    assert Collator()([half, half])["audio"].dtype == torch.float16
