"""The generic training loop: schedule, checkpoints, exact resume after SIGKILL, logs."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from pengi.models.tiny import tiny_params_with_offline_tokenizers
from pengi.config import TrainConfig
from pengi.train.loop import build_optimizer, list_checkpoints, lr_factor, lr_scale_of, train

SR = 4000
CLASSES = ["low hum", "mid tone", "high whistle"]

# A toy audio classifier trained through the real data path (store, dataset, sampler, loader).
# Dropout makes the torch RNG matter, random crops make the data position matter.
TOY = textwrap.dedent(
    '''
    import sys, time
    import torch
    from torch import nn
    from pengi.audio_store import AudioStore
    from pengi.config import TrainConfig
    from pengi.data import Collator, TripleDataset, load_triples
    from pengi.train.loop import train

    CLASSES = ["low hum", "mid tone", "high whistle"]


    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.frozen = nn.Linear(50, 16)
            self.frozen.requires_grad_(False)
            self.net = nn.Sequential(nn.Linear(16 + 26, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 3))
            self.norm = nn.BatchNorm1d(26)  # a buffer that training changes

        def forward(self, audio):
            frames = audio.unfold(-1, 50, 50)  # (B, F, 50)
            spec = torch.fft.rfft(frames, dim=-1).abs().mean(1)  # (B, 26)
            return self.net(torch.cat([self.frozen(frames).mean(1), self.norm(spec)], -1))


    def step(model, batch):
        time.sleep(SLEEP)
        y = torch.tensor([CLASSES.index(t) for t in batch["target"]])
        logits = model(batch["audio"])
        loss = nn.functional.cross_entropy(logits, y)
        return loss, {"acc": (logits.argmax(-1) == y).float().mean()}


    data, out, SLEEP = sys.argv[1], sys.argv[2], float(sys.argv[3])
    cfg = TrainConfig(epochs=4, batch_size=4, grad_accum=2, lr=3e-3, warmup_steps=3, precision="bf16",
                      num_workers=int(sys.argv[4]), checkpoint_every=3, val_every=4, log_every=2, seed=7)
    store = AudioStore(data + "/store")
    torch.manual_seed(0)
    model = Toy()
    tr = TripleDataset(load_triples(data + "/train.parquet", store), store, 1000, train=True, seed=cfg.seed)
    va = TripleDataset(load_triples(data + "/val.parquet", store), store, 1000, train=False)
    train(model, step, tr, va, Collator(), cfg, out, progress=False)
    '''
)


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> Path:
    from pengi.audio_store import build_store

    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    rows = {"train": [], "val": []}
    for i in range(40):
        c = i % 3
        n = int(SR * rng.uniform(0.2, 0.5))
        t = np.arange(n) / SR
        wave = np.sin(2 * np.pi * (200 + 600 * c) * t) * 0.3 + 0.1 * rng.standard_normal(n)
        path = root / f"{i}.wav"
        sf.write(path, wave.astype(np.float32), SR)
        split = "val" if i >= 32 else "train"
        rows[split].append(dict(triple_id=str(i), source="toy", clip_id=str(i), audio_uri=str(path),
                                task="label", prompt="this is a sound of", target=CLASSES[c]))  # fmt: skip
    for split, r in rows.items():
        pq.write_table(pa.Table.from_pylist(r), root / f"{split}.parquet")
    build_store([r["audio_uri"] for rs in rows.values() for r in rs], root / "store", SR)
    (root / "toy_train.py").write_text(TOY)
    return root


def run_toy(data: Path, out: Path, sleep: float = 0.0, workers: int = 0) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, str(data / "toy_train.py"), str(data), str(out), str(sleep), str(workers)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def outputs(out: Path) -> dict[str, bytes]:
    final = list_checkpoints(out)[-1]
    return {
        "weights": (final / "trainable.safetensors").read_bytes(),
        "train_log": (out / "train_log.csv").read_bytes(),
        "val_log": (out / "val_log.csv").read_bytes(),
        "metrics": (out / "metrics.json").read_bytes(),
        "final": final.name.encode(),
    }


def test_lr_schedule():
    f = [lr_factor(s, 4, 12, "linear") for s in range(12)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert f[4] == 1.0 and f[-1] == pytest.approx(1 / 8) and all(a >= b for a, b in zip(f[3:], f[4:]))
    assert lr_factor(100, 4, 12, "linear") == 0.0
    assert lr_factor(8, 4, 12, "cosine") == pytest.approx(0.5)
    assert lr_factor(11, 4, 12, "constant") == 1.0
    assert lr_factor(0, 0, 10, "linear") == 1.0


def test_lr_scales_make_one_group_per_multiplier():
    net = torch.nn.ModuleDict({"audio_encoder": torch.nn.Linear(2, 2), "audio_encoder2": torch.nn.Linear(2, 2),
                               "m1": torch.nn.Linear(2, 2)})  # fmt: skip
    named = list(net.named_parameters())
    scales = {"audio_encoder": 0.1, "m1": 3.0}
    assert lr_scale_of("model.audio_encoder.htsat.w", scales) == 0.1
    assert lr_scale_of("audio_encoder2.weight", scales) == 1.0  # whole components only
    assert lr_scale_of("x.audio_encoder.m1.w", {"audio_encoder": 0.1, "audio_encoder.m1": 2.0}) == 2.0  # longest
    opt = build_optimizer(named, TrainConfig(lr=1e-3, lr_scales=scales), torch.device("cpu"))
    got = {round(g["lr"], 9): sum(p.numel() for p in g["params"]) for g in opt.param_groups}
    assert got == {1e-4: 6, 1e-3: 6, 3e-3: 6}
    with pytest.raises(ValueError, match="m2"):
        build_optimizer(named, TrainConfig(lr_scales={"m2": 2.0}), torch.device("cpu"))


@pytest.mark.slow
def test_kill_and_resume_is_exact(toy_data, tmp_path):
    """SIGKILL a run at a random step after a checkpoint, rerun the same command: same end."""
    ref = run_toy(toy_data, tmp_path / "ref")
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    expected = outputs(tmp_path / "ref")
    metrics = json.loads(expected["metrics"])
    assert metrics["steps"] == 16 and metrics["val_loss"] < metrics["val_loss_initial"]

    rng = random.Random()
    kill_after = rng.choice([3, 6, 9])  # a checkpoint step; the kill lands at a random point after it
    extra_delay = rng.uniform(0.0, 0.4)  # at least 7 steps (>= 1.4 s) remain at kill time
    out = tmp_path / "killed"
    proc = run_toy(toy_data, out, sleep=0.1)
    deadline = time.monotonic() + 300
    while not any(int(p.name[5:]) >= kill_after for p in list_checkpoints(out)):
        assert proc.poll() is None, f"finished before the kill: {proc.stderr.read()}"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(extra_delay)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert not (out / "metrics.json").exists(), "the run ended before it was killed; slow the toy down"
    (out / "checkpoints" / ".tmp-step_00000099-1").mkdir()  # as a kill during a checkpoint write leaves
    resumed = run_toy(toy_data, out, workers=1)  # the same command (worker count may differ)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert outputs(out) == expected
    assert not list((out / "checkpoints").glob(".tmp-*"))
    # running it again once complete changes nothing
    again = run_toy(toy_data, out)
    assert again.wait(timeout=300) == 0, again.stderr.read()
    assert outputs(out) == expected


def test_resume_only_the_same_run_and_keep_last_checkpoints(toy_data, tmp_path, caplog):
    from pengi.audio_store import AudioStore
    from pengi.data import Collator, TripleDataset, load_triples

    store = AudioStore(toy_data / "store")
    ds = TripleDataset(load_triples(toy_data / "train.parquet", store), store, 500, train=True)
    model = torch.nn.Sequential(torch.nn.Linear(500, 3))

    def step(m, batch):
        y = torch.tensor([CLASSES.index(t) for t in batch["target"]])
        return torch.nn.functional.cross_entropy(m(batch["audio"]), y)

    cfg = TrainConfig(epochs=1, batch_size=4, warmup_steps=1, num_workers=0, checkpoint_every=2,
                      val_every=0, log_every=1, keep_checkpoints=2)  # fmt: skip
    result = train(model, step, ds, None, Collator(), cfg, tmp_path, progress=False)
    assert result["steps"] == 8
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000006", "step_00000008"]
    rows = (tmp_path / "train_log.csv").read_text().splitlines()
    assert rows[0] == "step,epoch,lr,loss" and len(rows) == 9
    # what does not change the trajectory may change: the finished run is simply reported again
    again = train(model, step, ds, None, Collator(), TrainConfig(**{**cfg.__dict__, "log_every": 3}), tmp_path, progress=False)
    assert again["steps"] == 8 and again["train_loss"] == result["train_loss"]
    # another run's checkpoints (other params, other data) are not resumed: it starts over
    with caplog.at_level(logging.WARNING, logger="pengi.train.loop"):
        other = train(model, step, ds, None, Collator(), TrainConfig(**{**cfg.__dict__, "lr": 1.0}), tmp_path, progress=False)
    assert "lr: 0.0001 -> 1.0" in caplog.text and other["train_loss"] != result["train_loss"]
    fewer = TripleDataset(load_triples(toy_data / "train.parquet", store), store, 500, train=True)
    fewer.triples.columns = {k: v[:-4] for k, v in fewer.triples.columns.items()}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pengi.train.loop"):
        assert train(model, step, fewer, None, Collator(), cfg, tmp_path, progress=False)["steps"] == 7
    assert "train_examples: 32 -> 28" in caplog.text
    with pytest.raises(ValueError, match="no optimizer step"):
        train(model, step, ds, None, Collator(), TrainConfig(batch_size=64), tmp_path / "x", progress=False)


@pytest.mark.slow
def test_torchrun_ddp_two_ranks_and_resume(toy_data, tmp_path):
    """Two CPU ranks (gloo) through torchrun: trains, checkpoints, and a rerun resumes to the same end."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(toy_data / "toy_train.py"), str(toy_data), str(tmp_path / "ddp"), "0", "0"]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    first = outputs(tmp_path / "ddp")
    metrics = json.loads(first["metrics"])
    assert metrics["steps"] == 8 and metrics["samples_seen"] == 8 * 4 * 2 * 2  # 32 clips / (4 x 2 ranks) / accum 2 x 4 epochs
    # drop the newest checkpoints and rerun: it resumes from step 6 and reaches the same end
    ckpts = list_checkpoints(tmp_path / "ddp")
    for p in ckpts[1:]:
        import shutil

        shutil.rmtree(p)
    assert list_checkpoints(tmp_path / "ddp")[-1].name == "step_00000006"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert outputs(tmp_path / "ddp") == first


# --- the real models, tiny -------------------------------------------------------------------

TINY = tiny_params_with_offline_tokenizers()
TINY["model"]["target_max_tokens"] = 12
TINY["audio"]["sample_rate"] = SR
TINY["tracking"] = {"enabled": False}


def tiny_config(text_train_in_clap: bool = True, **train):
    import copy

    from pengi.config import from_dict

    tiny = copy.deepcopy(TINY)
    tiny["model"]["text"]["train_in_clap"] = text_train_in_clap
    section = {"epochs": 1, "batch_size": 4, "warmup_steps": 1, "num_workers": 0, "checkpoint_every": 2,
               "val_every": 2, "log_every": 1, "lr": 1e-3, **train}  # fmt: skip
    return from_dict({**tiny, "train_clap": section, "train_pengi": section})


@pytest.mark.slow
def test_train_clap_tiny_real_resumes_exactly(toy_data, tmp_path):
    """The real CLAP (tiny) through train_clap; a rerun from a mid-run checkpoint ends identically."""
    pytest.importorskip("pengi.models")
    from pengi.models.clap import CLAP
    from pengi.train.clap import train_clap

    cfg = tiny_config(max_steps=4)
    result = train_clap(cfg, toy_data, toy_data / "store", tmp_path / "clap", device="cpu")
    assert result["steps"] == 4
    first = outputs(tmp_path / "clap")
    reloaded = CLAP.from_pretrained(tmp_path / "clap" / "model")
    report = json.loads((tmp_path / "clap" / "data_report.json").read_text())
    # 32 train triples with 3 distinct texts: every (clip, target) pair is distinct here
    assert report["train"]["rows"] == 32 and report["val"]["rows"] == 8
    header = (tmp_path / "clap" / "train_log.csv").read_text().splitlines()[0]
    assert header == "step,epoch,lr,loss,acc_a2t,acc_t2a,logit_scale"
    for p in list_checkpoints(tmp_path / "clap")[1:]:  # back to step 2
        import shutil

        shutil.rmtree(p)
    train_clap(cfg, toy_data, toy_data / "store", tmp_path / "clap", device="cpu")
    assert outputs(tmp_path / "clap") == first
    again = CLAP.from_pretrained(tmp_path / "clap" / "model")
    for (k, a), (_, b) in zip(reloaded.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


@pytest.mark.slow
def test_train_pengi_tiny_real(toy_data, tmp_path):
    """CLAP then Pengi (tiny, real classes): encoders come from CLAP, frozen parts stay frozen,
    the prompt cache is used, resume from a mid-run checkpoint ends identically, samples written."""
    pytest.importorskip("pengi.models")
    from pengi.models.clap import CLAP
    from pengi.models.pengi import Pengi
    from pengi.train.clap import train_clap
    from pengi.train.pengi import train_pengi

    cfg = tiny_config(text_train_in_clap=False, max_steps=2)  # CLAP with cached text features
    train_clap(cfg, toy_data, toy_data / "store", tmp_path / "clap", device="cpu")
    # the embedded default's options: per-sample loss, packed LM rows, a slower audio tower; and
    # length-grouped batches
    cfg = tiny_config(text_train_in_clap=False, max_steps=4, loss_reduction="sample", group_by_length=True,
                      lr_scales={"audio_encoder": 0.1}, pack_tokens=24)  # fmt: skip
    result = train_pengi(cfg, toy_data, toy_data / "store", tmp_path / "clap" / "model", tmp_path / "pengi", device="cpu")
    assert result["steps"] == 4 and np.isfinite(result["val_loss"])
    first = outputs(tmp_path / "pengi")
    model = Pengi.from_pretrained(tmp_path / "pengi" / "model")
    clap = CLAP.from_pretrained(tmp_path / "clap" / "model")
    # the frozen text encoder body is CLAP's, unchanged; the audio encoder has trained on
    for k, v in clap.text_encoder.model.state_dict().items():
        assert torch.equal(model.text_encoder.model.state_dict()[k], v), k
    htsat_a = clap.audio_encoder.projection.state_dict()
    assert any(not torch.equal(model.audio_encoder.projection.state_dict()[k], v) for k, v in htsat_a.items())
    # checkpoints hold only what trains (no LM, no text-encoder body)
    from safetensors import safe_open

    with safe_open(str(list_checkpoints(tmp_path / "pengi")[-1] / "trainable.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert not any(k.startswith(("model.lm.", "model.text_encoder.model.")) for k in keys)
    assert any(k.startswith("model.audio_encoder.htsat.") for k in keys)
    samples = json.loads((tmp_path / "pengi" / "samples.json").read_text())
    assert len(samples) == 8 and all(isinstance(s["generated"], str) for s in samples)
    for p in list_checkpoints(tmp_path / "pengi")[1:]:
        import shutil

        shutil.rmtree(p)
    train_pengi(cfg, toy_data, toy_data / "store", tmp_path / "clap" / "model", tmp_path / "pengi", device="cpu")
    assert outputs(tmp_path / "pengi") == first


def test_fingerprint_covers_the_starting_model(tmp_path):
    """A Pengi run must not resume onto a retrained CLAP: its weights are in the fingerprint."""
    from pengi.train.common import data_fingerprint

    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "train.parquet").write_bytes(b"rows")
    clap = tmp_path / "clap"
    clap.mkdir()
    (clap / "model.safetensors").write_bytes(b"weights 1")
    first = data_fingerprint(tmp_path / "t", tmp_path / "store", clap)
    assert set(first) == {"_data.train_triples_md5", "_data.init_model_model_md5"}
    (clap / "model.safetensors").write_bytes(b"weights 2")
    assert data_fingerprint(tmp_path / "t", tmp_path / "store", clap) != first
    assert data_fingerprint(tmp_path / "t", tmp_path / "store") == {"_data.train_triples_md5": first["_data.train_triples_md5"]}


def test_per_sample_loss_weighs_every_target_equally():
    from pengi.models.pengi import per_sample_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=g)
    labels = torch.tensor([[1, 2, 3, 4, 5], [6, -100, -100, -100, -100]])  # 5 tokens vs 1 token
    got = per_sample_loss(logits, labels)
    ce = torch.nn.functional.cross_entropy
    assert torch.allclose(got[0], ce(logits[0], labels[0])) and torch.allclose(got[1], ce(logits[1, :1], labels[1, :1]))
    token_mean = ce(logits.reshape(-1, 7), labels.reshape(-1), ignore_index=-100)
    assert not torch.allclose(got.mean(), token_mean)  # the one-token target counts 1/2, not 1/6


@pytest.mark.parametrize("max_grad_norm", [0.0, 0.01])
def test_max_grad_norm_clips_every_step_and_logs_the_norm(toy_data, tmp_path, monkeypatch, max_grad_norm):
    import csv

    from pengi.audio_store import AudioStore
    from pengi.data import Collator, TripleDataset, load_triples

    class Spectrum(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(26, 3)

        def forward(self, audio):
            return self.head(torch.fft.rfft(audio.unfold(-1, 50, 50), dim=-1).abs().mean(1))

    def step(model, batch):
        y = torch.tensor([CLASSES.index(t) for t in batch["target"]])
        return torch.nn.functional.cross_entropy(model(batch["audio"]), y)

    torch.manual_seed(0)
    model = Spectrum()
    norms: list[float] = []  # the gradient norm each optimizer step applies

    def spy(opt, args, kwargs):
        norms.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))))

    from pengi.train import loop

    real = loop.build_optimizer

    def build(named, cfg, device):
        opt = real(named, cfg, device)
        opt.register_step_pre_hook(spy)
        return opt

    store = AudioStore(toy_data / "store")
    ds = TripleDataset(load_triples(toy_data / "train.parquet", store), store, 1000, train=True, seed=0)
    cfg = TrainConfig(epochs=1, batch_size=4, lr=1e-2, warmup_steps=0, precision="fp32", num_workers=0,
                      checkpoint_every=0, val_every=0, log_every=1, max_grad_norm=max_grad_norm)  # fmt: skip
    monkeypatch.setattr(loop, "build_optimizer", build)
    train(model, step, ds, None, Collator(), cfg, tmp_path / "run", progress=False)
    rows = list(csv.DictReader((tmp_path / "run" / "train_log.csv").open()))
    assert len(norms) == len(rows) == 8
    if max_grad_norm:
        assert max(norms) <= max_grad_norm * 1.001  # every step clipped...
        logged = [float(r["grad_norm"]) for r in rows]
        assert min(logged) > 10 * max_grad_norm  # ...from the norm the log reports, before clipping
    else:
        assert "grad_norm" not in rows[0] and min(norms) > 0.1  # (the same gradients, unclipped)
    with pytest.raises(ValueError, match="max_grad_norm"):
        train(model, step, ds, None, Collator(), TrainConfig(max_grad_norm=-1.0), tmp_path / "bad", progress=False)


@pytest.mark.parametrize("audio_train_mode", [True, False])
def test_audio_train_mode_decides_specaugment_and_batchnorm_statistics(audio_train_mode):
    import dataclasses

    from pengi.models import build_pengi
    from pengi.models.tiny import TINY_AUDIO, tiny_model_config
    from pengi.train.pengi import PengiTrainStep

    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny_model_config(), logmel_stats=True)
    model = build_pengi(cfg, TINY_AUDIO)
    feats = model.encode_prompt_features(torch.randint(1, 99, (3, 8)), torch.ones(3, 8, dtype=torch.long))
    step = PengiTrainStep(model, feats, "sample", audio_train_mode).train()
    enc = model.audio_encoder
    assert model.m1.training and enc.training is audio_train_mode
    assert enc.htsat.spec_augmenter.training is audio_train_mode
    before = [enc.htsat.bn0.running_mean.clone(), enc.stats.norm.running_mean.clone()]
    g = torch.Generator().manual_seed(1)
    batch = {
        "audio": 0.1 * torch.randn(3, 16000, generator=g), "prompt_index": torch.tensor([0, 1, 2]),
        "input_ids": torch.randint(1, 119, (3, 4), generator=g), "attention_mask": torch.ones(3, 4, dtype=torch.long),
    }  # fmt: skip
    step(batch).backward()
    after = [enc.htsat.bn0.running_mean, enc.stats.norm.running_mean]
    # BatchNorm statistics move only in train mode; the encoder's weights are trained either way
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True)) is not audio_train_mode
    assert enc.htsat.patch_embed.proj.weight.grad.abs().sum() > 0 and enc.projection.linear1.weight.grad.abs().sum() > 0
    # validation switches everything to eval; back to training restores the choice
    step.eval()
    assert not enc.training and not model.m1.training
    step.train()
    assert enc.training is audio_train_mode and model.m1.training


@pytest.mark.slow
def test_train_pengi_with_lm_embedded_prompts(toy_data, tmp_path):
    """``text.kind: lm_embed`` (the authors' base_no_text_enc): Pengi trains from a CLAP's audio
    tower with prompts embedded by the frozen LM, and a session generates with it."""
    import copy

    from pengi.config import from_dict
    from pengi.models.lm import load_lm_tokenizer, tokenize_lm_prompts
    from pengi.session import PengiSession
    from pengi.train.clap import train_clap
    from pengi.train.pengi import train_pengi

    # CLAP needs a text encoder: it is trained with one, Pengi takes only its audio tower
    train_clap(tiny_config(text_train_in_clap=False, max_steps=2), toy_data, toy_data / "store", tmp_path / "clap",
               device="cpu")  # fmt: skip
    params = copy.deepcopy(TINY)
    params["model"]["text"] = {"kind": "lm_embed", "name": "smollm2", "max_length": 8}
    section = {"epochs": 1, "batch_size": 4, "warmup_steps": 1, "num_workers": 0, "checkpoint_every": 2,
               "val_every": 2, "log_every": 1, "lr": 1e-3, "max_steps": 2}  # fmt: skip
    cfg = from_dict({**params, "train_clap": section, "train_pengi": section})
    result = train_pengi(cfg, toy_data, toy_data / "store", tmp_path / "clap" / "model", tmp_path / "pengi", device="cpu")
    assert result["steps"] == 2 and np.isfinite(result["val_loss"])
    tok = load_lm_tokenizer(cfg.model.lm)
    ids, mask = tokenize_lm_prompts(tok, ["this is a sound of", "a much longer prompt than eight tokens can ever hold"], 8)
    bang = tok("!", add_special_tokens=False)["input_ids"][0]
    assert ids.shape == (2, 8) and mask[1].all() and ids[0, mask[0].sum():].eq(bang).all()
    assert tok.decode(ids[0, : mask[0].sum()]) == f"this is a sound of {tok.eos_token}"
    session = PengiSession.from_pretrained(tmp_path / "pengi" / "model", beam_size=2, max_new_tokens=3)
    texts, errors = session.generate([str(toy_data / "0.wav"), str(toy_data / "1.wav")], "this is a sound of")
    assert not errors and all(isinstance(t, str) for t in texts)
    assert session.prompt_features(["this is a sound of"]).shape == (1, 8, session.model.lm.hidden_size)


def test_contrastive_loss_is_the_symmetric_cross_entropy():
    from pengi.train.clap import contrastive_loss

    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    t = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1)
    scale = torch.tensor(10.0)
    loss, metrics = contrastive_loss(a, t, scale)
    logits = scale * a @ t.T  # (B, B) audio -> text
    labels = torch.arange(6)
    expected = 0.5 * (torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels))
    assert torch.allclose(loss, expected)
    assert metrics["acc_a2t"] == (logits.argmax(1) == labels).float().mean()
    perfect, m = contrastive_loss(a, a, torch.tensor(100.0))
    assert perfect < 1e-3 and m["acc_a2t"] == 1 and m["acc_t2a"] == 1


@pytest.mark.slow
def test_train_clap_command_logs_one_mlflow_run(toy_data, tmp_path, monkeypatch):
    """``pengi train-clap`` = one MLflow run: params by section, stage tag, per-step metrics,
    the final checkpoint's path and the metrics file as an artifact."""
    import yaml

    from pengi.cli import main
    from pengi.config import to_dict

    cfg = to_dict(tiny_config(max_steps=2))
    cfg["tracking"] = {"enabled": True, "experiment": "train-test"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_ARTIFACTS_DESTINATION", (tmp_path / "artifacts").as_uri())
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "clap"
    argv = ["train-clap", "--params", "params.yaml", "--triples", str(toy_data), "--audio", str(toy_data / "store"),
            "--out", str(out), "--device", "cpu", "--metrics", "metrics/train_clap.json"]  # fmt: skip
    assert main(argv) == 0
    assert json.loads((tmp_path / "metrics/train_clap.json").read_text()) == json.loads((out / "metrics.json").read_text())

    from mlflow.tracking import MlflowClient  # reading back only; the library never does this

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("train-test")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "train-clap" and run.info.status == "FINISHED"
    assert run.data.params["train_clap.max_steps"] == "2" and run.data.params["model.d_proj"] == "32"
    assert run.data.tags["pengi.stage"] == "train-clap"
    assert run.data.tags["final_checkpoint"].endswith("step_00000002")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [0, 2]
    assert "metrics.json" in {f.path for f in client.list_artifacts(run.info.run_id)}
