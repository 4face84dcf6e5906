"""Where in its answer does a task's loss sit? Per task: the mean validation loss of each target
token position, and the norm of the mappers' gradient of one sample's per-sample loss.

    python bench/learning/token_loss.py PENGI_MODEL_DIR DATA_DIR [N_PER_TASK]

DATA_DIR: a repro's data/ (triples/val.parquet, audio/). One validation triple at a time (no
padding), bf16 autocast as in training, 1 thread; ~1 min for 12 triples per task. A templated
answer ("this is a sound of music in genre jazz") whose template tokens read ~0 and whose label
token reads near ln(classes) is learned in form but not in content.
"""

from __future__ import annotations

import sys
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F

from pengi.config import load_config
from pengi.data import Collator, TripleDataset
from pengi.models.lm import load_lm_tokenizer
from pengi.models.pengi import Pengi
from pengi.train.common import open_stage_data
from pengi.train.pengi import cached_prompt_features, encode_prompt_cache


def main() -> None:
    model_dir, data = sys.argv[1:3]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 12
    torch.set_num_threads(1)
    cfg = load_config("params.yaml")
    stage = open_stage_data(cfg, cfg.train_pengi, f"{data}/triples", f"{data}/audio")
    if stage.val is None:
        raise SystemExit(f"{data}/triples has no val.parquet")
    model = Pengi.from_pretrained(model_dir).eval()
    prompts = sorted(set(stage.val.unique_prompts()))
    cache = encode_prompt_cache(model, cfg, prompts)
    collate = Collator(load_lm_tokenizer(cfg.model.lm), cfg.model.target_max_tokens, prompt_vocab=prompts)
    ds = TripleDataset(stage.val, stage.store, stage.clip_samples, False)
    rows = defaultdict(list)
    for i, task in enumerate(stage.val.columns["task"]):
        rows[task].append(i)
    mappers = [p for name, p in model.named_parameters() if p.requires_grad and name.startswith(("m1.", "m2."))]
    for task, idx in sorted(rows.items()):
        per_pos, norms = defaultdict(list), []
        for i in idx[:n]:
            batch = collate([ds[i]])
            feats = cached_prompt_features(model, cache[batch["prompt_index"]])
            model.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(batch["audio"].float(), batch["input_ids"], batch["attention_mask"],
                            prompt_features=feats, loss_reduction="sample")  # fmt: skip
            out.loss.backward()
            norms.append(torch.sqrt(sum((p.grad.float() ** 2).sum() for p in mappers if p.grad is not None)).item())
            labels = out.labels[0]
            tok = F.cross_entropy(out.logits[0].float(), labels.clamp(min=0), reduction="none")
            for j in range(len(labels)):
                if labels[j] >= 0:
                    per_pos[j].append(tok[j].item())
        profile = " ".join(f"{np.mean(per_pos[j]):.2f}" for j in sorted(per_pos))
        print(f"{task:15s} n={min(n, len(idx)):3d}  mapper grad norm (median) {np.median(norms):.3f}  "
              f"loss per target token: {profile}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
