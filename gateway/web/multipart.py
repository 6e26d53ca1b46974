"""multipart/related bodies (RFC 2387, PS3.18 8.7.1.1), written part by part.

The boundary is random per response and checked against nothing: a 128-bit
random token cannot plausibly occur inside DICOM data (WADO-08 asks that it
never does; RFC 2046 5.1.1 allows 1-70 characters).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterable, AsyncIterator, Mapping


def new_boundary() -> str:
    return "dwgw-" + secrets.token_hex(16)


def content_type(boundary: str, part_type: str, **params: str) -> str:
    """The response Content-Type; ``type`` is quoted as RFC 2387 requires."""
    extra = "".join(f"; {k.replace('_', '-')}={v}" for k, v in params.items())
    return f'multipart/related; type="{part_type}"; boundary={boundary}{extra}'


def part_header(boundary: str, headers: Mapping[str, str]) -> bytes:
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"--{boundary}\r\n{lines}\r\n".encode("latin-1")


def closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode("latin-1")


async def stream_parts(
    boundary: str, parts: AsyncIterable[tuple[Mapping[str, str], bytes]]
) -> AsyncIterator[bytes]:
    """Body chunks: each part's header, its bytes, CRLF; then the close delimiter."""
    async for headers, body in parts:
        yield part_header(boundary, headers)
        yield body
        yield b"\r\n"
    yield closing(boundary)
