"""A DVC remote on a real S3 server (SeaweedFS on 127.0.0.1): push, lose the cache, pull back."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pengi import storage
from pengi.telemetry import subprocess_env

pytestmark = pytest.mark.network


def _dvc(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=repo,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, timeout=60)


def test_dvc_push_pull_roundtrip(s3_bucket, s3_env, tmp_path):
    repo = tmp_path / "project"
    repo.mkdir()
    _git(repo, "init", "-q")
    _dvc(repo, "init", "-q")
    _dvc(repo, "config", "core.analytics", "false")
    # Credentials stay in the environment (or .dvc/config.local), never in the committed config.
    _dvc(repo, "remote", "add", "-d", "store", f"s3://{s3_bucket}/dvcstore")
    _dvc(repo, "remote", "modify", "store", "endpointurl", s3_env.endpoint)
    config = (repo / ".dvc" / "config").read_text()
    assert s3_env.endpoint in config and s3_env.secret_key not in config

    data = repo / "data"
    (data / "sub").mkdir(parents=True)
    files = {"a.bin": os.urandom(50_000), "sub/b.txt": b"caption: a dog barks\n"}
    for rel, body in files.items():
        (data / rel).write_bytes(body)
    _dvc(repo, "add", "data")
    _dvc(repo, "push")

    # The objects really are on the server, under the remote's prefix.
    pushed = storage.list_files(f"s3://{s3_bucket}/dvcstore")
    assert len(pushed) >= 3  # two files and the directory listing (.dir)

    shutil.rmtree(data)
    shutil.rmtree(repo / ".dvc" / "cache")
    _dvc(repo, "pull")
    for rel, body in files.items():
        assert (data / rel).read_bytes() == body
    assert "in sync" in _dvc(repo, "status", "--cloud").lower()


def test_dvc_push_with_wrong_credentials_fails(s3_bucket, s3_env, tmp_path, monkeypatch):
    repo = tmp_path / "project"
    repo.mkdir()
    _dvc(repo, "init", "-q", "--no-scm")
    _dvc(repo, "remote", "add", "-d", "store", f"s3://{s3_bucket}/x")
    _dvc(repo, "remote", "modify", "store", "endpointurl", s3_env.endpoint)
    (repo / "f.txt").write_text("hello")
    _dvc(repo, "add", "f.txt")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "push"], cwd=repo, env=subprocess_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env.secret_key)
    assert storage.list_files(f"s3://{s3_bucket}/x") == []
