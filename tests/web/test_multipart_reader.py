"""Streaming multipart/related reader (STOW-01, STOW-06; RFC 2046 5.1, RFC 2387).

Every body is checked against what it was built from, and most checks run with
the body cut into chunks of 1, 2, 3, 7, 64 and 65536 bytes: a delimiter split
across two chunks at any byte must give the same parts and the same error.
"""

from __future__ import annotations

import asyncio
import random
import tracemalloc
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import pytest

from gateway.web.multipart_reader import (
    MultipartError,
    MultipartReader,
    MultipartTooLarge,
    PartHeaders,
    SpooledPart,
    boundary_from_content_type,
    iter_parts,
    parse_content_type,
    read_parts,
)

BOUNDARY = "dwgw-test-5e3c0a9b1f"
B = BOUNDARY.encode()
CHUNK_SIZES = [1, 2, 3, 7, 64, 65536]

Part = tuple[dict[str, str], bytes]

#: Bodies that look like delimiters but are not (no CRLF before "--boundary",
#: a partial boundary, CR/LF/dash runs at the edges of a body).
TRICKY_BODIES: list[bytes] = [
    b"",
    b"--",
    b"\r\n",
    b"\r",
    b"\r\n-",
    b"\r\n--",
    b"--" + B,
    b"--" + B + b"--",
    b"x--" + B + b"--\r\n",
    B,
    b"\n--" + B + b"\n",
    b"\r\n--" + B[:-1] + b"\r\n",
    b"\r\n--" + B[:-1],
    b"\r\r\n\r\n--\r\n--" + B[:5] + b"\r\n\r\n",
    bytes(range(256)) * 4 + b"--" + B + b"\r\n" + bytes(range(255, -1, -1)),
]


# --------------------------------------------------------------------------- #
# helpers


def build_body(
    parts: Sequence[Part],
    boundary: str = BOUNDARY,
    *,
    preamble: bytes = b"",
    epilogue: bytes = b"",
    padding: bytes = b"",
    close: bool = True,
) -> bytes:
    """A multipart body the way MultipartEncoder-style writers lay it out."""
    dash = b"--" + boundary.encode()
    out = [preamble + b"\r\n" if preamble else b""]
    for i, (headers, body) in enumerate(parts):
        out.append((b"\r\n" if i else b"") + dash + padding + b"\r\n")
        out.extend(f"{k}: {v}\r\n".encode() for k, v in headers.items())
        out.append(b"\r\n" + body)
    if close:
        out.append(b"\r\n" + dash + b"--" + padding + (b"\r\n" + epilogue if epilogue else b""))
    return b"".join(out)


def dicom_parts(count: int, size: int, seed: int = 0) -> list[Part]:
    rng = random.Random(seed)
    return [
        (
            {"Content-Type": "application/dicom", "Content-Location": f"/bulk/{i}"},
            rng.randbytes(size),
        )
        for i in range(count)
    ]


async def chunked(body: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


async def split_at(body: bytes, cuts: Iterable[int]) -> AsyncIterator[bytes]:
    start = 0
    for cut in sorted(cuts):
        yield body[start:cut]
        start = cut
    yield body[start:]


def collect(
    body: bytes, chunk_size: int = 65536, boundary: str = BOUNDARY, **kw: Any
) -> tuple[list[Part], MultipartError | None]:
    """Parts read with read_parts (headers lower-cased) and the error, if any."""
    return asyncio.run(collect_from(chunked(body, chunk_size), boundary, **kw))


async def collect_from(
    chunks: AsyncIterator[bytes], boundary: str = BOUNDARY, **kw: Any
) -> tuple[list[Part], MultipartError | None]:
    out: list[Part] = []
    try:
        async for part in read_parts(chunks, boundary, **kw):
            with part:
                assert part.size == len(part.read_bytes())
                out.append((dict(part.headers), part.read_bytes()))
    except MultipartError as exc:
        return out, exc
    return out, None


def lowered(parts: Sequence[Part]) -> list[Part]:
    return [({k.lower(): v for k, v in h.items()}, b) for h, b in parts]


# --------------------------------------------------------------------------- #
# Content-Type


def test_parse_content_type_quoted_and_bare() -> None:
    media, params = parse_content_type(
        'Multipart/Related; type="application/dicom"; boundary=abc123'
    )
    assert media == "multipart/related"
    assert params == {"type": "application/dicom", "boundary": "abc123"}


def test_parse_content_type_tolerates_spacing_case_and_quoted_semicolons() -> None:
    media, params = parse_content_type(
        'multipart/related ;TYPE = application/dicom+json ;  Boundary= "a b;c=d" ;x'
    )
    assert media == "multipart/related"
    assert params == {"type": "application/dicom+json", "boundary": "a b;c=d"}


def test_parse_content_type_escapes_and_first_wins() -> None:
    _, params = parse_content_type(r'multipart/related; boundary="a\"b"; boundary=zzz; junk')
    assert params == {"boundary": 'a"b'}


@pytest.mark.parametrize("value", ["", "   ", "multipart", "/related", "multipart/; boundary=a"])
def test_parse_content_type_malformed(value: str) -> None:
    with pytest.raises(MultipartError, match="malformed Content-Type"):
        parse_content_type(value)


def test_boundary_from_content_type() -> None:
    value = f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"'
    assert boundary_from_content_type(value) == BOUNDARY


@pytest.mark.parametrize(
    "value",
    [
        'multipart/related; type="application/dicom"',
        "multipart/related; boundary=",
        'multipart/related; boundary=""',
        "multipart/related; boundary",
    ],
)
def test_no_boundary(value: str) -> None:
    with pytest.raises(MultipartError) as info:
        boundary_from_content_type(value)
    assert info.value.reason == "no boundary"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("boundary", ['"' + "x" * 201 + '"', '"abc "', '"ab\tc"', "abé"])
def test_unusable_boundary(boundary: str) -> None:
    with pytest.raises(MultipartError, match="boundary"):
        boundary_from_content_type(f"multipart/related; boundary={boundary}")


def test_part_headers_case_insensitive() -> None:
    headers = PartHeaders([("Content-Type", "a/b"), ("X-Dup", "1"), ("x-dup", "2")])
    assert headers["content-type"] == headers["CONTENT-TYPE"] == "a/b"
    assert "Content-TYPE" in headers and 3 not in headers
    assert headers["X-DUP"] == "1, 2"
    assert list(headers) == ["content-type", "x-dup"] and len(headers) == 2


# --------------------------------------------------------------------------- #
# Round trips


@pytest.mark.parametrize("count", [1, 3, 100])
def test_round_trip(count: int) -> None:
    parts = dicom_parts(count, 3000, seed=count)
    got, err = collect(build_body(parts), 4096)
    assert err is None
    assert got == lowered(parts)


def test_part_properties() -> None:
    parts = [
        ({"content-type": 'Application/DICOM; transfer-syntax="1.2.840.10008.1.2.1"'}, b"a"),
        ({"Content-Location": "http://h/bulk/1"}, b"b"),
    ]

    async def run() -> list[tuple[str | None, str | None, str | None]]:
        out = []
        async for part in read_parts(chunked(build_body(parts), 7), BOUNDARY):
            with part:
                out.append((part.content_type, part.media_type, part.content_location))
        return out

    assert asyncio.run(run()) == [
        ('Application/DICOM; transfer-syntax="1.2.840.10008.1.2.1"', "application/dicom", None),
        (None, None, "http://h/bulk/1"),
    ]


def tricky_body() -> tuple[bytes, list[Part]]:
    parts: list[Part] = [({"Content-Type": "application/octet-stream"}, b) for b in TRICKY_BODIES]
    parts.append(({}, b"no headers at all"))
    parts += dicom_parts(2, 5000, seed=7)
    body = build_body(
        parts,
        preamble=b"This is a preamble with --" + B + b" inside\r\n--" + B[:-2],
        epilogue=b"epilogue \r\n--" + B + b"\r\ngarbage",
        padding=b" \t ",
    )
    return body, lowered(parts)


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_delimiter_split_at_every_chunk_size(chunk_size: int) -> None:
    body, expected = tricky_body()
    got, err = collect(body, chunk_size)
    assert err is None
    assert got == expected


def test_random_chunk_edges() -> None:
    body, expected = tricky_body()
    rng = random.Random(42)
    for _ in range(30):
        cuts = rng.sample(range(1, len(body)), 40)
        got, err = asyncio.run(collect_from(split_at(body, cuts)))
        assert err is None
        assert got == expected


def test_empty_chunks_and_bytearray_chunks_are_fine() -> None:
    parts = dicom_parts(2, 100)
    body = build_body(parts)

    async def chunks() -> AsyncIterator[bytes]:
        yield b""
        yield bytearray(body[:50])  # type: ignore[misc]
        yield b""
        yield body[50:]
        yield b""

    got, err = asyncio.run(collect_from(chunks()))
    assert err is None and got == lowered(parts)


def test_close_delimiter_at_very_end_and_no_trailing_crlf() -> None:
    parts = dicom_parts(2, 10)
    body = build_body(parts)
    assert body.endswith(b"--" + B + b"--")
    for size in CHUNK_SIZES:
        assert collect(body, size) == (lowered(parts), None)


def test_empty_multipart_has_no_parts() -> None:
    assert collect(b"--" + B + b"--\r\n") == ([], None)


def test_lf_only_boundary_lines_and_headers() -> None:
    body = (
        b"--" + B + b"\nContent-Type: a/b\nContent-Location: x\n\nbody1\r\n--" + B + b"  \n"
        b"\nbody2 with \n--" + B + b" inside\r\n--" + B + b"--"
    )
    for size in CHUNK_SIZES:
        got, err = collect(body, size)
        assert err is None
        assert got == [
            ({"content-type": "a/b", "content-location": "x"}, b"body1"),
            ({}, b"body2 with \n--" + B + b" inside"),
        ]


def test_folded_header_is_joined() -> None:
    body = b"--" + B + b"\r\nContent-Type: a/b;\r\n\tx=1\r\n\r\nz\r\n--" + B + b"--"
    assert collect(body) == ([({"content-type": "a/b; x=1"}, b"z")], None)


def test_utf8_and_latin1_header_values() -> None:
    body = (
        b"--" + B + b"\r\nContent-Location: /b/\xc3\xa9\r\n\r\n1\r\n--" + B + b"\r\n"
        b"Content-Location: /b/\xe9\r\n\r\n2\r\n--" + B + b"--"
    )
    got, _ = collect(body)
    assert [h["content-location"] for h, _ in got] == ["/b/é", "/b/é"]


def test_requests_toolbelt_encoder_is_understood() -> None:
    from requests_toolbelt import MultipartEncoder

    data = random.Random(3).randbytes(70000) + b"\r\n--"
    encoder = MultipartEncoder(
        fields=[
            ("a", ("a.dcm", data, "application/dicom")),
            ("b", ("b.json", b"[{}]", "application/dicom+json")),
        ]
    )
    body = encoder.to_string()
    boundary = boundary_from_content_type(encoder.content_type)
    for size in (1, 7, 65536):
        got, err = collect(body, size, boundary)
        assert err is None
        assert [(h["content-type"], b) for h, b in got] == [
            ("application/dicom", data),
            ("application/dicom+json", b"[{}]"),
        ]
        assert 'name="a"' in got[0][0]["content-disposition"]


def test_dicomweb_client_stow_body_is_understood() -> None:
    """dicomweb-client sends a bare CRLF preamble and no CRLF after the close."""
    from dicomweb_client.web import DICOMwebClient

    instances = [random.Random(i).randbytes(1000 * i + 1) for i in range(4)]
    content_type = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    body = DICOMwebClient._encode_multipart_message(instances, content_type)
    for size in CHUNK_SIZES:
        got, err = collect(body, size, boundary_from_content_type(content_type))
        assert err is None
        assert [b for _, b in got] == instances


# --------------------------------------------------------------------------- #
# Errors: raised after every complete part before the problem was yielded


def three_parts() -> tuple[bytes, list[Part]]:
    parts = dicom_parts(3, 1000, seed=5)
    return build_body(parts), lowered(parts)


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_truncated_inside_last_part(chunk_size: int) -> None:
    body, expected = three_parts()
    got, err = collect(body[: len(body) - 500], chunk_size)
    assert got == expected[:2]  # the cut-off third part is not yielded
    assert type(err) is MultipartError
    assert err.reason == "body ended inside a part, without the closing boundary"


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_truncated_before_close_marker(chunk_size: int) -> None:
    body, expected = three_parts()
    got, err = collect(body[:-2], chunk_size)  # "...\r\n--boundary" without "--"
    assert got == expected  # the third part's delimiter was seen: it is complete
    assert err is not None and err.reason == "body ended without the closing boundary"


@pytest.mark.parametrize("cut", [3, 2 + len(B) + 1, 2 + len(B) + 2 + 10])
def test_truncated_in_first_delimiter_or_headers(cut: int) -> None:
    body, _ = three_parts()
    for size in (1, 65536):
        got, err = collect(body[:cut], size)
        assert got == []
        assert (err is not None and "ended" in err.reason) or "no multipart" in str(err)


@pytest.mark.parametrize("body", [b"", b"just some text\r\n", b"--other\r\n\r\nx\r\n--other--"])
def test_no_delimiter_at_all(body: bytes) -> None:
    got, err = collect(body)
    assert got == []
    assert err is not None and err.reason == "no multipart boundary delimiter in the body"


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_part_without_blank_line_after_headers(chunk_size: int) -> None:
    body, expected = three_parts()
    broken = body.replace(b"Content-Location: /bulk/1\r\n\r\n", b"Content-Location: /bulk/1\r\n")
    got, err = collect(broken, chunk_size)
    assert got == expected[:1]
    assert err is not None and "blank line" in err.reason


@pytest.mark.parametrize("boundary", [BOUNDARY, "a:b"])  # "--a:b" would pass as a header line
@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_delimiter_inside_header_block(boundary: str, chunk_size: int) -> None:
    dash = b"--" + boundary.encode()
    body = (
        dash + b"\r\nX: 1\r\n\r\nfirst\r\n" + dash + b"\r\nContent-Type: a/b\r\n" + dash + b"\r\n"
        b"X: 2\r\n\r\nthird\r\n" + dash + b"--"
    )
    got, err = collect(body, chunk_size, boundary)
    assert got == [({"x": "1"}, b"first")]
    assert err is not None and err.reason == "a part has no blank line after its headers"
    # The same at the end of the body: reported as such, not as a truncation.
    got, err = collect(dash + b"\r\nContent-Type: a/b\r\n" + dash + b"--", chunk_size, boundary)
    assert got == [] and err is not None
    assert err.reason == "a part has no blank line after its headers"


def test_part_whose_first_body_line_looks_like_no_header() -> None:
    body = (
        b"--" + B + b"\r\nContent-Type: a/b\r\n\r\nok\r\n--" + B + b"\r\n"
        b"Content-Type: a/b\r\nthis is data\r\n\r\nmore\r\n--" + B + b"--"
    )
    got, err = collect(body, 3)
    assert got == [({"content-type": "a/b"}, b"ok")]
    assert err is not None and "blank line" in err.reason


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_headers_too_large(chunk_size: int) -> None:
    parts = [({"X": "small"}, b"1"), ({"X": "y" * 20000}, b"2"), ({}, b"3")]
    got, err = collect(build_body(parts), chunk_size)
    assert got == lowered(parts[:1])
    assert type(err) is MultipartError and err.reason == "part headers larger than 16384 bytes"


def test_header_limit_is_inclusive() -> None:
    parts = [({"X": "y" * 93}, b"1")]  # "X: " + 93 + CRLF + CRLF = 100 bytes
    assert collect(build_body(parts), 1, max_header_size=100)[1] is None
    got, err = collect(build_body(parts), 1, max_header_size=99)
    assert got == [] and err is not None and "headers larger than 99" in err.reason


def test_headers_never_terminated_on_a_long_stream() -> None:
    body = b"--" + B + b"\r\nX: " + b"a" * 100_000
    got, err = collect(body, 1000)
    assert got == [] and err is not None and "headers larger" in err.reason


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_part_too_large(chunk_size: int) -> None:
    parts = [({}, b"a" * 150), ({}, b"b" * 151), ({}, b"c")]
    got, err = collect(build_body(parts), chunk_size, max_part_size=150)
    assert got == parts[:1]
    assert isinstance(err, MultipartTooLarge)
    assert err.reason == "a part is larger than 150 bytes"


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_total_too_large(chunk_size: int) -> None:
    body, expected = three_parts()
    # Just past the second part's delimiter: two parts complete, the third is not.
    limit = body.index(b"\r\n--" + B, body.index(b"/bulk/1")) + len(B) + 4
    got, err = collect(body, chunk_size, max_total=limit)
    assert got == expected[:2]
    assert isinstance(err, MultipartTooLarge) and err.reason == f"body larger than {limit} bytes"


def test_total_limit_counts_up_to_the_close_delimiter() -> None:
    body, expected = three_parts()
    assert collect(body, 7, max_total=len(body)) == (expected, None)
    got, err = collect(body, 7, max_total=len(body) - 1)
    assert got == expected and isinstance(err, MultipartTooLarge)
    # Bytes after the close delimiter (the epilogue) are never read, so never counted.
    with_epilogue = body + b"\r\n" + b"e" * 1000
    assert collect(with_epilogue, 7, max_total=len(body)) == (expected, None)


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES)
def test_garbage_after_boundary(chunk_size: int) -> None:
    body, expected = three_parts()
    i = body.index(b"\r\n--" + B, body.index(b"/bulk/1"))
    broken = body[: i + 4 + len(B)] + b"X" + body[i + 4 + len(B) :]
    got, err = collect(broken, chunk_size)
    assert got == expected[:2]
    assert err is not None and err.reason == "unexpected bytes after a boundary delimiter"


def test_endless_transport_padding() -> None:
    body = b"--" + B + b" " * 50_000
    got, err = collect(body, 1000)
    assert got == [] and err is not None and "padding" in err.reason


def test_error_is_raised_again_by_the_reader() -> None:
    async def run() -> None:
        reader = MultipartReader(chunked(b"--" + B + b"\r\n\r\nabc", 2), BOUNDARY)
        part = await reader.next_part()
        assert part is not None
        with pytest.raises(MultipartError, match="ended inside a part"):
            await part.read()
        with pytest.raises(MultipartError, match="ended inside a part"):
            await reader.next_part()

    asyncio.run(run())


def test_bad_boundary_argument() -> None:
    with pytest.raises(MultipartError, match="no boundary"):
        MultipartReader(chunked(b"", 1), "")


# --------------------------------------------------------------------------- #
# Streaming parts


def test_iter_parts_streams_and_skips_unread_bodies() -> None:
    parts = dicom_parts(4, 50_000, seed=9)
    body = build_body(parts)

    async def run() -> list[tuple[str | None, bytes | None, int]]:
        out = []
        async for part in iter_parts(chunked(body, 4096), BOUNDARY):
            index = int(part.content_location.rsplit("/", 1)[1])  # type: ignore[union-attr]
            if index % 2:  # odd parts are not read at all
                out.append((part.content_location, None, 0))
                continue
            chunks = [data async for data in part]
            assert part.complete and part.size == 50_000
            assert max(map(len, chunks)) <= 4096 + len(B) + 4
            out.append((part.content_location, b"".join(chunks), len(chunks)))
        return out

    got = asyncio.run(run())
    assert [(loc, data) for loc, data, _ in got] == [
        ("/bulk/0", parts[0][1]),
        ("/bulk/1", None),
        ("/bulk/2", parts[2][1]),
        ("/bulk/3", None),
    ]
    assert all(n > 10 for _, data, n in got if data is not None)  # delivered piecewise


def test_streaming_memory_stays_flat_for_a_large_part() -> None:
    """A 24 MiB part passes through with well under 1 MiB allocated at once."""
    block = random.Random(1).randbytes(65536)
    blocks = 384

    async def source() -> AsyncIterator[bytes]:
        yield b"--" + B + b"\r\nContent-Type: application/dicom\r\n\r\n"
        for _ in range(blocks):
            yield block
        yield b"\r\n--" + B + b"--\r\n"

    async def run() -> int:
        size = 0
        async for part in iter_parts(source(), BOUNDARY):
            async for data in part:
                size += len(data)
        return size

    tracemalloc.start()
    try:
        size = asyncio.run(run())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == blocks * len(block)
    assert peak < 1 << 20


# --------------------------------------------------------------------------- #
# Spooling


def spooled(body: bytes, **kw: Any) -> list[SpooledPart]:
    async def run() -> list[SpooledPart]:
        return [part async for part in read_parts(chunked(body, 1000), BOUNDARY, **kw)]

    return asyncio.run(run())


def test_large_part_spools_to_disk() -> None:
    parts = [({}, b"small"), ({}, random.Random(2).randbytes(50_000))]
    small, big = spooled(build_body(parts), spool_threshold=10_000)
    with small, big:
        assert small.in_memory and not small.file._rolled
        assert not big.in_memory and big.file._rolled
        assert big.size == 50_000 and big.file.tell() == 0
        view = big.view()
        assert view.readonly and view == parts[1][1]
        with pytest.raises(TypeError):
            view[0] = 0
        assert big.read_bytes() == big.read() == parts[1][1]
        assert big.file.read() == parts[1][1]  # the file is usable directly, at offset 0
    # A view still held after close() keeps its mapping valid.
    assert view[:100] == parts[1][1][:100]


def test_in_memory_body_is_handed_out_without_copy() -> None:
    (part,) = spooled(build_body([({}, b"x" * 5000)]))
    with part:
        assert part.in_memory
        data = part.read_bytes()
        assert data == b"x" * 5000
        assert part.read_bytes() is data  # BytesIO.getvalue() shares its buffer
        assert part.view().readonly and part.view().obj is data


def test_empty_bodies() -> None:
    for threshold in (1, 1000):
        (part,) = spooled(build_body([({}, b"")]), spool_threshold=threshold)
        with part:
            assert part.size == 0 and part.read_bytes() == b"" and part.view() == b""


def test_memory_budget_spills_held_parts_to_disk() -> None:
    body = build_body([({}, bytes([i]) * 900) for i in range(5)])
    parts = spooled(body, spool_threshold=1000, memory_budget=2500)
    assert [p.in_memory for p in parts] == [True, True, False, False, False]
    assert [p.read_bytes() for p in parts] == [bytes([i]) * 900 for i in range(5)]
    for p in parts:
        p.close()


def test_memory_budget_is_given_back_on_close() -> None:
    body = build_body([({}, bytes([i]) * 900) for i in range(10)])

    async def run() -> list[bool]:
        out = []
        async for part in read_parts(
            chunked(body, 100), BOUNDARY, spool_threshold=1000, memory_budget=1000
        ):
            with part:
                out.append(part.in_memory)
        return out

    assert asyncio.run(run()) == [True] * 10


def test_spool_dir_is_used(tmp_path: Any) -> None:
    (part,) = spooled(build_body([({}, b"z" * 3000)]), spool_threshold=100, spool_dir=str(tmp_path))
    with part:
        assert not part.in_memory
        assert part.file._file.name  # an open file in tmp_path (unlinked on POSIX)
        assert part.view() == b"z" * 3000


def test_random_bodies_random_chunks() -> None:
    """Bodies made of delimiter fragments, cut anywhere, come back unchanged."""
    rng = random.Random(2046)
    delim = b"\r\n--" + B
    tokens = [b"\r", b"\n", b"-", b"--", b"\r\n", b"\r\n--", b"x", b"\x00\xff", B[:5], B, B[3:]]
    for _ in range(200):
        parts: list[Part] = []
        for i in range(rng.randint(0, 4)):
            body = b"".join(rng.choice(tokens) for _ in range(rng.randint(0, 30)))
            if delim in body:
                continue
            parts.append(({"Content-Location": f"/p/{i}"} if i % 2 else {}, body))
        preamble = b"".join(rng.choice([b"x", b"-", b"--", B, b"\n"]) for _ in range(5))
        if preamble.startswith(b"--" + B):  # that would be the first delimiter
            preamble = b"x" + preamble
        encoded = build_body(
            parts,
            preamble=preamble,
            padding=rng.choice([b"", b" ", b"\t \t"]),
            epilogue=rng.choice([b"", b"\r\n--" + B + b"\r\n"]),
        )
        if not parts:
            encoded = b"--" + B + b"--"
        cuts = rng.sample(range(1, len(encoded)), min(len(encoded) - 1, rng.randint(0, 12)))
        got, err = asyncio.run(collect_from(split_at(encoded, cuts)))
        assert err is None
        assert got == lowered(parts)
