"""Package attributes loaded on first use (PEP 562), so light commands don't import heavy modules."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, sources: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that imports `package.<sources[name]>` when `name` is first used."""

    def __getattr__(name: str) -> Any:
        source = sources.get(name)
        if source is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{source}"), name)

    return __getattr__
