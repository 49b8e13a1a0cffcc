"""Beyond plain text, end to end: the simulator over HTTP, the real app and worker, the agent on the
knowledge base, the LLM and speech-to-text through the `openai` SDK at the local fake server."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.kf_harness import RunningPipeline, running_pipeline
from wxkf.agent.content import IMAGE_UNSEEN, VOICE_UNHEARD
from wxkf.agent.fake_openai import FakeOpenAI
from wxkf.agent.kb.bundled import load_sample
from wxkf.agent.kb.embedders import HashingEmbedder
from wxkf.agent.kb.store import KnowledgeBase
from wxkf.agent.prompts import TRANSFER_TEXT
from wxkf.db.engine import Database
from wxkf.media.storage import PostgresMediaStore
from wxkf.simulator.samples import sample_amr, sample_png

PNG = sample_png(rgb=(180, 40, 40))


@pytest.fixture
def settings_factory(settings_factory: Any) -> Any:
    """These knowledge bases are embedded by the hashing embedder: the pipeline searches with it too."""
    return lambda **overrides: settings_factory(**{"kb_embedder": "hashing", **overrides})


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key="sk-test") as server:
        yield server


@pytest.fixture
async def faq(database: Database) -> KnowledgeBase:
    knowledge = KnowledgeBase(database, HashingEmbedder())
    await load_sample(knowledge)
    return knowledge


def llm(fake: FakeOpenAI, **more: Any) -> dict[str, Any]:
    return {"llm_base_url": fake.base_url, "llm_api_key": "sk-test", "llm_model": "fake-chat", **more}


async def sent(run: RunningPipeline, customer: str, *, open_kfid: str | None = None) -> list[dict[str, Any]]:
    """What the customer received through send_msg (the budget's messages), in order."""
    rows = await run.control("received", customer, open_kfid=open_kfid)
    return [r for r in rows if r.get("via") == "send_msg"]


async def test_an_image_reaches_the_vision_model_with_its_bytes(
    settings_factory: Any, fake: FakeOpenAI, faq: KnowledgeBase
) -> None:
    fake.reply("看到了，外包装确实压坏了，我们为您补寄。")
    overrides = llm(fake, llm_vision_model="fake-vision")
    async with running_pipeline(settings_factory, None, **overrides) as run:
        customer = run.sim.customers[0]
        await run.control("send_media", customer, "image", PNG, "parcel.png", "image/png")
        await run.idle()
        assert await run.texts(customer) == ["看到了，外包装确实压坏了，我们为您补寄。"]
        [chat] = fake.chat_requests()
        assert chat.body["model"] == "fake-vision"
        parts = chat.messages[-1]["content"]
        images = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
        assert len(images) == 1
        assert images[0].startswith("data:image/png;base64,")
        assert base64.b64decode(images[0].split(",", 1)[1]) == PNG  # the very bytes the customer sent
        stored = await run.query("SELECT status, size, content_type FROM media_inbound")
        assert stored == [("stored", len(PNG), "image/png")]


async def test_without_vision_an_image_gets_the_honest_reply_not_a_faq_entry(
    settings_factory: Any, faq: KnowledgeBase
) -> None:
    async with running_pipeline(settings_factory, None) as run:
        customer = run.sim.customers[0]
        await run.control("send_media", customer, "image", PNG, "parcel.png", "image/png")
        await run.idle()
        # The sample FAQ has an entry about product 图片 and colour differences: it must not answer.
        assert await run.texts(customer) == [IMAGE_UNSEEN]
        assert (await run.control("session", customer))["service_state"] == 1  # no handoff


async def test_voice_is_transcribed_and_answered_from_the_knowledge_base(
    settings_factory: Any, fake: FakeOpenAI, faq: KnowledgeBase
) -> None:
    fake.transcription("衣服尺码怎么选")
    async with running_pipeline(
        settings_factory, None, stt_base_url=fake.base_url, stt_api_key="sk-test"
    ) as run:
        customer = run.sim.customers[0]
        voice = sample_amr(1.2)
        await run.control("send_media", customer, "voice", voice, "voice.amr", "audio/amr")
        await run.idle()
        [request] = fake.transcription_requests()
        assert request.body["file"].startswith(b"RIFF")  # AMR was converted to WAV first
        assert request.body["model"] == "whisper-1"
        [answer] = await run.texts(customer)
        assert "尺码表" in answer  # the offline responder's KB answer…
        assert "来源" in answer  # …with its source


async def test_without_speech_to_text_a_voice_note_gets_the_honest_reply(settings_factory: Any) -> None:
    async with running_pipeline(settings_factory, None) as run:
        customer = run.sim.customers[0]
        await run.control("send_media", customer, "voice", sample_amr(0.5), "voice.amr", "audio/amr")
        await run.idle()
        assert await run.texts(customer) == [VOICE_UNHEARD]


MENU = {
    "options": [
        {"id": "ship", "content": "多久发货", "action": "faq:下单后多久发货"},
        {"id": "human", "content": "找人工客服", "action": "human"},
    ],
    "tail_content": "也可以直接输入问题",
}


async def test_a_welcome_menu_tap_routes_to_its_action(settings_factory: Any, faq: KnowledgeBase) -> None:
    async with running_pipeline(settings_factory, None, kf_welcome_menu=json.dumps(MENU)) as run:
        customer = run.sim.customers[0]
        await run.control("enter", customer)
        await run.idle()
        [welcome] = [r for r in await run.received(customer) if r["via"] == "welcome"]
        assert welcome["msgtype"] == "msgmenu"
        assert [i["click"]["id"] for i in welcome["msgmenu"]["list"]] == ["ship", "human"]
        await run.control("menu_click", customer, "ship")
        await run.idle()
        [answer] = await run.texts(customer)
        assert "发货" in answer  # faq: the topic's answer from the knowledge base
        assert "来源" in answer
        await run.control("menu_click", customer, "human")
        await run.idle()
        assert (await run.texts(customer))[-1] == TRANSFER_TEXT
        assert (await run.control("session", customer))["service_state"] == 2  # handed to the queue
        rows = await run.query("SELECT body->'body'->>'menu_id' FROM kf_inbound WHERE origin = 3 ORDER BY id")
        assert rows == [("ship",), ("human",)]


async def test_a_kb_answer_with_an_attachment_is_two_messages_counted_against_the_budget(
    settings_factory: Any, database: Database, tmp_path: Path
) -> None:
    (tmp_path / "size.png").write_bytes(PNG)
    (tmp_path / "faq.md").write_text(
        "# 尺码\n## 尺码怎么选\n请对照尺码表选择：![尺码表](size.png)。腰围在两个尺码之间时选大一号。\n",
        encoding="utf-8",
    )
    async with running_pipeline(settings_factory, None, kf_closing_hint="") as run:
        pipeline = run.app.state.pipeline
        knowledge = KnowledgeBase(database, HashingEmbedder(), media_store=PostgresMediaStore(pipeline.pool))
        await knowledge.add_documents([tmp_path / "faq.md"])
        customer = run.sim.customers[0]
        await run.say(customer, "尺码怎么选")
        await run.idle()
        text_message, image_message = await sent(run, customer)
        assert "【图片：尺码表】" in text_message["text"]["content"]
        # What the customer reads names the image, never its path, hash or the marker that carries them.
        for internal in ("size.png", "<!", "-->", hashlib.sha256(PNG).hexdigest()[:8]):
            assert internal not in text_message["text"]["content"]
        assert image_message["msgtype"] == "image"
        media_id = image_message["image"]["media_id"]
        [upload] = [c for c in await run.control("calls", "media/upload") if c["errcode"] == 0]
        assert upload["query"]["type"] == "image"
        # Both messages came out of the 48 h / 5 budget (wecom-api §4): 3 are left.
        assert (await run.control("session", customer))["budget_left"] == 3
        assert await run.query("SELECT replies_used FROM kf_conversations") == [(2,)]
        # The same question again: the upload is reused while its media_id lives (wecom-api §8).
        await run.say(customer, "尺码怎么选")
        await run.idle()
        assert (await sent(run, customer))[-1]["image"]["media_id"] == media_id
        assert len([c for c in await run.control("calls", "media/upload") if c["errcode"] == 0]) == 1


async def test_two_accounts_answer_from_their_own_knowledge_bases(
    settings_factory: Any, database: Database, tmp_path: Path
) -> None:
    for shop, answer in (("a", "本店运费 10 元，满 199 元包邮。"), ("b", "本店全场包邮，偏远地区除外。")):
        (tmp_path / f"{shop}.md").write_text(f"# 运费\n## 运费怎么算\n{answer}\n", encoding="utf-8")
    knowledge = KnowledgeBase(database, HashingEmbedder())
    await knowledge.add_documents([tmp_path / "a.md"], collection="shop_a")
    await knowledge.add_documents([tmp_path / "b.md"], collection="shop_b")
    async with running_pipeline(settings_factory, None) as run:
        second = await run.control("add_account", "第二家店")
        accounts = run.app.state.pipeline.accounts
        await accounts.update(run.sim.open_kfid, {"kb_collections": ["shop_a"]})
        await accounts.update(second, {"kb_collections": ["shop_b"], "kb_silent": "reply"})
        customer = run.sim.customers[0]
        await run.say(customer, "运费怎么算")
        await run.control("send_text", customer, "运费怎么算", open_kfid=second)
        await run.idle()
        [first_answer] = [
            r["text"]["content"] for r in await sent(run, customer, open_kfid=run.sim.open_kfid)
        ]
        [second_answer] = [r["text"]["content"] for r in await sent(run, customer, open_kfid=second)]
        assert "10 元" in first_answer
        assert "全场包邮" not in first_answer
        assert "全场包邮" in second_answer
        assert "10 元" not in second_answer


async def test_a_failed_media_download_is_retried_and_later_messages_are_still_answered(
    settings_factory: Any,
) -> None:
    async with running_pipeline(settings_factory, None, kf_debounce_seconds=0.5) as run:
        customer = run.sim.customers[0]
        # WeCom throttles media/get for every attempt the conversation job's client makes (wecom-api §7.2).
        await run.control("add_fault", "media/get", errcode=45009, times=4)
        await run.control("send_media", customer, "image", PNG, "parcel.png", "image/png")
        await run.say(customer, "你好")
        await run.idle()
        texts = await run.texts(customer)
        assert texts[0].startswith("您好")  # the later message was answered while the image waited
        assert texts[1] == IMAGE_UNSEEN  # then the image, once the fetch job had it
        assert await run.query("SELECT status, attempts FROM media_inbound") == [("stored", 2)]
        assert await run.query("SELECT status FROM kf_inbound ORDER BY id") == [("answered",), ("answered",)]
        gets = await run.control("calls", "media/get")
        assert [c["errcode"] for c in gets] == [45009, 45009, 45009, 45009, 0]


async def test_the_agent_recommends_a_staff_member_with_upgrade_service(
    settings_factory: Any, fake: FakeOpenAI
) -> None:
    fake.tool_call("upgrade_service", {"target": "member", "wording": "您好，我是您的专属顾问张三"})
    fake.reply("已为您推荐专属顾问张三，您可以在微信里直接联系他。")
    async with running_pipeline(settings_factory, None, **llm(fake)) as run:
        customer = run.sim.customers[0]
        await run.say(customer, "我想加你们的企业微信，以后长期订货")
        await run.idle()
        upgrade = (await run.control("session", customer))["upgrade"]
        assert upgrade == {
            "type": 1,
            "member": {"userid": "zhangsan", "wording": "您好，我是您的专属顾问张三"},
        }
        assert await run.texts(customer) == ["已为您推荐专属顾问张三，您可以在微信里直接联系他。"]
        [call] = await run.query("SELECT tool, status FROM agent_tool_calls")
        assert call == ("upgrade_service", "ok")


async def test_a_future_msgtype_is_recorded_raw_logged_and_answered(
    settings_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wxkf.kf.media")
    async with running_pipeline(settings_factory, None) as run:
        customer = run.sim.customers[0]
        await run.control("send", customer, "hologram", {"shape": "cube"}, future=True)
        await run.idle()
        assert await run.query("SELECT msgtype, body->'body', status FROM kf_inbound") == [
            ("hologram", {"shape": "cube"}, "answered")
        ]
        assert await run.texts(customer) == ["收到您发送的消息。请问有什么可以帮您？"]
    assert any("unknown msgtype hologram" in r.getMessage() for r in caplog.records)
