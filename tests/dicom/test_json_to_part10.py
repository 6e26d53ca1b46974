"""`json_to_part10`: STOW-RS application/dicom+json (PS3.18 10.5.1.2.2).

The round trip takes every pydicom file that passes `check_instance`, turns it
into DICOM JSON with our `dataset_to_json` (bulk data as BulkDataURI), cuts
the bulk values into parts as a STOW-RS client would send them (native values
little endian as application/octet-stream, compressed Pixel Data one part per
frame in its media type), rebuilds the file and checks that the JSON of the
rebuilt file is the JSON we started from, that the pixel bytes are the same,
and that pydicom reads the same pixels.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file, get_testdata_files
from pydicom.encaps import generate_fragments, generate_frames

from gateway.dicom.dicom_json import dataset_to_json
from gateway.dicom.instance_check import (
    CANNOT_UNDERSTAND,
    DATASET_DOES_NOT_MATCH_SOP_CLASS,
    TRANSFER_SYNTAX_NOT_SUPPORTED,
    InstanceError,
    check_instance,
)
from gateway.dicom.json_to_part10 import (
    IMPLEMENTATION_CLASS_UID,
    BulkPart,
    json_to_part10,
    pixel_data_transfer_syntax,
)
from gateway.dicom.part10 import Part10, read_part10
from gateway.dicom.walker import Element, walk_dataset

EXPLICIT_LE = "1.2.840.10008.1.2.1"
OCTET_STREAM = "application/octet-stream"
# PS3.18 Table 8.7.3-5, the media type a client sends each transfer syntax in.
MEDIA_TYPE = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
_SWAPPED = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_SEQUENCE_END = b"\xfe\xff\xdd\xe0\0\0\0\0"


def uri_for(path: tuple[int, ...]) -> str:
    return "https://gateway.test/bulk/" + "/".join(f"{part:X}" for part in path)


# --- turning a file into a STOW-RS request -------------------------------------------


def _element_at(elements: list[Element], path: tuple[int, ...]) -> Element:
    for element in elements:
        if element[0] == path[0]:
            if len(path) == 1:
                return element
            items = element[4]
            assert items is not None
            return _element_at(items[path[1]], path[2:])
    raise KeyError(path)


def _little_endian(raw: bytes, vr: str, tag: int, bits_allocated: int) -> bytes:
    """Bulk data is little endian (PS3.18 8.7.3.3.1)."""
    width = _SWAPPED.get(vr)
    if tag == 0x7FE00010 and vr == "OW" and bits_allocated > 16:
        width = bits_allocated // 8
    if not width:
        return raw
    usable = len(raw) - len(raw) % width
    return np.frombuffer(raw[:usable], f">u{width}").astype(f"<u{width}").tobytes() + raw[usable:]


def to_request(data: bytes) -> tuple[dict[str, Any], dict[str, BulkPart], Part10]:
    """The DICOM JSON object and the bulk parts a client would send."""
    part = read_part10(data)
    paths: list[tuple[int, ...]] = []

    def bulk_data_uri(path: tuple[int, ...]) -> str:
        paths.append(path)
        return uri_for(path)

    encoding = {"explicit_vr": part.explicit_vr, "little_endian": part.little_endian}
    dataset_json = dataset_to_json(
        part.data, offset=part.offset, bulk_data_uri=bulk_data_uri, **encoding
    )
    elements = walk_dataset(part.data, part.offset, **encoding)
    bits_allocated = int((dataset_json.get("00280100", {}).get("Value") or [16])[0])
    frames = int((dataset_json.get("00280008", {}).get("Value") or [1])[0] or 1)
    syntax = part.transfer_syntax_uid
    bulk: dict[str, BulkPart] = {}
    for path in paths:
        tag, vr, offset, length, _items, fragments = _element_at(elements, path)
        raw = bytes(part.data[offset : offset + length])
        if fragments is None:
            if not part.little_endian:
                raw = _little_endian(raw, vr, tag, bits_allocated)
            bulk[uri_for(path)] = BulkPart(raw, OCTET_STREAM)
            continue
        compressed = list(generate_frames(raw + _SEQUENCE_END, number_of_frames=frames))
        media_type = MEDIA_TYPE[syntax]
        if frames == 1:
            bulk[uri_for(path)] = BulkPart(compressed[0], media_type, syntax)
        else:  # PS3.18 8.7.3.3.2: compressed multi-frame, one frame per part
            for number, frame in enumerate(compressed, 1):
                bulk[f"{uri_for(path)}/frames/{number}"] = BulkPart(frame, media_type, syntax)
    return dataset_json, bulk, part


def _json_of(data: bytes) -> dict[str, Any]:
    part = read_part10(data)
    return dataset_to_json(
        part.data,
        offset=part.offset,
        explicit_vr=part.explicit_vr,
        little_endian=part.little_endian,
        bulk_data_uri=uri_for,
    )


def _round_trip_files() -> Iterator[Path]:
    for name in sorted({*get_testdata_files(), *get_charset_files()}):
        path = Path(name)
        if not path.is_file():
            continue
        try:
            check_instance(path.read_bytes())
        except InstanceError:
            continue  # no instance to send (see test_instance_check)
        yield path


ROUND_TRIP_FILES = list(_round_trip_files())


# --- the round trip ------------------------------------------------------------------


@pytest.mark.parametrize("path", ROUND_TRIP_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_round_trip_through_dicom_json(path: Path) -> None:
    data = path.read_bytes()
    dataset_json, bulk, original = to_request(data)
    out = json_to_part10(dataset_json, bulk)

    checked = check_instance(out)
    before = check_instance(data)
    assert checked.sop_instance_uid == before.sop_instance_uid
    assert checked.study_instance_uid == before.study_instance_uid
    # Compressed Pixel Data keeps its transfer syntax; anything else (native
    # pixels, no pixels, implicit/big endian/deflated) becomes Explicit VR LE.
    encapsulated = "7FE00010" in dataset_json and original.transfer_syntax_uid in MEDIA_TYPE
    expected_syntax = original.transfer_syntax_uid if encapsulated else EXPLICIT_LE
    assert checked.transfer_syntax_uid == expected_syntax

    # The same DICOM JSON model: every attribute, value and BulkDataURI.
    # PS3.5 A.4: encapsulated Pixel Data is OB (some originals say OW).
    expected_json = dict(dataset_json)
    if expected_syntax != EXPLICIT_LE:
        expected_json["7FE00010"] = {**dataset_json["7FE00010"], "vr": "OB"}
    assert _json_of(out) == expected_json

    ds = pydicom.dcmread(io.BytesIO(out))
    assert ds.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert ds.file_meta.MediaStorageSOPInstanceUID == before.sop_instance_uid
    if "7FE00010" in dataset_json:
        _assert_same_pixels(ds, bulk, dataset_json, data)


def _assert_same_pixels(
    ds: pydicom.Dataset, bulk: dict[str, BulkPart], dataset_json: dict[str, Any], data: bytes
) -> None:
    uri = dataset_json["7FE00010"]["BulkDataURI"]
    if ds.file_meta.TransferSyntaxUID == EXPLICIT_LE:
        sent = bulk[uri].data
        assert ds.PixelData == sent + b"\0" * (len(sent) % 2)
    else:
        sent_frames = (
            [bulk[uri].data]
            if uri in bulk
            else [
                bulk[key].data
                for key in sorted(bulk, key=_frame_number)
                if key.startswith(uri + "/")
            ]
        )
        fragments = list(generate_fragments(ds.PixelData))
        assert fragments[0] == b""  # empty Basic Offset Table
        assert len(fragments) == len(sent_frames) + 1  # one fragment per frame
        for fragment, frame in zip(fragments[1:], sent_frames, strict=True):
            if frame.startswith(JP2_SIGNATURE):  # GDCMJ2K_TextGBR.dcm holds a JP2 file
                assert fragment.rstrip(b"\0") in frame and fragment.startswith(b"\xff\x4f")
            else:
                assert fragment == frame + b"\0" * (len(frame) % 2)
    original = pydicom.dcmread(io.BytesIO(data))
    try:
        expected = np.asarray(original.pixel_array)
    except Exception:
        return  # pydicom cannot decode it (JPEG Lossless, JPEG-LS, 12-bit JPEG)
    assert np.array_equal(ds.pixel_array, expected)


def _frame_number(key: str) -> int:
    return int(key.rsplit("/", 1)[1]) if "/frames/" in key else 0


def test_the_round_trip_covers_native_and_compressed_files() -> None:
    syntaxes = {read_part10(path.read_bytes()).transfer_syntax_uid for path in ROUND_TRIP_FILES}
    assert {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.5",
    } <= syntaxes
    assert len(ROUND_TRIP_FILES) > 150


# --- small cases ---------------------------------------------------------------------


def _minimal(**extra: Any) -> dict[str, Any]:
    """A minimal instance: SOP Common, Study and Series Instance UIDs, and a
    64-byte 8x8 monochrome image."""
    dataset_json: dict[str, Any] = {
        "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.7"]},
        "00080018": {"vr": "UI", "Value": ["1.2.3.4.5.6"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        "0020000D": {"vr": "UI", "Value": ["1.2.3.4"]},
        "0020000E": {"vr": "UI", "Value": ["1.2.3.4.5"]},
        "00280002": {"vr": "US", "Value": [1]},
        "00280004": {"vr": "CS", "Value": ["MONOCHROME2"]},
        "00280010": {"vr": "US", "Value": [8]},
        "00280011": {"vr": "US", "Value": [8]},
        "00280100": {"vr": "US", "Value": [8]},
        "00280101": {"vr": "US", "Value": [8]},
        "00280102": {"vr": "US", "Value": [7]},
        "00280103": {"vr": "US", "Value": [0]},
        "7FE00010": {"vr": "OB", "BulkDataURI": "pixels"},
    }
    dataset_json.update(extra)
    return dataset_json


PIXELS = np.arange(64, dtype=np.uint8).reshape(8, 8)


def test_octet_stream_pixel_data_is_native_explicit_vr_little_endian() -> None:
    out = json_to_part10(_minimal(), {"pixels": BulkPart(PIXELS.tobytes(), OCTET_STREAM)})
    ds = pydicom.dcmread(io.BytesIO(out))
    assert ds.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert ds.file_meta.MediaStorageSOPInstanceUID == "1.2.3.4.5.6"
    assert np.array_equal(ds.pixel_array, PIXELS)
    assert out[128:132] == b"DICM"


def test_inline_binary_pixel_data() -> None:
    pixel_json = {"vr": "OB", "InlineBinary": base64.b64encode(PIXELS.tobytes()).decode()}
    out = json_to_part10(_minimal(**{"7FE00010": pixel_json}), {})
    ds = pydicom.dcmread(io.BytesIO(out))
    assert np.array_equal(ds.pixel_array, PIXELS)


def test_missing_bulk_data_part() -> None:
    with pytest.raises(InstanceError) as info:
        json_to_part10(_minimal(), {"other": BulkPart(b"", OCTET_STREAM)})
    assert info.value.reason == "bulk data pixels missing"
    assert info.value.failure_code == CANNOT_UNDERSTAND


def test_missing_bulk_data_of_another_attribute() -> None:
    extra = {"00420011": {"vr": "OB", "BulkDataURI": "https://x/document"}}
    with pytest.raises(InstanceError, match="bulk data https://x/document missing"):
        json_to_part10(_minimal(**extra), {"pixels": BulkPart(PIXELS.tobytes(), OCTET_STREAM)})


def test_other_bulk_data_keeps_its_bytes_whatever_the_media_type() -> None:
    """An Encapsulated Document comes in its own media type (PS3.18 8.7.3.3)."""
    document = b"%PDF-1.7\n...\n%%EOF\n"
    extra = {"00420011": {"vr": "OB", "BulkDataURI": "doc"}}
    bulk = {
        "pixels": BulkPart(PIXELS.tobytes(), OCTET_STREAM),
        "doc": BulkPart(document, "application/pdf"),
    }
    ds = pydicom.dcmread(io.BytesIO(json_to_part10(_minimal(**extra), bulk)))
    assert ds.EncapsulatedDocument.rstrip(b"\0") == document


@pytest.mark.parametrize(
    ("media_type", "parameter", "expected"),
    [
        ("image/jpeg", None, "1.2.840.10008.1.2.4.50"),
        ("image/jpeg", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.70"),
        ("image/jpeg", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.51"),
        ("image/jp2", None, "1.2.840.10008.1.2.4.90"),
        ("image/jp2", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.91"),
        ("image/jls", None, "1.2.840.10008.1.2.4.80"),
        ("image/jls", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.81"),
        ("image/jphc", None, "1.2.840.10008.1.2.4.201"),
        ("image/jphc", "1.2.840.10008.1.2.4.203", "1.2.840.10008.1.2.4.203"),
        ("image/jpx", None, "1.2.840.10008.1.2.4.92"),
        ("image/dicom-rle", None, "1.2.840.10008.1.2.5"),
        ("IMAGE/JPEG", None, "1.2.840.10008.1.2.4.50"),
        ('image/jpeg; transfer-syntax="1.2.840.10008.1.2.4.57"', None, "1.2.840.10008.1.2.4.57"),
        (OCTET_STREAM, None, EXPLICIT_LE),
        (OCTET_STREAM, EXPLICIT_LE, EXPLICIT_LE),
    ],
)
def test_media_type_to_transfer_syntax(
    media_type: str, parameter: str | None, expected: str
) -> None:
    assert pixel_data_transfer_syntax(BulkPart(b"", media_type, parameter)) == expected


@pytest.mark.parametrize(
    ("media_type", "parameter", "code"),
    [
        ("image/jpeg", "1.2.840.10008.1.2.4.90", CANNOT_UNDERSTAND),  # not a JPEG syntax
        (OCTET_STREAM, "1.2.840.10008.1.2", CANNOT_UNDERSTAND),  # bulk data is little endian
        ("video/mpeg", None, TRANSFER_SYNTAX_NOT_SUPPORTED),
        ("image/png", None, TRANSFER_SYNTAX_NOT_SUPPORTED),
    ],
)
def test_media_types_we_refuse(media_type: str, parameter: str | None, code: int) -> None:
    with pytest.raises(InstanceError) as info:
        pixel_data_transfer_syntax(BulkPart(b"", media_type, parameter))
    assert info.value.failure_code == code


def test_jpeg_pixel_data_is_encapsulated_with_an_empty_offset_table() -> None:
    frame = imagecodecs.jpeg8_encode(PIXELS, level=95)
    out = json_to_part10(_minimal(), {"pixels": BulkPart(frame, "image/jpeg")})
    ds = pydicom.dcmread(io.BytesIO(out))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.50"
    assert ds["PixelData"].VR == "OB" and ds["PixelData"].is_undefined_length
    assert list(generate_fragments(ds.PixelData)) == [b"", frame + b"\0" * (len(frame) % 2)]
    assert np.abs(ds.pixel_array.astype(int) - PIXELS.astype(int)).max() <= 4


def test_compressed_multi_frame_comes_one_part_per_frame() -> None:
    frames = [PIXELS, PIXELS[::-1].copy(), (PIXELS // 2).astype(np.uint8)]
    bulk = {
        f"pixels/frames/{number}": BulkPart(
            imagecodecs.jpeg2k_encode(frame, level=0, codecformat="J2K", reversible=True),
            "image/jp2",
        )
        for number, frame in enumerate(frames, 1)
    }
    extra = {"00280008": {"vr": "IS", "Value": [3]}}
    ds = pydicom.dcmread(io.BytesIO(json_to_part10(_minimal(**extra), bulk)))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    assert np.array_equal(ds.pixel_array, np.stack(frames))


def test_a_missing_frame_is_missing_bulk_data() -> None:
    extra = {"00280008": {"vr": "IS", "Value": [2]}}
    bulk = {"pixels/frames/1": BulkPart(b"\xff\xd8\xff\xd9", "image/jpeg")}
    with pytest.raises(InstanceError, match="bulk data pixels missing"):
        json_to_part10(_minimal(**extra), bulk)


def test_frames_of_different_syntaxes_are_refused() -> None:
    extra = {"00280008": {"vr": "IS", "Value": [2]}}
    bulk = {
        "pixels/frames/1": BulkPart(b"\xff\xd8\xff\xd9", "image/jpeg"),
        "pixels/frames/2": BulkPart(b"\xff\x4f\xff\x51", "image/jp2"),
    }
    with pytest.raises(InstanceError, match="different transfer syntaxes"):
        json_to_part10(_minimal(**extra), bulk)


def test_a_jp2_file_is_reduced_to_its_codestream() -> None:
    jp2 = imagecodecs.jpeg2k_encode(PIXELS, level=0, codecformat="JP2", reversible=True)
    assert jp2.startswith(JP2_SIGNATURE)
    ds = pydicom.dcmread(
        io.BytesIO(json_to_part10(_minimal(), {"pixels": BulkPart(jp2, "image/jp2")}))
    )
    fragment = list(generate_fragments(ds.PixelData))[1]
    assert fragment.startswith(b"\xff\x4f\xff\x51")  # SOC, SIZ: a bare codestream
    assert np.array_equal(ds.pixel_array, PIXELS)


def test_non_ascii_text_is_written_as_utf8() -> None:
    extra = {
        "00080005": {"vr": "CS", "Value": ["ISO_IR 100"]},
        "00100010": {
            "vr": "PN",
            "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}],
        },
        "00081030": {"vr": "LO", "Value": ["Ünïcödé — study"]},
    }
    bulk = {"pixels": BulkPart(PIXELS.tobytes(), OCTET_STREAM)}
    ds = pydicom.dcmread(io.BytesIO(json_to_part10(_minimal(**extra), bulk)))
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.StudyDescription == "Ünïcödé — study"
    assert ds.PatientName.ideographic == "山田^太郎"


def test_ascii_text_keeps_its_character_set() -> None:
    extra = {"00080005": {"vr": "CS", "Value": ["ISO_IR 100"]}}
    bulk = {"pixels": BulkPart(PIXELS.tobytes(), OCTET_STREAM)}
    ds = pydicom.dcmread(io.BytesIO(json_to_part10(_minimal(**extra), bulk)))
    assert ds.SpecificCharacterSet == "ISO_IR 100"


def test_file_meta_in_the_json_is_ignored() -> None:
    extra = {
        "00020010": {"vr": "UI", "Value": ["1.2.840.10008.1.2.2"]},
        "00020003": {"vr": "UI", "Value": ["9.9.9"]},
    }
    bulk = {"pixels": BulkPart(PIXELS.tobytes(), OCTET_STREAM)}
    ds = pydicom.dcmread(io.BytesIO(json_to_part10(_minimal(**extra), bulk)))
    assert ds.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert ds.file_meta.MediaStorageSOPInstanceUID == "1.2.3.4.5.6"
    assert 0x00020010 not in ds


def test_ds_numbers_fit_in_16_characters() -> None:
    extra = {
        "00280030": {"vr": "DS", "Value": [0.1 + 0.2, 1e-20]},
        "00200013": {"vr": "IS", "Value": [7]},
    }
    bulk = {"pixels": BulkPart(PIXELS.tobytes(), OCTET_STREAM)}
    ds = pydicom.dcmread(io.BytesIO(json_to_part10(_minimal(**extra), bulk)))
    assert all(len(str(value)) <= 16 for value in ds.PixelSpacing)
    assert abs(float(ds.PixelSpacing[0]) - 0.3) < 1e-12
    assert ds.InstanceNumber == 7


@pytest.mark.parametrize("key", ["00080016", "00080018"])
def test_missing_sop_uids_are_a900(key: str) -> None:
    dataset_json = _minimal()
    del dataset_json[key]
    with pytest.raises(InstanceError) as info:
        json_to_part10(dataset_json, {"pixels": BulkPart(PIXELS.tobytes(), OCTET_STREAM)})
    assert info.value.failure_code == DATASET_DOES_NOT_MATCH_SOP_CLASS


@pytest.mark.parametrize(
    "dataset_json",
    [
        {"00100010": "not an attribute object"},
        {"00100010": {"Value": ["no vr"]}},
        {"00280010": {"vr": "US", "Value": "not a list"}},
        {"00081115": {"vr": "SQ", "Value": ["not an item"]}},
        {"7FE00010": {"vr": "OB", "InlineBinary": "not base64!"}},
    ],
)
def test_broken_json_is_c000(dataset_json: dict[str, Any]) -> None:
    with pytest.raises(InstanceError) as info:
        json_to_part10(dataset_json, {})
    assert info.value.failure_code == CANNOT_UNDERSTAND


def test_sequences_and_nested_bulk_data() -> None:
    icon = np.full((4, 4), 9, dtype=np.uint8)
    extra = {
        "00880200": {
            "vr": "SQ",
            "Value": [
                {
                    "00280010": {"vr": "US", "Value": [4]},
                    "00280011": {"vr": "US", "Value": [4]},
                    "7FE00010": {"vr": "OB", "BulkDataURI": "icon"},
                }
            ],
        }
    }
    bulk = {
        "pixels": BulkPart(PIXELS.tobytes(), OCTET_STREAM),
        "icon": BulkPart(icon.tobytes(), OCTET_STREAM),
    }
    ds = pydicom.dcmread(io.BytesIO(json_to_part10(_minimal(**extra), bulk)))
    assert ds.IconImageSequence[0].PixelData == icon.tobytes()


def test_a_test_file_the_round_trip_uses() -> None:
    """A named smoke test, quick to run alone: CT_small through JSON."""
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    dataset_json, bulk, _ = to_request(data)
    assert _json_of(json_to_part10(dataset_json, bulk)) == dataset_json
