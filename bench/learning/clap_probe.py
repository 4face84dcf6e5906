"""L1/L3 linear probes of a CLAP audio tower, and the mean-log-mel probe, on the label tasks.

    python bench/learning/clap_probe.py CLAP_MODEL_DIR PARAMS DATA_DIR

The tower is loaded into a Pengi model (as train-pengi starts from it) and probed with the
evaluation harness's protocol (pengi.evaluation.harness, paper section 5.5).
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from pengi.audio_store import AudioStore
from pengi.config import load_config
from pengi.evaluation.harness import Evaluator, _fold, load_eval_sets
from pengi.models import build_pengi
from pengi.models.clap import CLAP
from pengi.session import PengiSession

TASKS = ["esc50", "crema_d", "gtzan_genres", "tut2017", "nsynth_instrument"]


def main() -> None:
    clap_dir, params, data = sys.argv[1:4]
    cfg = load_config(params)
    model = build_pengi(cfg)
    model.load_clap_encoders(CLAP.from_pretrained(clap_dir))
    session = PengiSession(model, store=AudioStore(f"{data}/audio"), batch_size=32)
    evaluator = Evaluator(cfg, session, None, f"{data}/manifests")
    for name, ev in load_eval_sets(f"{data}/eval", TASKS).items():
        index = {c: k for k, c in enumerate(ev.meta["classes"])}
        refs = ev.items.get_column("references").to_list()
        y = np.array([index[r[0]] for r in refs])
        uris = ev.items.get_column("audio_uri").to_list()
        res = {"headline": "accuracy", "baselines": {}, "unavailable": {}}
        evaluator._probes(ev, res, uris, y, [_fold(ev, i) for i in range(len(uris))], index)
        print(name, {"L1": round(res["probes"]["Pengi L1 probe"]["accuracy"], 3),
                     "L3": round(res["probes"]["Pengi L3 probe"]["accuracy"], 3),
                     "logmel": round(res["baselines"]["log-mel linear probe"]["accuracy"], 3)}, flush=True)  # fmt: skip


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
