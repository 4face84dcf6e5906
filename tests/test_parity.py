"""Parity with the authors' Pengi code on the shared tiny fixture, and the official-checkpoint converter.

The fixture (``shared/reference/pengi_parity``) was made by running the reference code on a tiny
configuration. Its weights go through our converter into our model built from its
``config.json``; every recorded output must match within the README's tolerances.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pengi.checkpoint import (
    CheckpointError,
    checkpoint_state,
    config_from_reference_json,
    convert_reference,
    load_reference_into,
    map_reference_state,
    reference_config,
    reference_key_action,
)
from pengi.models import Pengi
from pengi.models.clap import l2_normalize

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "pengi_parity"
pytestmark = pytest.mark.skipif(
    not (FIXTURE / "weights.safetensors").exists(), reason=f"parity fixture absent: {FIXTURE}"
)


@pytest.fixture(scope="module")
def fixture_config() -> dict:
    return json.loads((FIXTURE / "config.json").read_text())


@pytest.fixture(scope="module")
def ref_weights() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE / "weights.safetensors"))


@pytest.fixture(scope="module")
def model(ref_weights) -> Pengi:
    torch.manual_seed(0)
    m = Pengi(*config_from_reference_json(FIXTURE / "config.json"))
    # The transformers-4.28 buffers too: the converter must check and drop them.
    weights = {**ref_weights, **load_file(str(FIXTURE / "weights_tf4.28_extra_buffers.safetensors"))}
    load_reference_into(m, weights)
    return m.eval()


@pytest.fixture(scope="module")
def inputs() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE / "inputs.safetensors"))


@pytest.fixture(scope="module")
def expected() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE / "outputs.safetensors"))


@pytest.fixture(scope="module")
def ours(model, inputs) -> dict[str, torch.Tensor]:
    """Every recorded output, computed by our model through its public parts."""
    wave = inputs["audio_int16"].float() / 32768
    ids, mask = inputs["prompt_input_ids"], inputs["prompt_attention_mask"]
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        enc = model.audio_encoder
        logmel = enc.frontend(wave)  # (B, 965, 64)
        out["logmel"] = logmel[:, None]
        image = enc.htsat.to_image(logmel)
        out["htsat_image_every16th_row"] = image[:, 0, ::16]
        h = enc.htsat.forward_image(image)
        out["htsat_final_norm_tokens"] = h.tokens
        out["htsat_embedding"] = h.embedding
        out["htsat_clipwise_output"] = h.clipwise
        out["audio_projection"] = model.audio_embedding(wave)
        out["audio_embedding_l2"] = l2_normalize(out["audio_projection"])
        out["audio_prefix"] = model.m1(out["audio_embedding_l2"])
        out["clip_last_hidden_state"] = model.text_encoder.model.text_model(input_ids=ids, attention_mask=mask)[0]
        pooled = model.encode_prompt_features(ids, mask)
        out["clip_pooled_output"] = pooled
        out["clip_text_projection"] = model.text_encoder.pooled_to_feature(pooled)
        out["prompt_embedding"] = model.prompt_embedding(pooled)
        out["prompt_embedding_l2"] = l2_normalize(out["prompt_embedding"])
        out["prefix_model"] = model.prefix(wave, ids, mask)
        out["prompt_prefix_model"] = out["prefix_model"][:, out["audio_prefix"].shape[1] :]
        out["prefix_wrapper"] = model.prefix(wave, ids, mask, reference_wrapper_prompt=True)
        out["prompt_prefix_wrapper"] = out["prefix_wrapper"][:, out["audio_prefix"].shape[1] :]
        # The reference passes no target mask: target_mask=None attends every position.
        out["lm_logits"] = model(wave, inputs["target_input_ids"], None, ids, mask, full_logits=True).lm_logits
    return out


OUTPUTS = [
    "logmel", "htsat_image_every16th_row", "htsat_final_norm_tokens", "htsat_embedding", "htsat_clipwise_output",
    "audio_projection", "audio_embedding_l2", "audio_prefix", "clip_last_hidden_state", "clip_pooled_output",
    "clip_text_projection", "prompt_embedding", "prompt_embedding_l2", "prefix_model", "prompt_prefix_model",
    "prefix_wrapper", "prompt_prefix_wrapper", "lm_logits",
]  # fmt: skip


@pytest.mark.parametrize("name", OUTPUTS)
def test_output_matches_reference(name, ours, expected, inputs, fixture_config):
    atol = fixture_config["tolerances"]["per_output"][name]["atol"]
    got, want = ours[name], expected[name]
    assert got.shape == want.shape
    diff = (got - want).abs()
    if name == "clip_last_hidden_state":
        # Positions after the first EOS depend on the padding mask only and never reach the model.
        diff = diff[inputs["prompt_attention_mask"].bool()]
    assert diff.max().item() <= atol, f"{name}: max |ours - reference| = {diff.max().item():.3g} > {atol}"


def test_every_output_is_checked(expected):
    recorded = {k for k in expected if "." not in k}
    assert recorded == set(OUTPUTS)


# --------------------------------------------------------------------------------------------
# Beam search with the reference's decoding settings
# --------------------------------------------------------------------------------------------


def reference_beam(model: Pengi, prefix, beam_size, entry_length, temperature, stop_id):
    """The algorithm of the fixture README, step for step (no cache, no mask)."""
    lm = model.lm
    generated = prefix  # (1, P, D)
    scores = tokens = None
    seq_lengths = torch.ones(beam_size)
    is_stopped = torch.zeros(beam_size, dtype=torch.bool)
    for _ in range(entry_length):
        logits = lm(inputs_embeds=generated).logits[:, -1, :]
        logits = logits / (temperature if temperature > 0 else 1.0)
        logp = logits.softmax(-1).log()
        if scores is None:
            scores, next_tokens = logp.topk(beam_size, -1)  # (1, K)
            generated = generated.expand(beam_size, *generated.shape[1:])
            next_tokens, scores = next_tokens.permute(1, 0), scores.squeeze(0)  # (K, 1), (K,)
            tokens = next_tokens
        else:
            logp[is_stopped] = -float("inf")
            logp[is_stopped, 0] = 0
            total = scores[:, None] + logp  # (K, V)
            seq_lengths[~is_stopped] += 1
            avg = total / seq_lengths[:, None]
            avg, idx = avg.view(-1).topk(beam_size, -1)
            source = idx // logp.shape[1]
            seq_lengths = seq_lengths[source]
            next_tokens = (idx % logp.shape[1]).unsqueeze(1)
            tokens = torch.cat((tokens[source], next_tokens), dim=1)
            generated = generated[source]
            scores = avg * seq_lengths
            is_stopped = is_stopped[source]
        generated = torch.cat((generated, lm.embed_tokens(next_tokens)), dim=1)
        is_stopped = is_stopped | next_tokens.eq(stop_id).squeeze(1)
        if is_stopped.all():
            break
    norm = scores / seq_lengths
    order = norm.argsort(descending=True)
    return tokens[order], seq_lengths[order].long(), norm[order], scores / seq_lengths, order


@pytest.mark.parametrize("case", [c["name"] for c in json.loads((FIXTURE / "config.json").read_text())["beam_cases"]]
                         if (FIXTURE / "config.json").exists() else [])  # fmt: skip
def test_beam_search_matches_reference(case, model, ours, expected, fixture_config):
    spec = next(c for c in fixture_config["beam_cases"] if c["name"] == case)
    prefix = ours[f"prefix_{spec['prefix']}"][spec["clip"] : spec["clip"] + 1]
    with torch.no_grad():
        tokens, lengths, scores, returned, order = reference_beam(
            model, prefix, spec["beam_size"], spec["entry_length"], spec["temperature"], spec["stop_id"]
        )
    atol = fixture_config["tolerances"]["per_output"]["beam.scores"]["atol"]
    assert torch.equal(tokens, expected[f"{case}.tokens"])
    assert torch.equal(lengths, expected[f"{case}.lengths"])
    assert torch.equal(order, expected[f"{case}.order"])
    assert (scores - expected[f"{case}.scores"]).abs().max() <= atol
    assert (returned - expected[f"{case}.scores_returned"]).abs().max() <= atol


def test_batched_beam_search_from_our_prefixes(model, ours, expected, fixture_config):
    """The project's KV-cached, batched beam search on our prefixes gives the recorded beams."""
    inference = pytest.importorskip("pengi.inference")
    for spec in fixture_config["beam_cases"]:
        prefix = ours[f"prefix_{spec['prefix']}"][spec["clip"] : spec["clip"] + 1]
        res = inference.beam_search(
            model.lm.model, prefix, beam_size=spec["beam_size"], max_new_tokens=spec["entry_length"],
            stop_token_ids=spec["stop_id"], temperature=spec["temperature"], reference_compat=True,
        )  # fmt: skip
        name = spec["name"]
        assert torch.equal(res.tokens[0], expected[f"{name}.tokens"]), name
        assert torch.equal(res.lengths[0], expected[f"{name}.lengths"]), name
        assert (res.scores[0] - expected[f"{name}.scores"]).abs().max() <= 1e-5, name


# --------------------------------------------------------------------------------------------
# The converter
# --------------------------------------------------------------------------------------------


def test_constant_buffers_are_checked(ref_weights):
    m = Pengi(*config_from_reference_json(FIXTURE / "config.json"))
    bad = dict(ref_weights)
    key = next(k for k in bad if k.endswith("relative_position_index"))
    bad[key] = bad[key].flip(0)
    with pytest.raises(CheckpointError, match="constant buffer"):
        map_reference_state(bad, m)
    extra = load_file(str(FIXTURE / "weights_tf4.28_extra_buffers.safetensors"))
    key = next(k for k in extra if k.endswith("attn.bias"))
    bad = {**ref_weights, key: torch.ones_like(extra[key])}  # not lower-triangular
    with pytest.raises(CheckpointError, match="constant buffer"):
        map_reference_state(bad, m)


def test_unmapped_and_missing_keys_fail_loudly(ref_weights):
    m = Pengi(*config_from_reference_json(FIXTURE / "config.json"))
    with pytest.raises(CheckpointError, match="no mapping"):
        map_reference_state({**ref_weights, "caption_decoder.new_thing.weight": torch.zeros(1)}, m)
    missing = {k: v for k, v in ref_weights.items() if not k.endswith("audio_project.prefix_const")}
    with pytest.raises(CheckpointError, match="missing"):
        load_reference_into(m, missing)
    wrong = dict(ref_weights)
    wrong["caption_decoder.gpt.lm_head.weight"] = wrong["caption_decoder.gpt.lm_head.weight"] + 1
    with pytest.raises(CheckpointError, match="tied"):
        map_reference_state(wrong, m)


def test_module_prefix_only_stripped_from_every_key(ref_weights):
    m = Pengi(*config_from_reference_json(FIXTURE / "config.json"))
    assert len(map_reference_state({f"module.{k}": v for k, v in ref_weights.items()}, m)) > 0
    partial = {(f"module.{k}" if i == 0 else k): v for i, (k, v) in enumerate(ref_weights.items())}
    with pytest.raises(CheckpointError, match="no mapping"):
        map_reference_state(partial, m)


@pytest.mark.slow
def test_convert_reference_command_round_trip(tmp_path, ref_weights, ours, inputs, expected):
    """A ``.pth`` like the official one -> ``pengi convert-reference`` -> ``Pengi.from_pretrained``."""
    pth = tmp_path / "base.pth"
    torch.save({"model": ref_weights, "epoch": 3}, pth)
    out = tmp_path / "converted"
    cmd = [sys.executable, "-m", "pengi", "convert-reference", str(pth), str(out), "--variant", "base",
           "--reference-config", str(FIXTURE / "config.json")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    loaded = Pengi.from_pretrained(out)
    wave = inputs["audio_int16"].float() / 32768
    with torch.no_grad():
        prefix = loaded.prefix(wave, inputs["prompt_input_ids"], inputs["prompt_attention_mask"])
    assert torch.equal(prefix, ours["prefix_model"])
    # The wrong variant (issue #9: swapped files) is refused.
    bad = subprocess.run(cmd[:-4] + ["--variant", "base_no_text_enc"] + cmd[-2:], capture_output=True, text=True)
    assert bad.returncode != 0


def test_pickle_with_objects_is_refused(tmp_path, ref_weights):
    pth = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "payload": _Payload()}, pth)
    with pytest.raises(CheckpointError, match="weights_only"):
        convert_reference(pth)
    with pytest.raises(CheckpointError, match="not found"):
        convert_reference(tmp_path / "absent.pth")


class _Payload:
    """An arbitrary object: ``weights_only=True`` must refuse to unpickle it."""


def test_safetensors_input_and_variant_check(tmp_path, ref_weights):
    path = tmp_path / "w.safetensors"
    save_file(ref_weights, str(path))
    cfgs = config_from_reference_json(FIXTURE / "config.json")
    with pytest.raises(CheckpointError, match="swapped"):
        convert_reference(path, variant="base_no_text_enc", configs=cfgs)
    m = convert_reference(path, variant="base", configs=cfgs)
    assert not m.training


# --------------------------------------------------------------------------------------------
# The real checkpoints' key lists (no weights needed: the model is built on the meta device)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["base", "base_no_text_enc"])
def test_official_key_lists_map_completely(variant):
    rows = list(csv.DictReader((FIXTURE / f"ref_state_dict_keys_{variant}.tsv").open(), delimiter="\t"))
    with torch.device("meta"):
        model = Pengi(*reference_config(variant))
    expected = {k: tuple(v.shape) for k, v in checkpoint_state(model).items()}
    params = dict(model.named_parameters())
    mapped = {}
    for row in rows:
        action, ours = reference_key_action(row["key"])
        assert action != "unmapped", row["key"]
        if action == "map" and not ours.endswith("lm_head.weight"):  # lm_head is tied to wte
            mapped[ours] = tuple(int(x) for x in row["shape"].strip("()").split(",") if x.strip())
            if row["requires_grad"] in ("True", "False") and ours in params:
                assert params[ours].requires_grad == (row["requires_grad"] == "True"), ours
    assert set(mapped) == set(expected)
    assert {k: v for k, v in mapped.items() if v != expected[k]} == {}
