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
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="监听端口（1–65535）/ listen port (1–65535)")
    ] = 8900,
    callback_url: Annotated[
        str | None,
        typer.Option(help="where kf_msg_or_event callbacks go, e.g. http://127.0.0.1:8000/wecom/callback"),
    ] = None,
    seed: Annotated[int, typer.Option(help="same seed → same ids and secrets")] = 20240101,
    customers: Annotated[int, typer.Option(help="how many kf customers to seed")] = 3,
) -> None:
    """启动模拟器并打印企业ID、secret、Token、EncodingAESKey / run the simulator and print the seeded world."""
    import uvicorn

    from wxkf.cli import listen_or_exit
    from wxkf.simulator.app import create_simulator_app
    from wxkf.simulator.seed import AGENT_APP, CONTACT_APP, KF_APP, seed_world

    listener = listen_or_exit(host, port)  # before the banner: its credentials are no use on a busy port
    world = seed_world(seed=seed, customers=customers)
    base = f"http://{host}:{port}"
    account = next(iter(world.accounts.values()))
    wangwu = world.members["wangwu"]
    contacts = set(wangwu.external_contacts)
    # These are the simulator's own made-up credentials; printing them is the point. One NAME=value a
    # line, nothing else on it: the block pastes into .env as it is.
    env = {
        "WECOM_API_BASE": base,
        "WECOM_CORP_ID": world.corp_id,
        "WECOM_KF_SECRET": world.apps[KF_APP].secret,
        "WECOM_CONTACT_SECRET": world.apps[CONTACT_APP].secret,
        "WECOM_AGENT_ID": str(world.apps[AGENT_APP].agent_id),
        "WECOM_AGENT_SECRET": world.apps[AGENT_APP].secret,
        "WECOM_TOKEN": world.callback_token,
        "WECOM_AES_KEY": world.encoding_aes_key,
    }
    lines = [
        "wxkf WeCom 模拟器 / simulator",
        "# 以下各行可原样粘贴到 .env / paste these lines into .env as they are",
        *(f"{name}={value}" for name, value in env.items()),
        f"  回调 callback URL    {callback_url or '(未设置 / none: PUT /sim/callback_url)'}",
        f"  客服账号 open_kfid   {account.open_kfid} ({account.name}; 接待人员 servicers: {', '.join(account.servicers)})",
        "  客户 customers       " + ", ".join(c for c in world.customers if c not in contacts),
        f"  成员 member          {wangwu.userid} → 外部联系人 external contacts: {', '.join(wangwu.external_contacts)}",
        f"  控制 API control     {base}/sim/world  (docs/simulator.md)",
    ]
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    app = create_simulator_app(world, callback_url=callback_url)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    server.run(sockets=[listener])
