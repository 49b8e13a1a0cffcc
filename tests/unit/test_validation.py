"""pydantic's validation errors worded Chinese first, English beside, by `type` and `ctx`."""

from __future__ import annotations

import re
from enum import Enum
from typing import Any, Literal

import pytest
from pydantic import AnyUrl, BaseModel, ConfigDict, Field, ValidationError, field_validator

from wxkf.validation import worded

CJK = re.compile(r"[\u3400-\u9fff]")


class Colour(Enum):
    red = "red"
    blue = "blue"


class Form(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("ok", min_length=2, max_length=4)
    age: int = 0
    ratio: float = 0.0
    enabled: bool = False
    threshold: float = Field(0.5, ge=0, le=1)
    count: int = Field(1, gt=0, lt=10)
    policy: Literal["respect", "end"] = "end"
    colour: Colour = Colour.red
    tags: list[str] = Field(default_factory=lambda: ["a"], min_length=1, max_length=2)
    site: AnyUrl | None = None
    city: str = ""
    nested: dict[str, int] = Field(default_factory=dict)

    @field_validator("city")
    @classmethod
    def known_city(cls, value: str) -> str:
        if value == "火星":
            raise ValueError("「火星」不是城市 / not a city")
        if value == "moon":
            raise ValueError("not a city")
        return value


class Required(BaseModel):
    appid: str


def _one(data: dict[str, Any], model: type[BaseModel] = Form) -> dict[str, Any]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    errors = info.value.errors()
    assert len(errors) == 1, errors
    return dict(errors[0])


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"age": "x"}, "age: 须为整数 / Input should be a valid integer"),
        ({"age": 1.5}, "age: 须为整数，不能带小数 / Input should be a valid integer"),
        ({"ratio": "y"}, "ratio: 须为数字 / Input should be a valid number"),
        ({"enabled": "maybe"}, "enabled: 须为 true 或 false（是/否） / Input should be a valid boolean"),
        ({"threshold": 2}, "threshold: 须小于或等于 1 / Input should be less than or equal to 1"),
        ({"threshold": -0.5}, "threshold: 须大于或等于 0 / Input should be greater than or equal to 0"),
        ({"count": 10}, "count: 须小于 10 / Input should be less than 10"),
        ({"count": 0}, "count: 须大于 0 / Input should be greater than 0"),
        ({"policy": "x"}, "policy: 只能是以下之一：'respect'、'end' / Input should be 'respect' or 'end'"),
        ({"colour": "green"}, "colour: 只能是以下之一：'red'、'blue' / Input should be 'red' or 'blue'"),
        ({"name": "a"}, "name: 至少 2 个字符 / String should have at least 2 characters"),
        ({"name": "abcde"}, "name: 最多 4 个字符 / String should have at most 4 characters"),
        ({"tags": []}, "tags: 至少需要 1 项 / List should have at least 1 item"),
        ({"tags": ["a", "b", "c"]}, "tags: 最多 2 项 / List should have at most 2 items"),
        ({"site": "not a url"}, "site: 不是有效的网址 / Input should be a valid URL"),
        ({"extra": 1}, "extra: 不认识的字段，请删除或检查拼写 / Extra inputs are not permitted"),
        ({"nested": {"a": "b"}}, "nested.a: 须为整数 / Input should be a valid integer"),
        ({"name": 3}, "name: 须为文本 / Input should be a valid string"),
    ],
)
def test_each_type_is_worded_chinese_first_with_the_english_beside(
    data: dict[str, Any], expected: str
) -> None:
    assert worded(_one(data)).startswith(expected)


def test_a_missing_field_says_it_is_required() -> None:
    assert worded(_one({}, Required)) == "appid: 必填，请补上 / Field required"


def test_our_own_messages_are_kept_as_written() -> None:
    assert worded(_one({"city": "火星"})) == "city: 「火星」不是城市 / not a city"


def test_an_english_only_value_error_gets_a_chinese_lead() -> None:
    assert worded(_one({"city": "moon"})) == "city: 取值无效 / not a city"


def test_unreadable_json_says_so_with_the_parsers_reason() -> None:
    with pytest.raises(ValidationError) as info:
        Form.model_validate_json('{"age": ')
    line = worded(dict(info.value.errors()[0]), "请求体 / body")
    assert line.startswith("请求体 / body: 不是有效的 JSON，请检查引号、逗号和括号 / Invalid JSON")
    # FastAPI's own item: a fixed message, the reason in ctx.
    fastapi_item = {
        "type": "json_invalid",
        "loc": ("body", 7),
        "msg": "JSON decode error",
        "ctx": {"error": "Expecting value"},
    }
    assert worded(fastapi_item, "请求体 / body").endswith("/ JSON decode error (Expecting value)")


def test_an_unlisted_type_keeps_pydantics_text_after_a_generic_lead() -> None:
    item = {"type": "uuid_parsing", "loc": ("id",), "msg": "Input should be a valid UUID"}
    assert worded(item) == "id: 输入不符合要求 / Input should be a valid UUID"


def test_the_place_is_the_callers_name_for_it() -> None:
    item = _one({"policy": "x"})
    assert worded(item, "KF_SESSION_POLICY").startswith("KF_SESSION_POLICY: 只能是以下之一")
    assert worded(item, "") == "只能是以下之一：'respect'、'end' / Input should be 'respect' or 'end'"
    assert worded({"type": "missing", "loc": (), "msg": "Field required"}).startswith("输入 / input: 必填")


def test_the_rejected_value_is_never_repeated() -> None:
    secret = "sk-TopSecret-123"
    for data in ({"age": secret}, {"policy": secret}, {"site": secret}, {"tags": secret}, {secret: 1}):
        with pytest.raises(ValidationError) as info:
            Form.model_validate(data)
        for item in info.value.errors():
            line = worded(dict(item), "X")
            assert CJK.search(line.split(": ", 1)[1].split(" / ")[0]), line
            if item["type"] != "extra_forbidden":  # that one is named by its key, the field itself
                assert secret not in line
