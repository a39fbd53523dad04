"""Keep the README true: every command in it runs here, and .ci/run runs its test command."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import REPO

README = (REPO / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def _commands() -> list[str]:
    commands = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            commands.extend(part.strip() for part in line.split("&&") if part.strip())
    return commands


def _ninport_commands() -> list[str]:
    return [c for c in _commands() if c.startswith("ninport ")]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder where README paths resolve, so outputs land outside the checkout."""
    work = tmp_path_factory.mktemp("readme")
    for name in ("reference_models", "tests"):
        (work / name).symlink_to(REPO / name)
    return work


@pytest.mark.parametrize("command", _ninport_commands())
def test_readme_command_runs(command, workdir):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    args = shlex.split(command)
    result = subprocess.run([sys.executable, "-m", "ninport.cli", *args[1:]], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    if args[1] == "convert":
        out = workdir / args[args.index("-o") + 1]
        stem = os.path.splitext(os.path.basename(args[2]))[0]
        assert (out / f"{stem}.onnx").is_file()


def test_readme_python_example_runs(workdir, monkeypatch):
    """The examples use the shipped NIN prototxt without weights: each run must say so."""
    import ninport

    monkeypatch.chdir(workdir)
    for block in _blocks("python"):
        with pytest.warns(ninport.NinportWarning, match="RANDOM weights"):
            exec(compile(block, "README.md", "exec"), {})
    assert (workdir / "nin.onnx").is_file()


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()
    test_commands = [c for c in _commands() if "pytest" in c]
    assert test_commands == ["python -m pytest -q"]
    assert ci[-1].strip() == test_commands[0]
    setup = [c for c in _commands() if c.startswith("pip install")]
    assert setup[0] == "pip install torch==2.13.0"
    assert any("torch==2.13.0" in line for line in ci) and any('-e ".[test]"' in line for line in ci)
