"""pengi.storage against a real S3 server (SeaweedFS on 127.0.0.1) and on local paths.

Faults are injected through botocore's event hooks on the client that talks to the real server:
that is the only stubbing here, and it exists only to produce errors on demand.
"""

from __future__ import annotations

import hashlib
import threading

import botocore.exceptions
import pytest

from pengi import storage

pytestmark = pytest.mark.network


# --------------------------------------------------------------------------------------------
# local paths
# --------------------------------------------------------------------------------------------


def test_local_roundtrip_and_listing(tmp_path):
    storage.write_bytes_atomic(tmp_path / "a" / "x.WAV", b"one")
    storage.write_bytes_atomic(tmp_path / "a" / "b" / "y.txt", b"two")
    assert storage.read_bytes(tmp_path / "a" / "x.WAV") == b"one"
    assert storage.list_files(tmp_path, suffixes=(".wav",)) == [str(tmp_path / "a" / "x.WAV")]
    assert len(storage.list_files(tmp_path)) == 2
    assert storage.exists(tmp_path / "a") and not storage.exists(tmp_path / "nope")
    # no temp files left behind
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b", "x.WAV"]
    storage.upload_file(tmp_path / "a" / "x.WAV", tmp_path / "c" / "copy.wav")
    storage.download_file(tmp_path / "c" / "copy.wav", tmp_path / "d.wav")
    assert (tmp_path / "d.wav").read_bytes() == b"one"


def test_join_and_split():
    assert storage.join("s3://b/root/", "x", "/y.wav") == "s3://b/root/x/y.wav"
    assert storage.split_s3("s3://b/root/x") == ("b", "root/x")
    assert storage.split_s3("s3://b") == ("b", "")
    with pytest.raises(ValueError):
        storage.split_s3("/local/path")
    with pytest.raises(ValueError):
        storage.split_s3("s3:///key")


# --------------------------------------------------------------------------------------------
# real S3
# --------------------------------------------------------------------------------------------


def test_s3_write_read_list_exists(s3_bucket):
    root = f"s3://{s3_bucket}/data"
    files = {"a/1.wav": b"\x00\x01" * 100, "a/2.flac": b"flac", "b/meta.csv": "id,caption\n1,héllo\n".encode()}
    for rel, body in files.items():
        storage.write_bytes_atomic(storage.join(root, rel), body)
    # a folder marker and an object outside the prefix must not be listed
    storage.client().put_object(Bucket=s3_bucket, Key="data/a/", Body=b"")
    storage.write_bytes_atomic(f"s3://{s3_bucket}/database.csv", b"not under data/")

    assert storage.list_files(root) == [storage.join(root, rel) for rel in sorted(files)]
    assert storage.list_files(root + "/", suffixes=(".WAV", ".flac")) == [
        storage.join(root, "a/1.wav"),
        storage.join(root, "a/2.flac"),
    ]
    for rel, body in files.items():
        assert storage.read_bytes(storage.join(root, rel)) == body
    assert storage.read_text(storage.join(root, "b/meta.csv")) == "id,caption\n1,héllo\n"
    assert storage.size(storage.join(root, "a/1.wav")) == 200

    assert storage.exists(storage.join(root, "a/1.wav"))
    assert storage.exists(storage.join(root, "a"))  # a prefix with objects is a folder
    assert storage.exists(root)
    assert not storage.exists(storage.join(root, "a/3.wav"))
    assert not storage.exists(storage.join(root, "zzz"))
    assert not storage.exists("s3://no-such-bucket-pengi/x")
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(storage.join(root, "a/3.wav"))


def test_s3_open_binary_is_seekable(s3_bucket, monkeypatch):
    monkeypatch.setattr(storage, "READ_CHUNK", 1024)  # many ranged GETs for a small object
    body = bytes(range(256)) * 40  # 10240 bytes
    uri = f"s3://{s3_bucket}/blob.bin"
    storage.write_bytes_atomic(uri, body)
    with storage.open_binary(uri) as fh:
        assert fh.read(10) == body[:10]
        fh.seek(5000)
        assert fh.read(3000) == body[5000:8000]
        fh.seek(-100, 2)
        assert fh.read() == body[-100:]
        fh.seek(0)
        assert fh.read() == body


def test_s3_local_copy_and_file_transfer(s3_bucket, tmp_path):
    src = tmp_path / "clip.ogg"
    src.write_bytes(b"OggS" + bytes(5000))
    uri = f"s3://{s3_bucket}/clips/clip.ogg"
    storage.upload_file(src, uri)
    with storage.local_copy(uri) as path:
        assert path.suffix == ".ogg"  # decoders choose by extension
        assert path.read_bytes() == src.read_bytes()
        kept = path
    assert not kept.exists()  # the temp copy is cleaned up
    out = storage.download_file(uri, tmp_path / "out" / "c.ogg")
    assert out.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == ["c.ogg"]
    with pytest.raises(FileNotFoundError):
        storage.upload_file(tmp_path / "missing.wav", uri)
    with pytest.raises(FileNotFoundError):
        with storage.local_copy(f"s3://{s3_bucket}/clips/missing.ogg"):
            pass
    with pytest.raises(FileNotFoundError):
        storage.download_file(f"s3://{s3_bucket}/clips/missing.ogg", tmp_path / "never.ogg")
    assert not (tmp_path / "never.ogg").exists()


def test_s3_multipart_write(s3_bucket):
    body = hashlib.sha256(b"seed").digest() * (11 * 1024 * 1024 // 32)  # 11 MiB
    uri = f"s3://{s3_bucket}/big.bin"
    parts = []
    storage.client().meta.events.register("before-call.s3.UploadPart", lambda **kw: parts.append(1))
    storage.write_bytes_atomic(uri, body, multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    assert len(parts) == 3
    assert storage.read_bytes(uri) == body


# --------------------------------------------------------------------------------------------
# faults
# --------------------------------------------------------------------------------------------


class _BrokenBody:
    """A response body that delivers a few bytes and then breaks off, like a reset connection."""

    def __init__(self, body):
        self._body = body

    def read(self, amt=None):
        self._body.read(3)
        self._body.close()
        raise botocore.exceptions.ResponseStreamingError(error="connection reset by peer (injected)")

    def close(self):
        self._body.close()


def _break_get_bodies(client, n: int) -> list[int]:
    """Make the next ``n`` GetObject bodies break off mid-stream; returns a list counting GETs."""
    calls: list[int] = []

    def after_call(http_response, parsed, **kwargs):
        calls.append(1)
        if len(calls) <= n and "Body" in parsed:
            parsed["Body"] = _BrokenBody(parsed["Body"])

    client.meta.events.register("after-call.s3.GetObject", after_call)
    return calls


def test_s3_read_retries_a_broken_stream(s3_bucket, monkeypatch):
    monkeypatch.setenv("PENGI_S3_MAX_ATTEMPTS", "4")
    uri = f"s3://{s3_bucket}/flaky.bin"
    body = b"x" * 5000 + b"end"
    storage.write_bytes_atomic(uri, body)
    calls = _break_get_bodies(storage.client(), n=2)
    assert storage.read_bytes(uri) == body
    assert len(calls) == 3  # two broken streams, then a good one


def test_s3_ranged_read_retries_a_broken_stream(s3_bucket, monkeypatch):
    monkeypatch.setenv("PENGI_S3_MAX_ATTEMPTS", "3")
    uri = f"s3://{s3_bucket}/flaky-range.bin"
    body = bytes(range(256)) * 8
    storage.write_bytes_atomic(uri, body)
    calls = _break_get_bodies(storage.client(), n=1)
    with storage.open_binary(uri) as fh:
        fh.seek(100)
        assert fh.read(50) == body[100:150]
    assert len(calls) == 2


def test_s3_read_gives_up_after_max_attempts(s3_bucket, monkeypatch):
    monkeypatch.setenv("PENGI_S3_MAX_ATTEMPTS", "2")
    uri = f"s3://{s3_bucket}/always-broken.bin"
    storage.write_bytes_atomic(uri, b"data")
    calls = _break_get_bodies(storage.client(), n=100)
    with pytest.raises(storage.StorageError, match="always-broken"):
        storage.read_bytes(uri)
    assert len(calls) == 2


def test_s3_throttling_is_retried_by_the_client(s3_bucket, monkeypatch):
    """503 SlowDown answers (before the request reaches the server) are retried, then succeed."""
    monkeypatch.setenv("PENGI_S3_MAX_ATTEMPTS", "3")
    from botocore.awsrequest import AWSResponse

    uri = f"s3://{s3_bucket}/throttled.txt"
    storage.write_bytes_atomic(uri, b"eventually")
    sent = []

    class _Raw:
        def stream(self, **kwargs):
            yield b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>"

    def before_send(request, **kwargs):
        sent.append(request.method)
        if len(sent) <= 2:
            return AWSResponse(request.url, 503, {}, _Raw())
        return None

    storage.client().meta.events.register("before-send.s3.GetObject", before_send)
    assert storage.read_bytes(uri) == b"eventually"
    assert len(sent) == 3


def test_s3_failed_multipart_upload_is_never_visible(s3_bucket, monkeypatch):
    """A multipart write that dies after its first part leaves no object and no upload behind."""
    monkeypatch.setenv("PENGI_S3_MAX_ATTEMPTS", "1")
    client = storage.client()
    uri = f"s3://{s3_bucket}/partial.bin"
    parts: list[int] = []
    seen_during_upload: list[bool] = []

    def fail_second_part(params, **kwargs):
        parts.append(params["PartNumber"])
        # While parts are in flight, readers must not see the object.
        seen_during_upload.append(storage.exists(uri))
        if params["PartNumber"] == 2:
            raise botocore.exceptions.EndpointConnectionError(endpoint_url="injected")

    client.meta.events.register("before-parameter-build.s3.UploadPart", fail_second_part)
    body = b"p" * (11 * 1024 * 1024)
    with pytest.raises(storage.StorageError):
        storage.write_bytes_atomic(uri, body, multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    client.meta.events.unregister("before-parameter-build.s3.UploadPart", fail_second_part)
    assert 2 in parts
    assert seen_during_upload and not any(seen_during_upload)
    assert not storage.exists(uri)
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []  # aborted


def test_s3_failed_overwrite_keeps_the_old_object(s3_bucket, monkeypatch):
    monkeypatch.setenv("PENGI_S3_MAX_ATTEMPTS", "1")
    client = storage.client()
    uri = f"s3://{s3_bucket}/model.safetensors"
    storage.write_bytes_atomic(uri, b"version-1")

    def fail(params, **kwargs):
        raise botocore.exceptions.EndpointConnectionError(endpoint_url="injected")

    client.meta.events.register("before-parameter-build.s3.UploadPart", fail)
    with pytest.raises(storage.StorageError):
        storage.write_bytes_atomic(uri, b"v2" * (3 << 20), multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    client.meta.events.unregister("before-parameter-build.s3.UploadPart", fail)
    assert storage.read_bytes(uri) == b"version-1"


def test_s3_concurrent_readers_see_old_or_new_never_partial(s3_bucket):
    uri = f"s3://{s3_bucket}/swap.bin"
    old, new = b"A" * (6 << 20), b"B" * (11 << 20)
    storage.write_bytes_atomic(uri, old)
    seen: set[bytes] = set()
    done = threading.Event()

    def reader():
        while not done.is_set():
            data = storage.read_bytes(uri)
            seen.add(data[:1] + str(len(data)).encode())

    t = threading.Thread(target=reader)
    t.start()
    try:
        storage.write_bytes_atomic(uri, new, multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    finally:
        done.set()
        t.join(timeout=60)
    seen.add(storage.read_bytes(uri)[:1] + str(len(storage.read_bytes(uri))).encode())
    assert seen <= {b"A" + str(len(old)).encode(), b"B" + str(len(new)).encode()}
    assert b"B" + str(len(new)).encode() in seen
