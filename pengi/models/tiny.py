"""Tiny random model configs for tests and smoke runs (no downloads, seconds on a CPU).

Every part is built from a transformers config dict (``hf_config``), so nothing is loaded
from the Hub or the offline packages. The sizes exercise every code path: two HTSAT stages
with a shifted-window block, a TS-CAM head, 3 + 3 prefix tokens and a 2-layer GPT-2.
"""

from __future__ import annotations

from typing import Any

from pengi.config import AudioConfig, HTSATConfig, LMConfig, MapperConfig, ModelConfig, TextEncoderConfig

# 1 s at 16 kHz -> 251 frames of 16 mels, resized to 4 x 64 and folded into a 64 x 64 image.
TINY_AUDIO = AudioConfig(
    sample_rate=16000, clip_seconds=1.0, n_fft=256, hop_length=64, n_mels=16, f_min=20.0, f_max=8000.0
)
TINY_HTSAT = HTSATConfig(
    spec_size=64, patch_size=4, patch_stride=4, window_size=4, embed_dim=16, depths=(1, 2), num_heads=(2, 4),
    num_classes=5, drop_path_rate=0.1,
)  # fmt: skip
TINY_LM: dict[str, Any] = {
    "model_type": "gpt2", "vocab_size": 120, "n_positions": 64, "n_embd": 32, "n_layer": 2, "n_head": 2
}  # fmt: skip
TINY_TEXT: dict[str, dict[str, Any]] = {
    "bert_mean": {"model_type": "bert", "vocab_size": 100, "hidden_size": 16, "num_hidden_layers": 1,
                  "num_attention_heads": 2, "intermediate_size": 32, "max_position_embeddings": 32},
    "clip": {"vocab_size": 100, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
             "num_attention_heads": 2, "max_position_embeddings": 32, "projection_dim": 12},
    "gpt2_last": {"model_type": "gpt2", "vocab_size": 100, "n_positions": 32, "n_embd": 16, "n_layer": 1, "n_head": 2},
}  # fmt: skip


def tiny_model_config(text_kind: str = "bert_mean", mapper_kind: str = "transformer") -> ModelConfig:
    """A tiny random :class:`ModelConfig` (use with :data:`TINY_AUDIO`): d_proj 24, 3 + 3 prefix tokens."""
    text = TextEncoderConfig(kind=text_kind, name="tiny", max_length=8, hf_config=TINY_TEXT.get(text_kind))
    return ModelConfig(
        htsat=TINY_HTSAT, text=text, lm=LMConfig(name="tiny", hf_config=TINY_LM),
        mapper=MapperConfig(kind=mapper_kind, prefix_length=3, clip_length=2, num_layers=1, num_heads=4),
        d_proj=24,
    )  # fmt: skip


TINY_PARAMS_SAMPLE_RATE = 8000


def tiny_params_with_offline_tokenizers() -> dict[str, Any]:
    """``audio`` and ``model`` params sections of a tiny random model whose tokenizers are the real
    offline ones (MiniLM's and SmolLM2's), so that text can be encoded and decoded end to end.

    Weights are random (``hf_config``), nothing is downloaded; 0.25 s clips at 8 kHz. Tests of the
    training stages, the evaluation harness and the CLI build their configs from this one dict.
    """
    return {
        "audio": {"sample_rate": TINY_PARAMS_SAMPLE_RATE, "clip_seconds": 0.25, "n_fft": 256, "hop_length": 40,
                  "n_mels": 16, "f_min": 50.0, "f_max": 2000.0},
        "model": {
            "htsat": {"spec_size": 32, "patch_size": 4, "patch_stride": 4, "window_size": 4, "embed_dim": 16,
                      "depths": [1, 1], "num_heads": [1, 2], "num_classes": 0},
            "text": {"kind": "bert_mean", "name": "minilm", "max_length": 8,
                     "hf_config": {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1,
                                   "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 30522}},
            "lm": {"name": "smollm2", "hf_config": {"model_type": "llama", "vocab_size": 49152, "hidden_size": 32,
                   "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                   "num_key_value_heads": 1, "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2}},
            "mapper": {"prefix_length": 4, "clip_length": 4, "num_layers": 1, "num_heads": 2},
            "d_proj": 32,
        },
    }  # fmt: skip
