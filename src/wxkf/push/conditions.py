"""An intent's conditions and how a profile meets them: one definition, evaluated here in Python.

    {"required":  [{"field": "city", "op": "eq", "value": "北京"}],        strict gates: all must hold
     "preferred": [{"field": "tags", "op": "contains", "value": "创业"}],   each one that holds adds to the score
     "keywords":  ["AI", "人工智能"],                                       each one the profile mentions adds
     "excluded":  [{"field": "text", "op": "contains", "value": "中介"}]}   any one that holds rules the profile out

Ops: `eq`, `contains`, `in` (a list), `gt`, `lt`, `between` ([low, high], inclusive). Fields are the
profile's typed columns (`FIELDS`), `text` (everything the profile says), or any other name, which
reads the profile's `attributes`. Text compares case-insensitively; `contains` and keywords *mention*
(`mentions`): a Chinese run must appear as written, a Latin word as a whole word — so 「AI」 matches
"AI 创业者" but not "said". An excluded entry may be a plain string: a word the profile must not
mention.

`wxkf.push.store` narrows candidates in SQL first (`sql_gate`); that is only a pre-filter, every
candidate is decided by `holds` here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Annotated, Any, Literal

from psycopg import sql
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Op = Literal["eq", "contains", "in", "gt", "lt", "between"]
FieldKind = Literal["text", "number", "tags", "all"]

# The typed columns of a profile: name → (kind, the label customers read).
FIELDS: dict[str, tuple[FieldKind, str]] = {
    "name": ("text", "姓名"),
    "gender": ("text", "性别"),
    "age": ("number", "年龄"),
    "city": ("text", "城市"),
    "company": ("text", "公司"),
    "position": ("text", "职位"),
    "industry": ("text", "行业"),
    "education": ("text", "学历"),
    "description": ("text", "简介"),
    "tags": ("tags", "标签"),
    "text": ("all", "资料"),
}
_OP_WORDS = {"eq": "=", "gt": ">", "lt": "<"}
ATTRIBUTE_NAME = re.compile(r"^[^\s'\"\\{}]{1,32}$")
MAX_CONDITIONS = 20
MAX_VALUE_CHARS = 200

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_RUN = re.compile(rf"[{_CJK}]+|[a-z0-9]+")
_CJK_RUN = re.compile(rf"^[{_CJK}]")


def _runs(text: str) -> list[str]:
    return _RUN.findall(text.lower())


class Haystack:
    """A text prepared once for many `mentions` checks (a candidate is checked against every keyword)."""

    def __init__(self, text: str) -> None:
        self.lower = text.lower()
        self.words = frozenset(r for r in _runs(self.lower) if not _CJK_RUN.match(r))


@lru_cache(maxsize=4096)
def _needle(needle: str) -> tuple[tuple[str, bool], ...]:
    return tuple((run, bool(_CJK_RUN.match(run))) for run in _runs(needle))


def mentions(text: str | Haystack, needle: str) -> bool:
    """Whether `text` mentions `needle`: its Chinese runs as substrings, its Latin words as whole words."""
    runs = _needle(needle)
    if not runs:
        return False
    hay = text if isinstance(text, Haystack) else Haystack(text)
    return all(run in hay.lower if cjk else run in hay.words for run, cjk in runs)


def index_terms(text: str) -> set[str]:
    """What the keyword index (`push_profiles.terms`, GIN) holds for `text`: Latin words, Chinese
    characters and adjacent pairs. Whatever `mentions` accepts has all of `needle_terms` in here."""
    terms: set[str] = set()
    for run in _runs(text):
        if _CJK_RUN.match(run):
            terms.update(run)
            terms.update(run[i : i + 2] for i in range(len(run) - 1))
        else:
            terms.add(run)
    return terms


def needle_terms(needle: str) -> list[str]:
    return sorted(index_terms(needle))


def tag_term(tag: str) -> str:
    """The index entry of one whole tag (exact, case-insensitive tag matches use it)."""
    return "tag:" + tag.strip().lower()


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def field_kind(name: str) -> FieldKind | None:
    """The kind of a typed column; None for an attribute (its kind is its value's)."""
    known = FIELDS.get(name)
    return known[0] if known else None


def field_label(name: str) -> str:
    known = FIELDS.get(name)
    return known[1] if known else name


class Condition(BaseModel):
    """One `{field, op, value}` test on a profile."""

    model_config = ConfigDict(extra="forbid")

    field: Annotated[str, Field(min_length=1, max_length=32)]
    op: Op
    value: str | float | list[str] | list[float]

    @field_validator("field")
    @classmethod
    def _field_name(cls, value: str) -> str:
        value = value.strip()
        if value not in FIELDS and not ATTRIBUTE_NAME.match(value):
            raise ValueError(f"字段名无效 / invalid field name {value!r}")
        return value

    @model_validator(mode="after")
    def _value_fits_op(self) -> Condition:
        kind = field_kind(self.field)
        label = field_label(self.field)
        value = self.value
        items = value if isinstance(value, list) else [value]
        if kind in ("text", "tags", "all") and any(_is_number(v) for v in items) and self.op in ("eq", "in"):
            raise ValueError(
                f"「{label}」是文字字段，值须为文字 / {self.field} is a text field: quote the value"
            )
        if self.op in ("gt", "lt"):
            if kind in ("text", "tags", "all") or not _is_number(value):
                raise ValueError(f"「{label}」{self.op} 需要数字字段和数字值 / {self.op} needs a number")
        elif self.op == "between":
            if (
                kind in ("text", "tags", "all")
                or not isinstance(value, list)
                or len(value) != 2
                or not all(_is_number(v) for v in value)
            ):
                raise ValueError(
                    f"「{label}」between 需要两个数字 [下限, 上限] / between needs [low, high] numbers"
                )
            low, high = value
            if float(low) > float(high):
                raise ValueError(f"「{label}」between 的下限大于上限 / low is above high: {value}")
        elif self.op == "in":
            if not isinstance(value, list) or not value or len(value) > 50:
                raise ValueError(f"「{label}」in 需要 1–50 个值的列表 / in needs a list of 1-50 values")
            if kind == "number" and not all(_is_number(v) for v in value):
                raise ValueError(f"「{label}」是数字字段 / {self.field} is a number field")
        else:  # eq, contains
            if isinstance(value, list):
                raise ValueError(f"「{label}」{self.op} 需要单个值 / {self.op} takes one value, not a list")
            if self.op == "contains" and (kind == "number" or not isinstance(value, str)):
                raise ValueError(f"「{label}」contains 需要文字 / contains needs text")
            if self.op == "eq" and kind == "all":
                raise ValueError("「资料」只能用 contains / the field text only supports contains")
            if self.op == "eq" and kind == "number" and not _is_number(value):
                raise ValueError(f"「{label}」是数字字段 / {self.field} is a number field")
            if self.op == "contains" and isinstance(value, str) and not _runs(value):
                raise ValueError(f"「{label}」contains 的值没有文字 / the value has no letters or characters")
        for item in items:
            if isinstance(item, str) and not (0 < len(item.strip()) <= MAX_VALUE_CHARS):
                raise ValueError(
                    f"「{label}」的值须为 1–{MAX_VALUE_CHARS} 个字符 / values are 1-200 characters"
                )
        return self

    def describe(self) -> str:
        """The condition as a customer reads it: 城市 = 北京, 标签包含「创业」, 年龄 25–35."""
        label = field_label(self.field)
        value = self.value
        if self.op == "contains":
            return f"{label}包含「{value}」" if self.field != "text" else f"提到「{value}」"
        if self.op == "in":
            assert isinstance(value, list)
            return f"{label}属于 {'/'.join(_show(v) for v in value)}"
        if self.op == "between":
            assert isinstance(value, list)
            return f"{label} {_show(value[0])}–{_show(value[1])}"
        return f"{label} {_OP_WORDS[self.op]} {_show(value)}"


def _show(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _excluded_entry(value: Any) -> Any:
    """A plain string in `excluded` is a word the profile must not mention."""
    if isinstance(value, str):
        return {"field": "text", "op": "contains", "value": value}
    return value


class Conditions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    required: list[Condition] = Field(default_factory=list, max_length=MAX_CONDITIONS)
    preferred: list[Condition] = Field(default_factory=list, max_length=MAX_CONDITIONS)
    keywords: list[Annotated[str, Field(min_length=1, max_length=50)]] = Field(
        default_factory=list, max_length=MAX_CONDITIONS
    )
    excluded: list[Condition] = Field(default_factory=list, max_length=MAX_CONDITIONS)

    @field_validator("excluded", mode="before")
    @classmethod
    def _plain_words(cls, value: Any) -> Any:
        return [_excluded_entry(v) for v in value] if isinstance(value, list) else value

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, value: list[str]) -> list[str]:
        cleaned = list(dict.fromkeys(k.strip() for k in value if k.strip()))
        for keyword in cleaned:
            if not _runs(keyword):
                raise ValueError(f"关键词没有文字 / the keyword {keyword!r} has no letters or characters")
        return cleaned

    def is_empty(self) -> bool:
        return not (self.required or self.preferred or self.keywords or self.excluded)

    def values_text(self) -> str:
        """The words of the conditions, for the intent's embedding."""
        parts: list[str] = []
        for condition in (*self.required, *self.preferred):
            value = condition.value
            parts.extend(
                str(v) for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)
            )
        return " ".join([*parts, *self.keywords])


@dataclass(frozen=True)
class Profile:
    """What conditions read from a profile."""

    name: str
    fields: Mapping[str, Any] = field(default_factory=dict)  # the typed columns other than name/tags
    tags: Sequence[str] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def value(self, name: str) -> Any:
        if name == "name":
            return self.name
        if name == "tags":
            return list(self.tags)
        if name == "text":
            return self.text.lower
        if name in FIELDS:
            return self.fields.get(name)
        return self.attributes.get(name)

    def all_text(self) -> str:
        """Everything the profile says, in one text (what `text` conditions and keywords read)."""
        values = [self.name, *(str(v) for v in self.fields.values() if v not in (None, ""))]
        values += list(self.tags)
        values += [f"{k} {v}" for k, v in self.attributes.items() if v not in (None, "")]
        return "\n".join(values)

    @cached_property
    def text(self) -> Haystack:
        return Haystack(self.all_text())

    def haystack(self, name: str) -> Haystack:
        """One field's text, prepared for `mentions` (the whole profile for `text`)."""
        if name == "text":
            return self.text
        cache: dict[str, Haystack] = self.__dict__.setdefault("_haystacks", {})
        if name not in cache:
            cache[name] = Haystack(str(self.value(name)))
        return cache[name]


def _lower(value: Any) -> str:
    return str(value).strip().lower()


def holds(condition: Condition, profile: Profile) -> bool:
    """Whether `profile` meets `condition` (a missing value never does)."""
    actual = profile.value(condition.field)
    if actual is None or actual == "" or actual == []:
        return False
    op, value = condition.op, condition.value
    if isinstance(actual, list):  # tags
        tags = [_lower(t) for t in actual]
        if op == "eq":
            return _lower(value) in tags
        if op == "in":
            assert isinstance(value, list)
            return any(_lower(v) in tags for v in value)
        if op == "contains":
            return any(mentions(t, str(value)) for t in actual)
        return False
    if (
        op in ("gt", "lt", "between")
        or (_is_number(value) and op == "eq")
        or (op == "in" and isinstance(value, list) and value and _is_number(value[0]))
    ):
        number = _number(actual)
        if number is None:
            return False
        if op == "gt":
            return number > float(value)  # type: ignore[arg-type]
        if op == "lt":
            return number < float(value)  # type: ignore[arg-type]
        if op == "between":
            assert isinstance(value, list)
            return float(value[0]) <= number <= float(value[1])
        if op == "eq":
            return number == float(value)  # type: ignore[arg-type]
        assert isinstance(value, list)
        return number in [float(v) for v in value]
    if op == "eq":
        return _lower(actual) == _lower(value)
    if op == "in":
        assert isinstance(value, list)
        return _lower(actual) in {_lower(v) for v in value}
    return mentions(profile.haystack(condition.field), str(value))  # contains


def _number(value: Any) -> float | None:
    if _is_number(value):
        return float(value)
    return None


# --- the SQL pre-filter (a superset of `holds`, narrowing candidates with the indexes) ------------


def sql_gate(
    condition: Condition, key: str, *, exact_only: bool = False
) -> tuple[sql.Composable, dict[str, Any]] | None:
    """A WHERE clause on `push_profiles p` true for every profile `holds` accepts, with its
    parameters named `<key>_…` (so many gates compose into one statement).

    Exact for eq / in / gt / lt / between on typed columns and numeric attributes; `contains` only
    narrows by the keyword index (a superset), so with `exact_only` (for excluded conditions, which
    are negated) it gives None: decided in Python only.
    """
    op, value = condition.op, condition.value
    name = condition.field
    kind = field_kind(name)

    def param(suffix: str, item: Any) -> sql.Placeholder:
        params[f"{key}_{suffix}"] = item
        return sql.Placeholder(f"{key}_{suffix}")

    params: dict[str, Any] = {}
    if op == "contains":
        if exact_only:
            return None
        return sql.SQL("p.terms @> {}::text[]").format(param("t", needle_terms(str(value)))), params
    if kind == "tags":
        if op == "eq":
            return sql.SQL("p.terms @> {}::text[]").format(param("t", [tag_term(str(value))])), params
        if op == "in":
            assert isinstance(value, list)
            return sql.SQL("p.terms && {}::text[]").format(
                param("t", [tag_term(str(v)) for v in value])
            ), params
        return sql.SQL("false"), params
    numeric = (
        op in ("gt", "lt", "between")
        or _is_number(value)
        or (isinstance(value, list) and bool(value) and _is_number(value[0]))
    )
    column: sql.Composable
    if kind == "number":
        # An integer column compared with integers, as written: the planner reads its statistics
        # (a cast to float8 would hide them, and its estimate would choose the wrong search).
        return _integer_gate(sql.SQL("p.{}").format(sql.Identifier(name)), op, value, param), params
    if kind is None and numeric:
        attr = param("k", name)
        column = sql.SQL(
            "(CASE WHEN jsonb_typeof(p.attributes -> {a}) = 'number' THEN (p.attributes ->> {a})::float8 END)"
        ).format(a=attr)
        if op == "gt":
            return sql.SQL("{} > {}").format(column, param("v", float(value))), params  # type: ignore[arg-type]
        if op == "lt":
            return sql.SQL("{} < {}").format(column, param("v", float(value))), params  # type: ignore[arg-type]
        if op == "between":
            assert isinstance(value, list)
            low, high = param("lo", float(value[0])), param("hi", float(value[1]))
            return sql.SQL("{} BETWEEN {} AND {}").format(column, low, high), params
        if op == "eq":
            return sql.SQL("{} = {}").format(column, param("v", float(value))), params  # type: ignore[arg-type]
        assert isinstance(value, list)
        return sql.SQL("{} = ANY({}::float8[])").format(column, param("v", [float(v) for v in value])), params
    if kind == "text":
        column = sql.SQL("lower(p.{})").format(sql.Identifier(name))
    else:  # a text attribute
        column = sql.SQL("lower(p.attributes ->> {})").format(param("k", name))
    if op == "eq":
        return sql.SQL("{} = {}").format(column, param("v", _lower(value))), params
    assert isinstance(value, list)
    return sql.SQL("{} = ANY({}::text[])").format(column, param("v", [_lower(v) for v in value])), params


def _integer_gate(column: sql.Composable, op: str, value: Any, param: Any) -> sql.Composable:
    """`holds` on an integer column, with integer bounds: age > 30.5 is age > 30, between [25.5, 40]
    is 26..40, eq 30.5 holds for nobody."""
    if op == "gt":
        return sql.SQL("{} > {}").format(column, param("v", math.floor(float(value))))
    if op == "lt":
        return sql.SQL("{} < {}").format(column, param("v", math.ceil(float(value))))
    if op == "between":
        low, high = math.ceil(float(value[0])), math.floor(float(value[1]))
        return sql.SQL("{} BETWEEN {} AND {}").format(column, param("lo", low), param("hi", high))
    values = [int(float(v)) for v in (value if isinstance(value, list) else [value]) if float(v).is_integer()]
    if not values:
        return sql.SQL("false")
    return sql.SQL("{} = ANY({}::int[])").format(column, param("v", values))


def sql_gates(conditions: Conditions) -> tuple[sql.Composable, dict[str, Any]]:
    """The pre-filter of all required and (exact) excluded conditions, ANDed; `true` when none."""
    clauses: list[sql.Composable] = []
    params: dict[str, Any] = {}
    for index, condition in enumerate(conditions.required):
        gate = sql_gate(condition, f"r{index}")
        if gate is not None:
            # As written, so the planner sees the column (its index, its statistics); NULL fails a WHERE.
            clauses.append(sql.SQL("({})").format(gate[0]))
            params.update(gate[1])
    for index, condition in enumerate(conditions.excluded):
        gate = sql_gate(condition, f"x{index}", exact_only=True)
        if gate is not None:
            clauses.append(sql.SQL("({}) IS NOT TRUE").format(gate[0]))  # a missing value excludes nothing
            params.update(gate[1])
    if not clauses:
        return sql.SQL("true"), params
    return sql.SQL(" AND ").join(clauses), params


_SHORTHAND = re.compile(r"^\s*([^=~<>\s]+)\s*(=|~|>|<)\s*(.+?)\s*$")


def parse_condition(text: str) -> Condition:
    """`city=北京`, `city=北京|上海` (in), `tags~创业` (contains), `age>30`, `age<40`, `age=25..35` (between)."""
    match = _SHORTHAND.match(text)
    if match is None:
        raise ValueError(
            f"条件写法：字段=值、字段~包含、字段>数字、字段<数字、字段=低..高、字段=甲|乙 / write conditions as "
            f"field=value, field~text, field>n, field<n, field=a..b or field=a|b; got {text!r}"
        )
    name, sign, raw = match.groups()

    def typed(value: str) -> str | float:
        try:
            return float(value) if field_kind(name) in ("number", None) else value
        except ValueError:
            return value

    data: dict[str, Any]
    if sign == "~":
        data = {"field": name, "op": "contains", "value": raw}
    elif sign in "<>":
        data = {"field": name, "op": "gt" if sign == ">" else "lt", "value": typed(raw)}
    elif ".." in raw:
        low, _, high = raw.partition("..")
        data = {"field": name, "op": "between", "value": [typed(low.strip()), typed(high.strip())]}
    elif "|" in raw:
        data = {"field": name, "op": "in", "value": [typed(v.strip()) for v in raw.split("|") if v.strip()]}
    else:
        data = {"field": name, "op": "eq", "value": typed(raw)}
    return Condition.model_validate(data)
