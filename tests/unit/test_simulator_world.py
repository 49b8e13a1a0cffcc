"""The simulator's world model, rule by rule, without HTTP. Each test names its wecom-api section."""

from __future__ import annotations

from typing import Any

import pytest

from wxkf.simulator import Behaviour, RoutingMode, SimError, World, seed_world
from wxkf.simulator.contact import (
    add_msg_template,
    cancel_groupmsg_send,
    confirm_group_msg,
    get_groupmsg_send_result,
    get_groupmsg_task,
    remind_groupmsg_send,
)

DAY = 86400


@pytest.fixture
def world() -> World:
    w = seed_world(seed=7, customers=3)
    w.clock.freeze()
    return w


def kfid(world: World) -> str:
    return next(iter(world.accounts))


def customer(world: World, n: int = 0) -> str:
    contacts = set(world.members["wangwu"].external_contacts)
    return [c for c in world.customers if c not in contacts][n]


def send(world: World, eu: str, text: str = "好的", **extra: Any) -> str:
    return world.send_msg(
        {"open_kfid": kfid(world), "touser": eu, "msgtype": "text", "text": {"content": text}, **extra}
    )


def errcode(fn: Any, *args: Any) -> int:
    with pytest.raises(SimError) as info:
        fn(*args)
    return info.value.errcode


def sync(world: World, **payload: Any) -> dict[str, Any]:
    return world.sync_msg({"open_kfid": kfid(world), **payload})


# -- §7.4 access_token --------------------------------------------------------------------------


def test_gettoken_returns_the_same_token_until_expiry_then_42001(world: World) -> None:
    """wecom-api §7.4: the same token within its 7200 s lifetime; expired → 42001; a new one after."""
    secret = world.apps["kf"].secret
    token, expires_in = world.gettoken(world.corp_id, secret)
    assert expires_in == 7200
    world.clock.advance(100)
    assert world.gettoken(world.corp_id, secret) == (token, 7100)
    world.clock.advance(7100)
    assert errcode(world.authorize, token, "kf") == 42001
    assert world.gettoken(world.corp_id, secret)[0] != token


def test_invalidated_token_is_42001_and_gettoken_issues_a_new_one(world: World) -> None:
    """wecom-api §7.4: "企业微信可能会出于运营需要，提前使access_token失效"."""
    token, _ = world.gettoken(world.corp_id, world.apps["kf"].secret)
    assert world.invalidate_tokens() == 1
    assert errcode(world.authorize, token, "kf") == 42001
    assert world.gettoken(world.corp_id, world.apps["kf"].secret)[0] != token


def test_wrong_credentials_and_scopes(world: World) -> None:
    """wecom-api §7.2/§9: 40013 corp id, 40001 secret, 41001 missing, 40014 unknown, 48002 scope."""
    assert errcode(world.gettoken, "wwnope", world.apps["kf"].secret) == 40013
    assert errcode(world.gettoken, world.corp_id, "nope") == 40001
    assert errcode(world.authorize, "", "kf") == 41001
    assert errcode(world.authorize, "made-up", "kf") == 40014
    token, _ = world.gettoken(world.corp_id, world.apps["kf"].secret)
    assert errcode(world.authorize, token, "contact") == 48002


# -- §6 session states ------------------------------------------------------------------------


def test_customer_message_moves_state_4_to_0_and_send_moves_0_to_1(world: World) -> None:
    """wecom-api §6: 4 → 0 when the customer writes; §4: an API send assigns to the assistant (0 → 1)."""
    eu = customer(world)
    assert world.service_state_get(kfid(world), eu)["service_state"] == 4
    world.customer_sends(kfid(world), eu, "text", {"content": "在吗"})
    assert world.service_state_get(kfid(world), eu)["service_state"] == 0
    send(world, eu)
    assert world.service_state_get(kfid(world), eu)["service_state"] == 1


@pytest.mark.parametrize(
    ("mode", "servicer_active", "expected"),
    [
        (RoutingMode.API, True, 0),
        (RoutingMode.AI_ONLY, True, 1),
        (RoutingMode.AI_FIRST, True, 1),
        (RoutingMode.HUMAN_FIRST, True, 3),
        (RoutingMode.HUMAN_FIRST, False, 2),
        (RoutingMode.HUMAN_ONLY, True, 3),
    ],
)
def test_routing_mode_decides_the_first_state(
    world: World, mode: RoutingMode, servicer_active: bool, expected: int
) -> None:
    """The admin console's 接待方式 + wecom-api §6: 仅智能助手/智能助手优先 → 1, 人工接待优先 → 3 (or 2 with nobody on duty)."""
    world.accounts[kfid(world)].routing = mode
    if not servicer_active:
        for userid in ("zhangsan", "lisi"):
            world.set_servicer_status(userid, 1)
    eu = customer(world)
    world.customer_sends(kfid(world), eu, "text", {"content": "你好"})
    state = world.service_state_get(kfid(world), eu)
    assert state["service_state"] == expected
    assert bool(state["servicer_userid"]) == (expected == 3)


def test_transitions_outside_the_table_are_95016(world: World) -> None:
    """wecom-api §6: 4 → anything is refused; 3 → 1 is refused ("状态 3 只能转 3 或 4")."""
    eu = customer(world)
    assert errcode(world.service_state_trans, kfid(world), eu, 1, "") == 95016
    world.customer_sends(kfid(world), eu, "text", {"content": "你好"})
    world.service_state_trans(kfid(world), eu, 3, "zhangsan")
    assert errcode(world.service_state_trans, kfid(world), eu, 1, "") == 95016
    world.behaviour.transitions = {**world.behaviour.transitions, 3: [1, 3, 4]}
    world.service_state_trans(kfid(world), eu, 1, "")  # configurable, as the spec marks it UNCONFIRMED


def test_state_3_needs_an_active_servicer(world: World) -> None:
    """wecom-api §6: not a servicer (or not activated) → 95014; 停止接待/暂时挂起 → 95019."""
    eu = customer(world)
    world.customer_sends(kfid(world), eu, "text", {"content": "你好"})
    assert errcode(world.service_state_trans, kfid(world), eu, 3, "wangwu") == 95014
    assert errcode(world.service_state_trans, kfid(world), eu, 3, "") == 95014
    world.members["lisi"].activated = False
    assert errcode(world.service_state_trans, kfid(world), eu, 3, "lisi") == 95014
    world.set_servicer_status("zhangsan", 1, stop_type=1)
    assert errcode(world.service_state_trans, kfid(world), eu, 3, "zhangsan") == 95019


def test_msg_code_on_first_move_to_2_and_3_and_on_4(world: World) -> None:
    """wecom-api §6: msg_code "将会话初次变更为service_state为2和3时…为4时，返回结束语code"."""
    eu = customer(world)
    world.customer_sends(kfid(world), eu, "text", {"content": "你好"})
    assert world.service_state_trans(kfid(world), eu, 2, "")
    assert world.service_state_trans(kfid(world), eu, 2, "") == ""  # not a first change
    assert world.service_state_trans(kfid(world), eu, 3, "zhangsan")
    assert world.service_state_trans(kfid(world), eu, 3, "lisi") == ""
    end_code = world.service_state_trans(kfid(world), eu, 4, "")
    assert end_code
    # §5: the end code answers once, in state 4, within 20 s.
    world.send_msg_on_event({"code": end_code, "msgtype": "text", "text": {"content": "感谢咨询"}})
    assert world.customers[eu].received[-1]["via"] == "end"


# -- §4 send rules ------------------------------------------------------------------------------


def test_send_in_states_2_3_4_is_95018(world: World) -> None:
    """wecom-api §4: only 新接入待处理 (0) and 由智能助手接待 (1) may be sent to."""
    eu = customer(world)
    assert errcode(send, world, eu) == 95018  # state 4
    world.customer_sends(kfid(world), eu, "text", {"content": "你好"})
    world.service_state_trans(kfid(world), eu, 3, "zhangsan")
    assert errcode(send, world, eu) == 95018
    world.force_state(kfid(world), eu, 2)
    assert errcode(send, world, eu) == 95018


def test_sixth_message_is_95001_and_a_customer_message_resets_the_budget(world: World) -> None:
    """wecom-api §4: 5 messages per customer message; "若用户继续发送消息，企业可再次下发消息"."""
    eu = customer(world)
    world.customer_sends(kfid(world), eu, "text", {"content": "你好"})
    for n in range(5):
        send(world, eu, f"第{n}条")
    assert errcode(send, world, eu) == 95001
    world.customer_sends(kfid(world), eu, "text", {"content": "还有问题"})
    send(world, eu)


@pytest.mark.parametrize("window_errcode", [95018, 95002])
def test_48h_window_errcode_is_configurable(world: World, window_errcode: int) -> None:
    """wecom-api §4: outside 48 h → 95018 by default (its official description), 95002 optional."""
    world.behaviour.window_errcode = window_errcode
    eu = customer(world)
    world.customer_sends(kfid(world), eu, "text", {"content": "你好"})
    world.clock.advance(48 * 3600 - 1)
    send(world, eu)
    world.clock.advance(2)
    assert errcode(send, world, eu) == window_errcode


def test_content_limits(world: World) -> None:
    """wecom-api §4: text ≤ 2048 bytes; menu ≤ 10 items (95008), known item types (95009)."""
    eu = customer(world)
    world.customer_sends(kfid(world), eu, "text", {"content": "你好"})
    send(world, eu, "字" * 682)  # 2046 bytes
    assert errcode(send, world, eu, "字" * 683) == 45002  # 2049 bytes
    menu = {"type": "click", "click": {"id": "1", "content": "是"}}

    def send_menu(items: list[dict[str, Any]]) -> str:
        body = {"head_content": "请选择", "list": items}
        return world.send_msg({"open_kfid": kfid(world), "touser": eu, "msgtype": "msgmenu", "msgmenu": body})

    assert errcode(send_menu, [menu] * 11) == 95008
    assert errcode(send_menu, [{"type": "button", "button": {}}]) == 95009
    send_menu([menu] * 10)


def test_msgid_is_unique_per_account(world: World) -> None:
    """wecom-api §4: "若指定msgid，开发者需确保客服账号内唯一，否则接口返回错误"."""
    eu, other = customer(world, 0), customer(world, 1)
    for who in (eu, other):
        world.customer_sends(kfid(world), who, "text", {"content": "你好"})
    assert send(world, eu, msgid="reply-1") == "reply-1"
    with pytest.raises(SimError) as info:
        send(world, other, msgid="reply-1")
    assert info.value.errcode == 40058


def test_msg_send_fail_event_with_configured_rate_and_type(world: World) -> None:
    """wecom-api §3/§4: a successful send may later fail: msg_send_fail with fail_type."""
    world.behaviour.msg_send_fail_rate = 1.0
    world.behaviour.msg_send_fail_type = 10
    eu = customer(world)
    world.customer_sends(kfid(world), eu, "text", {"content": "你好"})
    msgid = send(world, eu)
    event = sync(world)["msg_list"][-1]["event"]
    assert event == {
        "open_kfid": kfid(world),
        "event_type": "msg_send_fail",
        "external_userid": eu,
        "fail_msgid": msgid,
        "fail_type": 10,
    }
    assert world.customers[eu].received[-1]["delivered"] is False


# -- §5 event codes -----------------------------------------------------------------------------


def test_welcome_code_lives_20_seconds_and_is_used_once(world: World) -> None:
    """wecom-api §5: welcome_code valid 20 s, one message, text or menu."""
    eu = customer(world)
    code = world.customer_enters(kfid(world), eu, scene="s1")["event"]["welcome_code"]
    text = {"msgtype": "text", "text": {"content": "欢迎"}}
    world.send_msg_on_event({"code": code, **text})
    assert errcode(world.send_msg_on_event, {"code": code, **text}) == 95007
    world.clock.advance(48 * 3600)
    late = world.customer_enters(kfid(world), eu)["event"]["welcome_code"]
    world.clock.advance(21)
    assert errcode(world.send_msg_on_event, {"code": late, **text}) == 95007


def test_no_welcome_code_after_a_recent_message_or_welcome(world: World) -> None:
    """wecom-api §5: "用户在过去48小时里未收过欢迎语，且未向客服发过消息"."""
    eu, other = customer(world, 0), customer(world, 1)
    world.customer_sends(kfid(world), eu, "text", {"content": "你好"})
    assert "welcome_code" not in world.customer_enters(kfid(world), eu)["event"]
    code = world.customer_enters(kfid(world), other)["event"]["welcome_code"]
    world.send_msg_on_event({"code": code, "msgtype": "text", "text": {"content": "欢迎"}})
    world.clock.advance(3600)
    assert "welcome_code" not in world.customer_enters(kfid(world), other)["event"]


# -- §3 sync_msg --------------------------------------------------------------------------------


def test_sync_pages_with_opaque_cursors_and_never_returns_api_sends(world: World) -> None:
    """wecom-api §3: next_cursor/has_more paging, origin 3/4/5 only, "不支持读取通过发送消息接口发送的消息"."""
    eu = customer(world)
    world.customer_enters(kfid(world), eu)
    for n in range(4):
        world.customer_sends(kfid(world), eu, "text", {"content": f"问题{n}"})
    send(world, eu)
    world.servicer_sends(kfid(world), eu, "zhangsan", "我是张三")
    seen: list[dict[str, Any]] = []
    page = sync(world, limit=2)
    seen += page["msg_list"]
    while page["has_more"]:
        page = sync(world, limit=2, cursor=page["next_cursor"])
        seen += page["msg_list"]
    origins = [m["origin"] for m in seen]
    assert origins == [4, 3, 3, 3, 3, 4, 5]  # enter, 4 messages, session_status_change, servicer reply
    assert seen[-1]["servicer_userid"] == "zhangsan"
    assert all(m.get("text", {}).get("content") != "好的" for m in seen)
    assert sync(world, cursor=page["next_cursor"])["msg_list"] == []
    with pytest.raises(SimError) as info:
        sync(world, cursor="not-a-cursor")
    assert info.value.errcode == 40058


def test_sync_limit_is_at_most_1000(world: World) -> None:
    """wecom-api §3: limit "默认值和最大值都为1000"."""
    with pytest.raises(SimError) as info:
        sync(world, limit=1001)
    assert info.value.errcode == 40058
    assert sync(world, limit=1000)["has_more"] == 0


def test_sync_horizon_is_three_days(world: World) -> None:
    """wecom-api §3: "若不填，从3天内最早的消息开始返回"; older messages are gone."""
    eu = customer(world)
    world.customer_sends(kfid(world), eu, "text", {"content": "旧消息"})
    world.clock.advance(3 * DAY + 1)
    world.customer_sends(kfid(world), eu, "text", {"content": "新消息"})
    contents = [m["text"]["content"] for m in sync(world)["msg_list"]]
    assert contents == ["新消息"]


def test_callback_token_is_valid_10_minutes(world: World) -> None:
    """wecom-api §2/§3: the callback Token is valid 10 minutes; after that sync_msg says 95007."""
    tokens: list[str] = []
    world.on_callback = lambda open_kfid, token, at: tokens.append(token)
    world.customer_sends(kfid(world), customer(world), "text", {"content": "你好"})
    assert len(sync(world, token=tokens[0])["msg_list"]) == 1
    world.clock.advance(600)
    with pytest.raises(SimError) as info:
        sync(world, token=tokens[0])
    assert info.value.errcode == 95007


def test_empty_page_with_has_more_is_configurable(world: World) -> None:
    """wecom-api §3: "可能会出现has_more为1，而msg_list为空的情况"; the client must keep pulling."""
    world.behaviour.empty_page_rate = 1.0
    world.customer_sends(kfid(world), customer(world), "text", {"content": "你好"})
    page = sync(world)
    assert page["msg_list"] == []
    assert page["has_more"] == 1
    world.behaviour.empty_page_rate = 0.0
    assert len(sync(world, cursor=page["next_cursor"])["msg_list"]) == 1


def test_servicer_actions_emit_session_status_change(world: World) -> None:
    """wecom-api §3: session_status_change for client actions (1 take, 2 transfer, 3 end, 4 reopen)."""
    eu = customer(world)
    world.accounts[kfid(world)].routing = RoutingMode.HUMAN_FIRST
    world.set_servicer_status("lisi", 1)
    world.set_servicer_status("zhangsan", 1)
    world.customer_sends(kfid(world), eu, "text", {"content": "你好"})  # → pool (2)
    world.set_servicer_status("zhangsan", 0)
    world.set_servicer_status("lisi", 0)
    world.servicer_takes(kfid(world), eu, "zhangsan")
    world.servicer_transfers(kfid(world), eu, "lisi")
    world.servicer_ends(kfid(world), eu)
    world.servicer_sends(kfid(world), eu, "zhangsan", "回访")
    changes = [
        m["event"] for m in sync(world)["msg_list"] if m["msgtype"] == "event" and "change_type" in m["event"]
    ]
    assert [c["change_type"] for c in changes] == [1, 2, 3, 4]
    assert "msg_code" in changes[0]
    assert "msg_code" in changes[2]
    assert changes[1]["old_servicer_userid"] == "zhangsan"
    assert changes[1]["new_servicer_userid"] == "lisi"
    assert world.service_state_get(kfid(world), eu) == {"service_state": 3, "servicer_userid": "zhangsan"}


def test_user_recall_event(world: World) -> None:
    """wecom-api §3: user_recall_msg carries the recalled msgid."""
    eu = customer(world)
    msgid = world.customer_sends(kfid(world), eu, "text", {"content": "发错了"})["msgid"]
    world.customer_recalls(kfid(world), eu, msgid)
    assert sync(world)["msg_list"][-1]["event"]["recall_msgid"] == msgid


# -- §9 customer contact ------------------------------------------------------------------------


def test_add_msg_template_fail_list_confirm_and_receive_cap(world: World) -> None:
    """wecom-api §9: fail_list for non-contacts; sent only after the member confirms; cap → status 3."""
    contacts = list(world.members["wangwu"].external_contacts)
    stranger = customer(world)
    body = {"sender": "wangwu", "external_userid": [*contacts, stranger], "text": {"content": "新品上架"}}
    created = add_msg_template(world, body)
    assert created["fail_list"] == [stranger]
    assert world.customers[contacts[0]].received == []  # not sent before confirmation
    assert confirm_group_msg(world, created["msgid"], "wangwu") == {"sent": 2, "not_friend": 0, "over_cap": 0}
    again = add_msg_template(world, {"sender": "wangwu", "text": {"content": "再来一条"}})
    world.remove_external_contact("wangwu", contacts[1])
    assert confirm_group_msg(world, again["msgid"], "wangwu") == {"sent": 0, "not_friend": 1, "over_cap": 1}
    statuses = {
        r["external_userid"]: r["status"]
        for r in get_groupmsg_send_result(world, {"msgid": again["msgid"], "userid": "wangwu"})["send_list"]
    }
    assert statuses == {contacts[0]: 3, contacts[1]: 2}
    assert get_groupmsg_task(world, {"msgid": again["msgid"]})["task_list"][0]["status"] == 2


def test_add_msg_template_limits(world: World) -> None:
    """wecom-api §9: nobody to send to → 41048; more than 9 attachments → 41064."""
    assert (
        errcode(add_msg_template, world, {"external_userid": [customer(world)], "text": {"content": "x"}})
        == 41048
    )
    attachments = [{"msgtype": "link", "link": {"title": "t", "url": "https://e.x"}}] * 10
    assert errcode(add_msg_template, world, {"sender": "wangwu", "attachments": attachments}) == 41064


def test_reminders_are_capped_at_3_per_24h_and_cancel_stops_the_task(world: World) -> None:
    """wecom-api §9: "24小时内每个群发最多触发三次提醒" → 41094; cancelled → 41093."""
    msgid = add_msg_template(world, {"sender": "wangwu", "text": {"content": "x"}})["msgid"]
    for _ in range(3):
        remind_groupmsg_send(world, {"msgid": msgid})
    assert errcode(remind_groupmsg_send, world, {"msgid": msgid}) == 41094
    world.clock.advance(DAY)
    remind_groupmsg_send(world, {"msgid": msgid})
    cancel_groupmsg_send(world, {"msgid": msgid})
    assert errcode(confirm_group_msg, world, msgid, "wangwu") == 41093


# -- clock and reset ----------------------------------------------------------------------------


def test_clock_advances_and_freezes() -> None:
    """The simulated clock drives every time rule: it freezes, advances, and never goes back."""
    world = World(seed=1, behaviour=Behaviour())
    frozen = world.clock.freeze()
    assert world.clock.now() == frozen
    assert world.clock.advance(30) == frozen + 30
    with pytest.raises(ValueError, match="forward"):
        world.clock.advance(-1)
    assert world.clock.unfreeze() >= frozen + 30


def test_reset_forgets_traffic_but_keeps_the_population(world: World) -> None:
    eu = customer(world)
    world.customer_sends(kfid(world), eu, "text", {"content": "你好"})
    send(world, eu)
    world.reset()
    assert world.customers[eu].received == []
    assert world.service_state_get(kfid(world), eu)["service_state"] == 4
    assert sync(world)["msg_list"] == []
    assert "wangwu" in world.members
