"""One way to the database: only the migrations import SQLAlchemy.

Every package queries through the process's psycopg pool (`wxkf.db.engine.Database.pool`), with
named SQL constants. SQLAlchemy stays as the connection Alembic runs on (`wxkf.db.migrate` and the
migration scripts); an import of it anywhere else would be a second way, with connections outside
the pool and the connection budget.
"""

from __future__ import annotations

import ast
from pathlib import Path

import wxkf

PACKAGE = Path(wxkf.__file__).parent
ALLOWED = {PACKAGE / "db" / "migrate.py"}
ALLOWED_UNDER = PACKAGE / "db" / "migrations"


def sqlalchemy_imports(tree: ast.AST) -> list[int]:
    """The line numbers of `import sqlalchemy…` and `from sqlalchemy… import …` in a module."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if any(name == "sqlalchemy" or name.startswith("sqlalchemy.") for name in names):
            lines.append(node.lineno)
    return sorted(lines)


def test_the_finder_sees_every_form_of_import() -> None:
    source = (
        "import sqlalchemy\nimport os, sqlalchemy.exc\nfrom sqlalchemy import text\n"
        "from sqlalchemy.ext.asyncio import AsyncEngine\n"
        "def later():\n    import sqlalchemy as sa\n"
        "import sqlalchemy_utils\nfrom . import sqlalchemy\n"
    )
    assert sqlalchemy_imports(ast.parse(source)) == [1, 2, 3, 4, 6]


def test_only_the_migrations_import_sqlalchemy() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert PACKAGE / "agent" / "kb" / "store.py" in modules  # the walk sees the whole package
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for path in modules
        if path not in ALLOWED and not path.is_relative_to(ALLOWED_UNDER)
        for line in sqlalchemy_imports(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    ]
    assert offenders == [], "SQLAlchemy outside the migrations; query through Database.pool instead"
    # The migrations do import it: the allowance is not for files that do not exist.
    assert sqlalchemy_imports(ast.parse((PACKAGE / "db" / "migrate.py").read_text(encoding="utf-8")))
