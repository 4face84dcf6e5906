"""pengi.telemetry: every tool's usage reporting is off by default, a user's choice is kept."""

from __future__ import annotations

import subprocess
import sys

from pengi.telemetry import TELEMETRY_OFF, disable_telemetry, subprocess_env


def test_defaults_set_and_user_values_kept():
    env = {"DO_NOT_TRACK": "false", "PATH": "/bin"}
    out = disable_telemetry(env)
    assert out is env
    assert env["DO_NOT_TRACK"] == "false"  # the user's explicit opt-in wins
    for key in ("MLFLOW_DISABLE_TELEMETRY", "PREFECT_SERVER_ANALYTICS_ENABLED", "DVC_NO_ANALYTICS"):
        assert env[key] == TELEMETRY_OFF[key]


def test_subprocess_env_applies_extra_on_top(monkeypatch):
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    env = subprocess_env({"PENGI_PIPELINE_RUN_ID": "abc"})
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true" and env["PENGI_PIPELINE_RUN_ID"] == "abc"
    import os

    assert "MLFLOW_DISABLE_TELEMETRY" not in os.environ  # the caller's environment is untouched


def test_tools_read_the_settings_as_off(tmp_path):
    """Each tool, asked through its own API, reports its telemetry as disabled."""
    code = (
        "from pengi.telemetry import disable_telemetry; disable_telemetry()\n"
        "from prefect.settings import get_current_settings\n"
        "assert get_current_settings().server.analytics_enabled is False\n"
        "from mlflow.environment_variables import MLFLOW_DISABLE_TELEMETRY\n"
        "assert MLFLOW_DISABLE_TELEMETRY.get() is True\n"
        "from dvc.analytics import is_enabled\n"
        "assert not is_enabled()\n"
    )
    env = {k: v for k, v in subprocess_env().items() if k not in TELEMETRY_OFF}
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, timeout=120)
