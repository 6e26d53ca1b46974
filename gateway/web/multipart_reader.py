"""Streaming reader for ``multipart/related`` request bodies (RFC 2046 5.1, RFC 2387).

STOW-RS (PS3.18 10.5, checklist STOW-01/06) uploads arrive as one multipart body
whose parts may each be hundreds of megabytes, so the body is parsed as it
streams in and memory stays bounded whatever the part sizes: the parser keeps
at most one delimiter's worth of bytes between chunks (plus, while a part's
header block is incomplete, that block, capped by ``max_header_size``).

API
---
``parse_content_type(value) -> (media_type, params)``
    Media type lower-cased; parameter names lower-cased, values unquoted.
``boundary_from_content_type(value) -> str``
    The ``boundary`` parameter, checked; raises ``MultipartError("no boundary")``.
``read_parts(chunks, boundary, *, spool_threshold, memory_budget, max_part_size,
max_total, max_header_size, spool_dir) -> AsyncIterator[SpooledPart]``
    Each part once its closing delimiter has been seen, its body in a
    ``SpooledTemporaryFile`` (memory up to ``spool_threshold``, then disk).
    The caller owns every yielded part and closes it (``with part: ...``).
``iter_parts(chunks, boundary, *, max_part_size, max_total, max_header_size)
-> AsyncIterator[StreamingPart]``
    Each part as soon as its headers are parsed; ``async for data in part``
    gives its body as it arrives.  Moving to the next part discards whatever
    of the current body was not read.
``MultipartReader``
    The object behind both (``await reader.next_part()``), for callers that
    want to mix the two styles, e.g. spool the JSON part of a
    ``type="application/dicom+json"`` upload and stream the bulk-data parts.

Errors
------
Every problem with the body raises ``MultipartError`` (a ``ValueError``; its
``reason`` is a short text for the 400 response), and only after every part
completed before the problem was delivered: a truncated body yields its
complete parts, then raises; the part cut short is never yielded by
``read_parts``.  ``MultipartTooLarge`` (a subclass) means ``max_part_size`` or
``max_total`` was exceeded: answer 413.  Results, including which error is
raised, do not depend on how the input is split into chunks.

What is accepted
----------------
- A preamble (also an empty one, or the bare CRLF dicomweb-client sends) and
  an epilogue are ignored; reading stops at the close delimiter, so nothing of
  the epilogue is pulled from the input.
- Transport padding (spaces, tabs) after a boundary; LF instead of CRLF at the
  end of the boundary line and of part header lines.  Inside bodies only
  ``CRLF--boundary`` delimits, so binary data with bare LFs stays intact.
- Folded header lines are joined; repeated header names are joined with
  ``", "`` (RFC 9110 5.3).  Header bytes are decoded as UTF-8, else Latin-1.
- Not accepted: header lines not closed by a blank line (so also the rare
  grammar-legal part made of headers only), and ``CRLF--boundary`` followed by
  anything but padding, a line end or ``--``.
- Exceptions of the input iterator (Starlette's ``ClientDisconnect``) pass
  through unchanged.

Speed: delimiters are found with ``bytes.find`` on whole chunks (no Python loop
over bytes); a chunk with no delimiter in it is passed on as the same object,
and one is copied only when a possible split delimiter from the previous chunk
has to be prepended.  ``read_parts`` joins an in-memory body once at the end of
the part.  100 x 512 KB in 64 KiB chunks parse in about 20-30 ms of CPU here
(tests/bench/test_bench_multipart.py), half of it in ``bytes.find``, whose
speed grows with the boundary length (short boundaries are slower to find).
"""

from __future__ import annotations

import contextlib
import io
import mmap
import tempfile
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Final

__all__ = [
    "DEFAULT_MAX_HEADER_SIZE",
    "DEFAULT_MEMORY_BUDGET",
    "DEFAULT_SPOOL_THRESHOLD",
    "MAX_BOUNDARY_LENGTH",
    "MultipartError",
    "MultipartReader",
    "MultipartTooLarge",
    "PartHeaders",
    "SpooledPart",
    "StreamingPart",
    "boundary_from_content_type",
    "iter_parts",
    "parse_content_type",
    "read_parts",
]

#: A part body up to this size stays in memory; larger ones go to a temp file.
DEFAULT_SPOOL_THRESHOLD: Final = 8 << 20
#: Bytes of part bodies that ``read_parts`` keeps in memory at once, summed over
#: the parts the caller still holds; beyond it new parts spool straight to disk.
DEFAULT_MEMORY_BUDGET: Final = 64 << 20
#: Largest header block of one part (the lines between boundary and blank line).
DEFAULT_MAX_HEADER_SIZE: Final = 16 << 10
#: RFC 2046 caps boundaries at 70 characters; some clients exceed that a little.
MAX_BOUNDARY_LENGTH: Final = 200


class MultipartError(ValueError):
    """The body (or its Content-Type) is not a usable multipart body: answer 400."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MultipartTooLarge(MultipartError):
    """A part or the whole body is over its configured limit: answer 413."""


# --------------------------------------------------------------------------- #
# Content-Type


def _unquote(value: str) -> str:
    out: list[str] = []
    chars = iter(value)
    for ch in chars:
        out.append(next(chars, "") if ch == "\\" else ch)
    return "".join(out)


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type value into (media type, parameters).

    Tolerant of what clients send: spaces around ``;`` and ``=``, quoted or
    bare values (quoted ones may contain ``;`` and backslash escapes).  Names
    are lower-cased, values kept as sent; the first of repeated names wins;
    parameters without ``=`` are skipped.
    """
    media, _, rest = value.partition(";")
    media = media.strip().lower()
    kind, slash, sub = media.partition("/")
    if not slash or not kind.strip() or not sub.strip():
        raise MultipartError(f"malformed Content-Type {value.strip()[:100]!r}")
    params: dict[str, str] = {}
    pos, n = 0, len(rest)
    while pos < n:
        semi = rest.find(";", pos)
        eq = rest.find("=", pos)
        if eq == -1 or (semi != -1 and semi < eq):  # "name" without "=": skip it
            pos = n if semi == -1 else semi + 1
            continue
        name = rest[pos:eq].strip().lower()
        pos = eq + 1
        while pos < n and rest[pos] in " \t":
            pos += 1
        if pos < n and rest[pos] == '"':
            end = pos + 1
            while end < n and rest[end] != '"':
                end += 2 if rest[end] == "\\" else 1
            param = _unquote(rest[pos + 1 : min(end, n)])
            semi = rest.find(";", end)
        else:
            semi = rest.find(";", pos)
            param = rest[pos : n if semi == -1 else semi].strip()
        if name and name not in params:
            params[name] = param
        pos = n if semi == -1 else semi + 1
    return media, params


def boundary_from_content_type(value: str) -> str:
    """The ``boundary`` parameter of a multipart Content-Type, validated.

    Raises ``MultipartError("no boundary")`` when it is missing or empty, and
    another ``MultipartError`` when it cannot be a boundary (not printable
    ASCII, longer than ``MAX_BOUNDARY_LENGTH``).  The media type itself is not
    checked here: a wrong one is the caller's 415, a bad boundary its 400.
    """
    _, params = parse_content_type(value)
    boundary = params.get("boundary", "")
    if not boundary:
        raise MultipartError("no boundary")
    _check_boundary(boundary)
    return boundary


def _check_boundary(boundary: str) -> bytes:
    if not boundary:
        raise MultipartError("no boundary")
    if len(boundary) > MAX_BOUNDARY_LENGTH:
        raise MultipartError(f"boundary longer than {MAX_BOUNDARY_LENGTH} characters")
    if not all(" " <= ch <= "~" for ch in boundary) or boundary.endswith(" "):
        raise MultipartError("boundary has characters RFC 2046 does not allow")
    return boundary.encode("ascii")


# --------------------------------------------------------------------------- #
# Part headers


class PartHeaders(Mapping[str, str]):
    """Header fields of one part; look-ups ignore case, keys iterate lower-cased."""

    __slots__ = ("_fields",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        fields: dict[str, str] = {}
        for name, value in items:
            key = name.lower()
            fields[key] = f"{fields[key]}, {value}" if key in fields else value
        self._fields = fields

    def __getitem__(self, key: str) -> str:
        return self._fields[key.lower()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._fields

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __repr__(self) -> str:
        return f"PartHeaders({self._fields!r})"


def _parse_header_block(block: bytes) -> PartHeaders:
    """Header lines (CRLF or LF, without the blank line) into ``PartHeaders``."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        text = block.decode("latin-1")
    fields: list[list[str]] = []
    for raw in text.split("\n"):
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line:
            continue
        if line[0] in " \t" and fields:  # obs-fold: continuation of the previous field
            fields[-1][1] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not name or " " in name or "\t" in name:
            raise MultipartError(
                "malformed part header line (a part needs a blank line after its headers)"
            )
        fields.append([name, value.strip()])
    return PartHeaders((name, value) for name, value in fields)


class _PartInfo:
    """What both part flavours share: the headers and the two STOW cares about."""

    __slots__ = ("headers",)

    def __init__(self, headers: PartHeaders) -> None:
        self.headers = headers

    @property
    def content_type(self) -> str | None:
        """The part's Content-Type as sent (``None`` when absent)."""
        return self.headers.get("content-type")

    @property
    def media_type(self) -> str | None:
        """Content-Type without parameters, lower-cased (``None`` when absent)."""
        value = self.headers.get("content-type")
        return None if value is None else value.partition(";")[0].strip().lower()

    @property
    def content_location(self) -> str | None:
        """Content-Location, which ties bulk-data parts to BulkDataURIs (STOW-01)."""
        return self.headers.get("content-location")


# --------------------------------------------------------------------------- #
# The parser: synchronous, push style, no I/O

# Event kinds; an event is (kind, payload).
_PART: Final = 0  # payload: PartHeaders; a part starts
_DATA: Final = 1  # payload: bytes of the current part's body
_END: Final = 2  # payload: None; the current part is complete
_DONE: Final = 3  # payload: None; close delimiter seen, nothing more follows
_ERROR: Final = 4  # payload: MultipartError; nothing more follows

_Event = tuple[int, object]

# Parser states.
_PREAMBLE: Final = 0  # before the first delimiter
_LINE: Final = 1  # after a delimiter: padding, then CRLF or "--"
_HEADERS: Final = 2  # inside a header block
_BODY: Final = 3  # inside a body
_FINISHED: Final = 4  # done or failed


class _Parser:
    """Turns body bytes into events; the outcome does not depend on chunking.

    Between ``feed`` calls only a short tail is kept: in a body, the bytes that
    could be the start of a delimiter split across chunks (they start with the
    delimiter's CR, and boundaries contain no CR, so it is the last CR among
    the final ``len(delimiter) - 1`` bytes).  A header block being received is
    accumulated in a bytearray (amortised appends) up to ``max_header_size``.
    """

    __slots__ = (
        "_acc",
        "_carry",
        "_delim",
        "_dlen",
        "_in_part",
        "_max_header",
        "_max_part",
        "_pad",
        "_part_size",
        "_scan",
        "_state",
        "done",
    )

    def __init__(self, boundary: bytes, max_header_size: int, max_part_size: int | None) -> None:
        self._delim = b"\r\n--" + boundary
        self._dlen = len(self._delim)
        # A body may start with "--boundary" (empty preamble): pretend a CRLF came
        # before it so the first delimiter is found like every other one.
        self._carry = b"\r\n"
        self._acc: bytearray | None = None  # header block spanning chunks
        self._scan = 0  # where to resume searching in _acc
        self._state = _PREAMBLE
        self._in_part = False
        self._pad = 0
        self._part_size = 0
        self._max_header = max_header_size
        self._max_part = max_part_size
        self.done = False  # the close delimiter was seen

    def feed(self, data: bytes) -> list[_Event]:
        state = self._state
        if state == _BODY and not self._carry:
            # Fast path for the bulk of a large part: a chunk with no delimiter and
            # no possible start of one at its end goes out as it is.
            delim = self._delim
            n = len(data)
            if delim not in data:
                r = data.rfind(b"\r", max(0, n - self._dlen + 1))
                if r < 0 or not delim.startswith(data[r:]):
                    if not n:
                        return []
                    self._part_size += n
                    if self._max_part is None or self._part_size <= self._max_part:
                        return [(_DATA, data)]
                    self._part_size -= n  # let the general path report it
        events: list[_Event] = []
        if state == _FINISHED or not data:
            return events
        if self._acc is not None:  # continuing a header block
            self._acc += data
            end = self._headers(self._acc, 0, events)
            if end < 0:
                return events
            buf = bytes(memoryview(self._acc)[end:])  # only bytes of the latest chunk
            self._acc = None
            pos = 0
            state = self._state
        else:
            buf = self._carry + data if self._carry else data
            self._carry = b""
            pos = 0
        delim, dlen = self._delim, self._dlen
        n = len(buf)
        while True:
            if state in (_BODY, _PREAMBLE):
                i = buf.find(delim, pos)
                if i >= 0:
                    if state == _BODY and not self._data(buf[pos:i], events):
                        return events
                    if self._in_part:
                        events.append((_END, None))
                        self._in_part = False
                    pos = i + dlen
                    state = self._state = _LINE
                    self._pad = 0
                    continue
                # Keep a tail that may be the start of a split delimiter.
                cut = n
                r = buf.rfind(b"\r", max(pos, n - dlen + 1))
                if r >= 0 and delim.startswith(buf[r:]):
                    cut = r
                    self._carry = buf[r:]
                if state == _BODY and cut > pos:
                    self._data(buf[pos:cut], events)  # the whole chunk: no copy
                return events
            if state == _LINE:
                j = pos
                while j < n and buf[j] in b" \t":
                    j += 1
                self._pad += j - pos
                if self._pad > self._max_header:
                    return self._fail(events, "transport padding after a boundary too long")
                if j >= n:
                    return events
                c = buf[j]
                if c == 0x2D or c == 0x0D:  # "--" or CRLF; both need a second byte
                    if j + 1 >= n:
                        self._carry = buf[j:]
                        return events
                    if c == 0x2D and buf[j + 1] == 0x2D:
                        self._state = _FINISHED
                        self.done = True
                        events.append((_DONE, None))
                        return events
                    if c == 0x0D and buf[j + 1] == 0x0A:
                        pos = j + 2
                        state = self._state = _HEADERS
                        continue
                elif c == 0x0A:
                    pos = j + 1
                    state = self._state = _HEADERS
                    continue
                return self._fail(events, "unexpected bytes after a boundary delimiter")
            # _HEADERS
            end = self._headers(buf, pos, events)
            if end == -2:
                return events
            if end == -1:
                if self._state == _HEADERS:  # incomplete: keep the block
                    self._acc = bytearray(buf[pos:])
                    self._scan = 0
                return events
            pos = end
            state = self._state

    def _headers(self, buf: bytes | bytearray, pos: int, events: list[_Event]) -> int:
        """Parse a header block starting at ``buf[pos]``.

        Returns the position after the blank line (state is then _BODY), -1
        when more bytes are needed, -2 on error (already reported).
        """
        n = len(buf)
        if n - pos < 2:
            if n > pos and buf[pos] == 0x0A:
                return self._start_part(PartHeaders(), events, pos + 1)
            return -1
        if buf[pos] == 0x0A:  # no header lines at all
            return self._start_part(PartHeaders(), events, pos + 1)
        if buf[pos] == 0x0D and buf[pos + 1] == 0x0A:
            return self._start_part(PartHeaders(), events, pos + 2)
        limit = self._max_header
        delim = self._delim
        scan = max(pos, self._scan)
        # The blank line is "\n\r\n" or "\n\n" after the last header line.
        stop = min(n, pos + limit)
        i = buf.find(b"\n\r\n", scan, stop)
        j = buf.find(b"\n\n", scan, stop if i < 0 else i + 2)
        if j >= 0 and (i < 0 or j < i):
            end, text_end = j + 2, j + 1
        elif i >= 0:
            end, text_end = i + 3, i + 1
        else:
            end = text_end = -1
        d = buf.find(delim, max(pos, self._scan - self._dlen), pos + limit + self._dlen)
        if d >= 0 and (end < 0 or d < text_end) and d - pos < limit:
            self._fail(events, "a part has no blank line after its headers")
            return -2
        if end < 0:
            if n - pos >= limit + self._dlen:
                self._fail(events, f"part headers larger than {limit} bytes")
                return -2
            self._scan = max(pos, n - self._dlen)
            return -1
        # A terminator found before ``stop`` ends within the limit.
        try:
            headers = _parse_header_block(bytes(buf[pos:text_end]))
        except MultipartError as exc:
            self._fail(events, exc.reason)
            return -2
        return self._start_part(headers, events, end)

    def _start_part(self, headers: PartHeaders, events: list[_Event], end: int) -> int:
        events.append((_PART, headers))
        self._scan = 0
        self._in_part = True
        self._part_size = 0
        self._state = _BODY
        return end

    def _data(self, data: bytes, events: list[_Event]) -> bool:
        if not data:
            return True
        self._part_size += len(data)
        if self._max_part is not None and self._part_size > self._max_part:
            self._fail(
                events,
                f"a part is larger than {self._max_part} bytes",
                MultipartTooLarge,
            )
            return False
        events.append((_DATA, data))
        return True

    def _fail(
        self,
        events: list[_Event],
        reason: str,
        cls: type[MultipartError] = MultipartError,
    ) -> list[_Event]:
        self._state = _FINISHED
        self._acc = None
        self._carry = b""
        events.append((_ERROR, cls(reason)))
        return events

    def close(self) -> list[_Event]:
        """End of input: an error unless the close delimiter was seen."""
        state = self._state
        if state == _FINISHED:
            return []
        if state == _PREAMBLE:
            reason = "no multipart boundary delimiter in the body"
        elif state == _BODY:
            reason = "body ended inside a part, without the closing boundary"
        else:
            reason = "body ended without the closing boundary"
        return self._fail([], reason)


# --------------------------------------------------------------------------- #
# Async layer


class MultipartReader:
    """Pulls chunks on demand, feeds the parser and hands out parts in order.

    Input is read only as fast as the caller consumes parts, which keeps
    backpressure from the consumer (a C-STORE) to the HTTP socket.
    """

    def __init__(
        self,
        chunks: AsyncIterable[bytes],
        boundary: str,
        *,
        max_part_size: int | None = None,
        max_total: int | None = None,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
    ) -> None:
        self._chunks = chunks.__aiter__()
        self._parser = _Parser(_check_boundary(boundary), max_header_size, max_part_size)
        self._events: deque[_Event] = deque()
        self._max_total = max_total
        self._total = 0
        self._input_done = False
        self._finished = False
        self._error: MultipartError | None = None
        self._current: StreamingPart | None = None

    @property
    def bytes_read(self) -> int:
        """Bytes taken from the input so far, counted by whole chunks."""
        return self._total

    async def _pull(self) -> None:
        if self._input_done:  # cannot happen: close() always ends with DONE or ERROR
            raise RuntimeError("multipart reader has no more input")
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            self._input_done = True
            self._events.extend(self._parser.close())
            return
        if not chunk:
            return
        if type(chunk) is not bytes:
            chunk = bytes(chunk)
        self._total += len(chunk)
        limit = self._max_total
        if limit is not None and self._total > limit:
            # Parse what fits, so parts complete within the limit are delivered
            # (and a body that closes within the limit is accepted).
            self._input_done = True
            self._events.extend(self._parser.feed(chunk[: len(chunk) - (self._total - limit)]))
            if not self._parser.done:
                self._events.append((_ERROR, MultipartTooLarge(f"body larger than {limit} bytes")))
            return
        self._events.extend(self._parser.feed(chunk))

    async def _next_event(self) -> _Event:
        if self._error is not None:  # the body is broken: every later read says so
            raise self._error
        events = self._events
        while not events:
            await self._pull()
        event = events.popleft()
        kind, payload = event
        if kind == _ERROR:
            assert isinstance(payload, MultipartError)
            self._finished = True
            self._error = payload
            raise payload
        if kind == _DONE:
            self._finished = True
        return event

    async def next_part(self) -> StreamingPart | None:
        """The next part (its body not read yet), or None after the last one.

        Whatever the caller left unread of the previous part is read and
        discarded first.  Raises the body's ``MultipartError`` once every part
        before the problem was handed out.
        """
        current = self._current
        if current is not None:
            async for _ in current:  # skip what the caller left unread
                pass
            self._current = None
        if self._error is not None:
            raise self._error
        if self._finished:
            return None
        kind, payload = await self._next_event()
        if kind == _DONE:
            return None
        assert kind == _PART and isinstance(payload, PartHeaders)
        self._current = StreamingPart(self, payload)
        return self._current


class StreamingPart(_PartInfo):
    """One part whose body is read as it arrives: ``async for data in part``.

    Valid until the reader moves to the next part.  ``size`` counts the body
    bytes delivered so far; ``complete`` turns true once the closing delimiter
    of the part was seen.  A body error surfaces from the iteration.
    """

    __slots__ = ("_complete", "_reader", "size")

    def __init__(self, reader: MultipartReader, headers: PartHeaders) -> None:
        super().__init__(headers)
        self._reader = reader
        self._complete = False
        self.size = 0

    @property
    def complete(self) -> bool:
        return self._complete

    def __aiter__(self) -> StreamingPart:
        return self

    async def __anext__(self) -> bytes:
        if self._complete or self._reader._current is not self:
            raise StopAsyncIteration
        kind, payload = await self._reader._next_event()
        if kind == _DATA:
            data: bytes = payload  # type: ignore[assignment]  # hot path: no isinstance
            self.size += len(data)
            return data
        self._complete = True  # _END
        raise StopAsyncIteration

    async def read(self) -> bytes:
        """The rest of the body in memory; only for parts known to be small."""
        return b"".join([data async for data in self])


async def iter_parts(
    chunks: AsyncIterable[bytes],
    boundary: str,
    *,
    max_part_size: int | None = None,
    max_total: int | None = None,
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
) -> AsyncIterator[StreamingPart]:
    """Parts as soon as their headers are parsed; see ``StreamingPart``."""
    reader = MultipartReader(
        chunks,
        boundary,
        max_part_size=max_part_size,
        max_total=max_total,
        max_header_size=max_header_size,
    )
    while (part := await reader.next_part()) is not None:
        yield part


# --------------------------------------------------------------------------- #
# Spooled parts


class _MemoryBudget:
    """Body bytes in memory across the parts one ``read_parts`` call handed out."""

    __slots__ = ("free",)

    def __init__(self, size: int) -> None:
        self.free = size


class SpooledPart(_PartInfo):
    """A complete part, its body in a ``SpooledTemporaryFile`` (``file``, at offset 0).

    Bodies up to the spool threshold stay in memory, larger ones are on disk.
    ``read_bytes()`` and ``view()`` give the body without a second copy where
    possible.  Close the part (or use ``with``) to free the memory or the file.
    """

    __slots__ = ("_budget", "_mmap", "_reserved", "file", "size")

    def __init__(
        self,
        headers: PartHeaders,
        file: tempfile.SpooledTemporaryFile[bytes],
        size: int,
        budget: _MemoryBudget | None = None,
        reserved: int = 0,
    ) -> None:
        super().__init__(headers)
        self.file = file
        self.size = size
        self._budget = budget
        self._reserved = reserved
        self._mmap: mmap.mmap | None = None

    @property
    def in_memory(self) -> bool:
        """True while the body has not rolled over to a file on disk."""
        return not getattr(self.file, "_rolled", True)

    def read_bytes(self) -> bytes:
        """The whole body as bytes.

        In memory this is ``BytesIO.getvalue()``, which hands out the buffer
        itself (no copy) once writing is over; on disk it reads the file once.
        Prefer ``view()`` for bodies on disk.
        """
        if self.in_memory:
            inner = self.file._file
            assert isinstance(inner, io.BytesIO)
            return inner.getvalue()
        self.file.seek(0)
        data = self.file.read()
        self.file.seek(0)
        return data

    def read(self) -> bytes:
        """Same as ``read_bytes()`` (the name ``StreamingPart.read`` also has)."""
        return self.read_bytes()

    def view(self) -> memoryview:
        """The body as a read-only memoryview: over the bytes in memory, or over
        a read-only ``mmap`` of the spool file, so large bodies are never
        loaded twice (the page cache serves them).  Valid until ``close()``;
        a view still referenced at ``close()`` keeps its mapping alive.
        """
        if self.in_memory:
            return memoryview(self.read_bytes())
        if self.size == 0:
            return memoryview(b"")
        if self._mmap is None:
            self.file.flush()
            self._mmap = mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_READ)
        return memoryview(self._mmap)

    def close(self) -> None:
        """Free the body (memory or temp file); idempotent."""
        if self._mmap is not None:
            # A view still in use keeps the mapping; the GC unmaps it later.
            with contextlib.suppress(BufferError):
                self._mmap.close()
            self._mmap = None
        self.file.close()
        if self._budget is not None:
            self._budget.free += self._reserved
            self._budget = None
            self._reserved = 0

    def __enter__(self) -> SpooledPart:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "memory" if self.in_memory else "disk"
        return f"<SpooledPart {self.content_type!r} {self.size} bytes in {where}>"


async def read_parts(
    chunks: AsyncIterable[bytes],
    boundary: str,
    *,
    spool_threshold: int = DEFAULT_SPOOL_THRESHOLD,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    max_part_size: int | None = None,
    max_total: int | None = None,
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
    spool_dir: str | None = None,
) -> AsyncIterator[SpooledPart]:
    """Each complete part of the body, spooled; the caller closes each one.

    A body stays in memory up to ``spool_threshold`` bytes, and all bodies in
    memory that the caller still holds together stay under ``memory_budget``
    (further parts spool to disk at once): a caller that keeps every part, as
    the ``dicom+json`` form of STOW must, still has bounded memory.  Spool
    files are written from the event loop: page-cache writes of one chunk cost
    microseconds, less than a hop to a worker thread.
    """
    reader = MultipartReader(
        chunks,
        boundary,
        max_part_size=max_part_size,
        max_total=max_total,
        max_header_size=max_header_size,
    )
    budget = _MemoryBudget(memory_budget)
    while (part := await reader.next_part()) is not None:
        reserved = max(0, min(spool_threshold, budget.free))
        budget.free -= reserved
        # max_size=0 would mean "never roll over"; 1 rolls on the first byte.
        # Closed by the SpooledPart that owns it (or below on error), not by a with.
        file = tempfile.SpooledTemporaryFile(max_size=max(reserved, 1), dir=spool_dir)  # noqa: SIM115
        pending: list[bytes] | None = []  # the body while it may still stay in memory
        size = 0
        try:
            async for data in part:
                size += len(data)
                if pending is None:
                    file.write(data)
                elif size <= reserved:
                    pending.append(data)
                else:  # over the threshold: to disk, with what was kept so far
                    file.rollover()
                    file.writelines(pending)
                    file.write(data)
                    pending = None
            if pending is not None:
                # One join (none for a single chunk) into a BytesIO that shares it:
                # growing the spool's own BytesIO chunk by chunk reallocates and
                # copies, and getvalue() on this one hands the bytes out as is.
                file._file = io.BytesIO(b"".join(pending))
        except BaseException:
            file.close()
            budget.free += reserved
            raise
        spooled = SpooledPart(part.headers, file, size, budget, reserved)
        if not spooled.in_memory:  # on disk: the memory reservation goes back
            budget.free += reserved
            spooled._reserved = 0
        elif reserved > size:
            budget.free += reserved - size
            spooled._reserved = size
        file.seek(0)
        yield spooled
