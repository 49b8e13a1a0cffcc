"""Profile files refused as a whole: the wrong type, the wrong encoding, a field over csv's limit."""

from __future__ import annotations

import pytest

from wxkf.push.errors import ImportRefused
from wxkf.push.importing import parse_profiles


def test_a_field_longer_than_the_csv_field_limit_is_refused_naming_its_line() -> None:
    header = ("x" * 140_000 + "\n").encode()
    with pytest.raises(ImportRefused) as refused:
        parse_profiles(header, "h.csv")
    assert refused.value.problems[0].startswith("第 1 行 / line 1:")
    assert "131072" in refused.value.problems[0]
    in_a_row = ("name,city\n张三,北京\n李四," + "y" * 140_000 + "\n").encode()
    with pytest.raises(ImportRefused) as refused:
        parse_profiles(in_a_row, "people.csv")
    assert [p.split(":")[0] for p in refused.value.problems] == ["第 3 行 / line 3"]


def test_the_file_type_is_checked_before_its_encoding() -> None:
    with pytest.raises(ImportRefused) as refused:
        parse_profiles(b"MZ\x90\x00\xff\xfe binary", "img.exe")
    assert "只支持 .csv 和 .jsonl" in str(refused.value)
    assert "UTF-8" not in str(refused.value)


@pytest.mark.parametrize(
    ("data", "name"), [(b"MZ\x90", "img.exe"), (b"\xff\xfe\x00", "people.csv"), (b"", "empty.csv")]
)
def test_a_refusal_of_the_whole_file_counts_no_rows(data: bytes, name: str) -> None:
    with pytest.raises(ImportRefused) as refused:
        parse_profiles(data, name)
    headline = str(refused.value).split("\n")[0]
    assert "行有错误" not in headline
    assert "row(s) of" not in headline
    assert "未导入任何资料" in headline
    assert "nothing was imported" in headline


def test_bad_rows_are_counted_against_the_rows_read() -> None:
    with pytest.raises(ImportRefused) as refused:
        parse_profiles("name,age\n张三,35\n李四,abc\n".encode(), "people.csv")
    assert "1 行有错误" in str(refused.value)
    assert "1 bad row(s) of 2" in str(refused.value)
