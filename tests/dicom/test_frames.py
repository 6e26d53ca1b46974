"""Frame extraction without decoding, against pydicom on its test files and
on synthetic encapsulations (offset tables, fragment walking, 1-bit frames)."""

from __future__ import annotations

import io
import os
import struct
import warnings
from functools import cache
from pathlib import Path

import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file, get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

from gateway.dicom.frames import (
    PixelDataError,
    PixelInfo,
    frame_bytes,
    frame_media_type,
    pixel_info,
)
from gateway.dicom.part10 import read_part10
from gateway.dicom.walker import DicomParseError

# Files pydicom itself cannot make sense of, tested on their own below.
_BROKEN = {
    "MR_truncated.dcm",
    "emri_small_jpeg_2k_lossless_too_short.dcm",
    "meta_missing_tsyntax.dcm",
    "nested_priv_SQ.dcm",
}


@cache
def _pixel_files() -> tuple[str, ...]:
    """Every pydicom test file (pydicom-data included) with Pixel Data."""
    found = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = get_testdata_files("*")
        for path in sorted(paths, key=os.path.basename):
            if not os.path.isfile(path) or os.path.basename(path) in _BROKEN:
                continue
            try:
                ds = pydicom.dcmread(path, force=True, defer_size="1 KB")
            except Exception:
                continue
            if any(tag in ds for tag in (0x7FE00008, 0x7FE00009, 0x7FE00010)):
                found.append(path)
    return tuple(found)


def _info(raw: bytes) -> tuple[bytes | memoryview, PixelInfo]:
    part10 = read_part10(raw)
    return part10.data, pixel_info(part10)


def _read(path: str) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=True)


def _expected_frames(ds: pydicom.Dataset) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return max(1, int(ds.get("NumberOfFrames") or 1))
        except ValueError:  # badVR.dcm: "1A"
            return 1


@pytest.mark.parametrize("path", _pixel_files(), ids=os.path.basename)
def test_frames_match_pydicom(path: str) -> None:
    raw = Path(path).read_bytes()
    data, info = _info(raw)
    ds = _read(path)
    count = _expected_frames(ds)
    assert info.number_of_frames == count
    ours = [bytes(frame_bytes(data, info, i)) for i in range(count)]
    if info.encapsulated:
        extended = None
        if "ExtendedOffsetTable" in ds:
            extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference = list(
                generate_frames(ds.PixelData, number_of_frames=count, extended_offsets=extended)
            )
        assert ours == reference
    elif info.little_endian and info.bits_allocated != 1:
        length = info.frame_length
        assert ours == [ds.PixelData[i * length : (i + 1) * length] for i in range(count)]
    else:  # big endian or 1-bit: compare with the decoded array, as little endian bytes
        ds.pixel_array_options(as_rgb=False)
        array = ds.pixel_array.reshape(count, *ds.pixel_array.shape[-_dims(info) :])
        if info.bits_allocated == 1:
            expected = [np.packbits(a.ravel(), bitorder="little").tobytes() for a in array]
        else:
            if info.planar_configuration == 1 and info.samples_per_pixel > 1:
                array = array.transpose(0, 3, 1, 2)
            expected = [a.astype(a.dtype.newbyteorder("<")).tobytes() for a in array]
        assert ours == expected


def _dims(info: PixelInfo) -> int:
    return 3 if info.samples_per_pixel > 1 else 2


@pytest.mark.parametrize("path", _pixel_files(), ids=os.path.basename)
def test_out_of_range_frames_raise_index_error(path: str) -> None:
    data, info = _info(Path(path).read_bytes())
    frame_bytes(data, info, 0)  # frame 0 is the first frame, 0-based
    for index in (-1, info.number_of_frames, info.number_of_frames + 7):
        with pytest.raises(IndexError):
            frame_bytes(data, info, index)


def test_pixel_info_fields() -> None:
    data, info = _info(Path(get_testdata_file("emri_small_RLE.dcm")).read_bytes())
    assert (info.rows, info.columns, info.samples_per_pixel) == (64, 64, 1)
    assert (info.bits_allocated, info.bits_stored, info.pixel_representation) == (16, 12, 0)
    assert info.photometric_interpretation == "MONOCHROME2"
    assert info.number_of_frames == 10
    assert info.transfer_syntax_uid == RLELossless
    assert info.encapsulated
    assert len(info.fragments) == 10 and len(info.basic_offsets) == 10
    assert info.extended_offsets is None
    assert [len(parts) for parts in info.frame_fragments] == [1] * 10
    # One fragment per frame: a zero-copy view of the caller's buffer.
    assert isinstance(frame_bytes(data, info, 3), memoryview)


def test_native_frame_is_a_view_and_has_the_wado_length() -> None:
    data, info = _info(Path(get_testdata_file("emri_small.dcm")).read_bytes())
    frame = frame_bytes(data, info, 9)
    assert isinstance(frame, memoryview)
    # WADO-07: Rows x Columns x SamplesPerPixel x BitsAllocated / 8
    assert len(frame) == 64 * 64 * 1 * 16 // 8 == info.frame_length


def test_odd_length_native_frame() -> None:
    data, info = _info(Path(get_testdata_file("SC_rgb_small_odd.dcm")).read_bytes())
    assert info.value_length == 28  # 27 bytes padded to even length (PS3.5 7.1.1)
    assert len(frame_bytes(data, info, 0)) == 27


def test_ybr_full_422_native_frame_holds_two_samples_per_pixel() -> None:
    path = get_testdata_file("SC_ybr_full_422_uncompressed.dcm")
    _data, info = _info(Path(path).read_bytes())
    assert info.frame_length == 100 * 100 * 2


@pytest.mark.parametrize(
    ("uid", "media_type"),
    [
        ("1.2.840.10008.1.2.1", "application/octet-stream"),
        ("1.2.840.10008.1.2", "application/octet-stream"),
        ("1.2.840.10008.1.2.1.98", "application/octet-stream"),
        ("1.2.840.10008.1.2.4.50", "image/jpeg"),
        ("1.2.840.10008.1.2.4.51", "image/jpeg"),
        ("1.2.840.10008.1.2.4.57", "image/jpeg"),
        ("1.2.840.10008.1.2.4.70", "image/jpeg"),
        ("1.2.840.10008.1.2.4.80", "image/jls"),
        ("1.2.840.10008.1.2.4.81", "image/jls"),
        ("1.2.840.10008.1.2.4.90", "image/jp2"),
        ("1.2.840.10008.1.2.4.91", "image/jp2"),
        ("1.2.840.10008.1.2.4.201", "image/jphc"),
        ("1.2.840.10008.1.2.4.202", "image/jphc"),
        ("1.2.840.10008.1.2.4.203", "image/jphc"),
        ("1.2.840.10008.1.2.5", "image/dicom-rle"),
    ],
)
def test_frame_media_type(uid: str, media_type: str) -> None:
    assert frame_media_type(uid) == media_type


def test_frame_media_type_unknown() -> None:
    with pytest.raises(ValueError, match="no frame media type"):
        frame_media_type("1.2.3.4")


def test_no_pixel_data_or_no_rows() -> None:
    ds = _dataset(ExplicitVRLittleEndian)
    del ds.PixelData
    with pytest.raises(PixelDataError, match="no Pixel Data"):
        _info(_write(ds))
    for name in ("meta_missing_tsyntax.dcm", "nested_priv_SQ.dcm"):
        with pytest.raises(PixelDataError, match="missing"):
            _info(Path(get_testdata_file(name)).read_bytes())


@pytest.mark.parametrize("name", ["MR_truncated.dcm", "emri_small_jpeg_2k_lossless_too_short.dcm"])
def test_truncated_file(name: str) -> None:
    with pytest.raises(DicomParseError):
        _info(Path(get_testdata_file(name)).read_bytes())


def test_native_pixel_data_shorter_than_the_frames() -> None:
    ds = _dataset(ExplicitVRLittleEndian, frames=3)
    ds.PixelData = ds.PixelData[: 2 * 4 * 6 * 2]  # two frames only
    data, info = _info(_write(ds))
    frame_bytes(data, info, 1)
    with pytest.raises(PixelDataError, match="frame 2"):
        frame_bytes(data, info, 2)


# -- synthetic encapsulations -------------------------------------------------


def _dataset(ts: str, *, frames: int = 1, bits: int = 16, rows: int = 4, cols: int = 6) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    size = (rows * cols * bits * frames + 7) // 8
    ds.PixelData = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    ds["PixelData"].VR = "OW" if bits > 8 else "OB"
    return ds


def _write(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _jpeg_frames(count: int) -> list[bytes]:
    rng = np.random.default_rng(7)
    return [
        bytes(imagecodecs.jpeg8_encode(rng.integers(0, 255, (16, 24), dtype=np.uint8), level=80))
        for _ in range(count)
    ]


def _encapsulated(frames: list[bytes], pixel_data: bytes, **extra: bytes) -> bytes:
    ds = _dataset(JPEGBaseline8Bit, frames=len(frames), bits=8, rows=16, cols=24)
    ds.PixelData = pixel_data
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    if "eot" in extra:
        ds.ExtendedOffsetTable = extra["eot"]
        ds.ExtendedOffsetTableLengths = extra["lengths"]
    return _write(ds)


def _frames_of(raw: bytes) -> tuple[PixelInfo, list[bytes]]:
    data, info = _info(raw)
    return info, [bytes(frame_bytes(data, info, i)) for i in range(info.number_of_frames)]


def _padded(frame: bytes) -> bytes:
    return frame + b"\0" * (len(frame) % 2)  # PS3.5 A.4: fragments have even lengths


def test_extended_offset_table() -> None:
    frames = _jpeg_frames(3)
    pixel_data, offsets, lengths = encapsulate_extended(frames)
    info, ours = _frames_of(_encapsulated(frames, pixel_data, eot=offsets, lengths=lengths))
    assert info.extended_offsets is not None and len(info.extended_offsets) == 3
    assert info.basic_offsets == ()
    assert ours == [_padded(f) for f in frames]  # pydicom pads the frames and counts the pad
    reference = generate_frames(pixel_data, number_of_frames=3, extended_offsets=(offsets, lengths))
    assert ours == list(reference)


def test_basic_offset_table_with_two_fragments_per_frame() -> None:
    frames = [_padded(f) for f in _jpeg_frames(3)]
    info, ours = _frames_of(_encapsulated(frames, encapsulate(frames, 2, has_bot=True)))
    assert len(info.fragments) == 6 and len(info.basic_offsets) == 3
    assert ours == frames


def test_fragment_walking_without_offset_table() -> None:
    frames = [_padded(f) for f in _jpeg_frames(3)]
    info, ours = _frames_of(_encapsulated(frames, encapsulate(frames, 2, has_bot=False)))
    assert len(info.fragments) == 6 and info.basic_offsets == ()
    assert ours == frames


def test_fragment_walking_ignores_an_end_marker_not_followed_by_a_new_codestream() -> None:
    # Frame 0 has a fragment that happens to end in FFD9; only the next fragment
    # starting with SOI ends the frame.
    frame0 = [b"\xff\xd8" + b"\x01" * 6 + b"\xff\xd9", b"\x02" * 6 + b"\xff\xd9"]
    frame1 = [b"\xff\xd8" + b"\x03" * 4 + b"\xff\xd9"]
    items = b"".join(_item(f) for f in [b"", *frame0, *frame1])
    _, ours = _frames_of(_encapsulated([b"", b""], items))
    assert ours == [b"".join(frame0), frame1[0]]


def test_basic_offset_table_not_pointing_at_fragments_is_ignored() -> None:
    frames = [_padded(f) for f in _jpeg_frames(2)]
    pixel_data = bytearray(encapsulate(frames, 1, has_bot=True))
    struct.pack_into("<L", pixel_data, 12, 3)  # second offset: inside the first fragment
    _, ours = _frames_of(_encapsulated(frames, bytes(pixel_data)))
    assert ours == frames  # one fragment per frame


def test_fewer_fragments_than_frames() -> None:
    frames = [_padded(f) for f in _jpeg_frames(2)]
    raw = _encapsulated([*frames, b""], encapsulate(frames, 1, has_bot=False))
    data, info = _info(raw)
    assert info.number_of_frames == 3 and info.frame_fragments == ()
    with pytest.raises(PixelDataError, match="cannot locate frame"):
        frame_bytes(data, info, 0)


def test_single_frame_in_many_fragments_is_joined() -> None:
    frame = _padded(_jpeg_frames(1)[0])
    info, ours = _frames_of(_encapsulated([frame], encapsulate([frame], 3, has_bot=False)))
    assert len(info.fragments) == 3
    assert ours == [frame]


def _item(value: bytes) -> bytes:
    return struct.pack("<HHL", 0xFFFE, 0xE000, len(value)) + value


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ExplicitVRBigEndian])
def test_one_bit_frames_that_do_not_start_on_a_byte(ts: str) -> None:
    # 3 x 5 pixels: 15 bits per frame, so frames 1 and 2 start inside a byte.
    ds = _dataset(ts, frames=3, bits=1, rows=3, cols=5)
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 2, (3, 3, 5), dtype=np.uint8)
    value = np.packbits(pixels.ravel(), bitorder="little").tobytes()
    value += b"\0" * (len(value) % 2)
    if ts == ExplicitVRBigEndian:  # OW words, big endian (PS3.5 7.3)
        value = np.frombuffer(value, "<u2").astype(">u2").tobytes()
        ds.PixelData = value
        ds["PixelData"].VR = "OW"
    else:
        ds.PixelData = value
    data, info = _info(_write(ds))
    for i in range(3):
        frame = bytes(frame_bytes(data, info, i))
        assert len(frame) == info.frame_length == 2
        assert np.array_equal(
            np.unpackbits(np.frombuffer(frame, np.uint8), bitorder="little", count=15),
            pixels[i].ravel(),
        )
    if ts == ExplicitVRLittleEndian:
        # pydicom does not swap the OW words of big endian 1-bit data; we do,
        # as for any OW value (PS3.5 7.3), so it is compared little endian only.
        reference = pydicom.dcmread(io.BytesIO(_write(ds))).pixel_array
        assert np.array_equal(reference, pixels)


def test_deflated_dataset_frames_come_from_the_inflated_buffer() -> None:
    path = get_testdata_file("image_dfl.dcm")
    raw = Path(path).read_bytes()
    part10 = read_part10(raw)
    info = pixel_info(part10)
    assert part10.data is not raw
    assert bytes(frame_bytes(part10.data, info, 0)) == _read(path).PixelData[: 512 * 512]
