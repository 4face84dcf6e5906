"""What a trained Pengi reads on *in-distribution* clips: its greedy answers on the validation
triples of the label sources, beside a linear probe of its own audio embedding on the same
clips, and how spread that embedding is within each source.

    python bench/learning/val_readout.py PENGI_MODEL_DIR DATA_DIR

DATA_DIR: the data/ folder of a repro (triples/, audio paths inside the triples). The evaluation
sets hold factors out of the train split (a lead instrument per genre, a TTS engine); the
validation split does not, so a task that stays weak here is not learned at all, rather than
not generalised. Prints, per source: Pengi's exact-answer accuracy (for NSynth the pitch and the
instrument read out of the answer), a standardised logistic regression trained on the train
clips' embeddings and scored on the validation clips, and the mean pairwise cosine of the
embeddings of 400 train clips (high: the source's clips sit in a narrow cone).
"""

from __future__ import annotations

import re
import sys

import numpy as np
import polars as pl
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from pengi.session import PengiSession

SOURCES = ["esc50", "crema_d", "tut2017", "gtzan_genres", "nsynth"]


def unique_clips(df: pl.DataFrame, source: str) -> pl.DataFrame:
    return df.filter(pl.col("source") == source).unique("clip_id", keep="first").sort("clip_id")


def main() -> None:
    model_dir, data = sys.argv[1:3]
    s = PengiSession.from_pretrained(model_dir, beam_size=1, max_new_tokens=32, precision="bf16", batch_size=16)
    train = pl.read_parquet(f"{data}/triples/train.parquet")
    val = pl.read_parquet(f"{data}/triples/val.parquet")

    def embed(df: pl.DataFrame) -> np.ndarray:
        vecs, _ = s.audio_embeddings(df["audio_uri"].to_list(), source="pengi")
        return np.stack(vecs)

    sample = train.unique("clip_id", keep="first").sort("clip_id").sample(min(400, train.height), seed=0)
    unit = embed(sample)  # audio_embeddings are unit-norm: the Gram matrix holds cosines
    for src in SOURCES:
        v = val.filter(pl.col("source") == src)
        if v.height == 0:
            continue
        out, _ = s.generate(v["audio_uri"].to_list(), v["prompt"].to_list())
        targets = v["target"].to_list()
        if src == "nsynth":
            def field(pattern: str, text: str | None) -> str | None:
                m = re.search(pattern, text or "")
                return m.group(1) if m else None

            pitch = np.mean([field(r"pitch (\d+)", o) == field(r"pitch (\d+)", t) for o, t in zip(out, targets)])
            instr = np.mean([field(r"produced by (\w+)", o) == field(r"produced by (\w+)", t) for o, t in zip(out, targets)])
            pengi = f"pitch {pitch:.3f}, instrument {instr:.3f}"
            labels = lambda df: [field(r"pitch (\d+)", t) for t in df["target"].to_list()]
        else:
            pengi = f"{np.mean([(o or '').strip() == t.strip() for o, t in zip(out, targets)]):.3f}"
            labels = lambda df: df["target"].to_list()
        tr, va = unique_clips(train, src), unique_clips(val, src)
        x_tr, x_va = embed(tr), embed(va)
        scaler = StandardScaler().fit(x_tr)
        probe = LogisticRegression(max_iter=3000).fit(scaler.transform(x_tr), labels(tr))
        probe_acc = probe.score(scaler.transform(x_va), labels(va))
        m = (sample["source"] == src).to_numpy()
        k = int(m.sum())
        cos = (unit[m] @ unit[m].T).sum() - k
        spread = cos / (k * k - k) if k > 1 else float("nan")
        print(f"{src:13s} val clips {va.height:3d}  Pengi {pengi}  probe{' (pitch)' if src == 'nsynth' else ''} "
              f"{probe_acc:.3f}  within-source cosine {spread:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
