"""Atomic local writes: readers (and DVC) never see a half-written file.

Every file a stage writes goes to a temporary name beside its target and is renamed over it
only once complete; a failure removes the temporary file and leaves the old target in place.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data: Any, default: Any = None) -> Path:
    """Write ``data`` as indented, key-sorted JSON (the form DVC metrics diff well) atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=default) + "\n")
