"""Does Pengi use the audio to answer ClothoAQA questions? Greedy answers with the real clip, a
silent clip and another test clip (the next one, a control with real audio of the wrong clip).

    python bench/learning/aqa_audio.py PENGI_MODEL_DIR DATA_DIR

Prints exact-match accuracy (answer in the references, lower-cased) and how often the answer is
the one given with the real clip, per condition; then accuracy by the question's first word,
and for the commonest question forms the answers given against the references.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import polars as pl
import torch

from pengi.inference import generate
from pengi.session import PengiSession


def main() -> None:
    model_dir, data = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(2)
    rows = pl.read_parquet(data / "eval" / "clotho_aqa.parquet").to_dicts()
    session = PengiSession.from_pretrained(model_dir, beam_size=1, max_new_tokens=8)
    clips = sorted({r["audio_uri"] for r in rows})
    wave = {u: torch.from_numpy(session.loader.load(u).wave) for u in clips}
    other = {u: clips[(i + 1) % len(clips)] for i, u in enumerate(clips)}
    silent = torch.zeros_like(wave[clips[0]])
    tok = session.lm_tokenizer

    def answers(audio_of) -> list[str]:
        out: list[str] = []
        for i in range(0, len(rows), 32):
            chunk = rows[i : i + 32]
            prefix = session.prefix(
                torch.stack([audio_of(r["audio_uri"]) for r in chunk]), [r["prompt"] for r in chunk]
            )
            gen = generate(session.lm, prefix, tok, method="greedy", max_new_tokens=8, stop_token_ids=tok.eos_token_id)
            out += [a.strip().lower() for a in gen.best]
        return out

    with torch.no_grad():
        res = {
            "real clip": answers(lambda u: wave[u]),
            "silent clip": answers(lambda u: silent),
            "another clip": answers(lambda u: wave[other[u]]),
        }
    refs = [[x.lower() for x in r["references"]] for r in rows]
    for name, ans in res.items():
        acc = np.mean([a in r for a, r in zip(ans, refs, strict=True)])
        same = np.mean([a == b for a, b in zip(ans, res["real clip"], strict=True)])
        print(f"{name:12s} accuracy {acc:.3f}   same answer as with the real clip {same:.3f}")
    by_word: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for i, r in enumerate(rows):
        word = r["prompt"].split(":", 1)[-1].split()[0].lower()
        by_word[word].append((res["real clip"][i] in refs[i], res["another clip"][i] in refs[i]))
    for word, v in sorted(by_word.items(), key=lambda kv: -len(kv[1])):
        print(
            f"'{word} ...' ({len(v)}): real clip {np.mean([a for a, _ in v]):.3f}, another clip {np.mean([b for _, b in v]):.3f}"
        )
    for prompt, n in Counter(r["prompt"] for r in rows).most_common(3):
        idx = [i for i, r in enumerate(rows) if r["prompt"] == prompt]
        print(f"{prompt!r} ({n}): answers {Counter(res['real clip'][i] for i in idx).most_common(4)}, "
              f"references {Counter(refs[i][0] for i in idx).most_common(4)}")  # fmt: skip


if __name__ == "__main__":
    main()
