"""Checkpoint folders: exact round trips, what is (not) stored, refusal of pickles and foreign keys."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from pengi.checkpoint import CheckpointError, checkpoint_state, load_pretrained, read_config
from pengi.config import ConfigError, LMConfig, TextEncoderConfig
from pengi.models import CLAP, Pengi, build_clap, build_pengi
from pengi.models.tiny import TINY_AUDIO as AUDIO
from pengi.models.tiny import TINY_LM as GPT2
from pengi.models.tiny import tiny_model_config as tiny_config


def batch(B: int = 2):
    g = torch.Generator().manual_seed(0)
    wave = 0.1 * torch.randn(B, 16000, generator=g)
    prompt = torch.randint(1, 99, (B, 8), generator=g)
    pmask = torch.ones(B, 8, dtype=torch.long)
    pmask[-1, 5:] = 0
    target = torch.randint(1, 119, (B, 5), generator=g)
    tmask = torch.ones(B, 5, dtype=torch.long)
    tmask[-1, 3:] = 0
    return wave, prompt, pmask, target, tmask


def _outputs(model: Pengi):
    wave, prompt, pmask, target, tmask = batch()
    with torch.no_grad():
        return model(wave, target, tmask, prompt, pmask).logits


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Pengi, object]:
    """A tiny Pengi after one optimizer step (so saved weights differ from any fresh init)."""
    torch.manual_seed(0)
    model = build_pengi(tiny_config("clip"), AUDIO)
    model.train()
    opt = torch.optim.SGD(model.trainable_parameters(), lr=0.1)
    wave, prompt, pmask, target, tmask = batch()
    model(wave, target, tmask, prompt, pmask).loss.backward()
    opt.step()
    model.eval()
    folder = tmp_path_factory.mktemp("ckpt") / "pengi"
    model.save_pretrained(folder)
    return model, folder


def test_round_trip_gives_identical_outputs(trained):
    model, folder = trained
    torch.manual_seed(123)  # a different init must not leak through
    loaded = Pengi.from_pretrained(folder)
    assert not loaded.training
    assert torch.equal(_outputs(loaded), _outputs(model))
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_config_json_rebuilds_the_model(trained):
    model, folder = trained
    model_class, audio, cfg = read_config(folder)
    assert model_class == "pengi" and audio == model.audio_cfg and cfg == model.config
    # Tied LM head stored once; the hf_config-built LM is stored in full.
    keys = set(load_file(str(folder / "model.safetensors")))
    assert "lm.model.transformer.wte.weight" in keys and "lm.model.lm_head.weight" not in keys


def test_lm_from_a_named_source_is_not_duplicated(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    lm_dir = tmp_path / "tiny-gpt2"
    conf = dict(GPT2)
    AutoModelForCausalLM.from_config(AutoConfig.for_model(conf.pop("model_type"), **conf)).save_pretrained(lm_dir)
    cfg = dataclasses.replace(tiny_config(), lm=LMConfig(name=str(lm_dir)))
    model = build_pengi(cfg, AUDIO).eval()
    model.save_pretrained(tmp_path / "ckpt")
    keys = set(load_file(str(tmp_path / "ckpt" / "model.safetensors")))
    assert not any(k.startswith("lm.") for k in keys)
    assert any(k.startswith("m1.") for k in keys) and any(k.startswith("text_encoder.model.") for k in keys)
    assert torch.equal(_outputs(Pengi.from_pretrained(tmp_path / "ckpt")), _outputs(model))


def test_frozen_named_text_encoder_body_is_not_stored():
    cfg = dataclasses.replace(tiny_config(), text=TextEncoderConfig(train_in_clap=False))  # the MiniLM package
    model = build_pengi(cfg, AUDIO)
    keys = checkpoint_state(model)
    assert not any(k.startswith("text_encoder.model.") for k in keys)
    assert "text_encoder.projection.linear1.weight" in keys


def test_clap_round_trip_and_class_check(tmp_path):
    torch.manual_seed(0)
    clap = build_clap(tiny_config(), AUDIO).eval()
    clap.save_pretrained(tmp_path / "clap")
    loaded = CLAP.from_pretrained(tmp_path / "clap")
    wave, prompt, pmask, *_ = batch()
    with torch.no_grad():
        assert torch.equal(loaded(wave, prompt, pmask).loss, clap(wave, prompt, pmask).loss)
    assert torch.equal(loaded.logit_scale, clap.logit_scale)
    with pytest.raises(TypeError, match="not a Pengi"):
        Pengi.from_pretrained(tmp_path / "clap")


def test_pickles_are_refused(tmp_path, trained):
    _, folder = trained
    pth = tmp_path / "model.pth"
    torch.save({"model": {}}, pth)
    with pytest.raises(CheckpointError, match="pickle"):
        load_pretrained(pth)
    only_pickle = tmp_path / "hf_style"
    only_pickle.mkdir()
    (only_pickle / "config.json").write_text((folder / "config.json").read_text())
    torch.save({}, only_pickle / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="never loaded"):
        load_pretrained(only_pickle)


def _copy(folder, dst, mutate):
    dst.mkdir()
    (dst / "config.json").write_text((folder / "config.json").read_text())
    tensors = load_file(str(folder / "model.safetensors"))
    mutate(tensors)
    save_file(tensors, str(dst / "model.safetensors"))
    return dst


def test_unknown_missing_and_misshaped_keys_are_refused(tmp_path, trained):
    _, folder = trained
    extra = _copy(folder, tmp_path / "extra", lambda t: t.update({"m1.surprise": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match="unknown"):
        load_pretrained(extra)
    missing = _copy(folder, tmp_path / "missing", lambda t: t.pop("m2.prefix_const"))
    with pytest.raises(CheckpointError, match="missing"):
        load_pretrained(missing)
    shaped = _copy(folder, tmp_path / "shape", lambda t: t.update({"m2.prefix_const": torch.zeros(2, 2)}))
    with pytest.raises(CheckpointError, match="shape"):
        load_pretrained(shaped)


def test_foreign_or_bad_config_is_refused(tmp_path, trained):
    _, folder = trained
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    data = json.loads((folder / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**data, "format": "other"}))
    with pytest.raises(CheckpointError, match="not a"):
        load_pretrained(bad)
    data["model"]["mapper"]["surprise"] = 1
    (bad / "config.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="surprise"):
        load_pretrained(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained(tmp_path / "nowhere")


def test_text_kinds_rebuild_from_config(tmp_path):
    for kind in ("bert_mean", "gpt2_last", "lm_embed"):
        torch.manual_seed(0)
        model = build_pengi(tiny_config(kind), AUDIO).eval()
        model.save_pretrained(tmp_path / kind)
        assert torch.equal(_outputs(Pengi.from_pretrained(tmp_path / kind)), _outputs(model)), kind
