"""Every surface builds its knowledge base with `KnowledgeBase.from_settings`, so KB_* settings reach all."""

from __future__ import annotations

import re
from pathlib import Path

import wxkf

SRC = Path(wxkf.__file__).parent
# A direct construction: `KnowledgeBase(` not preceded by a name character (class statements aside).
DIRECT = re.compile(r"(?<![\w.])KnowledgeBase\(")


def test_no_surface_constructs_the_knowledge_base_by_hand() -> None:
    store = SRC / "agent" / "kb" / "store.py"  # the class itself and its docstring's example
    offenders = [
        f"{path.relative_to(SRC)}:{number}"
        for path in sorted(SRC.rglob("*.py"))
        if path != store
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if DIRECT.search(line) and not line.lstrip().startswith("class ")
    ]
    assert offenders == [], "use KnowledgeBase.from_settings(database, settings): " + ", ".join(offenders)
