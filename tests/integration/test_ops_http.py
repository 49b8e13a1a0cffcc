"""/health, /ready and /metrics end to end: simulator, the real app on a real port, a real worker."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.integration.kf_harness import ScriptedResponder, running_pipeline


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample, e.g. sample(text, "wxkf_replies_total", outcome="sent")."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    raise AssertionError(f"no sample {name}{labels} in:\n{text}")


async def test_ready_and_metrics_after_a_conversation(settings_factory: Any) -> None:
    async with (
        running_pipeline(settings_factory, ScriptedResponder()) as run,
        httpx.AsyncClient(base_url=run.base_url) as http,
    ):
        assert (await http.get("/health")).json()["status"] == "ok"

        async def worker_alive() -> bool:
            return (await http.get("/ready")).status_code == 200

        await run.until(worker_alive)
        ready = await http.get("/ready", headers={"X-Request-ID": "probe-1"})
        body = ready.json()
        assert body["status"] == "ready"
        assert body["components"]["database"] == {"state": "ok"}
        assert body["components"]["job_workers"]["alive"] >= 1
        assert body["components"]["wecom_token"]["state"] == "ok"
        assert ready.headers["X-Request-ID"] == "probe-1"

        customer = run.sim.customers[0]
        await run.say(customer, "你好")
        await run.until(lambda: _answered(run, customer))
        await run.idle()

        response = await http.get("/metrics")
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = response.text
        assert sample(text, "wxkf_callbacks_total", outcome="accepted") >= 1
        assert sample(text, "wxkf_callbacks_total", outcome="unknown_account") == 0
        assert sample(text, "wxkf_replies_total", outcome="sent") == 1
        assert sample(text, "wxkf_messages_answered_total") == 1
        assert sample(text, "wxkf_outbox_depth") == 0
        assert sample(text, "wxkf_sync_lag_samples") == 1
        assert 0 <= sample(text, "wxkf_sync_lag_seconds", quantile="0.5") < 60
        assert sample(text, "wxkf_job_workers") >= 1
        assert "# TYPE wxkf_callbacks_total counter" in text
        assert run.sim.kf_secret not in text


async def _answered(run: Any, customer: str) -> bool:
    return len(await run.texts(customer)) == 1


async def test_sessions_routed_to_humans_are_counted_as_skipped(settings_factory: Any) -> None:
    async with (
        running_pipeline(settings_factory, ScriptedResponder()) as run,
        httpx.AsyncClient(base_url=run.base_url) as http,
    ):

        async def worker_alive() -> bool:
            return (await http.get("/ready")).status_code == 200

        await run.until(worker_alive)
        await run.control("set_routing", "human_first")
        customer = run.sim.customers[0]
        await run.say(customer, "你好")
        await run.idle()
        text = (await http.get("/metrics")).text
        assert sample(text, "wxkf_messages_skipped_total", reason="human_serving") == 1
        assert sample(text, "wxkf_messages_answered_total") == 0


async def test_not_ready_without_a_worker_or_with_a_refused_secret(settings_factory: Any) -> None:
    async with running_pipeline(
        settings_factory, ScriptedResponder(), run_worker=False, wecom_kf_secret="not-the-kf-secret"
    ) as run:
        async with httpx.AsyncClient(base_url=run.base_url) as http:
            response = await http.get("/ready")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "not_ready"
        assert body["components"]["database"] == {"state": "ok"}
        assert body["components"]["job_workers"]["state"] == "fail"
        assert "wxkf worker" in body["components"]["job_workers"]["error"]
        assert body["components"]["wecom_token"]["state"] == "fail"
        assert body["components"]["wecom_token"]["errcode"] == 40001
        assert "not-the-kf-secret" not in response.text


async def test_a_worker_killed_seconds_ago_is_not_reported_alive(settings_factory: Any) -> None:
    """kill -9 leaves the worker's row; its heartbeat (every second) stopped 10 s ago."""
    async with running_pipeline(settings_factory, ScriptedResponder(), run_worker=False) as run:
        await run.query(
            "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now() - interval '10 seconds')"
            " RETURNING id"
        )
        async with httpx.AsyncClient(base_url=run.base_url) as http:
            response = await http.get("/ready")
            metrics = (await http.get("/metrics")).text
        assert response.status_code == 503
        assert response.json()["components"]["job_workers"]["state"] == "fail"
        assert sample(metrics, "wxkf_job_workers") == 0
