"""Keep the README and docs/ true: every command and Python example in them runs here, nothing they write
lands in the checkout, and .ci/run runs the README's test command."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tests.conftest import REPO

README = REPO / "README.md"
DOCS = [README, *sorted((REPO / "docs").glob("*.md"))]
SETUP_COMMANDS = ["pip install torch==2.13.0", 'pip install -e ".[test]"', "python -m pytest -q"]  # README only
OUTPUT_SUFFIXES = {"onnx": [".onnx"], "pt2": [".pt2"], "safetensors": [".safetensors"], "py": [".py", ".safetensors"]}


def _name(doc: Path) -> str:
    return doc.relative_to(REPO).as_posix()


def _blocks(doc: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", doc.read_text(), flags=re.S)


def _commands(doc: Path) -> list[str]:
    """Each command of the doc's bash blocks: `\\` continues a line, `&&` separates, `#` lines are comments."""
    commands = []
    for block in _blocks(doc, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("#"):
                continue
            commands.extend(part.strip() for part in line.split("&&") if part.strip())
    return commands


def _ninport_commands() -> list:
    return [pytest.param(doc, command, id=f"{_name(doc)}: {command}")
            for doc in DOCS for command in _commands(doc) if command.startswith("ninport ")]


def _python_blocks() -> list:
    return [pytest.param(doc, block, id=f"{_name(doc)} python block {i + 1}")
            for doc in DOCS for i, block in enumerate(_blocks(doc, "python"))]


def _git_status() -> str | None:
    try:
        result = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO,
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


@pytest.fixture(scope="module")
def checkout_status() -> str | None:
    """`git status` of the checkout before the docs' commands run (None outside a git checkout)."""
    return _git_status()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, checkout_status):
    """A folder where the docs' paths resolve (run from the repository root, they would resolve the same),
    so outputs land outside the checkout; `out/` exists in it as after the README's set-up command."""
    work = tmp_path_factory.mktemp("readme")
    for name in ("reference_models", "tests"):
        (work / name).symlink_to(REPO / name)
    (work / "out").mkdir()
    return work


def test_docs_exist_and_readme_links_every_page():
    pages = DOCS[1:]
    assert {p.name for p in pages} >= {"cli.md", "python.md", "layers.md", "any-size.md", "safety.md",
                                       "performance.md", "formats.md", "testing.md"}
    readme = README.read_text()
    for page in pages:
        assert f"](docs/{page.name})" in readme, f"README.md does not link {_name(page)}"


def _anchors(doc: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces made hyphens."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", doc.read_text(), flags=re.S), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_relative_links_resolve(doc):
    """Every relative link ([text](path), path#anchor or #anchor) names a file, and a heading, that exist."""
    for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        assert path.exists(), f"{_name(doc)} links {target}, which does not exist"
        if anchor:
            assert anchor in _anchors(path), f"{_name(doc)} links {target}: no such heading"


@pytest.mark.parametrize("doc", DOCS, ids=_name)
def test_every_shown_command_is_run(doc):
    """A bash block holds only ninport commands (run below) and, in the README, the set-up commands
    (run by CI): no command is shown that no test runs."""
    allowed = SETUP_COMMANDS if doc == README else []
    others = [c for c in _commands(doc) if not c.startswith("ninport ") and c not in allowed]
    assert not others, f"{_name(doc)} shows commands no test runs: {others}"


@pytest.mark.parametrize(("doc", "command"), _ninport_commands())
def test_doc_command_runs(doc, command, workdir):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    args = shlex.split(command)
    result = subprocess.run([sys.executable, "-m", "ninport.cli", *args[1:]], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    if args[1] == "convert":
        out = workdir / args[args.index("-o") + 1]
        stem = Path(args[2]).stem
        formats = args[args.index("--format") + 1].split(",") if "--format" in args else ["onnx"]
        for fmt in formats:
            for suffix in OUTPUT_SUFFIXES[fmt]:
                assert (out / f"{stem}{suffix}").is_file(), f"{command} did not write {stem}{suffix}"


@pytest.mark.parametrize(("doc", "block"), _python_blocks())
def test_doc_python_example_runs(doc, block, workdir, monkeypatch):
    """Each example runs on its own. The examples load shipped prototxts without weights: each model
    loaded must say so. Layer types an example registers are unregistered afterwards."""
    import ninport
    from ninport import registry

    monkeypatch.chdir(workdir)
    types_before = set(registry.registered_types())
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exec(compile(block, _name(doc), "exec"), {"__name__": "__docs_example__"})
    finally:
        for name in set(registry.registered_types()) - types_before:
            registry.unregister_layer(name)
    if re.search(r"ninport\.(?:load|classify)\(", block):
        assert any(issubclass(w.category, ninport.NinportWarning) and "RANDOM weights" in str(w.message)
                   for w in caught), "a model was loaded without weights and nothing said so"


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()
    commands = _commands(README)
    test_commands = [c for c in commands if "pytest" in c]
    assert test_commands == ["python -m pytest -q"]
    assert ci[-1].strip() == test_commands[0]
    setup = [c for c in commands if c.startswith("pip install")]
    assert setup == SETUP_COMMANDS[:2]
    assert any("torch==2.13.0" in line for line in ci) and any('-e ".[test]"' in line for line in ci)


def test_docs_write_only_into_out(workdir, checkout_status):
    """Run after the commands and examples above (file order): run from the repository root, they would
    have written only into the git-ignored out/ folder, and the checkout itself is unchanged."""
    assert sorted(p.name for p in workdir.iterdir()) == ["out", "reference_models", "tests"]
    assert "/out/" in (REPO / ".gitignore").read_text().splitlines()
    after = _git_status()
    if checkout_status is None or after is None:
        pytest.skip("not a git checkout")
    new = sorted(set(after.splitlines()) - set(checkout_status.splitlines()))
    assert not new, f"the docs' commands changed the checkout: {new}"


def test_architecture_example_is_the_family_files_source():
    """docs/architecture.md's 'how to add a layer' example quotes layers/fork.py: every line, in order."""
    page = (REPO / "docs" / "architecture.md").read_text()
    example = page[page.index("For example ShuffleNet's"):]
    block = _blocks_in(example, "text")[0]
    source = [line.strip() for line in (REPO / "ninport" / "layers" / "fork.py").read_text().splitlines()]
    position = 0
    for line in filter(None, (raw.strip() for raw in block.splitlines())):
        assert line in source[position:], f"not in layers/fork.py (in order): {line}"
        position = source.index(line, position) + 1


def _blocks_in(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)
