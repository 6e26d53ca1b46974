"""Element walker over raw DICOM dataset bytes (PS3.5 chapter 7).

Why our own: decoding C-FIND identifiers into QIDO-RS JSON and building
WADO-RS /metadata for hundreds of instances are hot paths, and going through
`pydicom.dcmread` costs milliseconds per instance. This module only finds
where each element is: it returns the tag, the VR, and the offset and length of
the value inside the caller's buffer, without copying value bytes. Turning
values into Python objects is the job of the caller (see `dicom_json`).

Supported encodings: Implicit VR Little Endian, Explicit VR Little Endian and
Explicit VR Big Endian (PS3.5 7.1, 7.3); defined and undefined lengths;
sequences and items (PS3.5 7.5); UN with undefined length read as a sequence
(PS3.5 6.2.2); encapsulated Pixel Data as fragments (PS3.5 A.4).

Choices worth knowing:
- Implicit VR comes from `pydicom.datadict` (cached per tag). Group lengths
  (gggg,0000) are UL, private creators (gggg,0010-00FF) LO, other private
  elements and unknown tags UN. Dictionary VRs such as "US or SS" are resolved
  from the dataset, as PS3.5 A.1 and PS3.3 C.7.6.3 / C.11.1 describe.
- An explicit UN whose VR is known (a public tag in the dictionary, or a
  private creator) is read with that VR (PS3.5 6.2.2: such a UN is an encoding
  mistake), like pydicom's `replace_un_with_known_vr`.
- An item inside an explicit VR dataset whose first element does not carry a
  VR is read as implicit VR little endian (PS3.5 6.2.2 note; writers that copy
  UN sequences produce this), as pydicom does.
- Truncated or garbage input raises `DicomParseError` (a `ValueError`) with a
  short reason; every step advances, and nesting is bounded, so the walk always
  ends.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final, TypeAlias

from pydicom.datadict import dictionary_VR

__all__ = [
    "ITEM",
    "ITEM_DELIMITER",
    "PIXEL_DATA",
    "SEQUENCE_DELIMITER",
    "UNDEFINED_LENGTH",
    "DicomParseError",
    "Element",
    "Fragment",
    "implicit_vr",
    "looks_explicit_vr",
    "walk_dataset",
]


class DicomParseError(ValueError):
    """The bytes are not a DICOM dataset we can walk (truncated, garbage)."""


UNDEFINED_LENGTH: Final = 0xFFFFFFFF
# PS3.5 7.5: item and delimitation tags (group FFFE carries no VR).
ITEM: Final = 0xFFFEE000
ITEM_DELIMITER: Final = 0xFFFEE00D
SEQUENCE_DELIMITER: Final = 0xFFFEE0DD
PIXEL_DATA: Final = 0x7FE00010
PIXEL_REPRESENTATION: Final = 0x00280103
LUT_DESCRIPTOR: Final = 0x00283002
LUT_DATA: Final = 0x00283006

# Nesting deeper than this is treated as garbage, not as a reason to recurse
# until Python's stack gives out.
MAX_DEPTH: Final = 64
_NO_STOP: Final = 1 << 32

# PS3.5 6.2, Table 6.2-1.
# fmt: off
_VRS: Final = (
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF",
    "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN",
    "UR", "US", "UT", "UV",
)
# fmt: on
_VR_BY_BYTES: Final[dict[bytes, str]] = {vr.encode("ascii"): vr for vr in _VRS}
# PS3.5 7.1.2: VRs with a 2-byte reserved field and a 4-byte length.
_LONG_VRS: Final = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)

_EXPLICIT_LE: Final = struct.Struct("<HH2sH")
_EXPLICIT_BE: Final = struct.Struct(">HH2sH")
_IMPLICIT_LE: Final = struct.Struct("<HHL")
_IMPLICIT_BE: Final = struct.Struct(">HHL")
_U32_LE: Final = struct.Struct("<L")
_U32_BE: Final = struct.Struct(">L")
_U16_LE: Final = struct.Struct("<H")
_U16_BE: Final = struct.Struct(">H")


# An element is a plain tuple, unpacked as
#     tag, vr, offset, length, items, fragments = element
# - tag: (group << 16) | element number
# - vr: two-letter VR; for implicit VR taken from the dictionary and resolved
# - offset, length: where the Value Field is in the walked buffer. For an
#   undefined-length value (sequence, encapsulated Pixel Data), length spans the
#   items up to, not including, the Sequence Delimitation Item.
# - items: for SQ, the elements of each item, else None
# - fragments: for encapsulated Pixel Data, (offset, length) of each fragment,
#   the Basic Offset Table first (PS3.5 A.4), else None
# A tuple and not a NamedTuple: building a NamedTuple costs about a quarter of
# the walk, and the JSON encoder unpacks every element anyway.
Fragment: TypeAlias = tuple[int, int]
Element: TypeAlias = tuple[
    int, str, int, int, "list[list[Element]] | None", "list[Fragment] | None"
]

_VR_CACHE: dict[int, str] = {}


def implicit_vr(tag: int) -> str:
    """Return the VR to use for `tag` when the encoding does not carry one.

    Ambiguous dictionary VRs ("US or SS", "OB or OW", ...) are returned as is;
    the walker resolves them from the dataset.
    """
    vr = _VR_CACHE.get(tag)
    if vr is not None:
        return vr
    element = tag & 0xFFFF
    if element == 0:
        vr = "UL"  # PS3.5 7.2: group length
    elif tag >> 16 & 1:
        # PS3.5 7.8.1: private creator elements are LO; a private element's VR
        # cannot be known without the creator's own dictionary (PS3.5 6.2.2).
        vr = "LO" if 0x0010 <= element <= 0x00FF else "UN"
    else:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
        if vr == "NONE":
            vr = "UN"
    if len(_VR_CACHE) < 65536:  # garbage input must not grow the cache forever
        _VR_CACHE[tag] = vr
    return vr


def looks_explicit_vr(data: bytes | memoryview, offset: int) -> bool:
    """Guess whether the element header at `offset` carries an explicit VR.

    Two upper-case letters after the tag mean explicit VR; in implicit VR those
    bytes are the low half of the length, which would have to exceed 16 kB to
    look like letters.
    """
    if offset + 6 > len(data):
        return False
    return bytes(data[offset + 4 : offset + 6]) in _VR_BY_BYTES


def walk_dataset(
    data: bytes | memoryview,
    offset: int = 0,
    end: int | None = None,
    *,
    explicit_vr: bool = True,
    little_endian: bool = True,
    stop_before: int | None = None,
) -> list[Element]:
    """Walk the dataset in `data[offset:end]` and return its top-level elements.

    `stop_before` ends the walk at the first top-level element whose tag is
    not below it: the File Meta Information (group 0002, PS3.10 7.1) is read
    with `stop_before=0x00030000` without trusting its group length, and a
    caller that needs only the header of an instance can stop before
    (7FE0,0010).
    """
    size = len(data)
    if end is None:
        end = size
    if not 0 <= offset <= end <= size:
        raise DicomParseError(f"bad bounds {offset}..{end} for {size} bytes")
    stop = _NO_STOP if stop_before is None else stop_before
    walk = _walk_explicit if explicit_vr else _walk_implicit
    elements, _ = walk(data, offset, end, little_endian, False, 0, 0, stop)
    return elements


def _walk_explicit(
    buf: bytes | memoryview,
    pos: int,
    end: int,
    little: bool,
    in_undefined_item: bool,
    depth: int,
    pixel_rep: int,
    stop: int,
) -> tuple[list[Element], int]:
    """Walk one explicit VR dataset or item (PS3.5 7.1.2).

    Returns its elements and the position after it. `in_undefined_item`: the
    item ends with an Item Delimitation Item (PS3.5 7.5.2). `pixel_rep`: Pixel
    Representation of the enclosing datasets, for "US or SS" (see
    `_resolve_ambiguous`). The common case (a defined-length, non-sequence
    value) stays in this loop; everything else goes to `_nested_value`.
    """
    if little:
        header, u32, u16 = _EXPLICIT_LE.unpack_from, _U32_LE.unpack_from, _U16_LE.unpack_from
    else:
        header, u32, u16 = _EXPLICIT_BE.unpack_from, _U32_BE.unpack_from, _U16_BE.unpack_from
    vr_by_bytes = _VR_BY_BYTES
    long_vrs = _LONG_VRS
    elements: list[Element] = []
    append = elements.append
    while pos < end:
        if pos + 8 > end:
            raise DicomParseError(f"truncated element header at byte {pos}")
        g, e, vr_bytes, length = header(buf, pos)
        if g == 0xFFFE:  # PS3.5 7.5: no VR, only delimiters may appear here
            return elements, _item_delimiter(buf, pos, g, e, in_undefined_item)
        tag = g << 16 | e
        if tag >= stop:
            return elements, pos
        vr = vr_by_bytes.get(vr_bytes)
        if vr is None:
            raise DicomParseError(f"invalid VR {bytes(vr_bytes)!r} at byte {pos}")
        if vr in long_vrs:  # PS3.5 7.1.2: reserved 2 bytes, 4-byte length
            if pos + 12 > end:
                raise DicomParseError(f"truncated element header at byte {pos}")
            length = u32(buf, pos + 8)[0]
            value_pos = pos + 12
        else:
            value_pos = pos + 8
        if length == UNDEFINED_LENGTH or vr == "SQ" or vr == "UN":
            element, pos = _nested_value(
                buf, tag, vr, value_pos, length, end, True, little, depth, pixel_rep, elements
            )
            append(element)
            continue
        pos = value_pos + length
        if pos > end:
            raise DicomParseError(f"value of ({g:04X},{e:04X}) runs past the end of the data")
        if tag == PIXEL_REPRESENTATION and length >= 2:
            pixel_rep = u16(buf, value_pos)[0]
        append((tag, vr, value_pos, length, None, None))
    if in_undefined_item:
        raise DicomParseError("item without Item Delimitation Item")
    return elements, pos


def _walk_implicit(
    buf: bytes | memoryview,
    pos: int,
    end: int,
    little: bool,
    in_undefined_item: bool,
    depth: int,
    pixel_rep: int,
    stop: int,
) -> tuple[list[Element], int]:
    """Walk one implicit VR dataset or item (PS3.5 7.1.3); as `_walk_explicit`."""
    if little:
        header, u16 = _IMPLICIT_LE.unpack_from, _U16_LE.unpack_from
    else:
        header, u16 = _IMPLICIT_BE.unpack_from, _U16_BE.unpack_from
    vr_cache = _VR_CACHE
    elements: list[Element] = []
    append = elements.append
    while pos < end:
        if pos + 8 > end:
            raise DicomParseError(f"truncated element header at byte {pos}")
        g, e, length = header(buf, pos)
        if g == 0xFFFE:
            return elements, _item_delimiter(buf, pos, g, e, in_undefined_item)
        tag = g << 16 | e
        if tag >= stop:
            return elements, pos
        vr = vr_cache.get(tag) or implicit_vr(tag)
        value_pos = pos + 8
        if len(vr) > 2:
            vr = _resolve_ambiguous(buf, tag, vr, length, elements, pixel_rep, u16)
        if length == UNDEFINED_LENGTH or vr == "SQ":
            element, pos = _nested_value(
                buf, tag, vr, value_pos, length, end, False, little, depth, pixel_rep, elements
            )
            append(element)
            continue
        pos = value_pos + length
        if pos > end:
            raise DicomParseError(f"value of ({g:04X},{e:04X}) runs past the end of the data")
        if tag == PIXEL_REPRESENTATION and length >= 2:
            pixel_rep = u16(buf, value_pos)[0]
        append((tag, vr, value_pos, length, None, None))
    if in_undefined_item:
        raise DicomParseError("item without Item Delimitation Item")
    return elements, pos


def _item_delimiter(
    buf: bytes | memoryview, pos: int, g: int, e: int, in_undefined_item: bool
) -> int:
    """Return the position after an Item Delimitation Item that ends the
    current item (PS3.5 7.5.2); any other (FFFE,xxxx) here is an error."""
    if e == 0xE00D and in_undefined_item:
        return pos + 8
    raise DicomParseError(f"unexpected ({g:04X},{e:04X}) at byte {pos}")


def _nested_value(
    buf: bytes | memoryview,
    tag: int,
    vr: str,
    value_pos: int,
    length: int,
    end: int,
    explicit: bool,
    little: bool,
    depth: int,
    pixel_rep: int,
    elements: list[Element],
) -> tuple[Element, int]:
    """Locate a value that is not a plain byte run: a sequence, an undefined
    length, or an explicit UN. Returns the element and the position after it."""
    items_explicit, items_little = explicit, little
    if vr == "UN" and explicit:
        # PS3.5 6.2.2: UN on a public tag (or a private creator, PS3.5 7.8.1)
        # is a mistake when the VR is known; use the known VR.
        known = implicit_vr(tag)
        if known != "UN" and (length == UNDEFINED_LENGTH or length < 0xFFFF):
            vr = known
            if len(known) > 2:
                u16 = _U16_LE.unpack_from if little else _U16_BE.unpack_from
                vr = _resolve_ambiguous(buf, tag, known, length, elements, pixel_rep, u16)
        if vr in ("SQ", "UN"):
            # PS3.5 6.2.2: the items of a UN sequence are implicit VR little endian.
            items_little = True
    if length == UNDEFINED_LENGTH:
        if tag == PIXEL_DATA or vr in ("OB", "OW"):
            fragments, value_end, pos = _walk_fragments(buf, value_pos, end, little)
            return (tag, vr, value_pos, value_end - value_pos, None, fragments), pos
        if not (vr in ("SQ", "UN") or not explicit):
            raise DicomParseError(f"undefined length for VR {vr} at byte {value_pos}")
        items, value_end, pos = _walk_items(
            buf, value_pos, end, True, items_explicit, items_little, depth, pixel_rep
        )
        return (tag, "SQ", value_pos, value_end - value_pos, items, None), pos
    value_end = value_pos + length
    if value_end > end:
        raise DicomParseError(f"value of ({tag >> 16:04X},{tag & 0xFFFF:04X}) runs past the end")
    if vr != "SQ":
        return (tag, vr, value_pos, length, None, None), value_end
    items, _, _ = _walk_items(
        buf, value_pos, value_end, False, items_explicit, items_little, depth, pixel_rep
    )
    return (tag, vr, value_pos, length, items, None), value_end


def _walk_items(
    buf: bytes | memoryview,
    pos: int,
    end: int,
    undefined: bool,
    explicit: bool,
    little: bool,
    depth: int,
    pixel_rep: int,
) -> tuple[list[list[Element]], int, int]:
    """Walk the items of a sequence (PS3.5 7.5.1, 7.5.2).

    Returns the items, where the value ends (before the Sequence Delimitation
    Item if the length is undefined) and the position after the sequence.
    """
    if depth >= MAX_DEPTH:
        raise DicomParseError("sequences nested too deep")
    tag_struct = _IMPLICIT_LE if little else _IMPLICIT_BE
    items: list[list[Element]] = []
    while pos < end:
        if pos + 8 > end:
            raise DicomParseError(f"truncated item header at byte {pos}")
        g, e, length = tag_struct.unpack_from(buf, pos)
        tag = g << 16 | e
        if tag == SEQUENCE_DELIMITER and undefined:
            return items, pos, pos + 8
        if tag != ITEM:
            raise DicomParseError(f"expected an item, found ({g:04X},{e:04X}) at byte {pos}")
        start = pos + 8
        # PS3.5 6.2.2 note: an item inside an explicit VR dataset may be
        # implicit VR (UN sequences); an implicit VR dataset never switches.
        walk = _walk_explicit if explicit and looks_explicit_vr(buf, start) else _walk_implicit
        if length == UNDEFINED_LENGTH:
            elements, pos = walk(buf, start, end, little, True, depth + 1, pixel_rep, _NO_STOP)
        else:
            item_end = start + length
            if item_end > end:
                raise DicomParseError(f"item at byte {pos} runs past the end of its sequence")
            elements, _ = walk(buf, start, item_end, little, False, depth + 1, pixel_rep, _NO_STOP)
            pos = item_end
        items.append(elements)
    if undefined:
        raise DicomParseError("sequence without Sequence Delimitation Item")
    return items, pos, pos


def _walk_fragments(
    buf: bytes | memoryview,
    pos: int,
    end: int,
    little: bool,
) -> tuple[list[Fragment], int, int]:
    """Walk encapsulated Pixel Data (PS3.5 A.4): items of raw bytes, then a
    Sequence Delimitation Item. Returns the fragments, where the value ends and
    the position after the delimiter."""
    tag_struct = _IMPLICIT_LE if little else _IMPLICIT_BE
    fragments: list[Fragment] = []
    while pos + 8 <= end:
        g, e, length = tag_struct.unpack_from(buf, pos)
        tag = g << 16 | e
        if tag == SEQUENCE_DELIMITER:
            return fragments, pos, pos + 8
        if tag != ITEM or length == UNDEFINED_LENGTH:
            raise DicomParseError(f"bad Pixel Data fragment ({g:04X},{e:04X}) at byte {pos}")
        start = pos + 8
        pos = start + length
        if pos > end:
            raise DicomParseError(f"Pixel Data fragment at byte {start - 8} runs past the end")
        fragments.append((start, length))
    raise DicomParseError("encapsulated Pixel Data without Sequence Delimitation Item")


def _resolve_ambiguous(
    buf: bytes | memoryview,
    tag: int,
    vr: str,
    length: int,
    elements: list[Element],
    pixel_rep: int,
    u16: Callable[[bytes | memoryview, int], tuple[int, ...]],
) -> str:
    """Pick one VR for a dictionary entry such as "US or SS" when the encoding
    does not say which (implicit VR, or UN replaced by the dictionary VR)."""
    if vr == "US or SS":
        # PS3.3 C.7.6.3.1: signed when Pixel Representation is 1; the walker
        # tracks it from this dataset (it precedes these tags) or an enclosing one.
        return "SS" if pixel_rep == 1 else "US"
    if vr == "US or OW" and tag == LUT_DATA:
        # PS3.3 C.11.1.1.1: US only when the LUT Descriptor says one entry.
        for tag_, _, offset, length_, _, _ in reversed(elements):
            if tag_ == LUT_DESCRIPTOR and length_ >= 2:
                return "US" if u16(buf, offset)[0] == 1 else "OW"
        return "OW"
    if tag == PIXEL_DATA and length == UNDEFINED_LENGTH:
        return "OB"  # PS3.5 A.4: encapsulated
    # PS3.5 A.1: "OB or OW" (Pixel Data, Overlay Data, Waveform Data ...) is OW
    # in implicit VR; "US or SS or OW" is only ever bulk data too.
    return "OW"
