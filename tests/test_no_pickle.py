"""Model files come from strangers: nothing in ninport may unpickle them."""
from __future__ import annotations

import re

from tests.conftest import REPO

FORBIDDEN = [
    (re.compile(r"\bimport pickle\b|\bpickle\.load"), "pickle"),
    (re.compile(r"allow_pickle\s*=\s*True"), "numpy allow_pickle=True"),
    (re.compile(r"torch\.load\((?![^)]*weights_only\s*=\s*True)[^)]*\)"), "torch.load without weights_only=True"),
]


def test_no_unpickling_in_the_package():
    offenders = []
    for path in sorted((REPO / "ninport").rglob("*.py")):
        text = path.read_text()
        for pattern, what in FORBIDDEN:
            if pattern.search(text):
                offenders.append(f"{path.relative_to(REPO)}: {what}")
    assert not offenders, offenders


def test_the_check_would_catch_a_violation():
    sample = "state = torch.load(path)\n"
    assert any(p.search(sample) for p, _ in FORBIDDEN)
    assert not any(p.search("torch.load(path, weights_only=True)") for p, _ in FORBIDDEN)
