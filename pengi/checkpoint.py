"""Checkpoints: safetensors + a config JSON that rebuilds the model; the official-weights converter.

**Folder format** (``save_pretrained`` / ``load_pretrained``)::

    <dir>/config.json        {"format": "pengi-checkpoint", "version": 1, "model_class": "pengi"|"clap",
                              "audio": AudioConfig, "model": ModelConfig}
    <dir>/model.safetensors  the state_dict, minus what the config can reload by name

What is *not* stored: a frozen LM or text-encoder body loaded from a named source (Hub id,
local folder, or the offline packages: ``lm.hf_config`` / ``text.hf_config`` unset). Those
weights are never trained, so the name in the config reloads them exactly and a checkpoint
stays small (the trainable parts plus the front end). A text-encoder body is stored when
``text.train_in_clap`` is on, because CLAP fine-tuned it and Pengi inherits it. Models built
from an ``hf_config`` (tests, converted official weights) store everything. Tied weights (an
LM head tied to its input embeddings) are stored once.

Loading checks that the file holds exactly the keys the config implies, with matching
shapes, and refuses pickles (``.pth``, ``.pt``, ``.bin``, ``.ckpt``, ``.pkl``) outright.

**Official weights** (:func:`convert_reference`): ``base.pth`` / ``base_no_text_enc.pth`` of
the authors' release. The pickle is read with ``torch.load(weights_only=True)``; every key is
mapped by name (:data:`REFERENCE_PREFIXES`), constant buffers are checked and dropped, and any
unmapped, missing or mis-shaped key is an error. See ``REFERENCE_PENGI.md`` section 7.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pengi.config import (
    AudioConfig,
    HTSATConfig,
    LMConfig,
    MapperConfig,
    ModelConfig,
    TextEncoderConfig,
    from_dict,
    to_dict,
)

log = logging.getLogger(__name__)

FORMAT = "pengi-checkpoint"
VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".pkl", ".pickle")


class CheckpointError(ValueError):
    """A checkpoint folder or file cannot be loaded as asked."""


# --------------------------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------------------------


def _model_classes() -> dict[str, type]:
    from pengi.models import CLAP, Pengi

    return {"pengi": Pengi, "clap": CLAP}


def checkpoint_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint of ``model`` holds (see the module docstring for the rule)."""
    cfg: ModelConfig = model.config
    state = model.state_dict(keep_vars=True)
    out: dict[str, torch.Tensor] = {}
    seen: dict[int, str] = {}
    for key, tensor in state.items():
        if key.startswith("lm.model.") and cfg.lm.hf_config is None:
            continue  # frozen LM, reloaded by name
        if (
            key.startswith("text_encoder.model.")
            and cfg.text.hf_config is None
            and not cfg.text.train_in_clap
            and not tensor.requires_grad
        ):
            continue  # frozen text-encoder body, reloaded by name
        if id(tensor) in seen:
            continue  # the same Parameter as an earlier key (tied lm_head = wte); the model re-ties it
        seen[id(tensor)] = key
        out[key] = tensor.detach()
    return out


def save_pretrained(model: nn.Module, folder: str | Path) -> Path:
    """Write ``model`` (a :class:`Pengi` or :class:`CLAP`) to ``folder``; returns the folder.

    Files are written to temporary names and renamed, so a crash leaves no half checkpoint.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "format": FORMAT,
        "version": VERSION,
        "model_class": model.model_class,
        "audio": to_dict(model.audio_cfg),
        "model": to_dict(model.config),
    }
    tensors = {k: v.contiguous().cpu() for k, v in checkpoint_state(model).items()}
    tmp_w = folder / f".{WEIGHTS}.tmp{os.getpid()}"
    tmp_c = folder / f".{CONFIG}.tmp{os.getpid()}"
    save_file(tensors, str(tmp_w), metadata={"format": FORMAT})
    tmp_c.write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    tmp_w.replace(folder / WEIGHTS)
    tmp_c.replace(folder / CONFIG)
    log.info("saved %s (%d tensors) to %s", model.model_class, len(tensors), folder)
    return folder


def read_config(folder: str | Path) -> tuple[str, AudioConfig, ModelConfig]:
    """``(model_class, audio config, model config)`` from a checkpoint folder's ``config.json``."""
    path = Path(folder) / CONFIG
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} not found: not a pengi checkpoint folder") from None
    if data.get("format") != FORMAT or data.get("version") != VERSION:
        raise CheckpointError(f"{path}: not a {FORMAT} v{VERSION} config")
    if data.get("model_class") not in _model_classes():
        raise CheckpointError(f"{path}: unknown model_class {data.get('model_class')!r}")
    return data["model_class"], from_dict(data["audio"], AudioConfig), from_dict(data["model"], ModelConfig)


def _refuse_pickles(path: Path) -> None:
    if path.is_file() and path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path} is a pickle: refused. Convert official Pengi weights with `pengi convert-reference`"
        )


def load_state_strict(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load ``tensors`` into ``model``; they must be exactly :func:`checkpoint_state`'s keys and shapes."""
    expected = checkpoint_state(model)
    missing = sorted(set(expected) - set(tensors))
    unknown = sorted(set(tensors) - set(expected))
    if missing or unknown:
        raise CheckpointError(
            f"{source}: keys do not match the config: {len(missing)} missing {missing[:5]}, "
            f"{len(unknown)} unknown {unknown[:5]}"
        )
    bad = [(k, tuple(tensors[k].shape), tuple(v.shape)) for k, v in expected.items() if tensors[k].shape != v.shape]
    if bad:
        raise CheckpointError(f"{source}: shape mismatch (key, file, model): {bad[:5]}")
    result = model.load_state_dict(tensors, strict=False)
    # Only the keys deliberately left out (named sources, tied copies) may be missing here.
    leftover = set(result.missing_keys) - (set(model.state_dict()) - set(expected))
    if leftover or result.unexpected_keys:
        raise CheckpointError(f"{source}: load left {sorted(leftover)[:5]} / {result.unexpected_keys[:5]}")


def load_pretrained(folder: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a :class:`Pengi` or :class:`CLAP` from a folder written by :func:`save_pretrained`.

    Raises:
        CheckpointError: a pickle file, a folder without ``model.safetensors`` (even if it holds
            pickles: they are never loaded), a foreign config, or keys/shapes that do not match.
    """
    folder = Path(folder)
    _refuse_pickles(folder)
    weights = folder / WEIGHTS
    if not weights.is_file():
        pickles = sorted(p.name for p in folder.glob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
        hint = f" (it holds pickles {pickles}, which are never loaded)" if pickles else ""
        raise CheckpointError(f"{weights} not found{hint}")
    model_class, audio_cfg, model_cfg = read_config(folder)
    model = _model_classes()[model_class](audio_cfg, model_cfg)
    load_state_strict(model, load_file(str(weights), device=str(map_location)), str(weights))
    model.eval()
    return model


# --------------------------------------------------------------------------------------------
# The authors' checkpoints
# --------------------------------------------------------------------------------------------

_HTSAT = "audio_encoder.base.htsat."
_GPT2_CAUSAL_BIAS = re.compile(r"\.h\.\d+\.attn\.bias$")  # 4.28's causal-mask buffer, not c_attn.bias

# (reference key prefix, our key prefix), first match wins.
REFERENCE_PREFIXES: tuple[tuple[str, str], ...] = (
    (_HTSAT + "spectrogram_extractor.stft.conv_real.weight", "audio_encoder.frontend.stft_real"),
    (_HTSAT + "spectrogram_extractor.stft.conv_imag.weight", "audio_encoder.frontend.stft_imag"),
    (_HTSAT + "logmel_extractor.melW", "audio_encoder.frontend.mel_basis"),
    (_HTSAT, "audio_encoder.htsat."),
    ("audio_encoder.projection.", "audio_encoder.projection."),
    ("caption_encoder.base.", "text_encoder.model.text_model."),
    ("caption_encoder.clip_text_projection.", "text_encoder.model.text_projection."),
    ("caption_encoder.projection.", "text_encoder.projection."),
    ("caption_decoder.audio_project.", "m1."),
    ("caption_decoder.text_project.", "m2."),
    ("caption_decoder.gpt.", "lm.model."),
)

CLIP_B16_TEXT = {  # openai/clip-vit-base-patch16, text tower (built locally; weights come from base.pth)
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 512,
    "pad_token_id": 1,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
}
GPT2_BASE = {"model_type": "gpt2", "vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12}

# What the authors' code really runs (REFERENCE_PENGI.md D1): a 32 kHz, 50-14000 Hz filterbank
# applied to 44.1 kHz audio, with the STFT kernels and the filterbank stored in the checkpoint.
REFERENCE_AUDIO = AudioConfig(
    sample_rate=44100, clip_seconds=7.0, n_fft=1024, hop_length=320, n_mels=64,
    f_min=50.0, f_max=14000.0, filterbank_sample_rate=32000, stft_kernels=True,
)  # fmt: skip


def reference_config(variant: str) -> tuple[AudioConfig, ModelConfig]:
    """The configs of the official ``base`` / ``base_no_text_enc`` models (no download needed).

    Mappers: 4 layers each (the yml's 8, halved by the code), 8 heads, 40 + 40 prefix tokens.
    Tokenizers are named (``openai/clip-vit-base-patch16``, ``gpt2``); the weights of CLIP and
    GPT-2 come from the checkpoint, so the architectures are built from ``hf_config``.
    """
    if variant == "base":
        text = TextEncoderConfig(
            kind="clip", name="openai/clip-vit-base-patch16", max_length=40, trainable_projection=True,
            hf_config=dict(CLIP_B16_TEXT), train_in_clap=True,
        )  # fmt: skip
    elif variant == "base_no_text_enc":
        text = TextEncoderConfig(kind="lm_embed", name="gpt2", max_length=40, hf_config=None, train_in_clap=False)
    else:
        raise ValueError(f"unknown reference variant {variant!r} (base | base_no_text_enc)")
    model = ModelConfig(
        htsat=HTSATConfig(num_classes=527),
        text=text,
        lm=LMConfig(name="gpt2", hf_config=dict(GPT2_BASE)),
        mapper=MapperConfig(kind="transformer", prefix_length=40, clip_length=40, num_layers=4, num_heads=8),
        d_proj=1024,
    )
    return REFERENCE_AUDIO, model


def config_from_reference_json(path: str | Path) -> tuple[AudioConfig, ModelConfig]:
    """Configs for a model described by a parity-fixture ``config.json`` (the authors' tiny run)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    h = data["htsat"]["class_kwargs"]
    fe = data["front_end"]
    if h["patch_stride"][0] != h["patch_stride"][1] or h["ape"] or not h["qkv_bias"]:
        raise ValueError("only square patch strides, no absolute position embedding and qkv bias are supported")
    audio = AudioConfig(
        sample_rate=data["yml"]["dataset_config"]["sampling_rate"],
        clip_seconds=float(data["yml"]["dataset_config"]["duration"]),
        n_fft=fe["stft"]["n_fft"],
        hop_length=fe["stft"]["hop_length"],
        n_mels=data["htsat"]["config_module_values_used"]["mel_bins"],
        f_min=float(fe["mel"]["fmin"]),
        f_max=float(fe["mel"]["fmax"]),
        filterbank_sample_rate=fe["mel"]["sr_used_for_filterbank"],
        stft_kernels=True,
    )
    htsat = HTSATConfig(
        spec_size=h["spec_size"], patch_size=h["patch_size"], patch_stride=h["patch_stride"][0],
        window_size=h["window_size"], embed_dim=h["embed_dim"], depths=tuple(h["depths"]),
        num_heads=tuple(h["num_heads"]), mlp_ratio=float(h["mlp_ratio"]), num_classes=h["num_classes"],
        drop_rate=float(h["drop_rate"]), attn_drop_rate=float(h["attn_drop_rate"]),
        drop_path_rate=float(h["drop_path_rate"]),
    )  # fmt: skip
    clip_keys = (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "max_position_embeddings", "hidden_act", "layer_norm_eps", "attention_dropout", "projection_dim",
        "pad_token_id", "bos_token_id", "eos_token_id",
    )  # fmt: skip
    text = TextEncoderConfig(
        kind="clip", name=data["yml"]["text_model"], max_length=data["yml"]["dataset_config"]["enc_text_len"],
        trainable_projection=True, hf_config={k: data["clip_text"][k] for k in clip_keys}, train_in_clap=True,
    )  # fmt: skip
    gpt_keys = (
        "vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "activation_function",
        "resid_pdrop", "embd_pdrop", "attn_pdrop", "layer_norm_epsilon", "scale_attn_weights",
        "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "tie_word_embeddings",
        "bos_token_id", "eos_token_id",
    )  # fmt: skip
    gpt2 = {"model_type": "gpt2", **{k: data["gpt2"][k] for k in gpt_keys}}
    lm = LMConfig(name=data["yml"]["text_decoder"], hf_config=gpt2)
    m = data["mappers"]
    mapper = MapperConfig(
        kind=data["yml"]["mapping_type"], prefix_length=m["prefix_length"], clip_length=m["clip_length"],
        num_layers=m["num_layers"], num_heads=m["num_heads"], normalize_prefix=data["yml"]["normalize_prefix"],
    )  # fmt: skip
    return audio, ModelConfig(htsat=htsat, text=text, lm=lm, mapper=mapper, d_proj=data["yml"]["d_proj"])


def _check_constant(key: str, value: torch.Tensor, model_state: dict[str, torch.Tensor], ours: str | None) -> None:
    """Verify a constant buffer of the reference before dropping it."""
    if key.endswith("embeddings.position_ids"):
        ok = torch.equal(value.reshape(-1), torch.arange(value.numel(), dtype=value.dtype))
    elif key.endswith("attn.masked_bias"):
        ok = value.numel() == 1 and float(value) == -1e4
    elif _GPT2_CAUSAL_BIAS.search(key):
        n = value.shape[-1]
        causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
        ok = value.dtype == torch.bool and torch.equal(value.reshape(n, n), causal)
    else:  # relative_position_index / attn_mask: must equal what our model computes
        mine = model_state.get(ours) if ours else None
        ok = mine is not None and mine.shape == value.shape and torch.equal(mine.to(value.dtype), value)
    if not ok:
        raise CheckpointError(f"constant buffer {key} does not hold the expected values")


def reference_key_action(key: str) -> tuple[str, str | None]:
    """What the converter does with one reference key: ``(action, our key)``.

    Actions: ``"map"`` (rename to our key), ``"constant"`` (check the value, then drop: our
    model recomputes it or newer transformers dropped it), ``"drop"`` (the never-used TS-CAM
    ``head``), ``"unmapped"`` (an error).
    """
    ours = next((o + key[len(r) :] for r, o in REFERENCE_PREFIXES if key.startswith(r)), None)
    if key.endswith(("relative_position_index", ".attn_mask", "position_ids", "attn.masked_bias")) or (
        _GPT2_CAUSAL_BIAS.search(key)
    ):
        return "constant", ours
    if key.startswith(_HTSAT + "head."):
        return "drop", None
    return ("map", ours) if ours is not None else ("unmapped", None)


def map_reference_state(ref: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename a reference state_dict to ``model``'s keys; check and drop constants; fail on leftovers.

    Dropped after checks: ``relative_position_index`` and shifted-window ``attn_mask`` (we
    recompute them), transformers-4.28 buffers (CLIP ``position_ids``, GPT-2 ``attn.bias`` /
    ``attn.masked_bias``), and the TS-CAM ``head`` Linear, which the reference builds but never
    uses. ``lm_head.weight`` must equal the tied ``wte``. A ``module.`` prefix is removed only
    when every key has it.
    """
    keys = list(ref)
    if keys and all(k.startswith("module.") for k in keys):  # DataParallel prefix
        ref = {k[len("module.") :]: v for k, v in ref.items()}
    # Buffers we recompute are non-persistent in our model: look them up among all buffers.
    model_state = {**model.state_dict(), **dict(model.named_buffers())}
    out: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    for key, value in ref.items():
        action, ours = reference_key_action(key)
        if action == "constant":
            _check_constant(key, value, model_state, ours)
        elif action == "drop":
            log.info("dropping %s: the TS-CAM model never uses its `head` Linear", key)
        elif action == "unmapped":
            unmapped.append(key)
        else:
            out[ours] = value
    if unmapped:
        raise CheckpointError(f"{len(unmapped)} reference keys have no mapping: {unmapped[:8]}")
    wte, head = out.get("lm.model.transformer.wte.weight"), out.get("lm.model.lm_head.weight")
    if head is not None and wte is not None:
        if not torch.equal(head, wte):
            raise CheckpointError("lm_head.weight differs from the tied transformer.wte.weight")
        del out["lm.model.lm_head.weight"]
    return out


def load_reference_pickle(path: str | Path) -> dict[str, torch.Tensor]:
    """The state_dict of an official ``.pth`` (``['model']``), read with ``weights_only=True``."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path} not found")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # Never retried with weights_only=False: a downloaded pickle may run arbitrary code.
        raise CheckpointError(f"{path}: refused by torch.load(weights_only=True): {exc}") from None
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a dict with a 'model' state_dict of tensors")
    return state


def detect_variant(ref: dict[str, torch.Tensor]) -> str:
    """``base`` when the CLIP text tower is present (issue #9: the two files get swapped)."""
    return "base" if any(k.removeprefix("module.").startswith("caption_encoder.") for k in ref) else "base_no_text_enc"


def load_reference_into(model: nn.Module, ref: dict[str, torch.Tensor]) -> None:
    """Map ``ref`` and load it strictly into ``model`` (every key, every shape)."""
    load_state_strict(model, map_reference_state(ref, model), "reference checkpoint")


def convert_reference(
    path: str | Path,
    out_dir: str | Path | None = None,
    variant: str | None = None,
    configs: tuple[AudioConfig, ModelConfig] | None = None,
) -> nn.Module:
    """Load an official Pengi checkpoint into our :class:`Pengi`; optionally save it to ``out_dir``.

    Args:
        path: ``base.pth`` or ``base_no_text_enc.pth`` (a pickle, read with ``weights_only=True``),
            or a ``.safetensors`` file with the same keys.
        out_dir: where to write the converted checkpoint folder (None: do not save).
        variant: ``base`` / ``base_no_text_enc``; None detects it from the keys. A variant that
            contradicts the keys is an error.
        configs: ``(audio, model)`` configs to build instead of the official sizes (e.g. from a
            parity fixture, :func:`config_from_reference_json`).

    Raises:
        CheckpointError: a missing file, a pickle holding anything but tensors and plain
            containers, unmapped / missing / mis-shaped keys, wrong constants, wrong variant.
    """
    from pengi.models import Pengi

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} not found")
    ref = load_file(str(path)) if path.suffix == ".safetensors" else load_reference_pickle(path)
    found = detect_variant(ref)
    if variant is not None and variant != found:
        raise CheckpointError(f"{path} holds the {found!r} model, not {variant!r} (the files are often swapped)")
    audio_cfg, model_cfg = configs if configs is not None else reference_config(found)
    model = Pengi(audio_cfg, model_cfg)
    load_reference_into(model, ref)
    model.eval()
    if out_dir is not None:
        save_pretrained(model, out_dir)
    return model


def describe(model: nn.Module) -> dict[str, Any]:
    """Parameter counts (total / trainable) for logs and reports."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"parameters": total, "trainable": trainable}
