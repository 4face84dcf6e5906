"""Evaluation reports: ``metrics.json`` for DVC, a markdown table in the paper's Table 3 layout,
per-task predictions, and PNG plots (matplotlib, Agg backend: no display needed).

``metrics.json`` is flat, one key per number, so that ``dvc metrics diff`` lines up runs::

    {"esc50.accuracy": 0.61, "esc50.baseline.chance.accuracy": 0.02,
     "esc50.probe.pengi_l1_probe.accuracy": 0.7, "clotho_captioning.cider_d": 0.12, ...}

``report.md``: like the paper's Table 3, tasks are columns (each with its headline metric)
and rows are the trained model, its probes and the baselines; a per-task table with every
metric, how a classification task's answers spread over its classes (classes ever said, the
commonest answer), the unavailable metrics with their reasons, and a few sample outputs follow.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MODEL_ROW = "Pengi (this run)"
KIND_ORDER = ("multiclass", "multilabel", "captioning", "retrieval", "qa")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _numbers(d: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def flat_metrics(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """``task.metric`` (model), ``task.baseline.<name>.metric`` and ``task.probe.<name>.metric``."""
    out: dict[str, float] = {}
    for task, r in sorted(results.items()):
        for k, v in _numbers(r["model"]).items():
            out[f"{task}.{k}"] = v
        for group, prefix in (("baselines", "baseline"), ("probes", "probe")):
            for name, vals in r.get(group, {}).items():
                for k, v in _numbers(vals).items():
                    out[f"{task}.{prefix}.{_slug(name)}.{k}"] = v
        out[f"{task}.failed_items"] = float(r["failed"])
    return out


def _fmt(v: float | None, metric: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if metric.startswith(("t2a_", "a2t_", "clap_")):
        return f"{v:.1f}"  # retrieval values are percentages
    return f"{v:.3f}"


def _ordered(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    def key(name: str) -> tuple[int, str]:
        kind = results[name]["kind"]
        return (KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER), name)

    return sorted(results, key=key)


def table3_rows(results: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Header cells and ``(row name, cells)`` of the Table 3 layout (tasks as columns)."""
    tasks = _ordered(results)
    header = ["model"] + [f"{t} ({results[t]['headline']})" for t in tasks]
    names: list[str] = []
    for t in tasks:
        for group in ("probes", "baselines"):
            for n in results[t].get(group, {}):
                if n not in names:
                    names.append(n)
    probe_names = [n for n in names if any(n in results[t].get("probes", {}) for t in tasks)]
    base_names = [n for n in names if n not in probe_names]
    rows = [(MODEL_ROW, [_fmt(results[t]["model"].get(results[t]["headline"]), results[t]["headline"]) for t in tasks])]
    for n in probe_names + base_names:
        cells = []
        for t in tasks:
            r = results[t]
            vals = r.get("probes", {}).get(n) or r.get("baselines", {}).get(n) or {}
            cells.append(_fmt(vals.get(r["headline"], vals.get("map")), r["headline"]) if vals else "–")
        rows.append((n, cells))
    return header, rows


def answer_spread(confusion: Mapping[str, Any] | None) -> str | None:
    """One line on how the model's answers spread over the classes (from the confusion matrix:
    rows true, columns predicted): how many classes it ever answers and its commonest answer.
    A model that reads the audio but answers a few classes for everything shows here first."""
    if not confusion or not confusion.get("matrix"):
        return None
    classes, matrix = confusion["classes"], confusion["matrix"]
    said = [sum(column) for column in zip(*matrix, strict=True)]  # answers per predicted class
    total = sum(said)
    if not total:
        return None
    top = max(range(len(classes)), key=lambda j: said[j])
    never = [c for c, n in zip(classes, said, strict=True) if n == 0]
    line = (
        f"Answers: {sum(n > 0 for n in said)} of {len(classes)} classes said; the commonest, "
        f"`{classes[top]}`, for {said[top]} of {total} items"
    )
    if never and len(never) <= 5:
        line += "; never said: " + ", ".join(f"`{c}`" for c in never)
    return line + "."


def render_markdown(summary: Mapping[str, Any], plots: Sequence[str] = ()) -> str:
    """The ``report.md`` text."""
    results = summary["tasks"]
    header, rows = table3_rows(results)
    lines = ["# Evaluation report", ""]
    settings = summary.get("settings", {})
    if settings:
        described = ", ".join(f"`{k}={v}`" for k, v in settings.items())
        lines += [f"Settings: {described}; {summary.get('seconds', 0):.1f} s.", ""]
    lines += ["## Summary (layout of the paper's Table 3)", "",
              "Higher is better everywhere; retrieval values are percentages. "
              "`–`: not applicable or unavailable.", "",
              "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]  # fmt: skip
    lines += ["| " + " | ".join([name, *cells]) + " |" for name, cells in rows]
    lines += [""]
    for task in _ordered(results):
        r = results[task]
        lines += [f"## {task}", "",
                  f"Kind `{r['kind']}`, paper metric `{r.get('paper_metric')}`, headline `{r['headline']}`; "
                  f"{r['items']} items, {r['failed']} failed to load"
                  + (f", method `{r['method']}`" if r.get("method") else "")
                  + (f", answer form `{r['answer']}`" if r.get("answer", "{}") != "{}" else "") + ".", ""]  # fmt: skip
        columns = {MODEL_ROW: r["model"], **r.get("probes", {}), **r.get("baselines", {})}
        metrics = list(dict.fromkeys(k for vals in columns.values() for k in _numbers(vals)))
        lines += ["| | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
        for name, vals in columns.items():
            lines.append("| " + name + " | " + " | ".join(_fmt(vals.get(m), m) for m in metrics) + " |")
        lines.append("")
        if "probe_protocol" in r:
            lines += ["Probe protocol: " + ", ".join(f"{k} = {v}" for k, v in r["probe_protocol"].items()) + ".", ""]
        spread = answer_spread(r.get("confusion"))
        if spread:
            lines += [spread, ""]
        const = r.get("baselines", {}).get("constant caption", {}).get("caption")
        if const:
            lines += [f"Constant caption: \"{const}\".", ""]
        for what, why in r.get("unavailable", {}).items():
            lines.append(f"- unavailable: **{what}**: {why}")
        for item, msg in r.get("errors", {}).items():
            lines.append(f"- audio error: `{item}`: {msg}")
        if r.get("unavailable") or r.get("errors"):
            lines.append("")
        for s in r.get("samples", [])[:3]:
            refs = "; ".join(s.get("references", [])[:2])
            lines.append(f"- `{s['item_id']}`: \"{s.get('output')}\"" + (f" (reference: {refs})" if refs else ""))
        lines.append("")
    skipped = summary.get("skipped") or {}
    if skipped:
        lines += ["## Tasks not evaluated", ""] + [f"- `{t}`: {why}" for t, why in sorted(skipped.items())] + [""]
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt


def plot_task_bars(results: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    """One panel per task: the headline metric of the model, its probes and the baselines."""
    plt = _pyplot()
    tasks = _ordered(results)
    cols = min(4, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        r = results[task]
        h = r["headline"]
        bars = {"model": (r["model"].get(h), "C0")}  # blue: the model, orange: its probes, grey: baselines
        for group, colour in (("probes", "C1"), ("baselines", "C7")):
            for n, vals in r.get(group, {}).items():
                v = vals.get(h, vals.get("map"))
                if isinstance(v, (int, float)):
                    bars[n] = (v, colour)
        names = [n for n, (v, _) in bars.items() if v is not None]
        ax.bar(range(len(names)), [bars[n][0] for n in names], color=[bars[n][1] for n in names])
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{task} ({h})", fontsize=9)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion(task: str, confusion: Mapping[str, Any], path: Path) -> Path:
    """Row-normalised confusion matrix (rows: true class, columns: predicted class)."""
    import numpy as np

    plt = _pyplot()
    m = np.asarray(confusion["matrix"], dtype=float)
    classes = confusion["classes"]
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    size = min(16.0, max(4.0, 0.35 * len(classes) + 2))  # 128 pitch classes must not make a poster
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    if len(classes) <= 40:
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=6)
        ax.set_yticks(range(len(classes)), classes, fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{task}: confusion (row-normalised)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def read_log_csv(path: str | Path) -> dict[str, list[float]]:
    """A training log CSV (``step`` plus numeric columns) as column -> values."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    cols: dict[str, list[float]] = {}
    for row in rows:
        for k, v in row.items():
            try:
                cols.setdefault(k, []).append(float(v))
            except (TypeError, ValueError):
                cols.setdefault(k, []).append(float("nan"))
    return cols


def plot_training_curves(logs: Sequence[str | Path], path: Path) -> Path | None:
    """Loss curves of the training stages' CSV logs (one line per ``*loss*`` column and file)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = 0
    for log_path in logs:
        log_path = Path(log_path)
        if not log_path.exists():
            log.warning("training log %s not found: not plotted", log_path)
            continue
        cols = read_log_csv(log_path)
        if "step" not in cols:
            log.warning("training log %s has no step column: not plotted", log_path)
            continue
        for k, v in cols.items():
            if "loss" in k:
                ax.plot(cols["step"], v, label=f"{log_path.parent.name}/{log_path.stem}: {k}")
                drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7)
    ax.set_title("training curves")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_reports(summary: dict[str, Any], out_dir: str | Path, train_logs: Sequence[str | Path] = ()) -> list[Path]:
    """Write ``results.json``, ``predictions/<task>.json``, the PNG plots and ``report.md``.

    ``summary["tasks"][task]["predictions"]`` is moved out of the summary into its file.

    Returns:
        the files written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    results = summary["tasks"]
    (out / "predictions").mkdir(exist_ok=True)
    for task, r in results.items():
        preds = r.pop("predictions", None)
        if preds is not None:
            p = out / "predictions" / f"{task}.json"
            p.write_text(json.dumps(preds, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            written.append(p)
    plots: list[Path] = []
    if results:
        plots.append(plot_task_bars(results, out / "tasks.png"))
    for task, r in sorted(results.items()):
        if r.get("confusion"):
            plots.append(plot_confusion(task, r["confusion"], out / f"confusion_{task}.png"))
    if train_logs:
        curves = plot_training_curves(train_logs, out / "training_curves.png")
        if curves is not None:
            plots.append(curves)
    p = out / "results.json"
    p.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md = out / "report.md"
    md.write_text(render_markdown(summary, [str(x) for x in plots]), encoding="utf-8")
    return [*written, *plots, p, md]
