"""`wxkf push intents add` refuses a bad condition with its reason, before anything is opened."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from wxkf.cli import app


@pytest.mark.parametrize(
    ("condition", "reason"),
    [
        ("age>abc", "「年龄」gt 需要数字字段和数字值 / gt needs a number"),
        ("age=40..20", "「年龄」between 的下限大于上限 / low is above high"),
        ("city>3", "「城市」gt 需要数字字段和数字值 / gt needs a number"),
    ],
)
@pytest.mark.parametrize("option", ["--require", "--prefer"])
def test_a_condition_breaking_its_rule_is_refused_with_the_reason(
    condition: str, reason: str, option: str
) -> None:
    result = CliRunner().invoke(
        app,
        ["push", "intents", "add", "wkX", "wmY", "--name", "bad", option, condition],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 2, result.output
    assert f"❌ {option} {condition}: {reason}" in result.output
    assert "errors.pydantic.dev" not in result.output
    assert "Traceback" not in result.output


def test_a_condition_not_in_the_shorthand_shows_how_to_write_one() -> None:
    result = CliRunner().invoke(
        app,
        ["push", "intents", "add", "wkX", "wmY", "--name", "bad", "--require", "city"],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 2, result.output
    assert "❌ --require city: 条件写法" in result.output
