"""`listen_or_exit`: a port the socket layer refuses is a usage error with a bilingual line, not a traceback."""

from __future__ import annotations

import pytest
import typer

from wxkf.cli import listen_or_exit


@pytest.mark.parametrize("port", [-1, 65536, 99999])
def test_an_out_of_range_port_exits_2_with_the_range(port: int, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as exited:
        listen_or_exit("127.0.0.1", port)
    assert exited.value.exit_code == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("端口须在 1–65535 之间"), message
    assert "the port must be 1–65535" in message
    assert str(port) in message
