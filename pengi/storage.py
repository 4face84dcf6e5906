"""Local and ``s3://`` IO behind one small API (the only boto3 import in the package).

Every data root in ``params.yaml`` may be a local path or an ``s3://bucket/prefix`` URI.
S3 endpoint and credentials come from the environment (``AWS_ENDPOINT_URL`` / ``AWS_ACCESS_KEY_ID``
/ ``AWS_SECRET_ACCESS_KEY`` / ``AWS_DEFAULT_REGION``), never from params.

Failure model:

- Requests are retried by botocore's ``standard`` retry mode (throttling, 5xx, connection errors);
  the attempt count is ``PENGI_S3_MAX_ATTEMPTS`` (default 5).
- A response body that breaks off while it is being read is not covered by botocore's retries,
  so every streaming read here is wrapped in our own retry (:func:`_retrying`), which re-issues the
  GET (ranged, for :func:`open_binary`).
- Writes never expose a partial object: a local write goes to a temp file that is renamed into
  place; an S3 object is either one ``PutObject`` or a multipart upload, and S3 makes an object
  visible only when the PUT or ``CompleteMultipartUpload`` succeeds (a failed multipart upload is
  aborted by boto3's transfer manager).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TypeVar

import boto3
import boto3.exceptions
import botocore.config
import botocore.exceptions
from boto3.s3.transfer import TransferConfig

from pengi.fileio import atomic_path

log = logging.getLogger(__name__)

T = TypeVar("T")

# Objects up to this size are written with one PutObject; larger ones with a multipart upload.
MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNKSIZE = 16 * 1024 * 1024
# Ranged reads in open_binary fetch at least this much per request.
READ_CHUNK = 4 * 1024 * 1024

# What our own retry layer covers: errors raised while a response body streams in, which
# botocore's request-level retries never see. Errors of the request itself (5xx, throttling,
# refused connections) are retried by botocore and not again here, so attempts do not multiply.
_STREAMING_EXC: tuple[type[BaseException], ...] = (
    botocore.exceptions.IncompleteReadError,
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.ReadTimeoutError,
    ConnectionError,  # the builtin: a reset while reading a body
    TimeoutError,
)


# Everything an S3 call can raise that is about S3 rather than a bug in the caller.
_S3_ERRORS: tuple[type[BaseException], ...] = (
    botocore.exceptions.BotoCoreError,
    botocore.exceptions.ClientError,
    boto3.exceptions.Boto3Error,  # S3UploadFailedError, S3TransferFailedError
    ConnectionError,
    TimeoutError,
)


class StorageError(OSError):
    """An S3 operation failed permanently (or ran out of retries)."""


# --------------------------------------------------------------------------------------------
# URIs
# --------------------------------------------------------------------------------------------


def is_s3(uri: str | os.PathLike) -> bool:
    """True when ``uri`` is an ``s3://`` URI."""
    return str(uri).startswith("s3://")


def join(root: str | os.PathLike, *parts: str) -> str:
    """Join path parts onto a local path or an s3:// URI."""
    root = str(root)
    if is_s3(root):
        return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(Path(root, *parts))


def split_s3(uri: str | os.PathLike) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``.

    Raises:
        ValueError: not an s3:// URI, or no bucket name.
    """
    uri = str(uri)
    if not is_s3(uri):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return bucket, key


# --------------------------------------------------------------------------------------------
# Client and retries
# --------------------------------------------------------------------------------------------


def max_attempts() -> int:
    """Attempts per S3 operation (``PENGI_S3_MAX_ATTEMPTS``, default 5)."""
    return max(1, int(os.environ.get("PENGI_S3_MAX_ATTEMPTS", "5")))


def client():
    """A boto3 S3 client for the current environment (endpoint, credentials, region).

    Clients are cached per environment and process, so a test or a user that changes ``AWS_*``
    variables gets a fresh client while a pipeline stage reuses one (boto3 clients are
    thread-safe, but not fork-safe: a DataLoader worker builds its own).
    """
    keys = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "PENGI_S3_MAX_ATTEMPTS")
    return _client((os.getpid(), *(os.environ.get(k) for k in keys)))


@functools.lru_cache(maxsize=8)
def _client(key: tuple[int | str | None, ...]):
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    s3_options = {}
    if endpoint:
        # Local S3-compatible servers (SeaweedFS, MinIO) are reached by IP or "localhost", where
        # virtual-host addressing (bucket.host) does not resolve.
        s3_options["addressing_style"] = "path"
    config = botocore.config.Config(
        retries={"mode": "standard", "max_attempts": max_attempts()},
        connect_timeout=10,
        read_timeout=60,
        s3=s3_options,
    )
    session = boto3.session.Session()
    region = session.region_name or "us-east-1"  # a custom endpoint still needs a signing region
    # boto3 reads AWS_ENDPOINT_URL itself; it is passed explicitly only so the cache key and the
    # client agree.
    return session.client("s3", region_name=region, endpoint_url=endpoint, config=config)


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, _STREAMING_EXC)


def _retrying(what: str, fn: Callable[[], T]) -> T:
    """Call ``fn`` and retry it when a response body breaks off, with exponential backoff.

    botocore already retries each request (``standard`` mode); this layer covers what it cannot
    see: a body that breaks off mid-stream. Errors are translated: a missing object becomes
    :class:`FileNotFoundError`, anything else :class:`StorageError`.
    """
    attempts = max_attempts()
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except _S3_ERRORS as exc:
            if _is_transient(exc) and attempt < attempts:
                delay = min(0.1 * 2 ** (attempt - 1), 5.0)
                log.warning("%s: transient error (%s), retry %d/%d in %.1fs", what, exc, attempt, attempts - 1, delay)
                time.sleep(delay)
                continue
            if _is_not_found(exc):
                raise FileNotFoundError(f"{what}: no such object") from exc
            raise StorageError(f"{what}: {exc}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _is_not_found(exc: BaseException) -> bool:
    if isinstance(exc, botocore.exceptions.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket") or status == 404
    return False


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def list_files(root: str | os.PathLike, suffixes: tuple[str, ...] | None = None) -> list[str]:
    """All files under ``root`` (recursive), sorted; optionally only those with ``suffixes``.

    For ``s3://bucket/prefix`` the files are the objects under ``prefix/`` (folder-marker keys
    ending in ``/`` are not files), returned as ``s3://`` URIs.
    """
    root = str(root)
    wanted = None if suffixes is None else tuple(s.lower() for s in suffixes)
    if is_s3(root):
        bucket, key = split_s3(root)
        prefix = key.rstrip("/") + "/" if key.strip("/") else ""

        def listing() -> list[str]:
            found = []
            for page in client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    k = obj["Key"]
                    if not k.endswith("/") and (wanted is None or k.lower().endswith(wanted)):
                        found.append(f"s3://{bucket}/{k}")
            return found

        return sorted(_retrying(f"list {root}", listing))
    out = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            if wanted is None or f.lower().endswith(wanted):
                out.append(os.path.join(dirpath, f))
    return sorted(out)


def exists(uri: str | os.PathLike) -> bool:
    """True if ``uri`` is an existing file or directory (for S3: an object or a non-empty prefix)."""
    if not is_s3(uri):
        return Path(uri).exists()
    bucket, key = split_s3(uri)

    def probe() -> bool:
        if key and not key.endswith("/"):
            try:
                client().head_object(Bucket=bucket, Key=key)
                return True
            except botocore.exceptions.ClientError as exc:
                if not _is_not_found(exc):
                    raise
        prefix = key.rstrip("/") + "/" if key.strip("/") else ""
        try:
            resp = client().list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        except botocore.exceptions.ClientError as exc:
            if _is_not_found(exc):  # no such bucket
                return False
            raise
        return resp.get("KeyCount", 0) > 0

    return _retrying(f"exists {uri}", probe)


def read_bytes(uri: str | os.PathLike) -> bytes:
    """The whole content of a local file or S3 object.

    Raises:
        FileNotFoundError: no such file or object.
        StorageError: S3 failed permanently or ran out of retries.
    """
    if not is_s3(uri):
        return Path(uri).read_bytes()
    bucket, key = split_s3(uri)
    # The body is read inside the retried call, so a stream that breaks off is fetched again.
    return _retrying(f"read {uri}", lambda: client().get_object(Bucket=bucket, Key=key)["Body"].read())


def read_text(uri: str | os.PathLike, encoding: str = "utf-8") -> str:
    """The content of a local file or S3 object decoded as text."""
    return read_bytes(uri).decode(encoding)


def size(uri: str | os.PathLike) -> int:
    """Size in bytes of a local file or S3 object."""
    if not is_s3(uri):
        return Path(uri).stat().st_size
    bucket, key = split_s3(uri)
    return _retrying(f"stat {uri}", lambda: client().head_object(Bucket=bucket, Key=key)["ContentLength"])


class _S3RangeReader(io.RawIOBase):
    """A seekable read-only raw file over one S3 object: every read is a retried ranged GET.

    Decoders (soundfile, pyarrow) seek around in a file, so a plain streaming body is not enough;
    wrapped in :class:`io.BufferedReader`, small reads are served from ``READ_CHUNK``-sized GETs.
    """

    def __init__(self, uri: str) -> None:
        super().__init__()
        self.uri = uri
        self.bucket, self.key = split_s3(uri)
        head = _retrying(f"open {uri}", lambda: client().head_object(Bucket=self.bucket, Key=self.key))
        self.length = int(head["ContentLength"])
        # Pin the version we opened: if the object is replaced while we read, a ranged GET with
        # IfMatch fails instead of mixing bytes of two versions.
        self.etag = head.get("ETag")
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.length}[whence]
        new = base + offset
        if new < 0:
            raise ValueError(f"negative seek position {new}")
        self.pos = new
        return new

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        if self.pos >= self.length or len(view) == 0:
            return 0
        end = min(self.pos + len(view), self.length) - 1  # inclusive, as in the Range header
        start = self.pos

        def fetch() -> bytes:
            kwargs = {"Bucket": self.bucket, "Key": self.key, "Range": f"bytes={start}-{end}"}
            if self.etag:
                kwargs["IfMatch"] = self.etag
            body = client().get_object(**kwargs)["Body"].read()
            if len(body) != end - start + 1:
                # A short body without an exception is a broken stream too.
                raise botocore.exceptions.IncompleteReadError(actual_bytes=len(body), expected_bytes=end - start + 1)
            return body

        data = _retrying(f"read {self.uri} [{start}-{end}]", fetch)
        view[: len(data)] = data
        self.pos += len(data)
        return len(data)


@contextlib.contextmanager
def open_binary(uri: str | os.PathLike) -> Iterator[IO[bytes]]:
    """A readable, seekable binary file object for a local path or an S3 object."""
    if not is_s3(uri):
        with open(uri, "rb") as fh:
            yield fh
        return
    raw = _S3RangeReader(str(uri))
    with io.BufferedReader(raw, buffer_size=READ_CHUNK) as fh:
        yield fh


@contextlib.contextmanager
def local_copy(uri: str | os.PathLike) -> Iterator[Path]:
    """A local path holding ``uri``'s bytes (the path itself when local; a temp file for S3).

    The temp file keeps the object's suffix (decoders choose by extension) and is deleted on exit.
    """
    if not is_s3(uri):
        yield Path(uri)
        return
    suffix = Path(split_s3(uri)[1]).suffix
    with tempfile.TemporaryDirectory(prefix="pengi-s3-") as tmp:
        path = Path(tmp, "object" + suffix)
        download_file(uri, path)
        yield path


def download_file(uri: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy ``uri`` (local or S3) to the local path ``dest``, atomically (temp file + rename).

    Raises:
        FileNotFoundError: no such file or object.
        StorageError: S3 failed permanently or ran out of retries.
    """
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        if is_s3(uri):
            bucket, key = split_s3(uri)
            # The transfer manager downloads in parallel ranged parts; a failure in any part fails
            # the whole call, which is then retried from scratch into the same temp file.
            _retrying(f"download {uri}", lambda: client().download_file(bucket, key, str(tmp)))
        else:
            shutil.copyfile(uri, tmp)
    return dest


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _transfer_config(multipart_threshold: int | None, multipart_chunksize: int | None) -> TransferConfig:
    return TransferConfig(
        multipart_threshold=multipart_threshold or MULTIPART_THRESHOLD,
        multipart_chunksize=multipart_chunksize or MULTIPART_CHUNKSIZE,
        max_concurrency=4,
    )


def _object_key(uri: str | os.PathLike) -> tuple[str, str]:
    """``(bucket, key)`` of an S3 URI that names an object (not a bucket or a prefix)."""
    bucket, key = split_s3(uri)
    if not key or key.endswith("/"):
        raise ValueError(f"not an object URI: {uri!r}")
    return bucket, key


def write_bytes_atomic(
    uri: str | os.PathLike,
    data: bytes,
    *,
    multipart_threshold: int | None = None,
    multipart_chunksize: int | None = None,
) -> None:
    """Write so that no reader ever sees a partial object.

    Locally: temp file in the same folder, then rename. On S3: one PutObject up to
    ``multipart_threshold`` bytes, a multipart upload above it; either way the object appears only
    once complete, and a failed write leaves the previous version (or nothing) in place.

    Raises:
        StorageError: S3 failed permanently or ran out of retries.
    """
    if not is_s3(uri):
        with atomic_path(uri) as tmp:
            tmp.write_bytes(data)
        return
    bucket, key = _object_key(uri)
    config = _transfer_config(multipart_threshold, multipart_chunksize)
    # A fresh BytesIO per attempt: a retry must start from the first byte.
    _retrying(f"write {uri}", lambda: client().upload_fileobj(io.BytesIO(data), bucket, key, Config=config))


def upload_file(
    src: str | os.PathLike,
    uri: str | os.PathLike,
    *,
    multipart_threshold: int | None = None,
    multipart_chunksize: int | None = None,
) -> None:
    """Copy the local file ``src`` to ``uri`` (local or S3) with the guarantees of :func:`write_bytes_atomic`.

    Raises:
        FileNotFoundError: ``src`` does not exist.
        StorageError: S3 failed permanently or ran out of retries.
    """
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"upload source not found: {src}")
    if not is_s3(uri):
        with atomic_path(uri) as tmp:
            shutil.copyfile(src, tmp)
        return
    bucket, key = _object_key(uri)
    config = _transfer_config(multipart_threshold, multipart_chunksize)
    _retrying(f"upload {src} -> {uri}", lambda: client().upload_file(str(src), bucket, key, Config=config))
