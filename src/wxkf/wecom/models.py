"""Typed request and response models, one per WeCom API, named after the API.

Requests are checked against the limits the spec documents with `check()`, which the client calls
before anything is sent and which raises `InvalidArgumentError` naming the field. Responses ignore
fields they do not know, so a WeCom addition never breaks a caller; fields the spec marks as
required are required, so an answer without them becomes `MalformedResponseError`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from wxkf.wecom.errors import InvalidArgumentError

# wecom-api §4: msgid "≤32 bytes, [0-9a-zA-Z_-]*"; §8: add_contact_way scene likewise (≤32 bytes).
_ID_RE = re.compile(r"^[0-9a-zA-Z_-]{1,32}$")

KF_TEXT_MAX_BYTES = 2048  # wecom-api §4 / §5: text.content
MENU_MAX_ITEMS = 10  # wecom-api §4: msgmenu list, else 95008
MENU_TEXT_MAX_BYTES = 1024  # wecom-api §4: head_content / tail_content
TEMPLATE_TEXT_MAX_BYTES = 4000  # wecom-api §9: add_msg_template text.content
TEMPLATE_MAX_ATTACHMENTS = 9  # wecom-api §9: attachments, else 41064
TEMPLATE_MAX_EXTERNAL_USERIDS = 10_000  # wecom-api §9
TEMPLATE_MAX_CHATS = 2000  # wecom-api §9
# wecom-api §8 media/upload: larger than 5 bytes, and a cap per type.
MEDIA_MIN_BYTES = 6
MEDIA_MAX_BYTES = {"image": 10 * 2**20, "voice": 2 * 2**20, "video": 10 * 2**20, "file": 20 * 2**20}

MediaKind = Literal["image", "voice", "video", "file"]

# wecom-api §3 (DOC-94699's list): what WeChat customers send through sync_msg (origin 3). `msgmenu`
# is a menu a servicer forwarded; a tapped option comes back as `text` with `menu_id`.
CUSTOMER_MSGTYPES = frozenset(
    {
        "text",
        "image",
        "voice",
        "video",
        "file",
        "location",
        "link",
        "business_card",
        "miniprogram",
        "msgmenu",
        "channels_shop_product",
        "channels_shop_order",
        "merged_msg",
        "channels",
        "meeting",
        "schedule",
        "note",
    }
)


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def check_bytes(api: str, field: str, value: str, limit: int, *, minimum: int = 0) -> None:
    """Refuse `value` when its UTF-8 size is outside [minimum, limit] (WeCom counts bytes, not characters)."""
    size = _utf8_len(value)
    if size > limit:
        raise InvalidArgumentError(
            api, field, f"最多 {limit} 字节，实际 {size} 字节 / at most {limit} bytes (UTF-8), got {size}"
        )
    if size < minimum:
        raise InvalidArgumentError(api, field, f"不能为空 / must not be empty (at least {minimum} bytes)")


def check_id(api: str, field: str, value: str) -> None:
    """msgid / scene: 1–32 bytes of `[0-9a-zA-Z_-]` (wecom-api §4, §8)."""
    if not _ID_RE.match(value):
        raise InvalidArgumentError(
            api,
            field,
            f"只能是 1–32 个字母、数字、_ 或 - / must be 1–32 characters of [0-9a-zA-Z_-], got {value!r}",
        )


def check_count(api: str, field: str, count: int, low: int, high: int) -> None:
    if not low <= count <= high:
        raise InvalidArgumentError(
            api,
            field,
            f"数量须在 {low}–{high} 之间，实际 {count} / must have {low}–{high} items, got {count}",
        )


class WeComModel(BaseModel):
    """Base of every model: unknown response fields are ignored, field names are WeCom's."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class APIResponse(WeComModel):
    errcode: int = 0
    errmsg: str = ""


# --- access_token (wecom-api §7.4) -----------------------------------------------------------------


class GetTokenResponse(APIResponse):
    access_token: str
    expires_in: int


# --- kf/sync_msg (wecom-api §3) ----------------------------------------------------------------------


class SyncMsgRequest(WeComModel):
    open_kfid: str
    cursor: str | None = None
    token: str | None = None
    limit: int = 1000
    voice_format: int | None = None

    def check(self, api: str) -> None:
        check_bytes(api, "open_kfid", self.open_kfid, 64, minimum=1)
        if self.cursor is not None:
            check_bytes(api, "cursor", self.cursor, 64)
        if self.token is not None:
            check_bytes(api, "token", self.token, 128)
        check_count(api, "limit", self.limit, 1, 1000)


class KfEvent(WeComModel):
    """The `event` of a `msgtype: event` item; fields depend on `event_type` (wecom-api §3 event table)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    event_type: str
    open_kfid: str | None = None
    external_userid: str | None = None
    servicer_userid: str | None = None
    welcome_code: str | None = None
    scene: str | None = None
    scene_param: str | None = None
    fail_msgid: str | None = None
    fail_type: int | None = None
    change_type: int | None = None
    msg_code: str | None = None
    recall_msgid: str | None = None
    status: int | None = None
    stop_type: int | None = None
    old_servicer_userid: str | None = None
    new_servicer_userid: str | None = None
    reject_switch: int | None = None


class KfMessage(WeComModel):
    """One `msg_list` item. The body (the object under the key named by `msgtype`) is kept as `body`."""

    msgid: str
    open_kfid: str | None = None  # not returned for msgtype event (identity is inside `event`)
    external_userid: str | None = None
    send_time: int
    origin: int
    servicer_userid: str | None = None
    msgtype: str
    body: dict[str, Any] = Field(default_factory=dict)
    event: KfEvent | None = None

    @model_validator(mode="before")
    @classmethod
    def _lift_body(cls, data: Any) -> Any:
        if isinstance(data, dict) and "body" not in data:
            body = data.get(str(data.get("msgtype")))
            if isinstance(body, dict):
                data = {**data, "body": body}
        return data


class SyncMsgResponse(APIResponse):
    next_cursor: str = ""
    has_more: int = 0
    msg_list: list[KfMessage] = Field(default_factory=list)


# --- kf/send_msg bodies (wecom-api §4) -------------------------------------------------------------


class Text(WeComModel):
    content: str


class Media(WeComModel):
    """image / voice / video / file: a media_id from `upload_media`."""

    media_id: str


class Link(WeComModel):
    title: str
    desc: str | None = None
    url: str
    thumb_media_id: str

    def check(self, api: str) -> None:
        # wecom-api §4: title ≤128 bytes, desc ≤512, url ≤2048 with http(s), an uploaded thumbnail.
        check_bytes(api, "link.title", self.title, 128, minimum=1)
        if self.desc is not None:
            check_bytes(api, "link.desc", self.desc, 512)
        check_bytes(api, "link.url", self.url, 2048, minimum=1)
        if not self.url.startswith(("http://", "https://")):
            raise InvalidArgumentError(
                api, "link.url", "须以 http:// 或 https:// 开头 / must be an http(s) URL"
            )
        check_bytes(api, "link.thumb_media_id", self.thumb_media_id, 256, minimum=1)


class MiniProgram(WeComModel):
    appid: str
    title: str | None = None
    thumb_media_id: str
    pagepath: str

    def check(self, api: str) -> None:
        # wecom-api §4: title ≤64 bytes; appid, pagepath and the uploaded cover are required.
        check_bytes(api, "miniprogram.appid", self.appid, 32, minimum=1)
        if self.title is not None:
            check_bytes(api, "miniprogram.title", self.title, 64)
        check_bytes(api, "miniprogram.pagepath", self.pagepath, 1024, minimum=1)
        check_bytes(api, "miniprogram.thumb_media_id", self.thumb_media_id, 256, minimum=1)


class MenuClick(WeComModel):
    id: str
    content: str


class MenuView(WeComModel):
    url: str
    content: str


class MenuMiniProgram(WeComModel):
    appid: str
    pagepath: str
    content: str


class MenuText(WeComModel):
    content: str
    no_newline: int | None = None


class MenuItem(WeComModel):
    type: Literal["click", "view", "miniprogram", "text"]
    click: MenuClick | None = None
    view: MenuView | None = None
    miniprogram: MenuMiniProgram | None = None
    text: MenuText | None = None

    def check(self, api: str, index: int) -> None:
        field = f"msgmenu.list[{index}]"
        if getattr(self, self.type) is None:
            raise InvalidArgumentError(
                api, field, f"type={self.type} 但缺少 {self.type} 对象 / type {self.type} needs its object"
            )
        # wecom-api §4: item limits (WXJ transcription).
        if self.click is not None:
            check_bytes(api, f"{field}.click.id", self.click.id, 128, minimum=1)
            check_bytes(api, f"{field}.click.content", self.click.content, 128, minimum=1)
        if self.view is not None:
            check_bytes(api, f"{field}.view.url", self.view.url, 2048, minimum=1)
            check_bytes(api, f"{field}.view.content", self.view.content, 1024, minimum=1)
        if self.miniprogram is not None:
            check_bytes(api, f"{field}.miniprogram.appid", self.miniprogram.appid, 32, minimum=1)
            check_bytes(api, f"{field}.miniprogram.pagepath", self.miniprogram.pagepath, 1024, minimum=1)
            check_bytes(api, f"{field}.miniprogram.content", self.miniprogram.content, 1024, minimum=1)
        if self.text is not None:
            check_bytes(api, f"{field}.text.content", self.text.content, 256, minimum=1)


class MsgMenu(WeComModel):
    head_content: str | None = None
    items: list[MenuItem] = Field(default_factory=list, alias="list")
    tail_content: str | None = None

    def check(self, api: str) -> None:
        if len(self.items) > MENU_MAX_ITEMS:
            raise InvalidArgumentError(
                api,
                "msgmenu.list",
                f"菜单项最多 {MENU_MAX_ITEMS} 个，实际 {len(self.items)} 个（否则 95008）/ "
                f"at most {MENU_MAX_ITEMS} menu items, got {len(self.items)} (WeCom answers 95008)",
            )
        for name in ("head_content", "tail_content"):
            value = getattr(self, name)
            if value is not None:
                check_bytes(api, f"msgmenu.{name}", value, MENU_TEXT_MAX_BYTES)
        for index, item in enumerate(self.items):
            item.check(api, index)


class Location(WeComModel):
    latitude: float
    longitude: float
    name: str | None = None
    address: str | None = None

    def check(self, api: str) -> None:
        if not -90 <= self.latitude <= 90:
            raise InvalidArgumentError(api, "location.latitude", "须在 -90~90 / must be within -90..90")
        if not -180 <= self.longitude <= 180:
            raise InvalidArgumentError(api, "location.longitude", "须在 -180~180 / must be within -180..180")


class CaLink(WeComModel):
    link_url: str


KfMsgType = Literal[
    "text", "image", "voice", "video", "file", "link", "miniprogram", "msgmenu", "location", "ca_link"
]
_BODY_FIELDS: tuple[KfMsgType, ...] = (
    "text",
    "image",
    "voice",
    "video",
    "file",
    "link",
    "miniprogram",
    "msgmenu",
    "location",
    "ca_link",
)


def _check_single_body(api: str, model: BaseModel, msgtype: str, fields: tuple[str, ...]) -> None:
    """The body for `msgtype` is present, and no other body is (WeCom reads only one)."""
    if getattr(model, msgtype, None) is None:
        raise InvalidArgumentError(api, msgtype, f"msgtype={msgtype} 需要 {msgtype} 对象 / needs a body")
    extra = [name for name in fields if name != msgtype and getattr(model, name, None) is not None]
    if extra:
        raise InvalidArgumentError(
            api, ",".join(extra), f"与 msgtype={msgtype} 不符 / bodies other than {msgtype} are not allowed"
        )


def _check_text(api: str, text: Text | None) -> None:
    if text is not None:
        check_bytes(api, "text.content", text.content, KF_TEXT_MAX_BYTES, minimum=1)


class SendMsgRequest(WeComModel):
    """kf/send_msg: one message to a WeChat customer (wecom-api §4)."""

    touser: str
    open_kfid: str
    msgid: str | None = None
    msgtype: KfMsgType
    text: Text | None = None
    image: Media | None = None
    voice: Media | None = None
    video: Media | None = None
    file: Media | None = None
    link: Link | None = None
    miniprogram: MiniProgram | None = None
    msgmenu: MsgMenu | None = None
    location: Location | None = None
    ca_link: CaLink | None = None

    def check(self, api: str) -> None:
        if self.msgid is not None:
            check_id(api, "msgid", self.msgid)
        _check_single_body(api, self, self.msgtype, _BODY_FIELDS)
        _check_text(api, self.text)
        for kind in ("image", "voice", "video", "file"):
            media = getattr(self, kind)
            if media is not None:
                check_bytes(api, f"{kind}.media_id", media.media_id, 256, minimum=1)
        for body in (self.msgmenu, self.location, self.link, self.miniprogram):
            if body is not None:
                body.check(api)
        if self.ca_link is not None:
            check_bytes(api, "ca_link.link_url", self.ca_link.link_url, 2048, minimum=1)


class SendMsgResponse(APIResponse):
    msgid: str = ""


class SendMsgOnEventRequest(WeComModel):
    """kf/send_msg_on_event: a welcome / queue / closing message against an event code (wecom-api §5)."""

    code: str
    msgid: str | None = None
    msgtype: Literal["text", "msgmenu"]
    text: Text | None = None
    msgmenu: MsgMenu | None = None

    def check(self, api: str) -> None:
        check_bytes(api, "code", self.code, 1024, minimum=1)
        if self.msgid is not None:
            check_id(api, "msgid", self.msgid)
        _check_single_body(api, self, self.msgtype, ("text", "msgmenu"))
        _check_text(api, self.text)
        if self.msgmenu is not None:
            self.msgmenu.check(api)


# --- kf/service_state (wecom-api §6) -------------------------------------------------------------------


class ServiceStateGetResponse(APIResponse):
    service_state: int
    servicer_userid: str = ""


class ServiceStateTransRequest(WeComModel):
    open_kfid: str
    external_userid: str
    service_state: int
    servicer_userid: str | None = None

    def check(self, api: str) -> None:
        if self.service_state not in (0, 1, 2, 3, 4):
            raise InvalidArgumentError(api, "service_state", "须为 0–4 / must be 0..4")
        if self.service_state == 3 and not self.servicer_userid:
            # wecom-api §6: "当state=3时要求必填"
            raise InvalidArgumentError(
                api, "servicer_userid", "转人工（3）必须指定接待人员 / state 3 needs a servicer_userid"
            )


class ServiceStateTransResponse(APIResponse):
    msg_code: str = ""


# --- other kf APIs (wecom-api §8) --------------------------------------------------------------------


class KfAccount(WeComModel):
    open_kfid: str
    name: str = ""
    avatar: str = ""
    manage_privilege: bool = False


class AccountListResponse(APIResponse):
    account_list: list[KfAccount] = Field(default_factory=list)


class Servicer(WeComModel):
    """A servicer is a member (`userid`) or a whole department (`department_id`)."""

    userid: str | None = None
    department_id: int | None = None
    status: int | None = None  # 0 接待中 1 停止接待
    stop_type: int | None = None  # 0 停止接待 1 暂时挂起


class ServicerListResponse(APIResponse):
    servicer_list: list[Servicer] = Field(default_factory=list)


class KfCustomer(WeComModel):
    external_userid: str
    nickname: str = ""
    avatar: str = ""
    gender: int = 0
    unionid: str = ""
    enter_session_context: dict[str, Any] | None = None


class CustomerBatchGetResponse(APIResponse):
    customer_list: list[KfCustomer] = Field(default_factory=list)
    invalid_external_userid: list[str] = Field(default_factory=list)


class AddContactWayResponse(APIResponse):
    url: str


class UpgradeMember(WeComModel):
    userid: str
    wording: str | None = None


class UpgradeGroupChat(WeComModel):
    chat_id: str
    wording: str | None = None


class UpgradeServiceRequest(WeComModel):
    """kf/customer/upgrade_service: type 1 a staff member (专员), type 2 a customer group (客户群)."""

    open_kfid: str
    external_userid: str
    type: Literal[1, 2]
    member: UpgradeMember | None = None
    groupchat: UpgradeGroupChat | None = None

    def check(self, api: str) -> None:
        check_bytes(api, "open_kfid", self.open_kfid, 64, minimum=1)
        check_bytes(api, "external_userid", self.external_userid, 64, minimum=1)
        if self.type == 1:
            if self.member is None or self.groupchat is not None:
                raise InvalidArgumentError(
                    api, "member", "type=1 需要 member，且不能带 groupchat / type 1 needs member only"
                )
            check_bytes(api, "member.userid", self.member.userid, 64, minimum=1)
        else:
            if self.groupchat is None or self.member is not None:
                raise InvalidArgumentError(
                    api, "groupchat", "type=2 需要 groupchat，且不能带 member / type 2 needs groupchat only"
                )
            check_bytes(api, "groupchat.chat_id", self.groupchat.chat_id, 64, minimum=1)


class UpgradeMemberRange(WeComModel):
    userid_list: list[str] = Field(default_factory=list)
    department_id_list: list[int] = Field(default_factory=list)


class UpgradeGroupChatRange(WeComModel):
    chat_id_list: list[str] = Field(default_factory=list)


class UpgradeServiceConfigResponse(APIResponse):
    member_range: UpgradeMemberRange = Field(default_factory=UpgradeMemberRange)
    groupchat_range: UpgradeGroupChatRange = Field(default_factory=UpgradeGroupChatRange)


class MediaUploadResponse(APIResponse):
    type: str = ""
    media_id: str
    created_at: int = 0  # wecom-api §8: sent as a string; read as unix seconds


class AppMessageSendResponse(APIResponse):
    """message/send: ids WeCom could not deliver to, '|'-separated."""

    invaliduser: str = ""
    invalidparty: str = ""
    invalidtag: str = ""
    unlicenseduser: str = ""
    msgid: str = ""
    response_code: str = ""


# --- customer contact (wecom-api §9) -----------------------------------------------------------------


class ExternalContactListResponse(APIResponse):
    external_userid: list[str] = Field(default_factory=list)


class ExternalContact(WeComModel):
    external_userid: str
    name: str = ""
    position: str = ""
    avatar: str = ""
    corp_name: str = ""
    corp_full_name: str = ""
    type: int = 0  # 1 微信用户 2 企业微信用户
    gender: int = 0
    unionid: str = ""
    external_profile: dict[str, Any] | None = None


class FollowUserTag(WeComModel):
    group_name: str = ""
    tag_name: str = ""
    tag_id: str = ""
    type: int = 0


class FollowUser(WeComModel):
    userid: str
    remark: str = ""
    description: str = ""
    createtime: int = 0
    tags: list[FollowUserTag] = Field(default_factory=list)
    remark_corp_name: str = ""
    remark_mobiles: list[str] = Field(default_factory=list)
    oper_userid: str = ""
    add_way: int = 0
    state: str = ""


class ExternalContactGetResponse(APIResponse):
    external_contact: ExternalContact
    follow_user: list[FollowUser] = Field(default_factory=list)
    next_cursor: str = ""


class TemplateImage(WeComModel):
    media_id: str | None = None
    pic_url: str | None = None


class TemplateLink(WeComModel):
    title: str
    picurl: str | None = None
    desc: str | None = None
    url: str


class TemplateMiniProgram(WeComModel):
    title: str
    pic_media_id: str
    appid: str
    page: str


class TemplateAttachment(WeComModel):
    msgtype: Literal["image", "link", "miniprogram", "video", "file"]
    image: TemplateImage | None = None
    link: TemplateLink | None = None
    miniprogram: TemplateMiniProgram | None = None
    video: Media | None = None
    file: Media | None = None

    def check(self, api: str, index: int) -> None:
        field = f"attachments[{index}]"
        _check_single_body(api, self, self.msgtype, ("image", "link", "miniprogram", "video", "file"))
        if self.image is not None and not (self.image.media_id or self.image.pic_url):
            raise InvalidArgumentError(
                api, f"{field}.image", "media_id 与 pic_url 须填一个 / needs media_id or pic_url"
            )
        if self.link is not None:
            check_bytes(api, f"{field}.link.title", self.link.title, 128, minimum=1)
            check_bytes(api, f"{field}.link.url", self.link.url, 2048, minimum=1)
            if self.link.desc is not None:
                check_bytes(api, f"{field}.link.desc", self.link.desc, 512)
            if self.link.picurl is not None:
                check_bytes(api, f"{field}.link.picurl", self.link.picurl, 2048)
        if self.miniprogram is not None:
            check_bytes(api, f"{field}.miniprogram.title", self.miniprogram.title, 64, minimum=1)


class TagGroup(WeComModel):
    tag_list: list[str]


class TagFilter(WeComModel):
    group_list: list[TagGroup]


class AddMsgTemplateRequest(WeComModel):
    """externalcontact/add_msg_template: a mass message members confirm and send (wecom-api §9)."""

    chat_type: Literal["single", "group"] = "single"
    external_userid: list[str] | None = None
    chat_id_list: list[str] | None = None
    tag_filter: TagFilter | None = None
    sender: str | None = None
    allow_select: bool | None = None
    text: Text | None = None
    attachments: list[TemplateAttachment] = Field(default_factory=list)

    def check(self, api: str) -> None:
        if self.text is None and not self.attachments:
            raise InvalidArgumentError(
                api, "text", "text 和 attachments 不能同时为空 / text and attachments cannot both be empty"
            )
        if self.text is not None:
            check_bytes(api, "text.content", self.text.content, TEMPLATE_TEXT_MAX_BYTES)
        if len(self.attachments) > TEMPLATE_MAX_ATTACHMENTS:
            raise InvalidArgumentError(
                api,
                "attachments",
                f"附件最多 {TEMPLATE_MAX_ATTACHMENTS} 个，实际 {len(self.attachments)} 个（否则 41064）/ "
                f"at most {TEMPLATE_MAX_ATTACHMENTS} attachments, got {len(self.attachments)} (WeCom: 41064)",
            )
        for index, attachment in enumerate(self.attachments):
            attachment.check(api, index)
        if self.chat_type == "group" and not self.sender:
            raise InvalidArgumentError(api, "sender", "群发到客户群时必填 / required when chat_type is group")
        if self.external_userid is not None:
            check_count(api, "external_userid", len(self.external_userid), 0, TEMPLATE_MAX_EXTERNAL_USERIDS)
        if self.chat_id_list is not None:
            check_count(api, "chat_id_list", len(self.chat_id_list), 0, TEMPLATE_MAX_CHATS)
        if self.tag_filter is not None:
            for index, group in enumerate(self.tag_filter.group_list):
                check_count(api, f"tag_filter.group_list[{index}].tag_list", len(group.tag_list), 1, 100)


class AddMsgTemplateResponse(APIResponse):
    fail_list: list[str] = Field(default_factory=list)
    msgid: str


class GetGroupMsgListV2Request(WeComModel):
    chat_type: Literal["single", "group"]
    start_time: int
    end_time: int
    creator: str | None = None
    filter_type: int | None = None  # 0 企业发表 1 个人发表 2 所有 (default)
    limit: int | None = None
    cursor: str | None = None

    def check(self, api: str) -> None:
        if self.end_time < self.start_time:
            raise InvalidArgumentError(api, "end_time", "不能早于 start_time / must not precede start_time")
        # wecom-api §9: the interval is at most one month.
        if self.end_time - self.start_time > 31 * 86400:
            raise InvalidArgumentError(
                api, "end_time", "时间跨度最多 1 个月 / the range is at most one month"
            )
        if self.limit is not None:
            check_count(api, "limit", self.limit, 1, 100)


class GroupMsg(WeComModel):
    msgid: str
    creator: str = ""
    create_time: int = 0
    create_type: int = 0
    text: Text | None = None
    attachments: list[dict[str, Any]] = Field(default_factory=list)


class GetGroupMsgListV2Response(APIResponse):
    next_cursor: str = ""
    group_msg_list: list[GroupMsg] = Field(default_factory=list)


class GroupMsgTask(WeComModel):
    userid: str
    status: int  # 0 未发送 2 已发送
    send_time: int | None = None


class GetGroupMsgTaskResponse(APIResponse):
    next_cursor: str = ""
    task_list: list[GroupMsgTask] = Field(default_factory=list)


class GroupMsgSendResult(WeComModel):
    external_userid: str | None = None
    chat_id: str | None = None
    userid: str
    status: int  # 0 未发送 1 已发送 2 非好友 3 已收到其他群发
    send_time: int | None = None


class GetGroupMsgSendResultResponse(APIResponse):
    next_cursor: str = ""
    send_list: list[GroupMsgSendResult] = Field(default_factory=list)
