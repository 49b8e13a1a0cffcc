"""`wxkf accounts list|show|set` and `wxkf upgrade …` against the simulator, as an operator runs them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.acceptance.test_kf_session_cli import _wxkf
from wxkf.simulator.testing import run_simulator


def test_accounts_set_show_and_list(database_url: str, tmp_path: Path) -> None:
    with run_simulator() as sim:
        menu = {"options": [{"id": "ship", "content": "多久发货", "action": "faq:多久发货"}]}
        done = _wxkf(
            sim,
            database_url,
            tmp_path,
            "accounts",
            "set",
            sim.open_kfid,
            "persona=你是青禾茶叶店的客服",
            "kb_collections=tea",
            f"welcome_menu={json.dumps(menu, ensure_ascii=False)}",
        )
        assert done.returncode == 0, done.stdout + done.stderr
        shown = _wxkf(sim, database_url, tmp_path, "accounts", "show", sim.open_kfid)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert "你是青禾茶叶店的客服" in shown.stdout
        assert "['tea']" in shown.stdout
        assert "session_policy" in shown.stdout  # not set: shown with its global value
        listed = _wxkf(sim, database_url, tmp_path, "accounts", "list")
        assert sim.open_kfid in listed.stdout
        assert "wxkf 客服" in listed.stdout  # the name from kf/account/list

        bad = _wxkf(sim, database_url, tmp_path, "accounts", "set", sim.open_kfid, "kb_silent=maybe")
        assert bad.returncode == 1
        assert "kb_silent" in bad.stdout
        assert "Traceback" not in bad.stdout + bad.stderr

        # A typo in the open_kfid: WeCom has no such account, so nothing is stored for it.
        typo = _wxkf(sim, database_url, tmp_path, "accounts", "set", "wkNOPE", "persona=x")
        assert typo.returncode == 1, typo.stdout + typo.stderr
        assert "wkNOPE" in typo.stdout
        assert "企业微信中没有这个客服账号" in typo.stdout
        assert "wkNOPE" not in _wxkf(sim, database_url, tmp_path, "accounts", "list").stdout
        unknown = _wxkf(sim, database_url, tmp_path, "accounts", "show", "wkNOPE")
        assert "企业微信中没有这个客服账号" in unknown.stdout


def test_upgrade_member_and_cancel(database_url: str, tmp_path: Path) -> None:
    with run_simulator() as sim:
        customer = sim.customers[0]
        sim.control.send_text(customer, "你好")
        done = _wxkf(
            sim,
            database_url,
            tmp_path,
            "upgrade",
            "member",
            sim.open_kfid,
            customer,
            "--wording",
            "您好，我是张三",
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert sim.control.session(customer)["upgrade"]["member"] == {
            "userid": "zhangsan",
            "wording": "您好，我是张三",
        }
        refused = _wxkf(
            sim, database_url, tmp_path, "upgrade", "member", sim.open_kfid, customer, "--userid", "lisi"
        )
        assert refused.returncode == 1
        assert "不在升级服务的配置中" in refused.stdout
        cancelled = _wxkf(sim, database_url, tmp_path, "upgrade", "cancel", sim.open_kfid, customer)
        assert cancelled.returncode == 0
        assert sim.control.session(customer)["upgrade"] is None
