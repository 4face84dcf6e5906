"""``save_pretrained`` / ``from_pretrained`` for the top-level models, through :mod:`pengi.checkpoint`."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

T = TypeVar("T", bound="PretrainedMixin")


class PretrainedMixin:
    """Adds the checkpoint folder round trip (safetensors + config.json) to a model class."""

    def save_pretrained(self, folder: str | Path) -> None:
        """Write ``model.safetensors`` + ``config.json`` (see :mod:`pengi.checkpoint`)."""
        from pengi.checkpoint import save_pretrained

        save_pretrained(self, folder)

    @classmethod
    def from_pretrained(cls: type[T], folder: str | Path) -> T:
        """Rebuild from a folder written by :meth:`save_pretrained` (safetensors only).

        Raises:
            TypeError: the folder holds another kind of model.
        """
        from pengi.checkpoint import load_pretrained

        model = load_pretrained(folder)
        if not isinstance(model, cls):
            raise TypeError(f"{folder} holds a {type(model).__name__}, not a {cls.__name__} model")
        return model
