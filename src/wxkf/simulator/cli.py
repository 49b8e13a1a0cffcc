"""`wxkf simulator`: run the WeCom simulator standalone and print the seeded world."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

simulator_app = typer.Typer(help="WeCom 模拟器 / offline WeCom simulator", invoke_without_command=True)
console = Console()


@simulator_app.callback()
def run(
    host: Annotated[str, typer.Option(help="listen address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="listen port")] = 8900,
    callback_url: Annotated[
        str | None,
        typer.Option(help="where kf_msg_or_event callbacks go, e.g. http://127.0.0.1:8000/wecom/callback"),
    ] = None,
    seed: Annotated[int, typer.Option(help="same seed → same ids and secrets")] = 20240101,
    customers: Annotated[int, typer.Option(help="how many kf customers to seed")] = 3,
) -> None:
    """启动模拟器并打印企业ID、secret、Token、EncodingAESKey / run the simulator and print the seeded world."""
    import uvicorn

    from wxkf.simulator.app import create_simulator_app
    from wxkf.simulator.seed import AGENT_APP, CONTACT_APP, KF_APP, seed_world

    world = seed_world(seed=seed, customers=customers)
    base = f"http://{host}:{port}"
    account = next(iter(world.accounts.values()))
    wangwu = world.members["wangwu"]
    contacts = set(wangwu.external_contacts)
    # These are the simulator's own made-up credentials; printing them is the point.
    lines = [
        "wxkf WeCom 模拟器 / simulator",
        f"  API base            WECOM_API_BASE={base}",
        f"  企业ID corp id       WECOM_CORP_ID={world.corp_id}",
        f"  客服 secret          WECOM_KF_SECRET={world.apps[KF_APP].secret}",
        f"  客户联系 secret      WECOM_CONTACT_SECRET={world.apps[CONTACT_APP].secret}",
        f"  应用 agent           WECOM_AGENT_ID={world.apps[AGENT_APP].agent_id} "
        f"WECOM_AGENT_SECRET={world.apps[AGENT_APP].secret}",
        f"  回调 Token           WECOM_TOKEN={world.callback_token}",
        f"  EncodingAESKey      WECOM_AES_KEY={world.encoding_aes_key}",
        f"  回调 callback URL    {callback_url or '(未设置 / none: PUT /sim/callback_url)'}",
        f"  客服账号 open_kfid   {account.open_kfid} ({account.name}; 接待人员 servicers: {', '.join(account.servicers)})",
        "  客户 customers       " + ", ".join(c for c in world.customers if c not in contacts),
        f"  成员 member          {wangwu.userid} → 外部联系人 external contacts: {', '.join(wangwu.external_contacts)}",
        f"  控制 API control     {base}/sim/world  (docs/simulator.md)",
    ]
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    uvicorn.run(
        create_simulator_app(world, callback_url=callback_url), host=host, port=port, log_level="warning"
    )
