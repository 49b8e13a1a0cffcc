"""Per-call overhead of `WeComClient`, against a baseline measured in the same run.

A local server (uvicorn, its own process) answers kf/send_msg like WeCom. Baseline: a bare httpx
POST of the same JSON to the same endpoint, reading the JSON answer. Measured: `send_text` through
the client with a cached token (MemoryTokenStore), i.e. request model + limit checks, the retry
loop, decoding, errcode check and the typed response. Both run sequentially over one keep-alive
connection, so the server's cost is in both and the ratio shows what the client adds.

    .venv/bin/python benchmarks/bench_client.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time

from pydantic import SecretStr

from wxkf.wecom.client import RetryPolicy, WeComClient
from wxkf.wecom.tokens import MemoryTokenStore

CORP_ID = "wwbench0000000001"
SECRET = "bench-secret-0123456789"
KFID = "wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q"
USER = "wmAJ2GCAAAme1XQRC-NI-q0_ZM9ukoAw"
TOKEN = "BENCHTOKEN" + "x" * 100


def serve() -> None:
    """The server process: print the port, then answer until killed."""
    import socket

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    token_body = json.dumps(
        {"errcode": 0, "errmsg": "ok", "access_token": TOKEN, "expires_in": 7200}
    ).encode()
    send_body = json.dumps({"errcode": 0, "errmsg": "ok", "msgid": "MSGID"}).encode()

    async def gettoken(request: Request) -> Response:
        return Response(token_body, media_type="application/json")

    async def send_msg(request: Request) -> Response:
        await request.body()
        return Response(send_body, media_type="application/json")

    app = Starlette(
        routes=[
            Route("/cgi-bin/gettoken", gettoken, methods=["GET"]),
            Route("/cgi-bin/kf/send_msg", send_msg, methods=["POST"]),
        ]
    )
    # proto must be IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only then (else ~40 ms
    # delayed-ACK stalls per response, since the server writes headers and body separately).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    print(sock.getsockname()[1], flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="off", access_log=False)).run(
        sockets=[sock]
    )


async def measure(base_url: str, calls: int) -> dict[str, float]:
    import httpx

    body = {
        "touser": USER,
        "open_kfid": KFID,
        "msgtype": "text",
        "text": {"content": "您好，请问有什么可以帮您？"},
    }

    async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as http:

        async def bare() -> None:
            response = await http.post("/cgi-bin/kf/send_msg", params={"access_token": TOKEN}, json=body)
            assert response.json()["errcode"] == 0

        async with WeComClient(
            base_url, CORP_ID, SecretStr(SECRET), token_store=MemoryTokenStore(), retry=RetryPolicy()
        ) as wecom:

            async def client() -> None:
                await wecom.send_text(KFID, USER, "您好，请问有什么可以帮您？")

            async def rate(fn: object) -> float:
                assert callable(fn)
                for _ in range(100):  # warm up: connection, token, caches
                    await fn()
                start = time.perf_counter()
                for _ in range(calls):
                    await fn()
                return (time.perf_counter() - start) / calls

            # Interleave two rounds each so drift (CPU frequency, GC) hits both alike.
            bare_s = min(await rate(bare), await rate(bare))
            client_s = min(await rate(client), await rate(client))
            bare_s = min(bare_s, await rate(bare))
            client_s = min(client_s, await rate(client))
    return {
        "baseline_us_per_call": round(bare_s * 1e6, 1),
        "send_text_us_per_call": round(client_s * 1e6, 1),
        "client_overhead_us": round((client_s - bare_s) * 1e6, 1),
        "ratio_to_baseline": round(client_s / bare_s, 3),
    }


def main() -> dict[str, float]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return {}
    server = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        result = asyncio.run(measure(f"http://127.0.0.1:{port}", args.calls))
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(
        json.dumps(
            {
                "bench": "client",
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "calls": args.calls,
                **result,
            }
        )
    )
    return result


if __name__ == "__main__":
    main()
