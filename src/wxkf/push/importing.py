"""Profiles from a CSV or JSON Lines file: every row validated, bad rows reported by line, all or nothing.

CSV: a header row, then one profile per row (UTF-8, an Excel BOM is fine). Columns are the profile's
fields — `name` (required), `external_ref`, `gender`, `age`, `city`, `company`, `position`,
`industry`, `education`, `description`, `tags` (separated by ; , 、 or |) — or their Chinese names
(姓名, 编号, 性别, 年龄, 城市, 公司, 职位, 行业, 学历, 简介, 标签). Any other column becomes an attribute
(a number when it reads as one). JSON Lines: one object per line with the same keys; `attributes`
may be an object.

Rows with an `external_ref` already imported update that profile (a new version when something
changed); the others are added. Nothing is written unless every row is valid.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from wxkf.push.errors import ImportRefused, InvalidInput, nul_problems, problems_of
from wxkf.push.models import ProfileIn

Progress = Callable[[int, int], None]  # (rows read, rows in all)
MAX_IMPORT_BYTES = 50 << 20  # an upload (the API, the console)

_ALIASES = {
    "姓名": "name",
    "名字": "name",
    "编号": "external_ref",
    "external_id": "external_ref",
    "id": "external_ref",
    "性别": "gender",
    "年龄": "age",
    "城市": "city",
    "所在地": "city",
    "公司": "company",
    "职位": "position",
    "行业": "industry",
    "学历": "education",
    "简介": "description",
    "描述": "description",
    "标签": "tags",
}
_FIELDS = set(ProfileIn.model_fields) - {"attributes"}
_TAG_SPLIT = re.compile(r"[;,、|，；]")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def _column(name: str) -> str:
    key = name.strip()
    return _ALIASES.get(key, _ALIASES.get(key.lower(), key.lower() if key.lower() in _FIELDS else key))


def _csv_row(header: list[str], values: list[str]) -> dict[str, Any]:
    if len(values) != len(header):
        raise InvalidInput(
            [
                f"有 {len(values)} 列，表头有 {len(header)} 列 / {len(values)} columns, header has {len(header)}"
            ]
        )
    data: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    for column, raw in zip(header, values, strict=True):
        value = raw.strip()
        if not value:
            continue
        if column == "tags":
            data["tags"] = [t.strip() for t in _TAG_SPLIT.split(value) if t.strip()]
        elif column in _FIELDS:
            data[column] = value
        else:
            attributes[column] = (
                (float(value) if "." in value else int(value)) if _NUMBER.match(value) else value
            )
    if attributes:
        data["attributes"] = attributes
    return data


def _csv_problem(error: csv.Error) -> str:
    """csv's own message, or for a field over its limit, the limit in words (the reader stops there)."""
    if "field larger than field limit" in str(error):
        limit = csv.field_size_limit()
        return (
            f"有一个字段超过 {limit} 个字符（表头或某一格过长，或引号未闭合）/ a field is longer than "
            f"{limit} characters (an overlong header or cell, or an unclosed quote)"
        )
    return f"CSV 格式错误 / malformed CSV: {error}"


def _csv_rows(text: str) -> Iterator[tuple[int, dict[str, Any] | InvalidInput]]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = [_column(h) for h in next(reader)]
    except StopIteration:
        return
    except csv.Error as exc:
        raise ImportRefused([f"第 1 行 / line 1: {_csv_problem(exc)}"]) from None
    if "name" not in header:
        raise ImportRefused(["第 1 行 / line 1: 表头缺少 name（姓名）列 / the header has no name column"])
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates:
        raise ImportRefused([f"第 1 行 / line 1: 重复的列 / repeated columns: {', '.join(duplicates)}"])
    while True:
        line = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield line, InvalidInput([_csv_problem(exc)])
            return
        if not any(v.strip() for v in values):
            continue
        try:
            yield line, _csv_row(header, values)
        except InvalidInput as exc:
            yield line, exc


def _jsonl_rows(text: str) -> Iterator[tuple[int, dict[str, Any] | InvalidInput]]:
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
        except ValueError as exc:
            yield line, InvalidInput([f"不是有效的 JSON / not valid JSON: {exc.args[0]}"])
            continue
        if not isinstance(data, dict):
            yield line, InvalidInput(["每行须是一个 JSON 对象 / each line must be a JSON object"])
            continue
        known = {_column(k): v for k, v in data.items()}
        attributes = dict(known.pop("attributes", None) or {})
        attributes.update({k: v for k, v in known.items() if k not in _FIELDS})
        row = {k: v for k, v in known.items() if k in _FIELDS}
        if isinstance(row.get("tags"), str):
            row["tags"] = [t.strip() for t in _TAG_SPLIT.split(row["tags"]) if t.strip()]
        if attributes:
            row["attributes"] = attributes
        yield line, row


def read_profiles(path: Path, *, progress: Progress | None = None) -> list[ProfileIn]:
    """Every row of `path` as a profile; raises `ImportRefused` listing each bad row by line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImportRefused([f"无法读取 {path} / cannot read the file: {exc.strerror}"]) from None
    return parse_profiles(data, path.name, progress=progress)


def parse_profiles(data: bytes, filename: str, *, progress: Progress | None = None) -> list[ProfileIn]:
    """`read_profiles` for bytes already read (an upload); `filename` says the format."""
    suffix = Path(filename).suffix.lower()  # the type first: an .exe is the wrong file, not badly encoded
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise ImportRefused([f"只支持 .csv 和 .jsonl 文件 / only .csv and .jsonl files, not {filename}"])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportRefused(
            [f"{filename} 不是 UTF-8 编码（另存为 UTF-8 CSV）/ the file is not UTF-8"]
        ) from None
    rows = _csv_rows(text) if suffix == ".csv" else _jsonl_rows(text)
    return validate_rows(list(rows), progress=progress)


def validate_rows(
    rows: list[tuple[int, dict[str, Any] | InvalidInput]], *, progress: Progress | None = None
) -> list[ProfileIn]:
    problems: list[str] = []
    profiles: list[ProfileIn] = []
    seen: dict[str, int] = {}
    for done, (line, row) in enumerate(rows, start=1):
        if progress is not None:
            progress(done, len(rows))
        if isinstance(row, InvalidInput):
            problems += [f"第 {line} 行 / line {line}: {p}" for p in row.problems]
            continue
        with_nul = nul_problems(row)
        if with_nul:
            problems += [f"第 {line} 行 / line {line}: {p}" for p in with_nul]
            continue
        try:
            profile = ProfileIn.model_validate(row)
        except ValidationError as exc:
            problems += [f"第 {line} 行 / line {line}: {p}" for p in problems_of(exc)]
            continue
        if profile.external_ref:
            if profile.external_ref in seen:
                problems.append(
                    f"第 {line} 行 / line {line}: 编号 {profile.external_ref} 与第 {seen[profile.external_ref]} 行重复 "
                    f"/ external_ref repeats line {seen[profile.external_ref]}"
                )
                continue
            seen[profile.external_ref] = line
        profiles.append(profile)
    if problems:
        raise ImportRefused(problems, len(rows))
    if not profiles:
        raise ImportRefused(["文件里没有资料 / the file has no rows"])
    return profiles
