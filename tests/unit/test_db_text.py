from __future__ import annotations

import json

from wxkf.db.text import db_json, without_nul


def test_every_nul_goes_wherever_it_sits_and_nothing_else_changes() -> None:
    value = {"text\x00": {"content": "运费\x00多少", "list": ["a\x00", 1, None, ("\x00b",)]}, "n": 2.5}
    assert without_nul(value) == {"text": {"content": "运费多少", "list": ["a", 1, None, ["b"]]}, "n": 2.5}
    assert "\\u0000" not in db_json(value)
    assert json.loads(db_json({"backslash": "\\u0000 as typed"})) == {"backslash": "\\u0000 as typed"}
