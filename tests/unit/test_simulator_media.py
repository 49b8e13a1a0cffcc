"""The simulator's mini-program cards and media uploads, as WeCom checks them (wecom-api §4, §8)."""

from __future__ import annotations

from typing import Any

import pytest

from wxkf.simulator import SimError, World, seed_world

PNG = b"\x89PNG\r\n\x1a\n" + bytes(32)


@pytest.fixture
def world() -> World:
    w = seed_world(seed=7, customers=1)
    w.clock.freeze()
    kfid = next(iter(w.accounts))
    customer = next(iter(w.customers))
    w.customer_sends(kfid, customer, "text", {"content": "你好"})  # opens the 48 h window
    return w


def card(world: World, **body: Any) -> str:
    kfid, customer = next(iter(world.accounts)), next(iter(world.customers))
    return world.send_msg(
        {"open_kfid": kfid, "touser": customer, "msgtype": "miniprogram", "miniprogram": body}
    )


def errcode(world: World, **body: Any) -> int:
    with pytest.raises(SimError) as info:
        card(world, **body)
    return info.value.errcode


def test_a_card_needs_an_uploaded_image_thumb_that_has_not_expired(world: World) -> None:
    thumb = world.media_upload("image", "cover.png", "image/png", PNG).media_id
    base = {"appid": "wx8bd80126147dfAAA", "pagepath": "pages/index", "title": "新匹配"}
    assert errcode(world, **base) == 40058  # §4: thumb_media_id is required
    assert errcode(world, **{**base, "thumb_media_id": "3unknown"}) == 40007
    voice = world.media_upload("voice", "a.amr", "audio/amr", b"#!AMR\n" + bytes(8)).media_id
    assert errcode(world, **{**base, "thumb_media_id": voice}) == 40007  # a thumb is an image
    assert card(world, **base, thumb_media_id=thumb)
    world.clock.advance(3 * 86400 + 1)  # §8: media_id仅三天内有效
    kfid, customer = next(iter(world.accounts)), next(iter(world.customers))
    world.customer_sends(kfid, customer, "text", {"content": "还在吗"})  # a fresh window
    assert errcode(world, **base, thumb_media_id=thumb) == 40007


def test_a_long_title_is_cut_at_64_bytes_not_refused(world: World) -> None:
    thumb = world.media_upload("image", "cover.png", "image/png", PNG).media_id
    card(world, appid="wx1", pagepath="p", thumb_media_id=thumb, title="匹配" * 20)
    received = next(iter(world.customers.values())).received[-1]
    assert received["miniprogram"]["title"] == "匹配" * 10 + "匹"  # 21 characters, 63 bytes


def test_an_image_upload_must_be_jpg_or_png(world: World) -> None:
    with pytest.raises(SimError) as info:
        world.media_upload("image", "a.gif", "image/gif", b"GIF89a" + bytes(16))
    assert info.value.errcode == 40004  # §8: 图片（image）支持JPG,PNG格式
    assert world.media_upload("image", "a.jpg", "image/jpeg", b"\xff\xd8\xff" + bytes(16)).type == "image"
