"""A file uploaded to the API, refused as soon as the request says or shows it is over the limit.

FastAPI's `File()` parameter has Starlette spool the whole multipart body (to disk past 1 MiB)
before the route runs, so a size checked on the parsed file comes after any size was received.
Here the declared Content-Length is checked first, and a body without one (chunked) is counted
while it is parsed: past the limit, reading stops and the upload is refused in words.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from fastapi import Request
from starlette.formparsers import MultiPartException, MultiPartParser

from wxkf.push.errors import InvalidInput

FORM_OVERHEAD = 64 << 10  # the multipart boundary and part headers around the file


def too_large(limit: int, filename: str = "") -> InvalidInput:
    """One wording for an upload over `limit` bytes, wherever it is noticed (the API, the console)."""
    mb = limit >> 20
    return InvalidInput([f"{filename or 'file'}: 文件超过 {mb} MB / the file is over {mb} MB"])


async def read_upload(request: Request, name: str, limit: int) -> tuple[bytes, str] | None:
    """The file in form field `name` (bytes and filename), None when there is none; `InvalidInput`
    when the body is not a form, or is or declares more than `limit` bytes of file."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + FORM_OVERHEAD:
        raise too_large(limit)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidInput(
            [f"{name}: 须以 multipart/form-data 上传文件 / upload the file as multipart/form-data"]
        )

    async def counted() -> AsyncGenerator[bytes, None]:
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit + FORM_OVERHEAD:
                raise too_large(limit)
            yield chunk

    try:
        form = await MultiPartParser(request.headers, counted(), max_files=1, max_fields=10).parse()
    except MultiPartException as exc:
        raise InvalidInput([f"{name}: 上传格式错误 / malformed upload: {exc.message}"]) from None
    try:
        item = form.get(name)
        if item is None or isinstance(item, str) or not item.filename:
            return None
        data, filename = await item.read(limit + 1), item.filename
    finally:
        await form.close()  # the spooled temporary files
    if len(data) > limit:
        raise too_large(limit, filename)
    return data, filename
