"""Customer contact (客户联系, wecom-api §9) and app messages, on top of the `World`.

add_msg_template only creates a task: members confirm it in their WeCom client (here: the control
API's `confirm_group_msg`), and only then do customers receive it, subject to the receive cap.
"""

from __future__ import annotations

from typing import Any

from wxkf.simulator.errors import SimError
from wxkf.simulator.world import GroupMsg, World, _utf8_len

ATTACHMENT_TYPES = frozenset({"image", "link", "miniprogram", "video", "file"})


def external_contact_list(world: World, userid: object) -> list[str]:
    return list(world.member(userid).external_contacts)


def external_contact_get(world: World, external_userid: object) -> dict[str, Any]:
    customer = world.customer(external_userid)
    follow = [m for m in world.members.values() if customer.external_userid in m.external_contacts]
    if not follow:
        raise SimError(84061)  # §9: 不存在外部联系人的关系
    return {
        "external_contact": {
            "external_userid": customer.external_userid,
            "name": customer.nickname,
            "type": 1,
            "gender": customer.gender,
            "unionid": customer.unionid,
        },
        "follow_user": [
            {"userid": m.userid, "remark": "", "description": "", "createtime": 0, "tags": [], "add_way": 1}
            for m in follow
        ],
        "next_cursor": "",
    }


def add_msg_template(world: World, payload: dict[str, Any]) -> dict[str, Any]:
    if payload.get("chat_type", "single") != "single":
        # Only 发送给客户 is simulated; 客户群 sends have no world model here.
        raise SimError(40058, "'chat_type' group is not simulated")
    text = payload.get("text")
    attachments = payload.get("attachments") or []
    if not isinstance(attachments, list):
        raise SimError(40058, "'attachments'")
    if not text and not attachments:
        raise SimError(40058, "text and attachments are both empty")  # §9: 不能同时为空
    if text is not None and (not isinstance(text, dict) or _utf8_len(text.get("content", "")) > 4000):
        raise SimError(45002, "text.content over 4000 bytes")  # §9: 最多4000字节
    if len(attachments) > 9:
        raise SimError(41064)  # §9: 附件最多9个
    for attachment in attachments:
        if not isinstance(attachment, dict) or attachment.get("msgtype") not in ATTACHMENT_TYPES:
            raise SimError(40058, "'attachments.msgtype'")
    sender = payload.get("sender") or ""
    wanted = payload.get("external_userid") or []
    if not isinstance(wanted, list) or len(wanted) > 10_000:
        raise SimError(40058, "'external_userid' up to 10000")  # §9: 最多1万个
    if not sender and not wanted:
        raise SimError(40058, "sender and external_userid are both empty")
    targets: dict[str, list[str]] = {}
    fail_list: list[str] = []
    if sender:
        member = world.member(sender)
        # §9: "只提供sender时相当于选取了这个成员所有的客户".
        for eu in wanted or member.external_contacts:
            if eu in member.external_contacts:
                targets.setdefault(sender, []).append(eu)
            else:
                fail_list.append(eu)
    else:
        for eu in wanted:
            # §9 (2025): "仅会推送给最后跟客户进行聊天互动的企业成员" — the member who added last.
            owners = [m for m in world.members.values() if eu in m.external_contacts]
            if owners:
                targets.setdefault(owners[-1].userid, []).append(eu)
            else:
                fail_list.append(eu)
    if not targets:
        raise SimError(41048)  # §9: 无可发送的客户
    group = GroupMsg(
        msgid="msg" + world.new_id("", 28),
        creator=sender,
        create_time=world.clock.seconds(),
        text=text,
        attachments=attachments,
        targets=targets,
    )
    for userid, eus in targets.items():
        for eu in eus:
            group.results[(userid, eu)] = (0, 0)
    world.group_msgs[group.msgid] = group
    return {"fail_list": fail_list, "msgid": group.msgid}


def group_msg(world: World, msgid: object) -> GroupMsg:
    if not msgid:
        raise SimError(41046)
    found = world.group_msgs.get(msgid) if isinstance(msgid, str) else None
    if found is None:
        raise SimError(41047)
    return found


def confirm_group_msg(world: World, msgid: str, userid: str) -> dict[str, int]:
    """A member confirms the task in the WeCom client (control API): customers receive it now."""
    group = group_msg(world, msgid)
    if group.cancelled:
        raise SimError(41093)
    if userid not in group.targets:
        raise SimError(40003, f"{userid} has no task in {msgid}")
    if userid in group.confirmed:
        raise SimError(40058, f"{userid} already sent {msgid}")
    now = world.clock.now()
    member = world.member(userid)
    behaviour = world.behaviour
    counts = {"sent": 0, "not_friend": 0, "over_cap": 0}
    for eu in group.targets[userid]:
        customer = world.customer(eu)
        recent = [t for t in customer.group_msgs_at if now - t < behaviour.groupmsg_cap_period]
        if eu not in member.external_contacts:
            status, key = 2, "not_friend"  # §9: 因客户不是好友导致发送失败
        elif len(recent) >= behaviour.groupmsg_cap:
            status, key = 3, "over_cap"  # §9: 因客户已经收到其他群发消息导致发送失败
        else:
            status, key = 1, "sent"
            customer.group_msgs_at = [*recent, now]
            customer.received.append(
                {
                    "at": now,
                    "msgid": group.msgid,
                    "msgtype": "group_msg",
                    "sender": userid,
                    "text": group.text,
                    "attachments": group.attachments,
                    "via": "add_msg_template",
                    "delivered": True,
                }
            )
        counts[key] += 1
        group.results[(userid, eu)] = (status, int(now))
    group.confirmed[userid] = int(now)
    return counts


def _page(
    items: list[Any], cursor: object, limit: object, default: int, maximum: int
) -> tuple[list[Any], str]:
    if limit is None:
        limit = default
    if not isinstance(limit, int) or not 0 < limit <= maximum:
        raise SimError(40058, f"'limit' must be 1..{maximum}")
    try:
        start = int(str(cursor)) if cursor else 0
    except (TypeError, ValueError) as exc:
        raise SimError(40058, "'cursor'") from exc
    end = start + limit
    return items[start:end], (str(end) if end < len(items) else "")


def get_groupmsg_list_v2(world: World, payload: dict[str, Any]) -> dict[str, Any]:
    start, end = payload.get("start_time"), payload.get("end_time")
    if not isinstance(start, int) or not isinstance(end, int) or end < start:
        raise SimError(40058, "'start_time'/'end_time'")
    if end - start > 31 * 86400:
        raise SimError(40058, "interval over one month")  # §9: 间隔 ≤ 1个月
    creator = payload.get("creator")
    filter_type = payload.get("filter_type", 2)
    matches = [
        g
        for g in world.group_msgs.values()
        if start <= g.create_time <= end
        and (not creator or g.creator == creator)
        and filter_type in (0, 2)  # API-created tasks are 企业发表 (create_type 0)
    ]
    page, next_cursor = _page(matches, payload.get("cursor"), payload.get("limit"), 50, 100)
    return {
        "next_cursor": next_cursor,
        "group_msg_list": [
            {
                "msgid": g.msgid,
                "creator": g.creator,
                "create_time": str(g.create_time),
                "create_type": 0,
                **({"text": g.text} if g.text else {}),
                "attachments": g.attachments,
            }
            for g in page
        ],
    }


def get_groupmsg_task(world: World, payload: dict[str, Any]) -> dict[str, Any]:
    group = group_msg(world, payload.get("msgid"))
    tasks = [
        {"userid": u, "status": 2 if u in group.confirmed else 0, "send_time": group.confirmed.get(u, 0)}
        for u in group.targets
    ]
    page, next_cursor = _page(tasks, payload.get("cursor"), payload.get("limit"), 500, 1000)
    return {"next_cursor": next_cursor, "task_list": page}


def get_groupmsg_send_result(world: World, payload: dict[str, Any]) -> dict[str, Any]:
    group = group_msg(world, payload.get("msgid"))
    userid = payload.get("userid")
    if userid not in group.targets:
        raise SimError(40003)
    rows = [
        {"external_userid": eu, "userid": u, "status": status, "send_time": sent}
        for (u, eu), (status, sent) in group.results.items()
        if u == userid
    ]
    page, next_cursor = _page(rows, payload.get("cursor"), payload.get("limit"), 500, 1000)
    return {"next_cursor": next_cursor, "send_list": page}


def remind_groupmsg_send(world: World, payload: dict[str, Any]) -> None:
    group = group_msg(world, payload.get("msgid"))
    if group.cancelled:
        raise SimError(41093)
    now = world.clock.now()
    group.reminders = [t for t in group.reminders if now - t < 86400]
    if len(group.reminders) >= world.behaviour.remind_limit:
        raise SimError(41094)  # §9: 24小时内每个群发最多触发三次提醒
    group.reminders.append(now)


def cancel_groupmsg_send(world: World, payload: dict[str, Any]) -> None:
    group_msg(world, payload.get("msgid")).cancelled = True


def app_message_send(world: World, agent_id: int | None, payload: dict[str, Any]) -> dict[str, Any]:
    """message/send: an app message to members (used for staff notifications)."""
    if payload.get("agentid") != agent_id or agent_id is None:
        raise SimError(40056)
    msgtype = payload.get("msgtype")
    if not isinstance(msgtype, str) or not isinstance(payload.get(msgtype), dict):
        raise SimError(40058, "'msgtype'")
    touser = payload.get("touser") or ""
    if not isinstance(touser, str) or not touser:
        raise SimError(40058, "'touser'")
    names = list(world.members) if touser == "@all" else touser.split("|")
    valid = [u for u in names if u in world.members]
    invalid = [u for u in names if u not in world.members]
    if not valid:
        raise SimError(81013)
    msgid = world.next_msgid()
    for userid in valid:
        world.members[userid].app_messages.append(
            {"at": world.clock.now(), "msgid": msgid, "msgtype": msgtype, msgtype: payload[msgtype]}
        )
    return {
        "invaliduser": "|".join(invalid),
        "invalidparty": "",
        "invalidtag": "",
        "unlicenseduser": "",
        "msgid": msgid,
    }
