"""The element walker and Part 10 reader, on literal bytes and pydicom's files."""

from __future__ import annotations

import contextlib
import random
import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from gateway.dicom.part10 import read_part10, transfer_syntax_encoding
from gateway.dicom.walker import (
    DicomParseError,
    Element,
    implicit_vr,
    walk_dataset,
)

UNDEFINED = 0xFFFFFFFF
_LONG = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}


def explicit(
    tag: int, vr: str, value: bytes, *, big: bool = False, length: int | None = None
) -> bytes:
    """One explicit VR element (PS3.5 7.1.2)."""
    order = ">" if big else "<"
    size = len(value) if length is None else length
    head = struct.pack(f"{order}HH", tag >> 16, tag & 0xFFFF) + vr.encode()
    if vr in _LONG:
        return head + b"\0\0" + struct.pack(f"{order}L", size) + value
    return head + struct.pack(f"{order}H", size) + value


def implicit(tag: int, value: bytes, *, length: int | None = None) -> bytes:
    """One implicit VR little endian element (PS3.5 7.1.3)."""
    size = len(value) if length is None else length
    return struct.pack("<HHL", tag >> 16, tag & 0xFFFF, size) + value


def item(content: bytes, *, undefined: bool = False) -> bytes:
    """A sequence item (PS3.5 7.5.1), with its delimiter if undefined length."""
    if undefined:
        return struct.pack("<HHL", 0xFFFE, 0xE000, UNDEFINED) + content + ITEM_END
    return struct.pack("<HHL", 0xFFFE, 0xE000, len(content)) + content


ITEM_END = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
SEQUENCE_END = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)


def summary(elements: list[Element]) -> list[tuple[object, ...]]:
    """(tag, vr, [items...]) without offsets, to compare structure."""
    out: list[tuple[object, ...]] = []
    for tag, vr, _offset, _length, items, fragments in elements:
        if items is not None:
            out.append((tag, vr, [summary(i) for i in items]))
        elif fragments is not None:
            out.append((tag, vr, len(fragments)))
        else:
            out.append((tag, vr))
    return out


def value(data: bytes, element: Element) -> bytes:
    _tag, _vr, offset, length, _items, _fragments = element
    return data[offset : offset + length]


# --- plain elements -----------------------------------------------------------


def test_implicit_vr_little_endian_takes_vrs_from_the_dictionary() -> None:
    data = (
        implicit(0x00080060, b"CT")
        + implicit(0x00100010, b"Doe^John")
        + implicit(0x00280010, struct.pack("<H", 512))
    )
    elements = walk_dataset(data, explicit_vr=False)
    assert summary(elements) == [(0x00080060, "CS"), (0x00100010, "PN"), (0x00280010, "US")]
    assert value(data, elements[1]) == b"Doe^John"
    assert elements[2][2:4] == (len(data) - 2, 2)


def test_explicit_vr_little_endian_short_and_long_headers() -> None:
    data = (
        explicit(0x00080060, "CS", b"MR")
        + explicit(0x00091010, "OB", b"\x01\x02\x03\x04")
        + explicit(0x00181030, "LO", b"T1 ")
    )
    elements = walk_dataset(data)
    assert summary(elements) == [(0x00080060, "CS"), (0x00091010, "OB"), (0x00181030, "LO")]
    assert elements[1][2] == 10 + 12  # a 12-byte header for OB (PS3.5 7.1.2)
    assert value(data, elements[1]) == b"\x01\x02\x03\x04"


def test_explicit_vr_big_endian() -> None:
    data = explicit(0x00280010, "US", struct.pack(">H", 256), big=True) + explicit(
        0x7FE00010, "OW", b"\x00\x01\x00\x02", big=True
    )
    elements = walk_dataset(data, little_endian=False)
    assert summary(elements) == [(0x00280010, "US"), (0x7FE00010, "OW")]
    assert struct.unpack(">H", value(data, elements[0])) == (256,)


def test_memoryview_input_and_offsets() -> None:
    data = b"junk" + explicit(0x00080060, "CS", b"CT") + b"tail"
    elements = walk_dataset(memoryview(data), 4, len(data) - 4)
    assert summary(elements) == [(0x00080060, "CS")]
    assert value(data, elements[0]) == b"CT"


def test_stop_before_ends_the_walk_at_a_tag() -> None:
    data = explicit(0x00080060, "CS", b"CT") + explicit(0x7FE00010, "OB", b"\0" * 8)
    assert summary(walk_dataset(data, stop_before=0x7FE00010)) == [(0x00080060, "CS")]


# --- implicit VR lookup -----------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "vr"),
    [
        (0x00100000, "UL"),  # group length
        (0x00090010, "LO"),  # private creator
        (0x000900FF, "LO"),
        (0x00091010, "UN"),  # private element
        (0x00090001, "UN"),  # below the creator range: not a creator
        (0x00080018, "UI"),
        (0x00FF0001, "UN"),  # unknown public tag
        (0x60003000, "OB or OW"),  # repeating group, resolved by the walker
    ],
)
def test_implicit_vr_lookup(tag: int, vr: str) -> None:
    assert implicit_vr(tag) == vr


def test_implicit_ambiguous_vrs_are_resolved_from_the_dataset() -> None:
    def dataset(pixel_representation: int) -> bytes:
        return (
            implicit(0x00280103, struct.pack("<H", pixel_representation))
            + implicit(0x00280106, struct.pack("<H", 0))  # US or SS
            + implicit(0x00289110, b"", length=0)  # a sequence (empty)
            + implicit(0x7FE00010, b"\0\0\0\0")  # OB or OW
        )

    assert [vr for _, vr, *_ in walk_dataset(dataset(1), explicit_vr=False)] == [
        "US",
        "SS",
        "SQ",
        "OW",
    ]
    assert walk_dataset(dataset(0), explicit_vr=False)[1][1] == "US"


def test_pixel_representation_is_inherited_by_items() -> None:
    nested = implicit(0x00280106, struct.pack("<h", -5))
    data = implicit(0x00280103, struct.pack("<H", 1)) + implicit(0x00289110, item(nested))
    sequence = walk_dataset(data, explicit_vr=False)[1]
    assert sequence[4] is not None
    assert sequence[4][0][0][1] == "SS"


def test_lut_data_is_us_only_for_a_single_entry_lut() -> None:
    one = implicit(0x00283002, struct.pack("<3H", 1, 0, 16)) + implicit(0x00283006, b"\1\0")
    many = implicit(0x00283002, struct.pack("<3H", 2, 0, 16)) + implicit(0x00283006, b"\1\0\2\0")
    assert walk_dataset(one, explicit_vr=False)[1][1] == "US"
    assert walk_dataset(many, explicit_vr=False)[1][1] == "OW"


# --- sequences ---------------------------------------------------------------------


def test_undefined_length_sequence_with_both_kinds_of_item() -> None:
    first = explicit(0x00080100, "SH", b"T-1234")
    second = explicit(0x00080102, "SH", b"SRT ")
    sequence = (
        explicit(0x00082218, "SQ", b"", length=UNDEFINED)
        + item(first, undefined=True)
        + item(second)
        + SEQUENCE_END
    )
    data = sequence + explicit(0x00100010, "PN", b"Doe")
    elements = walk_dataset(data)
    assert summary(elements) == [
        (0x00082218, "SQ", [[(0x00080100, "SH")], [(0x00080102, "SH")]]),
        (0x00100010, "PN"),
    ]
    # The value spans the items, not the Sequence Delimitation Item.
    _tag, _vr, offset, length, items, _fragments = elements[0]
    assert (offset, length) == (12, len(sequence) - 12 - 8)
    assert items is not None and value(data, items[1][0]) == b"SRT "


def test_nested_sequences_and_empty_items() -> None:
    inner = explicit(0x0040A043, "SQ", item(explicit(0x00080100, "SH", b"121071")))
    outer = explicit(0x0040A730, "SQ", b"", length=UNDEFINED) + (
        item(inner, undefined=True) + item(b"") + item(b"", undefined=True) + SEQUENCE_END
    )
    elements = walk_dataset(outer)
    assert summary(elements) == [
        (0x0040A730, "SQ", [[(0x0040A043, "SQ", [[(0x00080100, "SH")]])], [], []]),
    ]


def test_implicit_sequences_with_defined_and_undefined_lengths() -> None:
    content = implicit(0x00081150, b"1.2.3\0")
    data = implicit(0x00081140, item(content) + item(content)) + implicit(
        0x00081115, item(content, undefined=True) + SEQUENCE_END, length=UNDEFINED
    )
    elements = walk_dataset(data, explicit_vr=False)
    assert (
        summary(elements)
        == [
            (0x00081115, "SQ", [[(0x00081150, "UI")]]),
            (0x00081140, "SQ", [[(0x00081150, "UI")], [(0x00081150, "UI")]]),
        ][::-1]
    )


def test_undefined_length_un_is_an_implicit_vr_sequence() -> None:
    # PS3.5 6.2.2: a private sequence copied by a node that did not know it.
    content = implicit(0x00291010, b"ABCD") + implicit(0x00080100, b"X1")
    data = explicit(0x00291000, "UN", b"", length=UNDEFINED) + (
        item(content, undefined=True) + SEQUENCE_END
    )
    assert summary(walk_dataset(data)) == [
        (0x00291000, "SQ", [[(0x00291010, "UN"), (0x00080100, "SH")]]),
    ]


def test_explicit_un_on_a_known_tag_gets_the_dictionary_vr() -> None:
    data = explicit(0x00080060, "UN", b"CT") + explicit(0x00090010, "UN", b"ACME")
    assert summary(walk_dataset(data)) == [(0x00080060, "CS"), (0x00090010, "LO")]
    sequence = explicit(0x00081140, "UN", item(implicit(0x00081150, b"1.2\0")))
    assert summary(walk_dataset(sequence)) == [(0x00081140, "SQ", [[(0x00081150, "UI")]])]


def test_implicit_item_inside_an_explicit_dataset() -> None:
    data = explicit(0x00081140, "SQ", item(implicit(0x00081150, b"1.2\0")))
    assert summary(walk_dataset(data)) == [(0x00081140, "SQ", [[(0x00081150, "UI")]])]


# --- encapsulated pixel data --------------------------------------------------------


def test_encapsulated_pixel_data_fragments() -> None:
    offset_table = item(struct.pack("<2L", 0, 12))
    fragments = item(b"\xff\xd8frame1\xff\xd9") + item(b"frame2ab")
    pixel = explicit(0x7FE00010, "OB", b"", length=UNDEFINED) + offset_table + fragments
    data = pixel + SEQUENCE_END + explicit(0xFFFCFFFC, "OB", b"\0\0")
    elements = walk_dataset(data)
    assert summary(elements) == [(0x7FE00010, "OB", 3), (0xFFFCFFFC, "OB")]
    _tag, _vr, offset, length, _items, found = elements[0]
    assert found is not None
    assert [data[o : o + n] for o, n in found] == [
        struct.pack("<2L", 0, 12),
        b"\xff\xd8frame1\xff\xd9",
        b"frame2ab",
    ]
    assert (offset, length) == (12, len(pixel) - 12)


def test_encapsulated_pixel_data_in_implicit_vr_is_ob() -> None:
    data = implicit(0x7FE00010, b"", length=UNDEFINED) + item(b"") + item(b"ab") + SEQUENCE_END
    assert summary(walk_dataset(data, explicit_vr=False)) == [(0x7FE00010, "OB", 2)]


# --- bad input ----------------------------------------------------------------------


def _nested_sample() -> list[bytes]:
    """Top-level elements of a dataset with nested, undefined-length parts."""
    inner = explicit(0x0040A043, "SQ", b"", length=UNDEFINED) + (
        item(explicit(0x00080100, "SH", b"121071"), undefined=True) + SEQUENCE_END
    )
    return [
        explicit(0x00080060, "CS", b"CT"),
        explicit(0x0040A730, "SQ", item(inner) + item(b"", undefined=True)),
        explicit(0x7FE00010, "OB", b"", length=UNDEFINED) + item(b"") + item(b"abcd"),
        SEQUENCE_END,
    ]


def test_every_truncation_raises_dicom_parse_error_or_stops_at_a_boundary() -> None:
    parts = _nested_sample()
    data = b"".join(parts)
    # Cuts between top-level elements leave a shorter, valid dataset.
    boundaries = {0, len(parts[0]), len(parts[0] + parts[1]), len(data)}
    for size in range(len(data) + 1):
        try:
            walk_dataset(data[:size])
        except DicomParseError:
            assert size not in boundaries
        else:
            assert size in boundaries, f"accepted a dataset cut at {size}"


def test_garbage_raises_only_dicom_parse_error() -> None:
    rng = random.Random(20240611)
    sample = b"".join(_nested_sample())
    outcomes = {"parsed": 0, "refused": 0}
    for _ in range(3000):
        data = bytearray(sample)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        for explicit_vr in (True, False):
            try:
                walk_dataset(bytes(data), explicit_vr=explicit_vr)
                outcomes["parsed"] += 1
            except DicomParseError:
                outcomes["refused"] += 1
    # Both paths were exercised: the mutations are neither all fatal nor all harmless.
    assert outcomes["parsed"] > 100 and outcomes["refused"] > 100, outcomes
    for _ in range(300):
        noise = rng.randbytes(rng.randint(0, 200))
        for explicit_vr, little in ((True, True), (False, True), (True, False)):
            with contextlib.suppress(DicomParseError):
                walk_dataset(noise, explicit_vr=explicit_vr, little_endian=little)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (explicit(0x00080060, "CS", b"CT")[:-1], "runs past the end"),
        (explicit(0x00080060, "CS", b"CT")[:7], "truncated element header"),
        (b"\x08\x00\x60\x00\x00\x00\x02\x00CT", "invalid VR"),
        (explicit(0x00081140, "SQ", b"", length=UNDEFINED) + item(b""), "Sequence Delimitation"),
        (explicit(0x00081140, "SQ", item(b"ab")), "truncated element header"),
        (explicit(0x00081140, "SQ", explicit(0x00080060, "CS", b"CT")), "expected an item"),
        (explicit(0x00180015, "UT", b"", length=UNDEFINED), "undefined length"),
        (ITEM_END, "unexpected (FFFE,E00D)"),
        (explicit(0x7FE00010, "OB", b"", length=UNDEFINED) + item(b"ab"), "Pixel Data"),
    ],
)
def test_specific_errors(data: bytes, reason: str) -> None:
    with pytest.raises(DicomParseError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        walk_dataset(data)


def test_deep_nesting_is_refused_not_recursed_without_bound() -> None:
    data = b""
    for _ in range(200):
        data = explicit(0x00081140, "SQ", item(data))
    with pytest.raises(DicomParseError, match="too deep"):
        walk_dataset(data)


def test_bad_bounds() -> None:
    with pytest.raises(DicomParseError):
        walk_dataset(b"\0" * 8, 4, 20)


# --- Part 10 ------------------------------------------------------------------------


def test_read_part10_finds_the_dataset() -> None:
    path = get_testdata_file("CT_small.dcm")
    data = Path(path).read_bytes()
    part10 = read_part10(data)
    ds = pydicom.dcmread(path)
    assert part10.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID
    assert part10.sop_class_uid == ds.file_meta.MediaStorageSOPClassUID
    assert part10.sop_instance_uid == ds.file_meta.MediaStorageSOPInstanceUID
    assert (part10.explicit_vr, part10.little_endian) == (True, True)
    assert part10.meta[0x00020010].rstrip(b"\0") == b"1.2.840.10008.1.2.1"
    tags = [tag for tag, *_ in walk_dataset(part10.data, part10.offset)]
    assert tags == [int(element.tag) for element in ds]


@pytest.mark.parametrize(
    ("name", "explicit_vr", "little_endian"),
    [
        ("MR_small_implicit.dcm", False, True),
        ("MR_small_bigendian.dcm", True, False),
        ("image_dfl.dcm", True, True),  # deflated
        ("ExplVR_BigEndNoMeta.dcm", True, False),  # bare dataset
        ("ExplVR_LitEndNoMeta.dcm", True, True),
        ("rtstruct.dcm", False, True),
        ("meta_missing_tsyntax.dcm", False, True),
    ],
)
def test_read_part10_encodings(name: str, explicit_vr: bool, little_endian: bool) -> None:
    path = get_testdata_file(name)
    part10 = read_part10(Path(path).read_bytes())
    assert (part10.explicit_vr, part10.little_endian) == (explicit_vr, little_endian)
    ds = pydicom.dcmread(path, force=True)
    elements = walk_dataset(
        part10.data,
        part10.offset,
        explicit_vr=part10.explicit_vr,
        little_endian=part10.little_endian,
    )
    assert [tag for tag, *_ in elements] == [int(element.tag) for element in ds]


def test_meta_without_preamble() -> None:
    path = get_testdata_file("CT_small.dcm")
    data = Path(path).read_bytes()[128 + 4 :]
    part10 = read_part10(data)
    assert part10.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert walk_dataset(part10.data, part10.offset)[0][0] == 0x00080005


def test_corrupt_deflate_stream_raises_dicom_parse_error() -> None:
    data = Path(get_testdata_file("image_dfl.dcm")).read_bytes()
    meta = walk_dataset(data, 132, stop_before=0x00030000)
    _tag, _vr, offset, length, _items, _fragments = meta[-1]
    assert len(read_part10(data).data) > len(data)  # it did inflate
    with pytest.raises(DicomParseError, match="inflate"):
        read_part10(data[: offset + length] + b"\xff" * 64)


@pytest.mark.parametrize(
    ("uid", "expected"),
    [
        ("1.2.840.10008.1.2", (False, True, False)),
        ("1.2.840.10008.1.2.1", (True, True, False)),
        ("1.2.840.10008.1.2.2", (True, False, False)),
        ("1.2.840.10008.1.2.1.99", (True, True, True)),
        ("1.2.840.10008.1.2.4.50", (True, True, False)),
        ("1.2.3.4.private", (True, True, False)),
    ],
)
def test_transfer_syntax_encoding(uid: str, expected: tuple[bool, bool, bool]) -> None:
    assert transfer_syntax_encoding(uid) == expected
