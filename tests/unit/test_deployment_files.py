"""The deployment files (Dockerfile, compose.yaml, deploy/) use only commands, options, settings and
routes that exist, so they cannot rot while the CLI and the settings change under them.

Each `wxkf …` command line is parsed by the real CLI (typer's click command, without running it):
an unknown command, option or a bad value fails here. (typer may bundle its own click, so the
command objects are used by what they do, not by their class.) Each environment variable must be a field of
`Settings`, or belong to another program the files run (PostgreSQL's image, Python itself).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from wxkf.cli import app
from wxkf.config import Settings
from wxkf.web.app import create_app

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / "deploy" / "wxkf.env.example"
NGINX = ROOT / "deploy" / "nginx" / "wxkf.conf"
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
WXKF = "/opt/wxkf/bin/wxkf"  # where the systemd units expect the virtualenv's command

SETTINGS = {name.upper() for name in Settings.model_fields}
# Variables read by something other than wxkf: the PostgreSQL image (compose interpolates
# POSTGRES_PASSWORD into DATABASE_URL too) and Python itself.
NOT_WXKF = re.compile(r"^(POSTGRES_[A-Z]+|PYTHON[A-Z]+)$")


def check_command(argv: list[str]) -> None:
    """Parse `wxkf <argv>` down to its last subcommand, as the CLI would before running it."""
    command: Any = typer.main.get_command(app)
    ctx = command.make_context("wxkf", list(argv), resilient_parsing=False)
    while hasattr(command, "resolve_command"):  # a group: find the subcommand, parse its options
        # click 8.2 renamed protected_args; the bundled one keeps only the private name.
        protected = getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])
        name, sub, rest = command.resolve_command(ctx, [*protected, *ctx.args])
        assert sub is not None, argv
        assert name is not None, argv
        command, ctx = sub, sub.make_context(name, rest, parent=ctx)
    assert not ctx.args, f"wxkf {' '.join(argv)}: unexpected arguments {ctx.args}"


def refused_by_the_cli(argv: list[str]) -> bool:
    try:
        check_command(argv)
    except Exception as exc:
        return any(cls.__name__ == "UsageError" for cls in type(exc).__mro__)
    return False


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def wxkf_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose()["services"].items() if str(s.get("image", "")).startswith("wxkf")}


def dockerfile_json(instruction: str) -> list[str]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    [line] = [line for line in text.splitlines() if line.startswith(instruction + " ")]
    found = re.search(r"\[.*\]", line)
    assert found is not None, line
    values: list[str] = yaml.safe_load(found.group(0))
    return values


def test_the_checker_refuses_what_the_cli_would() -> None:
    check_command(["serve", "--processes", "2", "--no-worker"])
    for wrong in (
        ["serve", "--workers", "2"],
        ["serve", "--processes", "0"],
        ["db", "migrate"],
        ["worker", "x"],
    ):
        assert refused_by_the_cli(wrong), wrong


def test_the_image_runs_wxkf_and_checks_a_route_the_app_has() -> None:
    assert dockerfile_json("ENTRYPOINT") == ["wxkf"]
    check_command(dockerfile_json("CMD"))
    healthcheck = " ".join(dockerfile_json("HEALTHCHECK"))
    path = re.search(r"http://127\.0\.0\.1:(\d+)(/[a-z]+)", healthcheck)
    assert path is not None
    assert path.group(1) == "8000"
    assert "EXPOSE 8000" in DOCKERFILE.read_text(encoding="utf-8")
    assert path.group(2) in create_app(Settings(_env_file=None)).openapi()["paths"]
    variables = re.findall(r"^(?:ENV)?\s+([A-Z][A-Z0-9_]+)=", DOCKERFILE.read_text(encoding="utf-8"), re.M)
    assert "WXKF_DATA_DIR" in variables
    for name in variables:
        assert name in SETTINGS or NOT_WXKF.match(name), name
    assert re.search(r"^USER wxkf$", DOCKERFILE.read_text(encoding="utf-8"), re.M)  # not root
    assert len(re.findall(r"^FROM ", DOCKERFILE.read_text(encoding="utf-8"), re.M)) == 2  # multi-stage


def test_compose_runs_two_serve_replicas_a_worker_postgres_with_pgvector_and_a_proxy() -> None:
    services = compose()["services"]
    wxkf = wxkf_services()
    assert "pgvector" in services["db"]["image"]
    assert wxkf["web"]["command"][0] == "serve"
    assert wxkf["web"]["deploy"]["replicas"] == 2
    assert wxkf["worker"]["command"] == ["worker"]
    assert "nginx" in services["proxy"]["image"]
    for name, service in wxkf.items():
        check_command(service["command"])
        for variable in service.get("environment", {}):
            assert variable in SETTINGS, f"{name}: {variable}"
    # WXKF_PROCESSES is the budget doctor checks: every serve replica and worker process.
    processes = sum(s.get("deploy", {}).get("replicas", 1) for n, s in wxkf.items() if n != "migrate")
    assert int(wxkf["web"]["environment"]["WXKF_PROCESSES"]) == processes


def test_the_proxy_forwards_to_the_web_replicas_port() -> None:
    upstream = re.search(r"server (\w+):(\d+)", NGINX.read_text(encoding="utf-8"))
    assert upstream is not None
    web = wxkf_services()[upstream.group(1)]
    assert web["command"][web["command"].index("--port") + 1] == upstream.group(2)
    mounted = compose()["services"]["proxy"]["volumes"][0].split(":")[0]
    assert (ROOT / mounted).resolve() == NGINX


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_units_run_wxkf_commands_that_exist(unit: Path) -> None:
    commands = re.findall(r"^Exec\w+=(.+)$", unit.read_text(encoding="utf-8"), re.M)
    assert commands
    for line in commands:
        argv = shlex.split(line)
        assert argv[0] == WXKF, line
        check_command(argv[1:])
    assert re.search(r"^User=wxkf$", unit.read_text(encoding="utf-8"), re.M)
    assert re.search(r"^EnvironmentFile=/etc/wxkf/wxkf.env$", unit.read_text(encoding="utf-8"), re.M)


def test_every_variable_of_the_example_environment_is_a_setting() -> None:
    variables = re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(encoding="utf-8"), re.M)
    assert len(variables) > 10
    interpolated = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text(encoding="utf-8")))
    for variable in variables:
        assert variable in SETTINGS or (NOT_WXKF.match(variable) and variable in interpolated), variable
