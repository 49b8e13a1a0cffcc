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


class PushError(Exception):
    """A push operation failed; nothing was changed."""


class InvalidInput(PushError):
    def __init__(self, problems: list[str], title: str = "输入无效 / invalid input") -> None:
        self.problems = problems
        super().__init__(title + ":\n" + "\n".join(f"  - {p}" for p in problems))


class TemplateError(InvalidInput):
    pass


class ImportRefused(PushError):
    def __init__(self, problems: list[str], rows: int) -> None:
        self.problems = problems
        super().__init__(
            f"导入被拒绝：{len(problems)} 行有错误，未导入任何资料 / import refused: {len(problems)} bad "
            f"row(s) of {rows}, nothing was imported:\n" + "\n".join(f"  - {p}" for p in problems)
        )


class NotFound(PushError):
    pass


class ExtractionError(PushError):
    pass


def problems_of(error: ValidationError) -> list[str]:
    """pydantic's errors as `field: message` lines, with our own (Chinese-first) messages as written."""
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "输入 / input"
        lines.append(f"{where}: {str(item['msg']).removeprefix('Value error, ')}")
    return lines


M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], data: Any) -> M:
    """`model.model_validate(data)`, raising `InvalidInput` with readable lines."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(problems_of(exc)) from None
