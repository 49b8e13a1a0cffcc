"""The callback route's query reader agrees with Starlette's on every query string."""

from __future__ import annotations

from urllib.parse import urlencode

from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import QueryParams
from starlette.requests import Request

from wxkf.kf.callback import _query

NAMES = ("msg_signature", "timestamp", "nonce", "echostr")
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)


def read(query_string: bytes, names: tuple[str, ...]) -> list[str]:
    return _query(Request({"type": "http", "query_string": query_string, "headers": []}), *names)


@given(st.lists(st.tuples(st.sampled_from(NAMES) | text, text), max_size=6))
def test_encoded_pairs_read_as_starlette_reads_them(pairs: list[tuple[str, str]]) -> None:
    query = urlencode(pairs)
    expected = QueryParams(query)
    assert read(query.encode(), NAMES) == [expected.get(name, "") for name in NAMES]


@given(st.text(st.sampled_from("ab=&%+2F3Dx"), max_size=20))
def test_raw_strings_read_as_starlette_reads_them(query: str) -> None:
    expected = QueryParams(query)
    # Raw and decoded names both: a key like "a%3D" is looked up as Starlette decodes it.
    names = (*{part.partition("=")[0] for part in query.split("&")}, *expected.keys(), "a", "b")
    assert read(query.encode(), names) == [expected.get(name, "") for name in names]


def test_a_base64_echostr_is_decoded() -> None:
    assert read(b"echostr=ab%2Bc%2Fd%3D%3D&nonce=1", ("echostr", "nonce", "missing")) == ["ab+c/d==", "1", ""]
