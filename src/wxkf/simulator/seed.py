"""A ready-made world: what `wxkf simulator` prints at start and what tests run against."""

from __future__ import annotations

from wxkf.simulator.behaviour import Behaviour, RoutingMode
from wxkf.simulator.world import World

KF_APP = "kf"
CONTACT_APP = "contact"
AGENT_APP = "agent"
AGENT_ID = 1000002


def seed_world(*, seed: int = 20240101, customers: int = 3, behaviour: Behaviour | None = None) -> World:
    """One corp with three secrets, one kf account served by two servicers, `customers` kf
    customers, and a member (wangwu) with two external contacts. Same seed → same ids."""
    world = World(seed=seed, behaviour=behaviour)
    # The self-built app that calls the kf APIs (微信客服「可调用接口的应用」, wecom-api §3).
    world.add_app(KF_APP, {"kf"})
    # The 客户联系 secret (wecom-api §9).
    world.add_app(CONTACT_APP, {"contact"})
    # A self-built app that sends app messages to members (staff notifications).
    world.add_app(AGENT_APP, {"message"}, agent_id=AGENT_ID)
    world.add_member("zhangsan", "张三")
    world.add_member("lisi", "李四")
    world.add_member("wangwu", "王五")
    account = world.add_account("wxkf 客服", RoutingMode.API)
    account.servicers.extend(["zhangsan", "lisi"])
    # 升级服务 (wecom-api §8): zhangsan as a staff member customers can be recommended to, and a group.
    world.upgrade_members.append("zhangsan")
    world.upgrade_groupchats.append("wrSimVipCustomerGroup001")
    for n in range(customers):
        world.add_customer(f"客户{n + 1}")
    for n in range(2):
        contact = world.add_customer(f"联系人{n + 1}")
        world.add_external_contact("wangwu", contact.external_userid)
    return world
