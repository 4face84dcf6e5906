"""Tests for pengi.inference: parity with the reference beam search, batching, KV cache paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pengi.config import EvaluateConfig
from pengi.inference import (
    append_text_to_prefix,
    beam_search,
    caption_index_similarity,
    class_scores,
    cosine_similarity_matrix,
    generate,
    generation_settings,
    interpret_prefix,
    lm_forward,
    loglik_classify,
    score_continuations,
    text_match_scores,
    tokenize_candidates,
)

PARITY = Path(__file__).resolve().parents[2] / "shared" / "reference" / "pengi_parity"
GPT2_KEYS = (
    "vocab_size n_positions n_embd n_layer n_head n_inner activation_function resid_pdrop embd_pdrop "
    "attn_pdrop layer_norm_epsilon scale_attn_weights scale_attn_by_inverse_layer_idx "
    "reorder_and_upcast_attn tie_word_embeddings bos_token_id eos_token_id"
).split()

needs_fixture = pytest.mark.skipif(not PARITY.is_dir(), reason=f"parity fixture not found at {PARITY}")


@pytest.fixture(scope="module")
def parity():
    """The tiny reference GPT-2 with the fixture's weights, its config and recorded outputs."""
    if not PARITY.is_dir():
        pytest.skip(f"parity fixture not found at {PARITY}")
    from safetensors.torch import load_file
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = json.loads((PARITY / "config.json").read_text())
    conf = GPT2Config(**{k: cfg["gpt2"][k] for k in GPT2_KEYS})
    conf._attn_implementation = cfg["gpt2"]["attn_implementation"]
    lm = GPT2LMHeadModel(conf).eval()
    prefix = "caption_decoder.gpt."
    weights = load_file(PARITY / "weights.safetensors")
    state = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
    lm.load_state_dict(state, strict=True)
    assert lm.lm_head.weight.data_ptr() == lm.transformer.wte.weight.data_ptr()  # tied
    return lm, cfg, load_file(PARITY / "outputs.safetensors"), load_file(PARITY / "inputs.safetensors")


class StubTokenizer:
    """Token i <-> word ``w{i}``; enough of the HF tokenizer API for these functions."""

    def __init__(self, eos: int):
        self.eos_token_id = eos

    def decode(self, ids):
        return " ".join(f"w{i}" for i in ids)

    def convert_ids_to_tokens(self, ids):
        return [f"w{i}" for i in ids]

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [int(w[1:]) for w in text.split()]}


def tiny_llama(attn: str):
    """A seeded 2-layer Llama (RoPE, 4 query / 2 key-value heads; the default LM's architecture)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, eos_token_id=7, bos_token_id=1,
    )  # fmt: skip
    cfg._attn_implementation = attn
    return LlamaForCausalLM(cfg).eval()


def seq_logprob(lm, prefix, tokens):
    """Sum of log-probs of ``tokens`` after ``prefix (P, D)`` by one full uncached forward."""
    t = torch.tensor(tokens)
    emb = torch.cat([prefix, lm.get_input_embeddings()(t)], 0)[None]
    logits, _ = lm_forward(lm, emb)
    logp = torch.log_softmax(logits[0, prefix.shape[0] - 1 : -1], -1)
    return logp.gather(1, t[:, None]).sum().item()


# ---------------------------------------------------------------------------------- parity


@needs_fixture
def test_lm_call_path_reproduces_recorded_logits(parity):
    lm, cfg, out, inp = parity
    emb = torch.cat([out["prefix_model"], lm.get_input_embeddings()(inp["target_input_ids"])], 1)
    with torch.no_grad():
        logits, _ = lm_forward(lm, emb)
    assert logits.shape == out["lm_logits"].shape
    atol = cfg["tolerances"]["per_output"]["lm_logits"]["atol"]  # 5e-5
    assert (logits - out["lm_logits"]).abs().max().item() <= atol


@needs_fixture
@pytest.mark.parametrize("case_idx", range(4))
def test_beam_search_matches_reference_cases(parity, case_idx):
    lm, cfg, out, _ = parity
    case = cfg["beam_cases"][case_idx]
    name = case["name"]
    prefix = out[f"prefix_{case['prefix']}"][case["clip"] : case["clip"] + 1]
    r = beam_search(
        lm,
        prefix,
        beam_size=case["beam_size"],
        max_new_tokens=case["entry_length"],
        temperature=case["temperature"],
        stop_token_ids=case["stop_id"],
        reference_compat=True,
    )
    assert torch.equal(r.tokens[0], out[f"{name}.tokens"])
    assert torch.equal(r.lengths[0], out[f"{name}.lengths"])
    assert torch.equal(r.order[0], out[f"{name}.order"])
    assert (r.scores[0] - out[f"{name}.scores"]).abs().max().item() <= 1e-5
    assert (r.internal_scores[0] - out[f"{name}.scores_returned"]).abs().max().item() <= 1e-5
    assert r.sequences(0) == case["texts_sorted"]


@needs_fixture
@pytest.mark.parametrize("variant", ["model", "wrapper"])
@pytest.mark.parametrize("stop_id,temperature", [(906, 1.0), (403, 1.0), (906, 0.7)])
def test_batched_equals_one_clip_at_a_time(parity, variant, stop_id, temperature):
    lm, _, out, _ = parity
    prefix = out[f"prefix_{variant}"]
    kw = dict(beam_size=3, max_new_tokens=6, temperature=temperature, stop_token_ids=stop_id, reference_compat=True)
    both = beam_search(lm, prefix, **kw)
    for b in range(2):
        one = beam_search(lm, prefix[b : b + 1], **kw)
        assert torch.equal(both.tokens[b], one.tokens[0])
        assert torch.equal(both.lengths[b], one.lengths[0])
        assert torch.equal(both.order[b], one.order[0])
        assert (both.scores[b] - one.scores[0]).abs().max().item() <= 1e-5


def _set_cache_mode(monkeypatch, mode):
    import pengi.inference as inf

    monkeypatch.setattr(inf, "SHARE_PREFIX_KV", mode == "shared")
    monkeypatch.setattr(inf, "RESERVE_KV_CACHE", mode in ("shared", "reserved"))


def _count_shared_attention(monkeypatch):
    """Count calls of the shared-prefix attention (it must really run, not fall back)."""
    import pengi.kv_cache as kc

    calls = []
    real = kc.shared_prefix_attention

    def counting(module, query, key, *args, **kwargs):
        layer = kc._ACTIVE.get().layers[module.layer_idx]
        calls.append((type(layer).__name__, query.shape[0], layer.pk.shape[0], key.shape[-2]))
        return real(module, query, key, *args, **kwargs)

    monkeypatch.setattr(kc, "shared_prefix_attention", counting)
    kc._register.cache_clear()
    yield_calls = calls
    return yield_calls


@needs_fixture
def test_kv_cache_modes_change_no_decision(parity, monkeypatch):
    """The shared-prefix cache (beams of a clip attend to one copy of the prefix), the reserved
    cache (no torch.cat per step) and transformers' own cache decode the same tokens and scores,
    with padded prefixes, clips leaving the batch early and beams reordered every step."""
    lm, _, out, _ = parity
    prefix = torch.cat([out["prefix_model"], out["prefix_wrapper"]])  # (4, 8, D)
    mask = torch.ones(4, 8, dtype=torch.long)
    mask[1, :3] = 0
    mask[3, 6:] = 0
    # greedy with clip 0's first token as the stop id: clip 0 leaves the batch after one step
    first = int(beam_search(lm, prefix, mask, beam_size=1, max_new_tokens=1, stop_token_ids=906).tokens[0, 0, 0])
    # beam 3 stopping on clip 0's three first tokens: all its beams stop at once, it leaves
    tops = beam_search(lm, prefix, mask, beam_size=3, max_new_tokens=1, stop_token_ids=906).tokens[0, :, 0].tolist()
    settings = [(3, 403), (3, 906), (1, first), (3, tuple(tops))]
    cands = [[5, 9, 906], [11, 906], [200], [3, 4, 5, 6, 906]]
    calls = _count_shared_attention(monkeypatch)
    runs = {}
    impl = lm.config._attn_implementation
    for mode in ("shared", "reserved", "transformers"):
        _set_cache_mode(monkeypatch, mode)
        n0 = len(calls)
        for k, stop in settings:
            runs[mode, k, stop] = beam_search(lm, prefix, mask, beam_size=k, max_new_tokens=8, stop_token_ids=stop)
        runs[mode, "loglik"] = score_continuations(lm, prefix, cands, mask).total
        assert lm.config._attn_implementation == impl  # switched back after every call
        assert (len(calls) > n0) == (mode == "shared")
    # the shared attention saw K rows per clip over one prefix copy per clip, and clips leaving
    assert {c[0] for c in calls} == {"SharedPrefixLayer"}
    assert all(rows == clips * g for _, rows, clips, _ in calls for g in [rows // clips] if g in (3, 4, 5))
    assert min(c[2] for c in calls) < 4 < max(c[1] for c in calls)
    for k, stop in settings[2:]:
        r = runs["shared", k, stop]
        assert r.lengths[0].max() == 1 and r.lengths[1:].max() > 2
    for mode in ("shared", "reserved"):
        for k, stop in settings:
            a, b = runs[mode, k, stop], runs["transformers", k, stop]
            assert torch.equal(a.tokens, b.tokens) and torch.equal(a.lengths, b.lengths)
            torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=1e-6)
        torch.testing.assert_close(runs[mode, "loglik"], runs["transformers", "loglik"], rtol=0, atol=1e-5)


@needs_fixture
def test_reserved_kv_cache_appends_in_place(parity, monkeypatch):
    import pengi.inference as inf

    lm, _, out, _ = parity
    prefix = torch.cat([out["prefix_model"], out["prefix_wrapper"]])  # (4, 8, D)
    _set_cache_mode(monkeypatch, "reserved")
    _, cache = inf.lm_forward(lm, prefix, None, None, last_only=True)
    inf._reserve_kv(cache, 4)
    layer = cache.layers[0]
    assert type(layer).__name__ == "ReservedDynamicLayer" and layer._bk.shape[-2] == 8 + 4
    ptr = layer._bk.data_ptr()
    emb = lm.get_input_embeddings()(torch.tensor([[1], [2], [3], [4]]))
    inf.lm_forward(lm, emb, None, torch.full((4, 1), 8), cache)
    assert layer._bk.data_ptr() == ptr and cache.get_seq_length() == 9
    before = layer.keys.clone()
    cache.reorder_cache(torch.tensor([2, 2, 0]))  # copies the 9 filled positions, keeps the room
    assert layer._bk.shape[-2] == 12 and torch.equal(layer.keys, before[[2, 2, 0]])


def test_shared_prefix_cache_keeps_one_prefix_copy_per_clip():
    """The shared layer holds the prefix once per clip, appends in place, reorders only the
    rows' own positions, and a shrinking clip set keeps the right rows."""
    import pengi.kv_cache as kc
    from pengi.inference import lm_forward

    lm = tiny_llama("sdpa")
    with torch.no_grad():
        _, cache = lm_forward(lm, torch.randn(3, 6, 32), None, None, last_only=True)
    assert kc.shareable(cache) and kc.share_prefix(cache, 2, 4) and not kc.shareable(cache)
    layer = cache.layers[1]
    pk = layer.pk
    assert pk.shape == (3, 2, 6, 8) and layer.gk.shape == (6, 2, 4, 8) and cache.get_seq_length() == 6
    k1 = torch.randn(6, 2, 1, 8)
    keys, _ = layer.update(k1, k1.clone(), 1)
    assert keys.data_ptr() == layer.gk.data_ptr() and torch.equal(keys, k1) and layer.get_seq_length() == 7
    layer.reorder_rows(torch.tensor([1, 1, 2, 3, 5, 4]))
    assert layer.pk is pk and torch.equal(layer.keys, k1[[1, 1, 2, 3, 5, 4]])
    layer.select_clips(torch.tensor([2, 0]))
    assert torch.equal(layer.pk, pk[[2, 0]]) and torch.equal(layer.keys, k1[[1, 1, 2, 3, 5, 4]][[4, 5, 0, 1]])
    with pytest.raises(NotImplementedError):
        layer.reorder_cache(torch.tensor([0, 1]))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_shared_prefix_attention_on_a_grouped_kv_rope_lm(attn, monkeypatch):
    """Grouped KV heads and RoPE (the default LM's architecture): shared and per-row caches agree."""
    lm = tiny_llama(attn)
    prefix = torch.randn(3, 10, 32)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, :4] = 0
    calls = _count_shared_attention(monkeypatch)
    res = {}
    for mode in ("shared", "transformers"):
        _set_cache_mode(monkeypatch, mode)
        res[mode] = (
            beam_search(lm, prefix, mask, beam_size=4, max_new_tokens=10),
            score_continuations(lm, prefix, [[5, 9, 7], [11, 7], [200, 3, 7]], mask).total,
        )
        assert lm.config._attn_implementation == attn
    assert calls and {c[0] for c in calls} == {"SharedPrefixLayer"}
    a, b = res["shared"][0], res["transformers"][0]
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.lengths, b.lengths)
    torch.testing.assert_close(a.scores, b.scores, rtol=0, atol=1e-5)
    torch.testing.assert_close(res["shared"][1], res["transformers"][1], rtol=0, atol=1e-4)


@needs_fixture
def test_variable_length_prefixes_in_a_batch(parity):
    """A shorter, padded prefix gives in a batch what it gives alone (right and left padding)."""
    lm, _, out, _ = parity
    full = out["prefix_model"][0]  # (8, D)
    short = out["prefix_wrapper"][1, :5]  # (5, D)
    kw = dict(beam_size=3, max_new_tokens=6, stop_token_ids=906)
    alone = beam_search(lm, short[None], **kw)
    ref_full = beam_search(lm, full[None], **kw)
    garbage = torch.randn(3, full.shape[1]) * 5
    for pad_right in (True, False):
        padded = torch.cat([short, garbage]) if pad_right else torch.cat([garbage, short])
        mask = torch.tensor([1] * 5 + [0] * 3) if pad_right else torch.tensor([0] * 3 + [1] * 5)
        batch = torch.stack([full, padded])
        r = beam_search(lm, batch, torch.stack([torch.ones(8, dtype=torch.long), mask]), **kw)
        assert torch.equal(r.tokens[1], alone.tokens[0])
        assert (r.scores[1] - alone.scores[0]).abs().max().item() <= 1e-5
        assert torch.equal(r.tokens[0], ref_full.tokens[0])
        assert (r.scores[0] - ref_full.scores[0]).abs().max().item() <= 1e-5


@needs_fixture
def test_greedy_matches_hf_generate(parity):
    lm, _, out, _ = parity
    prefix = out["prefix_model"]
    n = 8
    r = beam_search(lm, prefix, beam_size=1, max_new_tokens=n, stop_token_ids=5)
    hf = lm.generate(
        inputs_embeds=prefix, max_new_tokens=n, do_sample=False, num_beams=1, eos_token_id=5, pad_token_id=5
    )
    hf = hf[:, -n:] if hf.shape[1] > n else hf
    assert torch.equal(r.tokens[:, 0, : hf.shape[1]], hf)


@needs_fixture
@pytest.mark.parametrize("length_normalise", [True, False])
def test_default_mode_scores_are_the_sequence_logprobs(parity, length_normalise):
    """Default mode: the score of every returned beam is its true (mean) log-prob."""
    lm, _, out, _ = parity
    prefix = torch.cat([out["prefix_model"], out["prefix_wrapper"]])
    mask = torch.ones(4, 8, dtype=torch.long)
    mask[2, 6:] = 0  # one shorter prefix
    stop = 403
    r = beam_search(
        lm, prefix, mask, beam_size=4, max_new_tokens=7, stop_token_ids=stop, length_normalise=length_normalise
    )
    assert r.tokens.shape[:2] == (4, 4)
    for b in range(4):
        assert torch.all(r.scores[b, :-1] >= r.scores[b, 1:])
        real = prefix[b][mask[b].bool()]
        for k, seq in enumerate(r.sequences(b)):
            lp = seq_logprob(lm, real, seq)
            expect = lp / len(seq) if length_normalise else lp
            assert r.scores[b, k].item() == pytest.approx(expect, abs=1e-4)
            assert len(seq) == int(r.lengths[b, k])
            assert stop not in seq[:-1]  # nothing continues after a stop


@needs_fixture
def test_generate_texts_strip_stop_and_chunk(parity):
    lm, _, out, _ = parity
    prefix = torch.cat([out["prefix_model"], out["prefix_wrapper"]])
    tok = StubTokenizer(eos=403)
    g = generate(lm, prefix, tok, batch_size=3, beam_size=3, max_new_tokens=6, stop_token_ids=403)
    ref = beam_search(lm, prefix, beam_size=3, max_new_tokens=6, stop_token_ids=403, tokenizer=tok)
    assert g.texts == ref.texts
    assert torch.allclose(g.scores, ref.scores, atol=1e-5)
    assert all("w403" not in t for clip in g.texts for t in clip)
    assert g.best == [t[0] for t in g.texts]
    greedy = generate(lm, prefix, tok, method="greedy", max_new_tokens=6, stop_token_ids=403)
    assert [len(t) for t in greedy.texts] == [1, 1, 1, 1]
    with pytest.raises(ValueError):
        generate(lm, prefix, tok, method="sample")


def test_generation_settings_reads_config():
    cfg = EvaluateConfig(batch_size=3, beam_size=2, max_new_tokens=7)
    assert generation_settings(cfg) == {"batch_size": 3, "beam_size": 2, "max_new_tokens": 7}


@needs_fixture
def test_bad_arguments_raise(parity):
    lm, _, out, _ = parity
    with pytest.raises(ValueError):
        beam_search(lm, out["prefix_model"][0], stop_token_ids=1)  # not (B, P, D)
    with pytest.raises(ValueError):
        beam_search(lm, out["prefix_model"], torch.zeros(2, 8), stop_token_ids=1)  # empty prefix
    with pytest.raises(ValueError):
        beam_search(lm, out["prefix_model"], reference_compat=True, length_normalise=False, stop_token_ids=[1])


# ------------------------------------------------------------------------- close-ended


@needs_fixture
def test_score_continuations_matches_brute_force(parity):
    lm, _, out, _ = parity
    prefix = torch.cat([out["prefix_model"], out["prefix_wrapper"][:1]])
    mask = torch.ones(3, 8, dtype=torch.long)
    mask[1, :2] = 0  # a left-padded prefix
    cands = [[12, 906], [403, 403, 7, 906], [738], [5, 6, 7, 8, 9, 906]]
    s = score_continuations(lm, prefix, cands, mask)
    assert s.total.shape == (3, 4)
    for b in range(3):
        real = prefix[b][mask[b].bool()]
        for n, c in enumerate(cands):
            assert s.total[b, n].item() == pytest.approx(seq_logprob(lm, real, c), abs=1e-4)
            assert s.mean[b, n].item() == pytest.approx(s.total[b, n].item() / len(c), abs=1e-6)
    # chunked over clips (tiny logits budget) gives the same
    chunked = score_continuations(lm, prefix, cands, mask, max_logits=1)
    assert torch.allclose(chunked.total, s.total, atol=1e-5)
    with pytest.raises(ValueError):
        score_continuations(lm, prefix, [[1], []])


@needs_fixture
def test_loglik_classify_and_candidates(parity):
    lm, _, out, _ = parity
    tok = StubTokenizer(eos=906)
    assert tokenize_candidates(tok, ["w1 w2", "w3"]) == [[1, 2, 906], [3, 906]]
    assert tokenize_candidates(tok, ["w3"], template="w9 {}", eos_token_id=None) == [[9, 3]]
    with pytest.raises(ValueError):
        tokenize_candidates(tok, [""])
    names = ["w12 w12", "w403", "w738 w919"]
    scores = loglik_classify(lm, out["prefix_model"], tok, names)
    direct = score_continuations(lm, out["prefix_model"], tokenize_candidates(tok, names))
    assert torch.allclose(scores, direct.total)
    assert torch.allclose(loglik_classify(lm, out["prefix_model"], tok, names, normalise=True), direct.mean)


def bag_of_letters(texts):
    """A toy text encoder: letter counts (a-z)."""
    out = torch.zeros(len(texts), 26)
    for i, t in enumerate(texts):
        for ch in t.lower():
            if "a" <= ch <= "z":
                out[i, ord(ch) - 97] += 1
    return out


def test_text_match_scores():
    outputs = ["a dog barking loudly", "rain on the roof", "a dog"]
    classes = ["dog", "rain", "siren"]
    sim = text_match_scores(outputs, classes, bag_of_letters)
    assert sim.shape == (3, 3)
    assert sim.argmax(1).tolist() == [0, 1, 0]
    e_o, e_c = bag_of_letters(outputs), bag_of_letters(classes)
    manual = torch.nn.functional.cosine_similarity(e_o[:, None], e_c[None], dim=-1)
    assert torch.allclose(sim, manual, atol=1e-6)
    assert torch.allclose(caption_index_similarity(outputs, classes, bag_of_letters), sim)
    with pytest.raises(ValueError):
        text_match_scores(outputs, classes, lambda xs: torch.zeros(1, 3))
    assert torch.allclose(cosine_similarity_matrix(e_c, e_c).diagonal(), torch.ones(3))


# ---------------------------------------------------------------------- appendix A and B


@needs_fixture
def test_append_text_to_prefix(parity):
    lm, _, out, _ = parity
    prefix = out["prefix_model"]
    mask = torch.tensor([[1] * 8, [1] * 6 + [0] * 2])
    new, new_mask = append_text_to_prefix(lm, prefix, [[5, 6, 7], []], mask)
    assert new.shape == (2, 11, prefix.shape[2])
    assert new_mask.tolist() == [[1] * 11, [1] * 6 + [0] * 5]
    wte = lm.get_input_embeddings()
    assert torch.equal(new[0, 8:], wte(torch.tensor([5, 6, 7])))
    assert torch.equal(new[1, :6], prefix[1, :6])
    # generation from the extended batch equals generation from the concatenation alone
    kw = dict(beam_size=3, max_new_tokens=5, stop_token_ids=906)
    r = beam_search(lm, new, new_mask, **kw)
    alone = beam_search(lm, torch.cat([prefix[0], wte(torch.tensor([5, 6, 7]))])[None].detach(), **kw)
    assert torch.equal(r.tokens[0], alone.tokens[0])
    with pytest.raises(ValueError):
        append_text_to_prefix(lm, prefix, [[1]])


@needs_fixture
def test_interpret_prefix_finds_embedded_tokens(parity):
    lm, _, _, _ = parity
    wte = lm.get_input_embeddings().weight.detach()
    ids = torch.tensor([[3, 17, 905], [999, 0, 42]])
    prefix = wte[ids] * 2.5  # cosine ignores the scale
    got = interpret_prefix(lm, prefix, top_k=2)
    assert got.shape == (2, 3, 2)
    assert torch.equal(got[..., 0], ids)
    names = interpret_prefix(lm, prefix, StubTokenizer(eos=0))
    assert names == [[["w3"], ["w17"], ["w905"]], [["w999"], ["w0"], ["w42"]]]


@needs_fixture
def test_class_scores_dispatch(parity):
    lm, _, out, _ = parity
    tok = StubTokenizer(eos=906)
    names = ["w12", "w403"]
    ll = class_scores("loglik", names, lm=lm, prefix=out["prefix_model"], tokenizer=tok)
    assert torch.allclose(ll, loglik_classify(lm, out["prefix_model"], tok, names))
    tm = class_scores("text", ["dog", "rain"], texts=["a dog"], embed_fn=bag_of_letters)
    assert tm.shape == (1, 2) and tm.argmax().item() == 0
    with pytest.raises(ValueError):
        class_scores("text", names)
    with pytest.raises(ValueError):
        class_scores("zero-shot", names)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_rope_lm_padding_and_scoring(attn):
    """A Llama-style LM (RoPE positions, grouped KV heads; the default LM's architecture)."""
    lm = tiny_llama(attn)
    full, short = torch.randn(10, 32), torch.randn(6, 32)
    kw = dict(beam_size=4, max_new_tokens=8)  # stop: the config's eos (7)
    padded = torch.cat([torch.randn(4, 32) * 3, short])  # left padding with garbage
    batch = torch.stack([full, padded])
    mask = torch.tensor([[1] * 10, [0] * 4 + [1] * 6])
    r = beam_search(lm, batch, mask, **kw)
    for b, alone in enumerate((full, short)):
        one = beam_search(lm, alone[None], **kw)
        assert torch.equal(r.tokens[b], one.tokens[0])
        assert (r.scores[b] - one.scores[0]).abs().max().item() <= 1e-5
    cands = [[5, 9, 7], [11, 7], [200]]
    s = score_continuations(lm, batch, cands, mask)
    for b, alone in enumerate((full, short)):
        for n, c in enumerate(cands):
            assert s.total[b, n].item() == pytest.approx(seq_logprob(lm, alone, c), abs=1e-4)


def test_multilabel_text_match_takes_best_phrase():
    from pengi.inference import multilabel_text_match_scores

    outputs = ["dog, rain and siren", "siren"]
    classes = ["dog", "rain", "siren", "cat"]
    sim = multilabel_text_match_scores(outputs, classes, bag_of_letters)
    assert sim.shape == (2, 4)
    assert torch.allclose(sim[0, :3], torch.ones(3))  # every listed class matches a phrase exactly
    assert torch.allclose(sim[1], text_match_scores(["siren"], classes, bag_of_letters)[0])
    whole = text_match_scores(outputs[:1], classes, bag_of_letters)[0]
    assert torch.all(sim[0] >= whole - 1e-6)


def test_extract_answer_reads_the_class_part_or_keeps_the_text():
    from pengi.inference import extract_answer

    assert extract_answer("this is a sound of music in genre jazz", "this is a sound of music in genre {}") == "jazz"
    assert extract_answer("produced by organ, pitch 62, velocity 100", "pitch {}") == "62"
    assert extract_answer("produced by organ, pitch 62", "produced by {}") == "organ"
    assert extract_answer("x, and having qualities like bright, dark", "having qualities like {}", multilabel=True) == (
        "bright, dark"
    )
    assert extract_answer("a scene [beach] here", "[{}]") == "beach"  # literal text after the class
    assert extract_answer("dog barking", "{}") == "dog barking"
    assert extract_answer("no template words here", "produced by {}") == "no template words here"
    assert extract_answer("produced by ", "produced by {}") == "produced by "  # empty class: keep the text
    with pytest.raises(ValueError, match="exactly one"):
        extract_answer("x", "genre")


def test_match_answer_says_when_no_label_is_stated():
    from pengi.inference import match_answer

    note = "produced by organ, pitch 62, velocity 100, source acoustic"
    assert match_answer(note, "having qualities like {}", multilabel=True) is None
    assert match_answer(note + ", and having qualities like dark", "having qualities like {}", multilabel=True) == "dark"
    assert match_answer("dog", "{}") == "dog"
