"""The command table is wired: every command parses, and config errors exit with code 2."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from pengi import cli

REPO = Path(__file__).resolve().parents[1]


def test_help_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pengi", "--help"], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    for name in cli.COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_module_exposes_the_protocol(name: str) -> None:
    module_name, _ = cli.COMMANDS[name]
    module = importlib.import_module(f"pengi.commands.{module_name}")
    assert callable(module.add_arguments) and callable(module.run)
    parser = cli.build_parser(name)
    with pytest.raises(SystemExit) as exc_info:
        parser.parse_args([name, "--help"])
    assert exc_info.value.code == 0


def test_a_bad_params_file_exits_with_2_and_names_the_key(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("corpus:\n  sise: tiny\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pengi", "corpus", "--params", str(params), "--out", str(tmp_path / "c")],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2, proc.stderr
    assert "corpus.sise" in proc.stderr
