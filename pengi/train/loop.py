"""One training loop for every stage (CLAP and Pengi): DDP, bf16, accumulation, resumable checkpoints.

``train(model, step_fn, train_dataset, val_dataset, collate_fn, cfg, out_dir)`` runs
``cfg.epochs`` epochs (or ``cfg.max_steps`` optimizer steps) of ``step_fn(model, batch) ->
loss`` with:

* **distribution** through ``torchrun``'s environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``):
  ``torch.distributed`` is initialised when ``WORLD_SIZE > 1`` and the model wrapped in
  ``DistributedDataParallel``; nothing is home-made. Each rank reads its shard of every batch;
  ``cfg.batch_size`` is the per-rank micro-batch, so the global batch is
  ``batch_size * grad_accum * world_size``.
* **precision**: ``cfg.precision == "bf16"`` runs the step under bf16 autocast where the hardware
  computes bf16 natively: CUDA, and CPUs with AVX512-BF16 or AMX (:func:`native_bf16`; measured
  2.2x faster for the frozen SmolLM2 forward + backward on this project's AVX512-BF16 CPU,
  :mod:`pengi.precision`). Elsewhere (older CPUs emulate bf16 and get slower) it trains in fp32
  and logs it. Parameters, gradients and optimizer state stay fp32 in every case.
* **optimizer**: Adam (as ``AdamW`` with ``cfg.weight_decay``, which is Adam at 0, the paper's
  setting), fused on CUDA, over the parameters that require grad (one group per
  ``cfg.lr_scales`` multiplier); linear warm-up for
  ``warmup_steps`` then linear decay to 0 (or cosine/constant). With ``cfg.max_grad_norm > 0``
  the global gradient norm is clipped to it before each step and logged (``grad_norm``, the
  norm before clipping).
* **checkpoints** every ``checkpoint_every`` steps and at the end, written to a temporary
  directory and renamed (atomic), holding the trainable state (safetensors), optimizer,
  scheduler, the RNG states of every rank (python, numpy, torch, CUDA), the data position
  (epoch, batch) and the log rows so far. Running the same command again resumes from the
  newest one and ends exactly where an uninterrupted run ends (tested on CPU, bit for bit:
  after a SIGKILL at a random step, and from a mid-run checkpoint under torchrun with 2 ranks). Checkpoints of a *different* run (other
  params, other data, other number of ranks: see :func:`config_diff`) are deleted with a
  warning and training starts over, so the checkpoint folder can persist across
  ``dvc repro``/``dvc exp run`` without ever mixing runs.
* **randomness**: torch/numpy/python are seeded with ``seed + rank``; the DataLoader has its
  own generator (creating an iterator never consumes the global RNG that dropout uses); the
  training crops are a pure function of (seed, epoch, sample index) (``pengi.data``).
* **outputs** (rank 0): ``train_log.csv``, ``val_log.csv`` (DVC plots), ``metrics.json`` (DVC
  metrics), tracker metrics, a tqdm progress bar.

Layout of ``out_dir``::

    checkpoints/step_00000100/{trainable.safetensors, state.pt}
    train_log.csv  val_log.csv  metrics.json
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import logging
import math
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn

from pengi.config import TrainConfig, flatten
from pengi.data import ResumableBatchSampler, make_loader
from pengi.fileio import write_json_atomic, write_text_atomic
from pengi.precision import autocast_context, native_bf16

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "state.pt"
WEIGHTS_FILE = "trainable.safetensors"
_STEP_DIR = re.compile(r"^step_(\d{8})$")
# TrainConfig fields that may change between a run and its resumption: they do not change
# the trajectory (only how often things are written, or how data is fetched).
RESUMABLE_CHANGES = frozenset({"checkpoint_every", "log_every", "num_workers", "keep_checkpoints"})

StepFn = Callable[[nn.Module, Mapping[str, Any]], "torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]"]


class Tracker(Protocol):
    """What the loop needs from a run tracker (``pengi.tracking.Tracker`` fits)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...
    def set_tag(self, key: str, value: str) -> None: ...


class NullTracker:
    """Tracking switched off: every call does nothing."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def set_tag(self, key: str, value: str) -> None:
        pass

    def log_artifact(self, path: str | Path) -> None:
        pass


# --------------------------------------------------------------------------------------------
# Distribution
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | torch.device | None = None) -> DistInfo:
    """Read torchrun's environment; initialise the process group when there are several ranks.

    Args:
        device: force a device (tests); default CUDA (``cuda:LOCAL_RANK``) when available, else CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls (outside bf16 autocast) on tensor cores
        torch.backends.cudnn.allow_tf32 = True
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local_rank, device)


def set_cpu_threads(cfg: TrainConfig) -> None:
    """Apply ``cfg.cpu_threads`` (0 leaves torch's default)."""
    if cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module under DDP and ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def _barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        dist.barrier()


# --------------------------------------------------------------------------------------------
# Optimizer and schedule
# --------------------------------------------------------------------------------------------


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    Warm-up ramps linearly to 1 over ``warmup_steps`` (the first step already gets
    ``1/warmup_steps``, not 0); then ``linear`` decays to 0 at ``total_steps``, ``cosine``
    follows half a cosine to 0, ``constant`` stays at 1.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant" or total_steps <= warmup_steps:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}")


def _matches(key: str, name: str) -> bool:
    """Whether ``key`` is a run of whole dotted components of parameter ``name``."""
    return f".{key}." in f".{name}."


def lr_scale_of(name: str, scales: dict[str, float]) -> float:
    """The multiplier of parameter ``name``: the longest key of ``scales`` that is a run of whole
    dotted components of the name (``audio_encoder`` matches ``model.audio_encoder.htsat.x``,
    not ``model.audio_encoder2.x``); 1.0 when none matches."""
    hits = [k for k in scales if _matches(k, name)]
    return scales[max(hits, key=len)] if hits else 1.0


def build_optimizer(
    named_params: list[tuple[str, nn.Parameter]], cfg: TrainConfig, device: torch.device
) -> torch.optim.Optimizer:
    """Adam(W) over ``named_params``; one parameter group per distinct ``cfg.lr_scales``
    multiplier (in first-seen order, so the optimizer state maps back on resume); the fused CUDA
    kernel on GPU (one launch for all tensors).

    Raises:
        ValueError: nothing to train, or an ``lr_scales`` key that matches no parameter (a typo
            would otherwise silently train at the base rate).
    """
    if not named_params:
        raise ValueError("the model has no trainable parameters")
    unused = [k for k in cfg.lr_scales if not any(_matches(k, n) for n, _ in named_params)]
    if unused:
        raise ValueError(f"lr_scales keys match no trainable parameter: {unused}")
    groups: dict[float, list[nn.Parameter]] = {}
    for name, p in named_params:
        groups.setdefault(lr_scale_of(name, cfg.lr_scales), []).append(p)
    param_groups = [{"params": ps, "lr": cfg.lr * scale, "lr_scale": scale} for scale, ps in groups.items()]
    kwargs: dict[str, Any] = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if device.type == "cuda":
        kwargs["fused"] = True
    return torch.optim.AdamW(param_groups, **kwargs)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def trainable_state_keys(model: nn.Module) -> list[str]:
    """State-dict keys that training changes: trainable parameters and all (persistent) buffers.

    Frozen parameters (the LM, a frozen text encoder) are left out: they are rebuilt from the
    stage's inputs, and saving them every N steps would cost hundreds of MB per checkpoint.
    """
    # remove_duplicate=False: a tied weight (an LM head sharing the embeddings) has two names
    named = list(model.named_parameters(remove_duplicate=False))
    trainable = {n for n, p in named if p.requires_grad}
    params = {n for n, _ in named}
    return [k for k in model.state_dict() if k in trainable or k not in params]


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints under ``out_dir``, oldest first (temporary dirs are ignored)."""
    root = Path(out_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name))


def save_checkpoint(
    out_dir: Path, model: nn.Module, optimizer, scheduler, train_state: dict[str, Any], rng_states: list, keep: int
) -> Path:
    """Write one checkpoint atomically (temp dir + rename); prune to the newest ``keep``."""
    root = out_dir / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{train_state['step']:08d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    sd = model.state_dict()
    save_file({k: sd[k].detach().cpu().contiguous() for k in trainable_state_keys(model)}, tmp / WEIGHTS_FILE)
    state = {
        **train_state,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_states,
    }
    with open(tmp / STATE_FILE, "wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    if final.exists():  # the same step saved again (e.g. the final save after a resume)
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(out_dir)[: -max(1, keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model: nn.Module) -> dict[str, Any]:
    """Load trainable weights into ``model`` (exact key match) and return the rest of the state."""
    weights = load_file(path / WEIGHTS_FILE)
    expected = set(trainable_state_keys(model))
    missing, unexpected = expected - set(weights), set(weights) - expected
    if missing or unexpected:
        raise RuntimeError(
            f"{path}: checkpoint does not match the model (missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]})"
        )
    result = model.load_state_dict(weights, strict=False)  # frozen params are absent on purpose
    if result.unexpected_keys or set(result.missing_keys) & expected:
        raise RuntimeError(f"{path}: load_state_dict mismatch: {result}")
    return torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)


# --------------------------------------------------------------------------------------------
# Logs
# --------------------------------------------------------------------------------------------


def _write_csv_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def _to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _split_output(out) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    if isinstance(out, tuple):
        return out[0], dict(out[1])
    return out, {}


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: nn.Module,
    step_fn: StepFn,
    loader,
    info: DistInfo,
    autocast: Callable[[], contextlib.AbstractContextManager],
    max_batches: int = 0,
) -> dict[str, float]:
    """Mean loss (and extra metrics) over the validation loader, weighted by batch size,
    all-reduced over ranks. The model is put in eval mode and restored to train mode."""
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    count = torch.zeros((), device=info.device, dtype=torch.float64)
    for i, batch in enumerate(loader):
        if max_batches and i >= max_batches:
            break
        batch = _to_device(batch, info.device)
        with autocast():
            loss, extra = _split_output(step_fn(model, batch))
        n = batch["audio"].shape[0] if "audio" in batch else 1
        for k, v in {"loss": loss, **extra}.items():
            sums[k] = sums.get(k, torch.zeros((), device=info.device, dtype=torch.float64)) + v.detach().double() * n
        count += n
    model.train(was_training)
    keys = sorted(sums)
    if not keys:  # no validation batch on this rank
        keys = ["loss"]
        sums = {"loss": torch.zeros((), device=info.device, dtype=torch.float64)}
    vec = torch.stack([sums[k] for k in keys] + [count])
    if info.world_size > 1:
        dist.all_reduce(vec)
    total = vec[-1].item()
    if total == 0:
        return {}
    return {k: v / total for k, v in zip(keys, vec[:-1].tolist(), strict=True)}


def train(
    model: nn.Module,
    step_fn: StepFn,
    train_dataset: torch.utils.data.Dataset,
    val_dataset: torch.utils.data.Dataset | None,
    collate_fn: Callable,
    cfg: TrainConfig,
    out_dir: str | Path,
    tracker: Tracker | None = None,
    *,
    run_config: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    lengths: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Train ``model`` with ``step_fn`` and return the final metrics (see the module docstring).

    Args:
        model: the full model; parameters with ``requires_grad`` are trained. Its ``train()``
            is expected to keep frozen parts in eval mode.
        step_fn: ``(model, batch) -> loss`` or ``(loss, {name: scalar tensor})``; ``model`` may
            be the DDP wrapper, so the step must go through ``model(...)`` (``forward``).
        train_dataset / val_dataset: indexed by ``(index, epoch)`` (see ``pengi.data``).
        collate_fn: batches examples (runs in DataLoader workers).
        cfg: the stage's :class:`~pengi.config.TrainConfig`.
        out_dir: checkpoints, logs and metrics go here; a checkpoint found here is resumed.
        tracker: receives per-step metrics on rank 0 (``None``: nothing is tracked).
        run_config: flattened config stored in checkpoints; resuming with a different one
            (other than :data:`RESUMABLE_CHANGES`) is not resumed: its checkpoints are deleted
            with a warning and training starts over.
        device: force a device (default: CUDA when available).
        progress: show a tqdm bar on rank 0.
        lengths: per training example, its cost in tokens: batches are then grouped by length
            (:class:`pengi.data.ResumableBatchSampler`), so little compute goes to padding.

    Returns:
        The contents of ``metrics.json`` plus ``checkpoint`` (path of the final checkpoint).

    Raises:
        ValueError: the data gives no optimizer step.
    """
    from tqdm import tqdm

    info = setup_distributed(device)
    if info.device.type == "cpu":
        set_cpu_threads(cfg)
    tracker = tracker if (tracker is not None and info.is_main) else NullTracker()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.max_grad_norm < 0:
        raise ValueError(f"max_grad_norm must be >= 0 (0 = no clipping), got {cfg.max_grad_norm}")
    run_config = dict(run_config) if run_config is not None else flatten(cfg)
    # what the data position means depends on these too: resuming across them would not be exact
    run_config["_run.world_size"] = info.world_size
    run_config["_run.train_examples"] = len(train_dataset)
    run_config["_run.val_examples"] = 0 if val_dataset is None else len(val_dataset)

    # --- data -----------------------------------------------------------------------------
    train_sampler = ResumableBatchSampler(
        len(train_dataset), cfg.batch_size, shuffle=True, seed=cfg.seed, drop_last=True,
        rank=info.rank, world_size=info.world_size, lengths=lengths,
    )  # fmt: skip
    steps_per_epoch = train_sampler.batches_per_epoch() // cfg.grad_accum
    if steps_per_epoch == 0:
        raise ValueError(
            f"{len(train_dataset)} training examples give no optimizer step at batch_size={cfg.batch_size} "
            f"x grad_accum={cfg.grad_accum} x world_size={info.world_size}"
        )
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    val_sampler = None
    if val_dataset is not None and len(val_dataset) > 0:
        # One fixed permutation (epoch 0 of a seeded shuffle), so that a capped validation
        # (val_max_batches) is the same spread-out subset every time, not the table's head.
        val_sampler = ResumableBatchSampler(
            len(val_dataset), cfg.batch_size, shuffle=True, seed=cfg.seed, drop_last=False,
            rank=info.rank, world_size=info.world_size,
        )  # fmt: skip

    # --- model, optimizer, schedule --------------------------------------------------------
    torch.manual_seed(cfg.seed + info.rank)
    np.random.seed(cfg.seed + info.rank)
    random.seed(cfg.seed + info.rank)
    raw_model = model.to(info.device)
    raw_model.train()
    named = [(n, p) for n, p in raw_model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    optimizer = build_optimizer(named, cfg, info.device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, cfg.warmup_steps, total_steps, cfg.schedule)
    )
    use_bf16 = cfg.precision == "bf16" and native_bf16(info.device)
    if cfg.precision == "bf16" and not use_bf16:
        log.info("precision bf16 asked, but %s has no native bf16: training in fp32", info.device)

    def autocast() -> contextlib.AbstractContextManager:
        return autocast_context(info.device, use_bf16)

    # --- resume ----------------------------------------------------------------------------
    step, epoch, batch_in_epoch = 0, 0, 0
    train_rows: list[dict[str, Any]] = []
    val_rows: list[dict[str, Any]] = []
    # the running means of the current logging window are part of the state, so a window that
    # spans a checkpoint logs the same value whether or not the run was interrupted there
    window: dict[str, Any] = {"loss": torch.zeros(()), "extra": {}, "n": 0}
    saved_step = -1
    if info.is_main:  # half-written checkpoints of a killed run (never complete: not resumable)
        for stale in (out_dir / CHECKPOINT_DIR).glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
    ckpts = list_checkpoints(out_dir)
    if ckpts:
        saved = torch.load(ckpts[-1] / STATE_FILE, map_location="cpu", weights_only=True)["config"]
        diff = config_diff(saved, run_config)
        if diff:
            # Another run's checkpoints (changed params or data, e.g. `dvc exp run -S ...`):
            # resuming would not be that run, so start over.
            if info.is_main:
                log.warning("checkpoints in %s are from a different run (%s): starting over", out_dir, "; ".join(diff[:5]))
                shutil.rmtree(out_dir / CHECKPOINT_DIR)
            _barrier(info)
            ckpts = []
    if ckpts:
        state = load_checkpoint(ckpts[-1], raw_model)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        train_rows, val_rows = list(state["train_rows"]), list(state["val_rows"])
        window = state["window"]
        saved_step = step
        if len(state["rng"]) == info.world_size:
            _set_rng_state(state["rng"][info.rank])
        else:
            log.warning("checkpoint has RNG states of %d ranks, running %d: RNG reseeded", len(state["rng"]), info.world_size)
            torch.manual_seed(cfg.seed + info.rank + 1000 * step)
        if info.is_main:
            log.info("resumed from %s (step %d, epoch %d, batch %d)", ckpts[-1], step, epoch, batch_in_epoch)

    net: nn.Module = raw_model
    if info.world_size > 1:
        net = nn.parallel.DistributedDataParallel(
            raw_model, device_ids=[info.device.index] if info.device.type == "cuda" else None
        )
    if cfg.compile:
        net = torch.compile(net)

    def checkpoint() -> Path | None:
        nonlocal saved_step
        saved_step = step
        rng = [_rng_state()]
        if info.world_size > 1:
            # serialise to bytes first: all_gather_object cannot carry tensors' storages over gloo
            buf = io.BytesIO()
            torch.save(rng[0], buf)
            gathered: list[Any] = [None] * info.world_size
            dist.all_gather_object(gathered, buf.getvalue())
            rng = [torch.load(io.BytesIO(b), weights_only=True) for b in gathered]
        path = None
        if info.is_main:
            train_state = {
                "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "config": run_config,
                "train_rows": train_rows, "val_rows": val_rows, "total_steps": total_steps,
                "window": {
                    "loss": window_loss.cpu(), "extra": {k: v.cpu() for k, v in window_extra.items()}, "n": window_n,
                },
            }  # fmt: skip
            path = save_checkpoint(out_dir, raw_model, optimizer, scheduler, train_state, rng, cfg.keep_checkpoints)
        _barrier(info)
        return path

    def validate() -> None:
        if val_sampler is None:
            return
        loader = make_loader(val_dataset, val_sampler, collate_fn, cfg.num_workers, seed=cfg.seed)
        metrics = evaluate(net, step_fn, loader, info, autocast, cfg.val_max_batches)
        if not metrics:
            return
        row = {"step": step, **{f"val_{k}": v for k, v in metrics.items()}}
        val_rows.append(row)
        if info.is_main:
            log.info("step %d: %s", step, " ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "step"))
            tracker.log_metrics({k: v for k, v in row.items() if k != "step"}, step)
            _write_csv_atomic(out_dir / "val_log.csv", val_rows)

    # --- loop ------------------------------------------------------------------------------
    if info.is_main:
        n_train = sum(p.numel() for p in params)
        n_all = sum(p.numel() for p in raw_model.parameters())
        log.info(
            "training %.2fM of %.2fM parameters on %s x%d: %d steps (%d per epoch), global batch %d, %s",
            n_train / 1e6, n_all / 1e6, info.device, info.world_size, total_steps, steps_per_epoch,
            cfg.batch_size * cfg.grad_accum * info.world_size, "bf16" if use_bf16 else "fp32",
        )  # fmt: skip
    if step == 0 and not val_rows:
        validate()  # the starting value, so a run shows how far the loss fell
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", disable=not (progress and info.is_main))
    window_loss = window["loss"].to(info.device)
    window_extra: dict[str, torch.Tensor] = {k: v.to(info.device) for k, v in window["extra"].items()}
    window_n = int(window["n"])
    t_window, samples_window = time.perf_counter(), 0
    while step < total_steps:
        train_sampler.set_epoch(epoch, batch_in_epoch)
        loader = make_loader(train_dataset, train_sampler, collate_fn, cfg.num_workers, seed=cfg.seed + epoch)
        micro = 0
        for batch in loader:
            batch = _to_device(batch, info.device)
            last_micro = micro == cfg.grad_accum - 1
            # DDP all-reduces gradients only on the last micro-batch of an accumulation group
            sync = net.no_sync() if (info.world_size > 1 and not last_micro and hasattr(net, "no_sync")) else contextlib.nullcontext()
            with sync:
                with autocast():
                    loss, extra = _split_output(step_fn(net, batch))
                (loss / cfg.grad_accum).backward()
            window_loss += loss.detach().float()  # stays on device: no host sync per step
            for k, v in extra.items():
                window_extra[k] = window_extra.get(k, 0) + v.detach().float()
            window_n += 1
            samples_window += batch["audio"].shape[0] if "audio" in batch else 0
            batch_in_epoch += 1
            micro += 1
            if not last_micro:
                continue
            micro = 0
            lr = scheduler.get_last_lr()[0] / optimizer.param_groups[0]["lr_scale"]  # the base rate
            if cfg.max_grad_norm > 0:
                # the global norm before clipping; a tensor, so no host sync (DDP: grads already reduced)
                norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                # logged as the mean per optimizer step (the window divides by micro-batches)
                window_extra["grad_norm"] = window_extra.get("grad_norm", 0) + norm.detach().float() * cfg.grad_accum
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            if batch_in_epoch >= steps_per_epoch * cfg.grad_accum:  # the epoch's last full group
                epoch, batch_in_epoch = epoch + 1, 0
            if step % cfg.log_every == 0 or step == total_steps:
                values = torch.stack([window_loss, *window_extra.values()]) / window_n
                if info.world_size > 1:
                    dist.all_reduce(values)
                    values /= info.world_size
                names = ["loss", *window_extra]
                row = {"step": step, "epoch": epoch, "lr": lr, **dict(zip(names, values.tolist(), strict=True))}
                train_rows.append(row)
                elapsed = time.perf_counter() - t_window
                if info.is_main:
                    throughput = samples_window * info.world_size / max(elapsed, 1e-9)
                    tracker.log_metrics({k: v for k, v in row.items() if k != "step"} | {"samples_per_s": throughput}, step)
                    bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{lr:.2e}")
                    _write_csv_atomic(out_dir / "train_log.csv", train_rows)
                window_loss = torch.zeros((), device=info.device)
                window_extra, window_n = {}, 0
                t_window, samples_window = time.perf_counter(), 0
            if cfg.val_every and (step % cfg.val_every == 0 or step == total_steps):
                validate()
            if step == total_steps or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                checkpoint()
            if step >= total_steps or batch_in_epoch == 0:
                break  # done, or the epoch's trailing micro-batches (fewer than grad_accum) are skipped
    bar.close()
    if not cfg.val_every and (not val_rows or val_rows[-1]["step"] != step):
        validate()  # at least the final value
    if saved_step != step:
        checkpoint()
    final = list_checkpoints(out_dir)[-1] if info.is_main else None
    metrics = _final_metrics(train_rows, val_rows, step, epoch, total_steps, cfg, info)
    if info.is_main:
        _write_csv_atomic(out_dir / "train_log.csv", train_rows)
        if val_rows:
            _write_csv_atomic(out_dir / "val_log.csv", val_rows)
        write_json_atomic(out_dir / "metrics.json", metrics)
        tracker.set_tag("final_checkpoint", str(Path(final).resolve()))
    return {**metrics, "checkpoint": str(final) if final else None}


def _final_metrics(train_rows, val_rows, step, epoch, total_steps, cfg, info) -> dict[str, Any]:
    """metrics.json: deterministic values only (no timings), so DVC diffs show real changes."""
    metrics: dict[str, Any] = {
        "steps": step,
        "total_steps": total_steps,
        "epochs_completed": epoch,
        "samples_seen": step * cfg.batch_size * cfg.grad_accum * info.world_size,
    }
    if train_rows:
        metrics["train_loss"] = train_rows[-1]["loss"]
    if val_rows:
        metrics["val_loss_initial"] = val_rows[0]["val_loss"]
        metrics["val_loss"] = val_rows[-1]["val_loss"]
        metrics["val_loss_best"] = min(r["val_loss"] for r in val_rows)
    return metrics


def config_diff(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``"key: old -> new"`` for every setting that differs between a checkpoint's run and this
    one, ignoring :data:`RESUMABLE_CHANGES` and the tracking section."""

    def relevant(d: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k.rsplit(".", 1)[-1] not in RESUMABLE_CHANGES and not k.startswith("tracking.")}

    a, b = relevant(saved), relevant(current)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
