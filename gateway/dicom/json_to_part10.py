"""STOW-RS with DICOM JSON metadata: build the Part 10 file (PS3.18 10.5.1.2.2).

Why: a STOW-RS request of type application/dicom+json carries each instance
as a DICOM JSON object (PS3.18 Annex F) plus bulk data parts whose
Content-Location is the BulkDataURI of an attribute (checklist STOW-01). The
PACS behind the gateway only takes C-STORE, so each object becomes a Part 10
file here and then goes the same way as an application/dicom part
(`instance_check`, C-STORE). This path is not hot: pydicom builds and writes
the dataset.

Rules:
- A BulkDataURI is resolved by exact match with a part's Content-Location; a
  missing part is an error (0xC000). Other bulk data (e.g. an Encapsulated
  Document, PS3.18 8.7.3.3) is taken as bytes whatever its media type.
- Pixel Data (7FE0,0010) decides the Transfer Syntax of the file:
  application/octet-stream (or InlineBinary) gives Explicit VR Little Endian
  with native pixels (PS3.18 8.7.3.3.1); a compressed media type gives that
  media type's transfer syntax (PS3.18 Table 8.7.3-5; a ``transfer-syntax``
  parameter overrides the default but must belong to the media type) and
  encapsulated Pixel Data, one fragment per frame and an empty Basic Offset
  Table (PS3.5 A.4). A multi-frame compressed image comes as one part per
  frame (PS3.18 8.7.3.3.2), found at ``{BulkDataURI}/frames/{n}`` (the
  WADO-RS frame URL form) when the BulkDataURI itself is not a part.
- A JPEG 2000 frame sent as a JP2 file is reduced to its codestream
  (PS3.5 A.4.4: no JP2 boxes in DICOM).
- The JSON text is Unicode: if any string is not ASCII, Specific Character
  Set (0008,0005) becomes "ISO_IR 192" (UTF-8) wherever it is given, so that
  every character can be written; otherwise it is kept.
- File Meta Information (group 0002) in the JSON is ignored and rebuilt
  (PS3.10 7.1): Media Storage SOP Class/Instance UID from the dataset (missing
  ones are an error, 0xA900), our Implementation Class UID.
- DS numbers are written in at most 16 characters (PS3.5 Table 6.2-1).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, ExplicitVRLittleEndian
from pydicom.valuerep import format_number_as_ds

from gateway.dicom.instance_check import (
    DATASET_DOES_NOT_MATCH_SOP_CLASS,
    TRANSFER_SYNTAX_NOT_SUPPORTED,
    InstanceError,
)

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "BulkPart",
    "json_to_part10",
    "pixel_data_transfer_syntax",
]

#: (0002,0012) of every file the gateway writes.
IMPLEMENTATION_CLASS_UID: Final = "1.2.826.0.1.3680043.10.1234.1.1"

OCTET_STREAM: Final = "application/octet-stream"
_PIXEL_DATA_KEY: Final = "7FE00010"
_CHARSET_KEY: Final = "00080005"
_NUMBER_OF_FRAMES_KEY: Final = "00280008"

# PS3.18 Table 8.7.3-5: media type -> (default transfer syntax, allowed ones).
_JPEG = "1.2.840.10008.1.2.4."
_COMPRESSED_MEDIA_TYPES: Final[dict[str, tuple[str, frozenset[str]]]] = {
    "image/jpeg": (
        _JPEG + "50",
        frozenset({_JPEG + "50", _JPEG + "51", _JPEG + "57", _JPEG + "70"}),
    ),
    "image/jls": (_JPEG + "80", frozenset({_JPEG + "80", _JPEG + "81"})),
    "image/jp2": (_JPEG + "90", frozenset({_JPEG + "90", _JPEG + "91"})),
    "image/jpx": (_JPEG + "92", frozenset({_JPEG + "92", _JPEG + "93"})),
    "image/jphc": (_JPEG + "201", frozenset({_JPEG + "201", _JPEG + "202", _JPEG + "203"})),
    "image/dicom-rle": ("1.2.840.10008.1.2.5", frozenset({"1.2.840.10008.1.2.5"})),
}
_JP2_SIGNATURE: Final = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


@dataclass(frozen=True, slots=True)
class BulkPart:
    """One bulk data part of the request: its body, its media type, and the
    ``transfer-syntax`` parameter of its Content-Type if there was one."""

    data: bytes
    media_type: str
    transfer_syntax: str | None = None


def json_to_part10(dataset_json: Mapping[str, Any], bulk: Mapping[str, BulkPart]) -> bytes:
    """Return the Part 10 file for one DICOM JSON object of a STOW-RS request.

    `bulk` maps Content-Location to part. Raises `InstanceError` with the
    Failure Reason to report (see the module docstring).
    """
    if not isinstance(dataset_json, Mapping):
        raise InstanceError("the DICOM JSON instance is not an object")
    prepared, non_ascii = _prepare(dataset_json)
    pixel_json = prepared.pop(_PIXEL_DATA_KEY, None)
    if non_ascii:
        _use_utf8(prepared)

    def resolve(uri: str) -> bytes:
        part = bulk.get(uri)
        if part is None:
            raise InstanceError(f"bulk data {uri} missing")
        return part.data

    try:
        ds = Dataset.from_json(prepared, bulk_data_uri_handler=resolve)
    except InstanceError:
        raise
    except Exception as exc:  # pydicom raises KeyError/TypeError/ValueError
        raise InstanceError(f"invalid DICOM JSON: {exc}") from None

    transfer_syntax = str(ExplicitVRLittleEndian)
    if isinstance(pixel_json, Mapping):
        transfer_syntax = _add_pixel_data(ds, pixel_json, bulk, _number_of_frames(prepared))

    sop_class = str(ds.get("SOPClassUID", "") or "")
    sop_instance = str(ds.get("SOPInstanceUID", "") or "")
    if not sop_class or not sop_instance:
        missing = "SOP Class UID (0008,0016)" if not sop_class else "SOP Instance UID (0008,0018)"
        raise InstanceError(f"missing {missing}", DATASET_DOES_NOT_MATCH_SOP_CLASS)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    ds.file_meta = meta

    out = io.BytesIO()
    try:
        pydicom.dcmwrite(out, ds, enforce_file_format=True)
    except Exception as exc:
        raise InstanceError(f"cannot encode the instance: {exc}") from None
    return out.getvalue()


def pixel_data_transfer_syntax(part: BulkPart) -> str:
    """The Transfer Syntax UID for Pixel Data sent as `part`.

    application/octet-stream is native Explicit VR Little Endian (PS3.18
    8.7.3.3.1); compressed media types follow PS3.18 Table 8.7.3-5. A media
    type we have no transfer syntax for (video, unknown) is 0xC122; a
    ``transfer-syntax`` parameter that does not fit the media type is 0xC000.
    """
    media_type, parameter = _media_type(part)
    if media_type == OCTET_STREAM:
        if parameter not in (None, str(ExplicitVRLittleEndian)):
            raise InstanceError(f"transfer-syntax={parameter} does not fit {media_type}")
        return str(ExplicitVRLittleEndian)
    entry = _COMPRESSED_MEDIA_TYPES.get(media_type)
    if entry is None:
        raise InstanceError(
            f"Pixel Data as {media_type} is not supported", TRANSFER_SYNTAX_NOT_SUPPORTED
        )
    default, allowed = entry
    if parameter is None:
        return default
    if parameter not in allowed:
        raise InstanceError(f"transfer-syntax={parameter} does not fit {media_type}")
    return parameter


def _media_type(part: BulkPart) -> tuple[str, str | None]:
    """Media type in lower case, and the transfer-syntax parameter (from the
    field, else from parameters left in `media_type`, RFC 9110 8.3.1)."""
    pieces = part.media_type.split(";")
    parameter = part.transfer_syntax
    for piece in pieces[1:]:
        name, _, value = piece.partition("=")
        if name.strip().lower() == "transfer-syntax" and parameter is None:
            parameter = value.strip().strip('"')
    if parameter is not None:
        parameter = parameter.strip() or None
    return pieces[0].strip().lower(), parameter


def _add_pixel_data(
    ds: Dataset, pixel_json: Mapping[str, Any], bulk: Mapping[str, BulkPart], frames: int
) -> str:
    """Set Pixel Data from its JSON attribute; return the transfer syntax."""
    vr = str(pixel_json.get("vr", "OW"))
    if "InlineBinary" in pixel_json or "BulkDataURI" not in pixel_json:
        # Native; let pydicom decode InlineBinary (or an empty value).
        try:
            single = Dataset.from_json({_PIXEL_DATA_KEY: dict(pixel_json)})
        except Exception as exc:  # bad base64, bad vr
            raise InstanceError(f"invalid DICOM JSON Pixel Data: {exc}") from None
        ds[0x7FE00010] = single[0x7FE00010]
        return str(ExplicitVRLittleEndian)

    uri = pixel_json["BulkDataURI"]
    if isinstance(uri, list) and uri:  # PS3.18 F.4 shows a list; F.2.6 a string
        uri = uri[0]
    if not isinstance(uri, str):
        raise InstanceError("Pixel Data BulkDataURI is not a string")
    parts = _pixel_parts(uri, bulk, frames)
    syntaxes = {pixel_data_transfer_syntax(part) for part in parts}
    if len(syntaxes) != 1:
        raise InstanceError(f"the frames of {uri} have different transfer syntaxes")
    transfer_syntax = syntaxes.pop()
    if transfer_syntax == ExplicitVRLittleEndian:
        value = b"".join(part.data for part in parts)
        if len(value) % 2:
            value += b"\0"  # PS3.5 7.1.1: even value length
        ds.add_new(0x7FE00010, vr if vr in ("OB", "OW") else "OW", value)
        return transfer_syntax
    fragments = [_codestream(part.data, transfer_syntax) for part in parts]
    # PS3.5 A.4: OB, undefined length, empty Basic Offset Table, one fragment
    # per frame (encapsulate pads odd fragments to even length).
    ds.add_new(0x7FE00010, "OB", encapsulate(fragments, fragments_per_frame=1, has_bot=False))
    ds[0x7FE00010].is_undefined_length = True
    return transfer_syntax


def _pixel_parts(uri: str, bulk: Mapping[str, BulkPart], frames: int) -> list[BulkPart]:
    """The part at `uri`, or one part per frame at `uri`/frames/1..n."""
    part = bulk.get(uri)
    if part is not None:
        return [part]
    parts: list[BulkPart] = []
    for number in range(1, max(frames, 1) + 1):
        frame = bulk.get(f"{uri}/frames/{number}")
        if frame is None:
            raise InstanceError(f"bulk data {uri} missing")
        parts.append(frame)
    return parts


def _codestream(data: bytes, transfer_syntax: str) -> bytes:
    """Strip a JP2 file down to its contiguous codestream box ("jp2c",
    ISO/IEC 15444-1 I.5.4); PS3.5 A.4.4 encapsulates bare codestreams."""
    if not transfer_syntax.startswith(_JPEG + "9") or not data.startswith(_JP2_SIGNATURE):
        return data
    position = 0
    while position + 8 <= len(data):
        length, kind = struct.unpack_from(">L4s", data, position)
        header = 8
        if length == 1 and position + 16 <= len(data):  # XLBox
            length, header = struct.unpack_from(">Q", data, position + 8)[0], 16
        elif length == 0:  # the box runs to the end of the file
            length = len(data) - position
        if kind == b"jp2c":
            return data[position + header : position + length]
        if length < header:
            break
        position += length
    raise InstanceError("JPEG 2000 part is a JP2 file without a codestream")


def _number_of_frames(dataset_json: Mapping[str, Any]) -> int:
    value = dataset_json.get(_NUMBER_OF_FRAMES_KEY, {}).get("Value") or [1]
    try:
        return int(value[0])
    except (TypeError, ValueError):
        return 1


def _prepare(dataset_json: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """A copy of `dataset_json` without group 0002, with DS values as
    strings of at most 16 characters; and whether any text is not ASCII."""
    non_ascii = False
    prepared: dict[str, Any] = {}
    for key, attribute in dataset_json.items():
        if not isinstance(key, str) or not isinstance(attribute, Mapping):
            raise InstanceError(f"invalid DICOM JSON attribute {key!r}")
        if key.upper().startswith("0002"):
            continue  # PS3.10 7.1: rebuilt by us
        attribute = dict(attribute)
        values = attribute.get("Value")
        vr = attribute.get("vr")
        if isinstance(values, list):
            if vr == "SQ":
                items = []
                for item in values:
                    if item is None:
                        item = {}  # an empty item
                    if not isinstance(item, Mapping):
                        raise InstanceError(f"invalid item in {key}")
                    prepared_item, item_non_ascii = _prepare(item)
                    non_ascii |= item_non_ascii
                    items.append(prepared_item)
                attribute["Value"] = items
            elif vr == "DS":
                attribute["Value"] = [_ds(value) for value in values]
            else:
                non_ascii |= _has_non_ascii(values)
        prepared[key.upper()] = attribute
    return prepared, non_ascii


def _ds(value: Any) -> Any:
    """A DS number as text (PS3.5 Table 6.2-1: at most 16 characters)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return format_number_as_ds(float(value)) if isinstance(value, float) else str(value)


def _has_non_ascii(values: list[Any]) -> bool:
    for value in values:
        if isinstance(value, str) and not value.isascii():
            return True
        if isinstance(value, Mapping) and any(  # PN: Alphabetic/Ideographic/Phonetic
            isinstance(group, str) and not group.isascii() for group in value.values()
        ):
            return True
    return False


def _use_utf8(dataset_json: dict[str, Any], top: bool = True) -> None:
    """Specific Character Set "ISO_IR 192" at the top and in every item that
    declares its own (PS3.5 6.1.2.4 note: UTF-8 holds every character)."""
    if top or _CHARSET_KEY in dataset_json:
        dataset_json[_CHARSET_KEY] = {"vr": "CS", "Value": ["ISO_IR 192"]}
    for attribute in dataset_json.values():
        if attribute.get("vr") == "SQ":
            for item in attribute.get("Value") or []:
                _use_utf8(item, top=False)
