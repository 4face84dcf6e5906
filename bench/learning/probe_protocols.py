"""The two probe protocols side by side on the fold-based tasks (GTZAN, CREMA-D, ESC-50).

    python bench/learning/probe_protocols.py PENGI_MODEL_DIR PARAMS DATA_DIR

The evaluation harness probes a set with official folds by leave-one-fold-out inside the
evaluation set (the paper's protocol for those datasets). Pengi itself learns from the source's
train split. Where the test clips hold a factor the train split never has (the mini corpus holds
out a lead instrument per genre and a TTS engine), the fold protocol lets the probe see that
factor and Pengi cannot. This prints both: folds, and train split -> evaluation set.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from pengi.audio_store import AudioStore
from pengi.config import load_config
from pengi.evaluation.harness import Evaluator, _fold, load_eval_sets
from pengi.models import Pengi
from pengi.session import PengiSession

TASKS = ["gtzan_genres", "crema_d", "esc50"]


def main() -> None:
    model_dir, params, data = sys.argv[1:4]
    cfg = load_config(params)
    session = PengiSession(Pengi.from_pretrained(model_dir), store=AudioStore(f"{data}/audio"), batch_size=32)
    evaluator = Evaluator(cfg, session, None, f"{data}/manifests")
    for name, ev in load_eval_sets(f"{data}/eval", TASKS).items():
        index = {c: k for k, c in enumerate(ev.meta["classes"])}
        y = np.array([index[r[0]] for r in ev.items.get_column("references").to_list()])
        uris = ev.items.get_column("audio_uri").to_list()
        for protocol, folds in (("folds", [_fold(ev, i) for i in range(len(uris))]), ("train split", [None] * len(uris))):
            res = {"headline": "accuracy", "baselines": {}, "unavailable": {}}
            evaluator._probes(ev, res, uris, y, folds, index)
            if "probes" not in res:
                print(name, protocol, res["unavailable"], flush=True)
                continue
            print(name, f"{protocol:11s}", res["probe_protocol"].get("split"),
                  {"L1": round(res["probes"]["Pengi L1 probe"]["accuracy"], 3),
                   "logmel": round(res["baselines"]["log-mel linear probe"]["accuracy"], 3)}, flush=True)  # fmt: skip


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
