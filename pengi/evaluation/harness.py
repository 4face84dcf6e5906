"""The ``evaluate`` stage: every downstream task of the paper's Table 2 with its metric.

One model load, then one protocol per evaluation set (``data/eval/<task>.parquet`` + its
``<task>.json`` sidecar, written by :mod:`pengi.evalsets`), chosen by the task's kind:

=============  ==================================================================================
kind           protocol
=============  ==================================================================================
captioning     generate (``generate audio caption``) -> BLEU-1..4, METEOR, ROUGE-L, CIDEr-D
               (SPICE/SPIDEr with the CoreNLP jars, else reported unavailable with the reason);
               baseline: one constant caption (:mod:`pengi.evaluation.baselines`)
qa             generate (``question: {q}``) -> exact-match accuracy; baseline: question-only prior
multiclass     ``evaluate.classification_method`` (text matching or log-likelihood) -> accuracy
               and a confusion matrix; baselines: chance, majority, the mean-log-mel probe
multilabel     the same scores -> mAP, or micro-F1 of the top-1 class (DCASE 2017 task 4)
retrieval      generative (caption indexing, paper section 5.4) and contrastive (CLAP
               embeddings) R@1/5/10 (keys ``t2a_R1``, ``a2t_R10``, ...) in both directions; baseline: chance
=============  ==================================================================================

Linear probes L1/L3 on the frozen audio encoder and the log-mel baseline run on the
classification tasks (:mod:`pengi.evaluation.probe`); sets with official folds also get the
L1 and log-mel probes trained on the source's train split, rows "(train split)". Audio is
cropped deterministically by :class:`pengi.session.PengiSession`, the one inference path shared
with the CLI. Clips that fail to decode are counted and listed per task, never dropped
silently.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from pengi.config import Config
from pengi.evaluation import baselines as B
from pengi.evaluation import metrics as M
from pengi.evaluation import probe as P
from pengi.session import PengiSession
from pengi.tasks import EVAL_TASKS, normalise_label

log = logging.getLogger(__name__)

MAX_LISTED_ERRORS = 20
SAMPLES_PER_TASK = 5
PROBE_SEED = 0  # probes are part of the measurement, not a tuned setting: one fixed seed


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass
class EvalData:
    """One evaluation set as read from ``eval_dir``."""

    name: str
    items: pl.DataFrame
    meta: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.meta["kind"]


def load_eval_sets(eval_dir: str | Path, requested: Sequence[str] = ()) -> dict[str, EvalData]:
    """The evaluation sets present in ``eval_dir`` (``requested``: only those; empty = all).

    Raises:
        FileNotFoundError: a requested set is missing, or the folder holds none.
    """
    eval_dir = Path(eval_dir)
    present = sorted(p.stem for p in eval_dir.glob("*.parquet"))
    missing = [t for t in requested if t not in present]
    if missing:
        raise FileNotFoundError(f"evaluate.tasks: no evaluation set {missing[0]!r} in {eval_dir} (present: {present})")
    names = list(requested) if requested else present
    if not names:
        raise FileNotFoundError(f"{eval_dir}: no evaluation sets (<task>.parquet); run the evalsets stage")
    out = {}
    for name in names:
        items = pl.read_parquet(eval_dir / f"{name}.parquet")
        sidecar = eval_dir / f"{name}.json"
        meta = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.exists() else {}
        if "kind" not in meta:
            task = EVAL_TASKS.get(name)
            if task is None:
                raise ValueError(f"{sidecar}: missing, and {name!r} is not a known task: its kind is unknown")
            meta = {"task": name, "source": task.source, "kind": task.kind, "metric": task.metric,
                    "prompt": task.prompt, "classes": [], **meta}  # fmt: skip
        if meta["kind"] in ("multiclass", "multilabel") and not meta.get("classes"):
            refs = items.get_column("references").explode().drop_nulls().unique().sort().to_list()
            meta["classes"] = refs
        out[name] = EvalData(name, items, meta)
    return out


@dataclass
class TrainText:
    """Training-set text used by the baselines (from ``data/triples/train.parquet``)."""

    captions: list[str] = field(default_factory=list)
    questions: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)


def load_train_text(triples_dir: str | Path | None) -> TrainText | None:
    """Captions and (question, answer) pairs of the train triples; ``None`` without triples."""
    if triples_dir is None:
        return None
    path = Path(triples_dir) / "train.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found (the render stage writes it)")
    df = pl.read_parquet(path, columns=["task", "prompt", "target"]).filter(pl.col("task").is_in(["captioning", "aqa"]))
    caps = df.filter(pl.col("task") == "captioning").get_column("target").to_list()
    qa = df.filter(pl.col("task") == "aqa")
    return TrainText(
        captions=caps,
        questions=[B.strip_question_prompt(p) for p in qa.get_column("prompt").to_list()],
        answers=qa.get_column("target").to_list(),
    )


# --------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------


class Evaluator:
    """Runs the protocols of one evaluation with one loaded session."""

    def __init__(
        self,
        cfg: Config,
        session: PengiSession,
        train_text: TrainText | None = None,
        manifests_dir: str | Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.ev = cfg.evaluate
        self.session = session
        self.train_text = train_text
        self.manifests_dir = Path(manifests_dir) if manifests_dir is not None else None
        self._features: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # uri -> (embedding, log-mel stats)

    # ---------------------------------------------------------------- common

    def _generate(self, data: EvalData) -> tuple[list[str | None], dict[int, str]]:
        items = data.items
        return self.session.generate(items.get_column("audio_uri").to_list(), items.get_column("prompt").to_list())

    @staticmethod
    def _base(data: EvalData, errors: dict[int, str]) -> dict[str, Any]:
        ids = data.items.get_column("item_id").to_list()
        listed = {ids[i]: msg for i, msg in list(errors.items())[:MAX_LISTED_ERRORS]}
        return {
            "task": data.name, "kind": data.kind, "paper_metric": data.meta.get("metric"),
            "items": data.items.height, "failed": len(errors), "errors": listed,
            "model": {}, "baselines": {}, "probes": {}, "unavailable": {},
        }  # fmt: skip

    def run(self, data: EvalData) -> dict[str, Any]:
        """Evaluate one set by its kind; returns the task's result record."""
        t0 = time.perf_counter()
        fn = {
            "captioning": self.captioning, "qa": self.qa, "multiclass": self.classification,
            "multilabel": self.classification, "retrieval": self.retrieval,
        }.get(data.kind)  # fmt: skip
        if fn is None:
            raise ValueError(f"{data.name}: unknown task kind {data.kind!r}")
        if data.items.height == 0:
            raise ValueError(f"{data.name}: the evaluation set is empty")
        result = fn(data)
        result["seconds"] = round(time.perf_counter() - t0, 3)
        log.info("%s: %s = %s (%.1f s)", data.name, result["headline"], result["model"].get(result["headline"]),
                 result["seconds"])  # fmt: skip
        return result

    # ---------------------------------------------------------------- captioning

    def captioning(self, data: EvalData) -> dict[str, Any]:
        texts, errors = self._generate(data)
        res = self._base(data, errors)
        ids = data.items.get_column("item_id").to_list()
        refs = data.items.get_column("references").to_list()
        ok = [i for i, t in enumerate(texts) if t is not None and refs[i]]
        if not ok:
            raise RuntimeError(f"{data.name}: no clip could be captioned ({len(errors)} audio errors)")
        cand = {ids[i]: texts[i] for i in ok}
        gts = {ids[i]: list(refs[i]) for i in ok}
        scores = M.caption_metrics(cand, gts, self.ev.coco_jars_dir)
        res["unavailable"].update(scores.pop("unavailable"))
        res["model"] = {k: v for k, v in scores.items() if v is not None}
        res["headline"] = "spider" if scores.get("spider") is not None else "cider_d"
        if self.train_text is not None and self.train_text.captions:
            const = B.constant_caption(self.train_text.captions)
            base = M.caption_metrics({k: const for k in cand}, gts, self.ev.coco_jars_dir)
            base.pop("unavailable")
            res["baselines"]["constant caption"] = {k: v for k, v in base.items() if v is not None}
            res["baselines"]["constant caption"]["caption"] = const
        else:
            res["unavailable"]["constant caption"] = "no training captions (pass the triples folder)"
        res["samples"] = [
            {"item_id": ids[i], "output": texts[i], "references": list(refs[i])} for i in ok[:SAMPLES_PER_TASK]
        ]
        res["predictions"] = {ids[i]: texts[i] for i in ok}
        return res

    # ---------------------------------------------------------------- AQA

    def qa(self, data: EvalData) -> dict[str, Any]:
        texts, errors = self._generate(data)
        res = self._base(data, errors)
        ids = data.items.get_column("item_id").to_list()
        refs = data.items.get_column("references").to_list()
        prompts = data.items.get_column("prompt").to_list()
        ok = [i for i, t in enumerate(texts) if t is not None]
        if not ok:
            raise RuntimeError(f"{data.name}: no question could be answered ({len(errors)} audio errors)")
        res["model"] = {"accuracy": M.aqa_exact_match([texts[i] for i in ok], [list(refs[i]) for i in ok])}
        res["headline"] = "accuracy"
        tt = self.train_text
        if tt is not None and tt.questions:
            prior = B.QuestionOnlyBaseline(tt.questions, tt.answers)
            preds = [prior.predict(B.strip_question_prompt(prompts[i])) for i in ok]
            res["baselines"]["question only"] = {"accuracy": M.aqa_exact_match(preds, [list(refs[i]) for i in ok])}
        else:
            res["unavailable"]["question only"] = "no training questions (pass the triples folder)"
        res["samples"] = [
            {"item_id": ids[i], "question": prompts[i], "output": texts[i], "references": list(refs[i])}
            for i in ok[:SAMPLES_PER_TASK]
        ]  # fmt: skip
        res["predictions"] = {ids[i]: texts[i] for i in ok}
        return res

    # ---------------------------------------------------------------- classification

    def classification(self, data: EvalData) -> dict[str, Any]:
        classes = list(data.meta["classes"])
        if not classes:
            raise ValueError(f"{data.name}: no class list")
        index = {c: k for k, c in enumerate(classes)}
        refs = data.items.get_column("references").to_list()
        unknown = sorted({r for rs in refs for r in rs if r not in index})
        if unknown:
            raise ValueError(f"{data.name}: references outside the class list: {unknown[:5]}")
        multilabel = data.kind == "multilabel"
        uris = data.items.get_column("audio_uri").to_list()
        prompts = data.items.get_column("prompt").to_list()
        method = self.ev.classification_method
        # Candidates as words (``sea_waves`` -> ``sea waves``): what the LM and the text encoder read.
        names = [normalise_label(c) for c in classes]
        # the form the trained target states the class in (Table 1), e.g. "... in genre {}"
        task = EVAL_TASKS.get(data.name)
        answer, leads = (task.answer, task.answer_leads) if task is not None else ("{}", True)
        scores, errors, texts = self.session.class_scores(
            uris, names, method, prompts, multilabel=multilabel, answer=answer, answer_leads=leads
        )
        res = self._base(data, errors)
        res["method"] = method
        res["answer"] = answer
        ok = [i for i, s in enumerate(scores) if s is not None]
        if not ok:
            raise RuntimeError(f"{data.name}: no clip could be classified ({len(errors)} audio errors)")
        S = torch.stack([scores[i] for i in ok]).float().numpy()  # (n, K)
        ids = data.items.get_column("item_id").to_list()
        if multilabel:
            Y = np.zeros((len(ok), len(classes)), dtype=int)
            for row, i in enumerate(ok):
                Y[row, [index[r] for r in refs[i]]] = 1
            if data.meta.get("metric") == "f1":
                # DCASE 2017 task 4: instance-based F1 of hard decisions; the decision is the
                # top-1 class per clip (most clips carry one label; no threshold is tuned on test).
                f1 = M.f1_score(Y, M.binarize_scores(S, top_k=1))
                res["model"] = {"f1": f1, "map": M.mean_average_precision(Y, S)}
                res["headline"] = "f1"
                res["baselines"]["chance"] = {"f1": _chance_f1(Y)}
            else:
                res["model"] = {"map": M.mean_average_precision(Y, S)}
                res["headline"] = "map"
                res["baselines"]["chance"] = {"map": B.chance_map(Y)}
            y_for_probe: Any = Y
        else:
            y = np.array([index[refs[i][0]] for i in ok])
            res["model"] = {"accuracy": M.accuracy(S, y)}
            res["headline"] = "accuracy"
            res["baselines"]["chance"] = {"accuracy": B.chance_accuracy(len(classes))}
            res["baselines"]["majority"] = {"accuracy": B.majority_accuracy(y.tolist())}
            res["confusion"] = {"classes": classes, "matrix": _confusion(y, S.argmax(1), len(classes))}
            y_for_probe = y
        res["predictions"] = {
            ids[i]: (texts[i] if texts[i] is not None else classes[int(S[row].argmax())]) for row, i in enumerate(ok)
        }
        res["samples"] = [
            {"item_id": ids[i], "output": texts[i], "predicted": classes[int(S[row].argmax())],
             "references": list(refs[i])}
            for row, i in enumerate(ok[:SAMPLES_PER_TASK])
        ]  # fmt: skip
        if self.ev.probes:
            self._probes(data, res, [uris[i] for i in ok], y_for_probe, [_fold(data, i) for i in ok], index)
        else:
            res["unavailable"]["probes"] = "evaluate.probes is false"
        return res

    def _features_for(self, uris: Sequence[str]) -> tuple[list[int], np.ndarray, np.ndarray]:
        """Pengi audio-encoder embeddings and log-mel statistics of clips (cached by URI)."""
        from pengi.corpus.probe import logmel_stats

        todo = [u for u in dict.fromkeys(uris) if u not in self._features]
        sr = self.session.loader.sample_rate
        model = self.session.require_model()

        def run(idx: list[int], waves: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
            emb = model.audio_embedding(waves.to(self.session.device)).float().cpu().numpy()  # (b, d_proj)
            return [(emb[j], logmel_stats(waves[j].numpy(), sr)) for j in range(len(idx))]

        if todo:
            feats, _ = self.session.map_clips(todo, run, "probe features")
            for u, f in zip(todo, feats):
                if f is not None:
                    self._features[u] = f
        ok = [i for i, u in enumerate(uris) if u in self._features]
        if not ok:
            return [], np.zeros((0, 0)), np.zeros((0, 0))
        emb = np.stack([self._features[uris[i]][0] for i in ok])
        mel = np.stack([self._features[uris[i]][1] for i in ok])
        return ok, emb, mel

    def _probe_train(self, data: EvalData, index: dict[str, int], multilabel: bool):
        """Train rows (uris, targets) of the task's source, or ``None`` with a reason."""
        task = EVAL_TASKS.get(data.name)
        if self.manifests_dir is None or task is None:
            return None, "no manifests folder given" if task is not None else "not a registry task"
        path = self.manifests_dir / f"{task.source}.parquet"
        if not path.exists():
            return None, f"{path} not found"
        from pengi.evalsets import references_frame
        from pengi.manifest import STATUS_OK, read_manifest_frame

        rows = read_manifest_frame(path).filter((pl.col("status") == STATUS_OK) & (pl.col("split") == "train"))
        if rows.height == 0:
            return None, f"source {task.source!r} has no train split"
        frame = references_frame(task, rows)
        uris, targets, outside = [], [], 0
        for uri, refs in zip(frame.get_column("audio_uri").to_list(), frame.get_column("references").to_list()):
            known = [r for r in refs if r in index]
            if len(known) != len(refs) or (not multilabel and not known):
                outside += 1  # a training class the test set does not know: not usable
                continue
            uris.append(uri)
            targets.append(known if multilabel else index[known[0]])
        cap = self.ev.probe_max_train_items
        if cap and len(uris) > cap:  # evenly spaced, deterministic subsample
            keep = np.linspace(0, len(uris) - 1, cap).round().astype(int)
            uris, targets = [uris[k] for k in keep], [targets[k] for k in keep]
        return (uris, targets, outside), None

    def _train_split_probe_data(self, train, uris, index, multilabel, emb_test, mel_test, y_test):
        """Train-split -> evaluation-set probe splits ``(emb_splits, mel_splits, protocol)``."""
        t_uris, t_targets, outside = train
        test_set = set(uris)
        keep = [k for k, u in enumerate(t_uris) if u not in test_set]
        overlap = len(t_uris) - len(keep)
        t_uris, t_targets = [t_uris[k] for k in keep], [t_targets[k] for k in keep]
        ok_tr, emb_tr, mel_tr = self._features_for(t_uris)
        if multilabel:
            y_tr = np.zeros((len(ok_tr), len(index)), dtype=int)
            for row, i in enumerate(ok_tr):
                y_tr[row, [index[c] for c in t_targets[i]]] = 1
        else:
            y_tr = np.array([t_targets[i] for i in ok_tr])
        protocol = {"split": "train -> eval set", "train_items": len(ok_tr),
                    "train_items_outside_class_list": outside,
                    "train_items_also_in_eval_set": overlap,
                    "train_items_failed": len(t_uris) - len(ok_tr)}  # fmt: skip
        if len(ok_tr) < 2:
            return [], [], protocol
        return [P.ProbeSplit(emb_tr, y_tr, emb_test, y_test)], [P.ProbeSplit(mel_tr, y_tr, mel_test, y_test)], protocol

    def _probes(self, data: EvalData, res: dict, uris: list[str], y_test: Any, folds: list[Any], index: dict) -> None:
        """L1/L3 probes and the log-mel probe. Protocol: the official folds when the set has
        them (leave-one-fold-out, as ESC-50 and UrbanSound8K prescribe), else train on the
        source's train split (clips that are also in the evaluation set are left out).

        With folds, the probes are *also* trained on the source's train split when it has one
        (rows suffixed ``(train split)``): that is what Pengi learns from, and where the test
        clips hold a factor the train split lacks, the fold probe sees it and Pengi cannot."""
        multilabel = data.kind == "multilabel"
        ok_test, emb_test, mel_test = self._features_for(uris)
        y_test = y_test[ok_test]
        splits_emb: list[P.ProbeSplit] = []
        splits_mel: list[P.ProbeSplit] = []
        fold_ids = [folds[i] for i in ok_test]
        use_folds = bool(fold_ids) and all(f is not None for f in fold_ids) and len(set(fold_ids)) >= 2
        train, reason = self._probe_train(data, index, multilabel)
        on_train = None  # (emb splits, mel splits, protocol) of the train split -> eval set
        if train is not None:
            on_train = self._train_split_probe_data(train, uris, index, multilabel, emb_test, mel_test, y_test)
        if use_folds:
            splits_emb = P.fold_splits(emb_test, y_test, fold_ids)
            splits_mel = P.fold_splits(mel_test, y_test, fold_ids)
            res["probe_protocol"] = {"split": "leave-one-fold-out on the eval set", "folds": len(set(fold_ids))}
            reason = None
        elif on_train is not None:
            splits_emb, splits_mel, res["probe_protocol"] = on_train
        if not splits_emb:
            why = reason or "fewer than 2 usable training clips"
            res["unavailable"]["probes"] = f"no training data for a probe: {why}, and no official folds"
            return
        key = res["headline"] if res["headline"] != "f1" else "map"
        emb_scores = P.run_probes(splits_emb, ("L1", "L3"), seed=PROBE_SEED)
        mel_scores = P.run_probes(splits_mel, ("logmel",), seed=PROBE_SEED)
        res["probes"] = {"Pengi L1 probe": {key: emb_scores["L1"]}, "Pengi L3 probe": {key: emb_scores["L3"]}}
        res["baselines"]["log-mel linear probe"] = {key: mel_scores["logmel"]}
        if use_folds and on_train is not None and on_train[0]:
            t_emb, t_mel, protocol = on_train
            res["probe_protocol"]["train_split"] = protocol
            res["probes"]["Pengi L1 probe (train split)"] = {key: P.run_probes(t_emb, ("L1",), seed=PROBE_SEED)["L1"]}
            res["baselines"]["log-mel linear probe (train split)"] = {
                key: P.run_probes(t_mel, ("logmel",), seed=PROBE_SEED)["logmel"]
            }

    # ---------------------------------------------------------------- retrieval

    def retrieval(self, data: EvalData) -> dict[str, Any]:
        texts, errors = self._generate(data)
        res = self._base(data, errors)
        refs = data.items.get_column("references").to_list()
        ok = [i for i, t in enumerate(texts) if t is not None and refs[i]]
        if len(ok) < 2:
            raise RuntimeError(f"{data.name}: retrieval needs at least 2 readable clips, got {len(ok)}")
        queries = [q for i in ok for q in refs[i]]
        owner = [a for a, i in enumerate(ok) for _ in refs[i]]
        sim = self._caption_index(texts, ok, queries)
        res["model"] = _flat_retrieval(M.retrieval_metrics(sim, owner))
        res["headline"] = "t2a_R1"
        if self.session.clap is not None:
            uris = [data.items.get_column("audio_uri")[i] for i in ok]
            emb, emb_err = self.session.audio_embeddings(uris, "clap")
            if emb_err:
                raise RuntimeError(f"{data.name}: CLAP could not read {len(emb_err)} clips that Pengi read")
            a = torch.from_numpy(np.stack(emb))  # (A, d)
            t = self.session.clap_text_embeddings(queries)  # (C, d)
            clap = _flat_retrieval(M.retrieval_metrics((a @ t.T).numpy(), owner))
            res["model"].update({f"clap_{k}": v for k, v in clap.items()})
        else:
            res["unavailable"]["contrastive retrieval"] = "no CLAP model given"
        n_audio, n_text = len(ok), len(queries)
        per_audio = [len(refs[i]) for i in ok]
        res["baselines"]["chance"] = {
            **{f"t2a_R{k}": B.chance_recall(n_audio, k) for k in (1, 5, 10)},
            **{f"a2t_R{k}": float(np.mean([B.chance_recall(n_text, k, c) for c in per_audio])) for k in (1, 5, 10)},
        }
        item_ids = data.items.get_column("item_id")
        res["samples"] = [{"item_id": item_ids[i], "output": texts[i]} for i in ok[:SAMPLES_PER_TASK]]
        return res

    def _caption_index(self, texts: list[str | None], ok: list[int], queries: list[str]) -> np.ndarray:
        from pengi.inference import caption_index_similarity

        return caption_index_similarity([texts[i] for i in ok], queries, self.session.text_embed).numpy()


def _fold(data: EvalData, i: int) -> Any:
    return data.items.get_column("fold")[i] if "fold" in data.items.columns else None


def _confusion(y: np.ndarray, pred: np.ndarray, k: int) -> list[list[int]]:
    m = np.zeros((k, k), dtype=int)
    np.add.at(m, (y, pred), 1)  # rows: true class, columns: predicted class
    return m.tolist()


def _chance_f1(Y: np.ndarray) -> float:
    """F1 of predicting the most frequent test class for every clip (a constant predictor)."""
    pred = np.zeros_like(Y)
    pred[:, int(Y.sum(0).argmax())] = 1
    return M.f1_score(Y, pred)


def _flat_retrieval(r: dict[str, Any]) -> dict[str, float]:
    """``t2a_R1``, ``a2t_mAP10``, ...: MLflow metric names may not contain ``@``."""
    out = {}
    for direction, short in (("text_to_audio", "t2a"), ("audio_to_text", "a2t")):
        for k, v in r[direction].items():
            out[f"{short}_{k.replace('@', '')}"] = float(v)
    return out


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------


def open_session(
    cfg: Config,
    model_dir: str | Path,
    clap_dir: str | Path | None = None,
    audio_dir: str | Path | None = None,
    device: str | None = None,
    progress: bool = False,
) -> PengiSession:
    """The evaluation's inference session with the ``evaluate`` settings."""
    store = None
    if audio_dir is not None:
        from pengi.audio_store import AudioStore

        store = AudioStore(audio_dir)
    ev = cfg.evaluate
    return PengiSession.from_pretrained(
        model_dir, clap_dir, batch_size=ev.batch_size, beam_size=ev.beam_size, max_new_tokens=ev.max_new_tokens,
        store=store, crop_mode=ev.crop, device=device, progress=progress, precision=ev.precision,
    )  # fmt: skip


def evaluate(
    cfg: Config,
    model_dir: str | Path,
    eval_dir: str | Path,
    out_dir: str | Path,
    *,
    clap_dir: str | Path | None = None,
    audio_dir: str | Path | None = None,
    triples_dir: str | Path | None = None,
    manifests_dir: str | Path | None = None,
    train_logs: Sequence[str | Path] = (),
    device: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run every configured evaluation set and write the reports into ``out_dir``.

    Args:
        cfg: the whole config (the ``evaluate`` section; ``audio``/``model`` come from the checkpoints).
        model_dir: the trained Pengi folder (``save_pretrained``).
        eval_dir: ``data/eval`` (``<task>.parquet`` + ``<task>.json``).
        out_dir: report folder: ``results.json``, ``report.md``, ``predictions/``, PNG plots.
        clap_dir: the trained CLAP folder (contrastive retrieval); optional.
        audio_dir: the audio store (clips are decoded from their URIs when absent).
        triples_dir: the triples folder (``train.parquet``): constant caption and question-only
            baselines; optional (the baselines are then reported unavailable).
        manifests_dir: the manifests folder: train splits for the linear probes; optional.
        train_logs: CSV logs of the training stages (``train_log.csv``, ``val_log.csv``) to plot.

    Returns:
        ``{"tasks": task -> result, "metrics": flat metrics (metrics.json), "seconds": ...}``.
    """
    from pengi.evaluation.report import flat_metrics, write_reports

    t0 = time.perf_counter()
    sets = load_eval_sets(eval_dir, cfg.evaluate.tasks)
    session = open_session(cfg, model_dir, clap_dir, audio_dir, device, progress)
    evaluator = Evaluator(cfg, session, load_train_text(triples_dir), manifests_dir)
    skipped: dict[str, str] = {}
    index = Path(eval_dir) / "index.json"
    if index.exists():  # tasks the evalsets stage did not build, with the reason
        skipped.update(json.loads(index.read_text(encoding="utf-8")).get("skipped", {}))
    results = {}
    for name, data in sets.items():
        if data.items.height == 0:  # reported, not fatal: a small corpus may leave a split empty
            skipped[name] = "the evaluation set is empty"
            log.warning("%s: the evaluation set is empty: skipped", name)
            continue
        results[name] = evaluator.run(data)
    ev = cfg.evaluate
    settings = {"classification_method": ev.classification_method, "beam_size": ev.beam_size,
                "max_new_tokens": ev.max_new_tokens, "crop": ev.crop}  # fmt: skip
    summary = {"tasks": results, "seconds": round(time.perf_counter() - t0, 3), "settings": settings,
               "skipped": skipped}  # fmt: skip
    write_reports(summary, out_dir, train_logs)
    summary["metrics"] = flat_metrics(results)
    return summary
