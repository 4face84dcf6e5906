"""Telemetry off by default for every tool the pipeline drives (DVC, Prefect, MLflow, ...).

Nothing in the pipeline may contact an address outside the machine unless the user asks for it,
so every front door (``pengi`` CLI, Prefect flows, the helper scripts) calls
:func:`disable_telemetry` before it imports or starts those tools. Values are *defaults*
(``os.environ.setdefault``): a user who exports a different value keeps it.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

# Variable -> value that turns the tool's usage reporting off. MLflow accepts "true" but not "1"
# for DO_NOT_TRACK (TOOLING.md), so the values are the spellings each tool documents.
TELEMETRY_OFF: dict[str, str] = {
    "DO_NOT_TRACK": "true",  # MLflow, Prefect and other tools that honour the convention
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",  # upgrade prompts and banners in the UI
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",  # transformers / huggingface_hub
    "GX_ANALYTICS_ENABLED": "false",  # great_expectations 1.x
}


def disable_telemetry(env: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Set the telemetry-off defaults in ``env`` (``os.environ`` when None) and return it.

    Existing values are kept, so a user can still opt in explicitly.

    Args:
        env: the mapping to update, e.g. a copy of ``os.environ`` for a subprocess.

    Returns:
        The updated mapping (the same object).
    """
    target = os.environ if env is None else env
    for key, value in TELEMETRY_OFF.items():
        target.setdefault(key, value)
    return target


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of the current environment with telemetry off and ``extra`` applied on top."""
    env = disable_telemetry(dict(os.environ))
    if extra:
        env.update(extra)
    return dict(env)
