"""The push package's exceptions (messages Chinese first, English beside).

PushError                 a push operation failed; nothing was changed
├── InvalidInput              the input breaks a rule; `problems` has one line per field
│   └── TemplateError             a template names an unknown placeholder (or cannot render)
├── ImportRefused             a profile import with bad rows; `problems` has one line per bad row
├── NotFound                  no such intent, profile, match or template
└── ExtractionError           the LLM's answer could not be read as a profile
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from wxkf.validation import worded


class PushError(Exception):
    """A push operation failed; nothing was changed."""


class InvalidInput(PushError):
    def __init__(self, problems: list[str], title: str = "输入无效 / invalid input") -> None:
        self.problems = problems
        super().__init__(title + ":\n" + "\n".join(f"  - {p}" for p in problems))


class TemplateError(InvalidInput):
    pass


class ImportRefused(PushError):
    """`rows` is how many rows were read, or None when the file itself is refused (its type, its
    encoding, its header) and no row was counted."""

    def __init__(self, problems: list[str], rows: int | None = None) -> None:
        self.problems = problems
        headline = (
            "导入被拒绝，未导入任何资料 / import refused, nothing was imported"
            if rows is None
            else f"导入被拒绝：{len(problems)} 行有错误，未导入任何资料 / import refused: {len(problems)} bad "
            f"row(s) of {rows}, nothing was imported"
        )
        super().__init__(headline + ":\n" + "\n".join(f"  - {p}" for p in problems))


class NotFound(PushError):
    pass


class ExtractionError(PushError):
    pass


def nul_problems(value: Any, where: str = "") -> list[str]:
    """One line per field of `value` (a form, a JSON body, a row: dicts, lists, strings) holding a NUL
    character, named as a path (conditions.required.0.value). PostgreSQL text cannot hold U+0000, so
    it is refused as input rather than by the database halfway through a write."""
    if isinstance(value, str):
        if "\x00" not in value:
            return []
        return [f"{where or '输入 / input'}: 含有 NUL 字符（\\x00），请删除后重试 / contains a NUL character"]
    items: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    found: list[str] = []
    for key, item in items:
        path = (f"{where}.{key}" if where else str(key)).replace("\x00", "\\x00")
        found += nul_problems(item, path) if "\x00" not in str(key) else nul_problems("\x00", path)
    return found


def problems_of(error: ValidationError) -> list[str]:
    """pydantic's errors as `field: 中文 / English` lines, with our own (Chinese-first) messages as written."""
    return [worded(item) for item in error.errors()]


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: Any) -> M:
    """`model.model_validate(data)`, raising `InvalidInput` with readable lines."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(problems_of(exc)) from None


def refuse_nul(value: Any) -> None:
    """Raise `InvalidInput` naming every field of `value` that holds a NUL character."""
    problems = nul_problems(value)
    if problems:
        raise InvalidInput(problems)
