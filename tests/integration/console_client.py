"""A staff member's browser, reduced to HTTP: log in to the console, read pages, send its forms.

async with ConsoleClient(base_url) as staff:
    await staff.login("alice", "s3cret-pass")
    page = await staff.get("/console/conversations")
    await staff.post("/console/c/wk…/wm…/takeover")      # the page's CSRF token is added
"""

from __future__ import annotations

import re
from types import TracebackType
from typing import Any, Self

import httpx
import psycopg

from wxkf.web.console.auth import add_user

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
PASSWORD = "correct-horse-battery"


async def create_staff(conninfo: str, username: str, role: str = "admin", password: str = PASSWORD) -> None:
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await add_user(conn, username, password, role)


class ConsoleClient:
    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=30, headers={"Accept": "text/html"})
        self.csrf = ""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.http.aclose()

    async def login(self, username: str, password: str = PASSWORD) -> httpx.Response:
        page = await self.http.get("/console/login")
        token = CSRF_RE.search(page.text)
        assert token is not None, page.text
        response = await self.http.post(
            "/console/login",
            data={"username": username, "password": password, "csrf_token": token.group(1)},
        )
        if response.status_code == 303:
            await self.get("/console/conversations")  # picks up the session's CSRF token
        return response

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.get(path, **kwargs)
        found = CSRF_RE.search(response.text)
        if found is not None:
            self.csrf = found.group(1)
        return response

    async def post(self, path: str, data: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        """A form post with the session's CSRF token, as the console's own pages send it."""
        return await self.http.post(path, data={"csrf_token": self.csrf, **(data or {})}, **kwargs)

    async def flash(self, response: httpx.Response) -> str:
        """The message a redirect after a form carries (shown on the page it leads to)."""
        assert response.status_code == 303, response.text
        page = await self.get(response.headers["location"])
        found = re.search(r'<p class="flash (?:ok|error)" role="status">(.*?)</p>', page.text, re.S)
        return found.group(1) if found else ""
