"""Receive-cap windows and message limits (wecom-api §9), without a database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from wxkf.config import SettingsError, load_settings
from wxkf.contact.cap import ReceiveCap
from wxkf.contact.content import (
    MessageContent,
    attachment,
    build_request,
    check_content,
    validate_recipients,
)
from wxkf.contact.errors import InvalidMessageError
from wxkf.wecom.models import TEMPLATE_MAX_EXTERNAL_USERIDS

SH = "Asia/Shanghai"


def test_day_window_is_the_natural_day_in_china_time() -> None:
    # 2026-03-10 17:30 UTC is already 01:30 on 03-11 in Shanghai.
    start, end = ReceiveCap("day", 1, SH).window(datetime(2026, 3, 10, 17, 30, tzinfo=UTC))
    assert start.isoformat() == "2026-03-11T00:00:00+08:00"
    assert end.isoformat() == "2026-03-12T00:00:00+08:00"


def test_week_window_starts_on_monday() -> None:
    start, end = ReceiveCap("week", 7, SH).window(datetime(2026, 3, 12, 4, 0, tzinfo=UTC))  # Thursday
    assert start.isoformat() == "2026-03-09T00:00:00+08:00"
    assert end.isoformat() == "2026-03-16T00:00:00+08:00"


def test_month_window_and_days_in_month_count() -> None:
    cap = ReceiveCap("month", 0, SH)
    start, end = cap.window(datetime(2026, 2, 28, 16, 30, tzinfo=UTC))  # 03-01 00:30 in Shanghai
    assert (start.month, end.month) == (3, 4)
    assert cap.limit(datetime(2026, 2, 10, tzinfo=UTC)) == 28  # wecom-api §9: 当月天数
    assert cap.limit(datetime(2026, 3, 10, tzinfo=UTC)) == 31
    assert ReceiveCap("month", 4, SH).limit(datetime(2026, 3, 10, tzinfo=UTC)) == 4
    assert "当月天数" in cap.describe()


def test_default_cap_is_one_per_day_and_zero_needs_month() -> None:
    settings = load_settings(_env_file=None)
    assert (settings.contact_receive_cap_period, settings.contact_receive_cap_count) == ("day", 1)
    with pytest.raises(SettingsError, match="CONTACT_RECEIVE_CAP_COUNT"):
        load_settings(_env_file=None, contact_receive_cap_count=0)
    with pytest.raises(SettingsError, match="CONTACT_TIMEZONE"):
        load_settings(_env_file=None, contact_timezone="Mars/Olympus")
    staff = load_settings(_env_file=None, contact_staff_userids=" zhangsan, lisi ,,").contact_staff
    assert staff == frozenset({"zhangsan", "lisi"})


def test_text_limit_is_4000_bytes_not_characters() -> None:
    check_content(MessageContent(text="好" * 1333))  # 3999 bytes
    with pytest.raises(InvalidMessageError, match="4000"):
        check_content(MessageContent(text="好" * 1334))


def test_attachments_limits_and_required_fields() -> None:
    image = attachment("image", media_id="M")
    check_content(MessageContent(attachments=(image,) * 9))
    with pytest.raises(InvalidMessageError, match="9"):
        check_content(MessageContent(text="x", attachments=(image,) * 10))
    with pytest.raises(InvalidMessageError, match="url"):
        attachment("link", title="t")
    with pytest.raises(InvalidMessageError, match="media_id"):
        check_content(MessageContent(attachments=(attachment("image"),)))
    with pytest.raises(InvalidMessageError, match="128"):
        check_content(MessageContent(attachments=(attachment("link", title="标" * 43, url="https://u"),)))
    for bad in ("javascript:alert(1)", "ftp://x", "www.example.com"):
        with pytest.raises(InvalidMessageError, match="http://"):
            attachment("link", title="t", url=bad)
    with pytest.raises(InvalidMessageError, match="picurl"):
        attachment("link", title="t", url="https://x", picurl="file:///etc/passwd")
    with pytest.raises(InvalidMessageError, match="voice"):
        attachment("voice", media_id="M")
    with pytest.raises(InvalidMessageError, match="空"):
        check_content(MessageContent(text="  "))
    content = MessageContent("hi", (attachment("link", title="标题", url="https://x"),))
    request = build_request("zhangsan", ["wmA"], content)
    assert request.model_dump(exclude_none=True)["attachments"] == [
        {"msgtype": "link", "link": {"title": "标题", "url": "https://x"}}
    ]
    assert content.describe() == "hi\n[link] 标题"


def test_recipients_are_deduplicated_and_capped_at_ten_thousand() -> None:
    assert validate_recipients(["a", "b", "a", " ", "c"]) == ["a", "b", "c"]
    validate_recipients([f"w{i}" for i in range(TEMPLATE_MAX_EXTERNAL_USERIDS)])
    with pytest.raises(InvalidMessageError, match="10000"):
        validate_recipients([f"w{i}" for i in range(TEMPLATE_MAX_EXTERNAL_USERIDS + 1)])
    with pytest.raises(InvalidMessageError):
        validate_recipients([])
