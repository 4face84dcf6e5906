"""Model code on tiny random configs: shapes, freezing, gradients, losses, the text-encoder kinds."""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pengi.config import LMConfig, TextEncoderConfig, from_dict
from pengi.models import CLAP, Pengi, build_clap, build_pengi
from pengi.models.htsat import HTSAT, relative_position_index, shifted_window_mask
from pengi.models.mapper import MultiHeadAttention
from pengi.models.tiny import (
    TINY_AUDIO,
    TINY_HTSAT,
    TINY_LM,
    TINY_TEXT,
    tiny_model_config,
)

AUDIO = TINY_AUDIO
SAMPLES = 16000  # 251 frames <= 4 * 64
HTSAT_TINY = TINY_HTSAT
GPT2 = TINY_LM
TEXT = TINY_TEXT
tiny_config = tiny_model_config


def batch(B: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    wave = 0.1 * torch.randn(B, SAMPLES, generator=g)
    prompt = torch.randint(1, 99, (B, 8), generator=g)
    pmask = torch.ones(B, 8, dtype=torch.long)
    pmask[-1, 5:] = 0
    target = torch.randint(1, 119, (B, 5), generator=g)
    tmask = torch.ones(B, 5, dtype=torch.long)
    tmask[-1, 3:] = 0
    return wave, prompt, pmask, target, tmask


@pytest.fixture(scope="module")
def pengi() -> Pengi:
    torch.manual_seed(0)
    return build_pengi(tiny_config(), AUDIO)


# --------------------------------------------------------------------------------------------
# HTSAT
# --------------------------------------------------------------------------------------------


def test_htsat_shapes_and_window_grid():
    h = HTSAT(HTSAT_TINY, n_mels=16).eval()
    out = h(torch.randn(2, 251, 16))
    assert out.embedding.shape == (2, 32) and out.tokens.shape == (2, 64, 32)
    assert out.clipwise.shape == (2, 5) and ((out.clipwise > 0) & (out.clipwise < 1)).all()
    torch.testing.assert_close(out.embedding, out.tokens.mean(1))
    blocks = [b for layer in h.layers for b in layer.blocks]
    assert [b.shift for b in blocks] == [0, 0, 2]  # the second stage's second block is shifted
    with pytest.raises(ValueError, match="at most 256 frames"):
        h(torch.randn(1, 257, 16))


def test_matrix_rewrites_of_resize_and_patch_embedding_change_nothing(monkeypatch):
    """The bicubic time resize as ``W @ x`` and the 4 x 4 patch convolution as a ``linear``
    compute what ``F.interpolate`` and ``Conv2d`` compute, forward and backward, and the step
    still compiles to one graph."""
    import pengi.models.htsat as H

    W = H.bicubic_time_matrix(251, 256)
    x = torch.randn(3, 1, 251, 16)
    ref = F.interpolate(x, size=(256, 16), mode="bicubic", align_corners=True)
    torch.testing.assert_close(W @ x, ref, rtol=0, atol=1e-5)
    torch.manual_seed(0)
    h = HTSAT(HTSAT_TINY, n_mels=16).train()
    logmel = torch.randn(2, 251, 16)
    monkeypatch.setattr(H, "MATRIX_REWRITE_DEVICES", ("cpu", "cuda"))  # default: CUDA only
    runs = {}
    for fast in (True, False):
        monkeypatch.setattr(H, "MATMUL_TIME_RESIZE", fast)
        monkeypatch.setattr(H, "GEMM_PATCH_EMBED", fast)
        h.zero_grad()
        torch.manual_seed(1)  # the same SpecAugment stripes
        out = h(logmel)
        (out.embedding.square().sum() + out.clipwise.sum()).backward()
        runs[fast] = (out.embedding.detach(), {n: p.grad.clone() for n, p in h.named_parameters() if p.grad is not None})
    torch.testing.assert_close(runs[True][0], runs[False][0], rtol=1e-5, atol=1e-5)
    assert runs[True][1].keys() == runs[False][1].keys() and "patch_embed.proj.weight" in runs[True][1]
    for name, grad in runs[True][1].items():
        torch.testing.assert_close(grad, runs[False][1][name], rtol=1e-4, atol=1e-5, msg=name)
    monkeypatch.setattr(H, "MATMUL_TIME_RESIZE", True)
    monkeypatch.setattr(H, "GEMM_PATCH_EMBED", True)
    explained = torch._dynamo.explain(h)(logmel)
    assert explained.graph_count == 1 and explained.graph_break_count == 0
    h16 = HTSAT(HTSAT_TINY, n_mels=16).eval().to(torch.bfloat16)  # weights in bf16, no autocast
    assert h16(logmel.bfloat16()).embedding.dtype == torch.bfloat16


def test_window_attention_equals_explicit_softmax():
    """SDPA with the bias + shift mask equals Swin's explicit ``softmax(q k^T * s + B + M) v``."""
    torch.manual_seed(0)
    h = HTSAT(HTSAT_TINY, n_mels=16).eval()
    blk = h.layers[1].blocks[1]
    attn = blk.attn
    nn_init = torch.nn.init
    nn_init.normal_(attn.relative_position_bias_table, std=0.5)
    x = torch.randn(2, 4, 16, 32)  # (B, nW, N, C)
    mask = blk.attn_mask
    got = attn(x, mask)
    hd = 32 // attn.num_heads
    qkv = attn.qkv(x).view(2, 4, 16, 3, attn.num_heads, hd).permute(3, 0, 1, 4, 2, 5)
    q, k, v = qkv
    bias = attn.relative_position_bias_table[attn.relative_position_index.view(-1)].view(16, 16, -1).permute(2, 0, 1)
    scores = (q * hd**-0.5) @ k.transpose(-2, -1) + bias + mask[:, None]
    want = attn.proj((scores.softmax(-1) @ v).transpose(2, 3).reshape(2, 4, 16, 32))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_swin_constants():
    idx = relative_position_index(2)
    assert idx.tolist() == [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]
    m = shifted_window_mask(4, 4, 2, 1)
    assert m.shape == (4, 4, 4) and m[0].eq(0).all()  # the top-left window holds one region
    assert set(m.unique().tolist()) == {-100.0, 0.0}


def test_spec_augment_only_in_training():
    h = HTSAT(HTSAT_TINY, n_mels=16)
    x = torch.randn(2, 251, 16)
    h.train()
    torch.manual_seed(1)
    a = h.to_image(x)
    h.eval()
    assert not torch.equal(a, h.to_image(x))
    assert torch.equal(h.to_image(x), h.to_image(x))


def test_spec_augment_drops_per_clip_stripes_of_bounded_width():
    """torchlibrosa's DropStripes(64, 2) on time and (8, 2) on mel bins, drawn per clip."""
    from pengi.models.htsat import SpecAugment

    torch.manual_seed(0)
    x = torch.rand(64, 251, 64) + 0.5  # no zeros of its own
    y = SpecAugment().train()(x)
    zero = y == 0
    rows = zero.all(dim=2)  # (B, T) dropped frames
    cols = zero.all(dim=1)  # (B, F) dropped mel bins
    # every zero lies in a dropped frame or bin, everything else is untouched
    assert torch.equal(zero, rows[:, :, None] | cols[:, None, :])
    assert torch.equal(y[~zero], x[~zero])
    assert rows.sum(1).max() <= 2 * 63 and cols.sum(1).max() <= 2 * 7
    # each dropped region is at most two runs (two stripes, possibly overlapping)
    runs = (rows[:, 1:] & ~rows[:, :-1]).sum(1) + rows[:, 0]
    assert runs.max() <= 2
    # clips draw their own stripes; on average ~2 x 31.5 of 251 frames and ~2 x 3.5 of 64 bins
    assert len({tuple(r.nonzero().flatten().tolist()) for r in rows}) > 50
    assert 0.15 < rows.float().mean() < 0.3 and 0.05 < cols.float().mean() < 0.15
    assert torch.equal(SpecAugment().eval()(x), x)


# --------------------------------------------------------------------------------------------
# Pengi
# --------------------------------------------------------------------------------------------


def test_pengi_shapes(pengi):
    wave, prompt, pmask, target, tmask = batch()
    pengi.eval()
    prefix = pengi.prefix(wave, prompt, pmask)
    assert prefix.shape == (2, 6, 32)
    out = pengi(wave, target, tmask, prompt, pmask, full_logits=True)
    assert out.logits.shape == (2, 5, 120) and out.prefix_length == 6
    assert out.lm_logits.shape == (2, 6 + 5, 120)
    torch.testing.assert_close(out.logits, out.lm_logits[:, 5:10])
    assert torch.isfinite(out.loss)
    assert pengi(wave, target, tmask, prompt, pmask).lm_logits is None


def test_labels_and_loss_cover_only_real_target_tokens(pengi):
    wave, prompt, pmask, target, tmask = batch()
    pengi.eval()
    out = pengi(wave, target, tmask, prompt, pmask, full_logits=True)
    assert out.labels.shape == (2, 5)
    assert out.labels[1, 3:].eq(-100).all()  # padding
    assert torch.equal(out.labels[0], target[0]) and torch.equal(out.labels[1, :3], target[1, :3])
    # Loss by hand: position t predicts token t+1; only real target tokens count.
    logp = out.lm_logits.log_softmax(-1)
    terms = [-logp[b, 6 + j - 1, target[b, j]] for b in range(2) for j in range(5) if tmask[b, j]]
    torch.testing.assert_close(out.loss, torch.stack(terms).mean())
    # Pad ids never matter (no ignore_index on a real token id).
    other = target.clone()
    other[1, 3:] = 0
    torch.testing.assert_close(pengi(wave, other, tmask, prompt, pmask).loss, out.loss)


def test_target_mask_none_keeps_real_positions(pengi):
    """Right padding: without a mask (the reference) the real positions' logits are the same."""
    wave, prompt, pmask, target, tmask = batch()
    pengi.eval()
    a = pengi(wave, target, tmask, prompt, pmask, full_logits=True).lm_logits
    b = pengi(wave, target, None, prompt, pmask, full_logits=True).lm_logits
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1, : 6 + 3], b[1, : 6 + 3])


def test_extra_text_is_embedded_by_the_lm_and_padding_is_invisible(pengi):
    wave, prompt, pmask, target, tmask = batch(B=1)
    pengi.eval()
    extra = torch.tensor([[7, 8, 9]])
    out = pengi(wave, target, None, prompt, pmask, extra_ids=extra)
    assert out.prefix_length == 9
    padded = torch.tensor([[7, 8, 9, 0, 0]])
    out_p = pengi(wave, target, None, prompt, pmask, extra_ids=padded, extra_mask=torch.tensor([[1, 1, 1, 0, 0]]))
    torch.testing.assert_close(out_p.logits, out.logits, atol=1e-5, rtol=1e-5)  # first target included
    torch.testing.assert_close(out_p.loss, out.loss, atol=1e-6, rtol=1e-5)


TINY_LLAMA = {"model_type": "llama", "vocab_size": 120, "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 64}  # fmt: skip  (RoPE, grouped KV heads: SmolLM2's architecture)


def _loss_and_grads(model, *args, **kwargs):
    model.zero_grad(set_to_none=True)
    out = model(*args, **kwargs)
    out.loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return out, grads


@pytest.mark.parametrize("lm", ["gpt2", "llama"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packed_batch_gives_the_padded_loss_and_gradients(lm, attn):
    """Packing the real positions into rows (no padding) computes the padded batch's loss and
    gradients: one sample per row, mixed rows, one row for all; with lengths from the host or
    from the mask; both loss reductions; and with extra text padded on the left."""
    cfg = tiny_config()
    if lm == "llama":
        cfg = dataclasses.replace(cfg, lm=LMConfig(name="tiny", hf_config=TINY_LLAMA))
    torch.manual_seed(0)
    model = build_pengi(cfg, AUDIO).eval()
    model.lm.model.set_attn_implementation(attn)
    g = torch.Generator().manual_seed(1)
    B, Lt = 5, 7
    wave = 0.1 * torch.randn(B, SAMPLES, generator=g)
    prompt, pmask = torch.randint(1, 99, (B, 8), generator=g), torch.ones(B, 8, dtype=torch.long)
    target = torch.randint(1, 119, (B, Lt), generator=g)
    lengths = [7, 2, 5, 1, 3]
    tmask = (torch.arange(Lt) < torch.tensor(lengths)[:, None]).long()
    for reduction in ("token", "sample"):
        ref, ref_grads = _loss_and_grads(model, wave, target, tmask, prompt, pmask, loss_reduction=reduction)
        real = tmask.bool()
        for capacity, host in ((1, True), (12, True), (12, False), (1000, True)):
            out, grads = _loss_and_grads(
                model, wave, target, tmask, prompt, pmask, loss_reduction=reduction, pack_capacity=capacity,
                target_lengths=lengths if host else None,
            )  # fmt: skip
            torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out.logits, ref.logits[real], atol=1e-5, rtol=1e-5)
            assert torch.equal(out.labels, target[real])
            assert grads.keys() == ref_grads.keys()
            for k in grads:
                torch.testing.assert_close(grads[k], ref_grads[k], atol=1e-5, rtol=1e-4, msg=k)
    extra = torch.tensor([[5, 6, 7]] * B)
    emask = torch.tensor([[1, 1, 1], [0, 1, 1], [0, 0, 1], [1, 1, 1], [0, 1, 1]])
    ref = model(wave, target, tmask, prompt, pmask, extra_ids=extra, extra_mask=emask)
    out = model(wave, target, tmask, prompt, pmask, extra_ids=extra, extra_mask=emask, pack_capacity=20)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=1e-5)


def test_packing_isolates_samples_by_their_position_restarts(pengi, monkeypatch):
    """The control: the same rows with positions counting on across samples (no restart, so no
    block-diagonal mask) let samples attend to each other and change the loss."""
    from pengi.models import packing

    wave, prompt, pmask, target, tmask = batch(B=3)
    pengi.eval()
    ref = pengi(wave, target, tmask, prompt, pmask)
    packed = pengi(wave, target, tmask, prompt, pmask, pack_capacity=1000)
    torch.testing.assert_close(packed.loss, ref.loss, atol=1e-5, rtol=1e-5)
    plan_packing = packing.plan_packing

    def no_restarts(*args, **kwargs):
        plan = plan_packing(*args, **kwargs)
        plan.positions = torch.arange(plan.width).expand(plan.rows, -1).clone()
        return plan

    monkeypatch.setattr(packing, "plan_packing", no_restarts)
    leaky = pengi(wave, target, tmask, prompt, pmask, pack_capacity=1000)
    assert abs(leaky.loss.item() - ref.loss.item()) > 1e-3


def test_pack_plan_rows_and_indices():
    from pengi.models.packing import plan_packing

    # 3 context positions, then targets of 4, 1, 2, 3 tokens (padded to 4); capacity 9
    lengths = np.array([4, 1, 2, 3])
    real = np.ones((4, 7), dtype=bool)
    real[:, 3:] = np.arange(4) < lengths[:, None]
    plan = plan_packing(real, n_context=3, capacity=9)
    # 7 | 4 + 5 = 9 | 6: samples fill rows in order, none split
    assert (plan.rows, plan.width) == (3, 9)
    assert plan.real_positions == 22 and plan.fill == pytest.approx(22 / 27)
    idx = plan.index.view(3, 9)
    assert idx[0, :7].tolist() == list(range(7)) and (idx[0, 7:] == 28).all()  # 28 = one past B*L: padding
    assert idx[1].tolist() == [7, 8, 9, 10, 14, 15, 16, 17, 18]
    assert plan.positions[1].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4]
    assert plan.positions[0, 7:].tolist() == [0, 1]  # the row's padding is a segment of its own
    # each target token is predicted by the packed position before it
    assert plan.predictor.tolist() == [2, 3, 4, 5, 11, 15, 16, 20, 21, 22]
    assert plan.target_index.tolist() == [0, 1, 2, 3, 4, 8, 9, 12, 13, 14]
    assert plan.sample.tolist() == [0, 0, 0, 0, 1, 2, 2, 3, 3, 3]
    torch.testing.assert_close(plan.sample_weight, torch.tensor([1 / 16] * 4 + [1 / 4] + [1 / 8] * 2 + [1 / 12] * 3))
    # a sample longer than the capacity gets a row of its own
    assert plan_packing(real, 3, capacity=2).rows == 4
    real[1, 3:] = False
    with pytest.raises(ValueError, match="real target token"):
        plan_packing(real, 3, capacity=9)


def test_cached_prompt_features_give_the_same_result(pengi):
    wave, prompt, pmask, target, tmask = batch()
    pengi.eval()
    feats = pengi.encode_prompt_features(prompt, pmask)
    assert feats.shape == (2, 16) and not feats.requires_grad
    torch.testing.assert_close(pengi.prefix(wave, prompt_features=feats), pengi.prefix(wave, prompt, pmask))
    with pytest.raises(ValueError, match="prompt_features"):
        pengi.prefix(wave)


def test_wrapper_compat_skips_prompt_normalisation_only(pengi):
    wave, prompt, pmask, *_ = batch()
    pengi.eval()
    a = pengi.prefix(wave, prompt, pmask)
    b = pengi.prefix(wave, prompt, pmask, reference_wrapper_prompt=True)
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3:], b[:, 3:])


def test_gradients_reach_only_trainable_parts_and_frozen_lm_is_unchanged():
    torch.manual_seed(0)
    model = build_pengi(tiny_config("clip"), AUDIO)
    model.train()
    assert not model.lm.training and not model.lm.model.training
    assert not model.text_encoder.model.training and model.audio_encoder.htsat.training
    frozen_before = {k: v.clone() for k, v in model.lm.state_dict().items()}
    text_before = {k: v.clone() for k, v in model.text_encoder.model.text_model.state_dict().items()}
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    wave, prompt, pmask, target, tmask = batch()
    model(wave, target, tmask, prompt, pmask).loss.backward()
    for name, p in model.named_parameters():
        frozen = name.startswith(("lm.", "audio_encoder.frontend.", "text_encoder.model.text_model."))
        assert p.requires_grad != frozen, name
        if frozen:
            assert p.grad is None, name
    trainable_prefixes = ("m1.", "m2.", "audio_encoder.htsat.patch_embed", "audio_encoder.projection.",
                          "text_encoder.projection.", "text_encoder.model.text_projection.")  # fmt: skip
    for prefix in trainable_prefixes:
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix)]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), prefix
    ids = {id(p) for p in model.trainable_parameters()}
    assert not any(id(p) in ids for p in model.lm.parameters())
    opt.step()
    for k, v in model.lm.state_dict().items():
        assert torch.equal(v, frozen_before[k]), k
    for k, v in model.text_encoder.model.text_model.state_dict().items():
        assert torch.equal(v, text_before[k]), k


@pytest.mark.parametrize("kind", ["bert_mean", "clip", "gpt2_last"])
def test_text_encoder_kinds(kind):
    torch.manual_seed(0)
    model = build_pengi(tiny_config(kind), AUDIO).eval()
    _, prompt, pmask, *_ = batch()
    emb = model.text_encoder(prompt, pmask)
    assert emb.shape == (2, 24)
    # Tokens behind the mask never change the pooled output (right padding).
    changed = prompt.clone()
    changed[1, 6:] = 3
    if kind == "clip":  # pooled at argmax(ids): keep the EOS (largest id) in place
        prompt[:, 4], changed[:, 4] = 99, 99
        prompt[:, 5:], changed[:, 5:] = 99, 99
        changed[1, 6:] = 99
    torch.testing.assert_close(model.text_encoder(changed, pmask), model.text_encoder(prompt, pmask))


def test_gpt2_last_pools_the_last_real_token():
    torch.manual_seed(0)
    enc = build_pengi(tiny_config("gpt2_last"), AUDIO).text_encoder.eval()
    ids = torch.randint(0, 100, (1, 8))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0]])
    hidden = enc.model(input_ids=ids[:, :4]).last_hidden_state
    torch.testing.assert_close(enc.encode_features(ids, mask), hidden[:, 3])


def test_lm_embed_prompt_path_and_mlp_mapper():
    torch.manual_seed(0)
    model = build_pengi(tiny_config("lm_embed"), AUDIO).eval()
    assert model.text_encoder is None and model.m2.linear is None
    wave, _, _, target, tmask = batch()
    prompt = torch.randint(0, 120, (2, 8))
    assert model.encode_prompt_features(prompt, torch.ones_like(prompt)).shape == (2, 8, 32)
    assert model.prefix(wave, prompt, torch.ones_like(prompt)).shape == (2, 6, 32)
    mlp = build_pengi(tiny_config("bert_mean", "mlp"), AUDIO).eval()
    _, prompt, pmask, *_ = batch()
    assert mlp.prefix(wave, prompt, pmask).shape == (2, 6, 32)
    with pytest.raises(ValueError, match="mlp"):
        build_pengi(tiny_config("lm_embed", "mlp"), AUDIO)


def test_mapper_attention_matches_clipcap_einsum():
    torch.manual_seed(0)
    att = MultiHeadAttention(32, 8)
    x = torch.randn(2, 5, 32)
    q = att.to_queries(x).reshape(2, 5, 8, 4)
    kv = att.to_keys_values(x).reshape(2, 5, 2, 8, 4)
    a = torch.einsum("bnhd,bmhd->bnmh", q, kv[:, :, 0]) * 4**-0.5
    want = att.project(torch.einsum("bnmh,bmhd->bnhd", a.softmax(dim=2), kv[:, :, 1]).reshape(2, 5, 32))
    torch.testing.assert_close(att(x), want, atol=1e-5, rtol=1e-5)


def test_factories_take_the_whole_config():
    model = {
        "htsat": {"spec_size": 64, "window_size": 4, "embed_dim": 8, "depths": [1, 1], "num_heads": [1, 2],
                  "num_classes": 0},
        "text": {"kind": "bert_mean", "hf_config": TEXT["bert_mean"]},
        "lm": {"hf_config": GPT2},
        "d_proj": 8,
        "mapper": {"prefix_length": 2, "clip_length": 2, "num_layers": 1, "num_heads": 2},
    }  # fmt: skip
    audio = {"sample_rate": 16000, "n_fft": 256, "hop_length": 64, "n_mels": 16, "f_max": 8000.0}
    cfg = from_dict({"audio": audio, "model": model})
    model = build_pengi(cfg)
    assert model.audio_encoder.htsat.tscam_conv is None and model.audio_cfg.sample_rate == 16000


# --------------------------------------------------------------------------------------------
# CLAP
# --------------------------------------------------------------------------------------------


def test_clap_symmetric_loss_and_trainable_towers():
    torch.manual_seed(0)
    clap = build_clap(tiny_config("bert_mean"), AUDIO)
    assert isinstance(clap, CLAP)
    wave, prompt, pmask, *_ = batch()
    out = clap(wave, prompt, pmask)
    assert out.logits_per_audio.shape == (2, 2)
    torch.testing.assert_close(out.audio_embeds.norm(dim=-1), torch.ones(2))
    scale = math.exp(math.log(1 / 0.07))
    logits = scale * out.audio_embeds @ out.text_embeds.T
    target = torch.arange(2)
    want = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    torch.testing.assert_close(out.loss, want)
    out.loss.backward()
    assert clap.logit_scale.grad is not None
    body = [p for n, p in clap.named_parameters() if n.startswith("text_encoder.model.")]
    assert all(p.requires_grad for p in body)  # paper appendix D: both encoders fine-tuned
    assert not any(p.requires_grad for p in clap.audio_encoder.frontend.parameters())
    text = TextEncoderConfig(hf_config=TEXT["bert_mean"], train_in_clap=False)
    frozen = build_clap(dataclasses.replace(tiny_config(), text=text), AUDIO)
    assert not any(p.requires_grad for p in frozen.text_encoder.model.parameters())
    with pytest.raises(ValueError, match="text encoder"):
        build_clap(tiny_config("lm_embed"), AUDIO)


def test_pengi_starts_from_clap_encoders():
    torch.manual_seed(0)
    clap = build_clap(tiny_config(), AUDIO)
    torch.manual_seed(1)
    model = build_pengi(tiny_config(), AUDIO)
    model.load_clap_encoders(clap)
    for k, v in clap.audio_encoder.state_dict().items():
        assert torch.equal(model.audio_encoder.state_dict()[k], v)
    assert not any(p.requires_grad for p in model.text_encoder.model.parameters())  # frozen again in Pengi


def test_logmel_stats_branch_feeds_the_probe_features_to_the_projection():
    from pengi.models.clap import LogMelStats

    # off (the paper's encoder): no extra module, no extra key, projection reads HTSAT alone
    plain = build_clap(tiny_config(), AUDIO)
    assert plain.audio_encoder.stats is None and not any("stats" in k for k in plain.state_dict())
    assert plain.audio_encoder.projection.linear1.in_features == plain.audio_encoder.htsat.num_features
    # the statistics: per-band mean, std, std of the frame difference (ddof 0, as the probe's numpy)
    logmel = torch.zeros(1, 6, 2)
    logmel[0, :, 0] = 3.0  # a constant band
    logmel[0, :, 1] = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])  # a flickering band
    stats = LogMelStats(2).eval()(logmel)[0]  # fresh BatchNorm in eval: identity up to its eps
    flicker = np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    want = torch.tensor([3.0, 0.0, 0.0, 1.0, 0.0, np.diff(flicker).std()], dtype=torch.float32)  # 1.96
    torch.testing.assert_close(stats, want, atol=1e-4, rtol=1e-4)
    # on: the projection reads [HTSAT embedding | 3 * n_mels statistics]; gradients reach both
    torch.manual_seed(0)
    cfg = dataclasses.replace(tiny_config(), logmel_stats=True)
    clap = build_clap(cfg, AUDIO)
    enc = clap.audio_encoder
    wave, prompt, pmask, *_ = batch(B=3)
    enc.eval()  # (no SpecAugment draw between the two calls)
    feats = enc.features(wave)
    assert feats.shape == (3, enc.htsat.num_features + 3 * AUDIO.n_mels)
    torch.testing.assert_close(feats[:, : enc.htsat.num_features], enc.encode(wave).embedding)
    enc.train()
    clap(wave, prompt, pmask).loss.backward()
    assert enc.stats.norm.weight.grad.abs().sum() > 0 and enc.htsat.patch_embed.proj.weight.grad.abs().sum() > 0
    # Pengi takes the whole tower from CLAP, running statistics included
    model = build_pengi(cfg, AUDIO)
    model.load_clap_encoders(clap)
    assert torch.equal(model.audio_encoder.stats.norm.running_mean, enc.stats.norm.running_mean)
    assert enc.stats.norm.running_mean.abs().sum() > 0  # updated by the training-mode forward


# --------------------------------------------------------------------------------------------
# The embedded default's offline models
# --------------------------------------------------------------------------------------------


def test_minilm_loads_offline_from_the_package():
    from pengi.models.text import TextEncoder, load_text_tokenizer, tokenize_prompts

    cfg = TextEncoderConfig()  # kind bert_mean, name minilm
    enc = TextEncoder(cfg, d_proj=8, train_body=False).eval()
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    ids, mask = tokenize_prompts(load_text_tokenizer(cfg), ["generate audio caption", "this is a sound of"], cfg)
    assert ids.shape == (2, 40)
    feats = enc.encode_features(ids, mask)
    assert feats.shape == (2, 384)
    # all-MiniLM-L6-v2 sentence embedding = normalised mean pooling: similar prompts are close.
    f = F.normalize(feats, dim=-1)
    assert (f[0] @ f[1]).item() < 0.999


@pytest.mark.slow
def test_smollm2_gguf_is_dequantised_once_and_cached(tmp_path, monkeypatch):
    from pengi.models.lm import LanguageModel, load_lm_tokenizer, smollm2_folder

    monkeypatch.setenv("PENGI_CACHE", str(tmp_path))
    folder = smollm2_folder()
    assert (folder / "model.safetensors").exists() and folder.parent == tmp_path
    mtime = (folder / "model.safetensors").stat().st_mtime
    lm = LanguageModel(LMConfig())
    assert smollm2_folder() == folder and (folder / "model.safetensors").stat().st_mtime == mtime
    assert lm.hidden_size == 576 and lm.vocab_size == 49152
    tok = load_lm_tokenizer(LMConfig())
    ids = torch.tensor([tok("The capital of France is")["input_ids"]])
    logits = lm(inputs_embeds=lm.embed_tokens(ids)).logits
    assert tok.decode(logits[0, -1].argmax()).strip() == "Paris"
