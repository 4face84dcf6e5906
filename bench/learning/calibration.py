"""Does the model's label distribution know more than its argmax? Log-likelihood ranking of
each evaluation set's classes, raw and calibrated.

    python bench/learning/calibration.py PENGI_MODEL_DIR DATA_DIR [TASK ...]

Per single-label task: accuracy of the raw log-likelihood argmax (what
``evaluate.classification_method: loglik`` reports), of the scores minus the scores of a
content-free input (a silent clip with the same prompt: "contextual calibration", Zhao et al.
2021 — one extra scoring per task, legitimate at test time), and minus each class's mean score
over the evaluation clips (transductive: a diagnostic of the prior, not a method to report).
Also the most-predicted class's share (how collapsed the answers are).
"""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np
import polars as pl
import torch

from pengi.config import load_config
from pengi.evaluation.harness import load_eval_sets, open_session
from pengi.inference import class_scores
from pengi.tasks import EVAL_TASKS, normalise_label

TASKS = ["esc50", "crema_d", "gtzan_genres", "tut2017", "nsynth_instrument", "nsynth_pitch", "nsynth_velocity"]


def main() -> None:
    model_dir, data = sys.argv[1:3]
    tasks = sys.argv[3:] or TASKS
    cfg = load_config("params.yaml")
    s = open_session(cfg, model_dir, audio_dir=f"{data}/audio")
    sets = load_eval_sets(f"{data}/eval", tasks)
    for name in tasks:
        d = sets[name]
        classes = list(d.meta["classes"])
        names = [normalise_label(c) for c in classes]
        task = EVAL_TASKS[name]
        template = task.answer if task.answer_leads else "{}"
        uris = d.items.get_column("audio_uri").to_list()
        prompts = d.items.get_column("prompt").to_list()
        y = np.array([classes.index(r[0]) for r in d.items.get_column("references").to_list()])
        scores, errors, _ = s.class_scores(uris, names, "loglik", prompts, answer=task.answer,
                                           answer_leads=task.answer_leads)  # fmt: skip
        S = torch.stack(scores).float().numpy()
        with torch.no_grad():
            silent = torch.zeros(1, int(cfg.audio.sample_rate * cfg.audio.clip_seconds))
            null = class_scores("loglik", names, lm=s.lm, prefix=s.prefix(silent.to(s.device), [prompts[0]]),
                                tokenizer=s.lm_tokenizer, template=template)[0].float().cpu().numpy()  # fmt: skip
        raw = (S.argmax(1) == y).mean()
        cal = ((S - null).argmax(1) == y).mean()
        trans = ((S - S.mean(0)).argmax(1) == y).mean()
        top, n = Counter(S.argmax(1).tolist()).most_common(1)[0]
        print(f"{name:18s} n={len(y):3d} classes={len(classes):2d} chance={1 / len(classes):.3f}  "
              f"raw={raw:.3f}  content-free={cal:.3f}  class-mean={trans:.3f}  "
              f"raw top class '{names[top]}' {n}/{len(y)}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
