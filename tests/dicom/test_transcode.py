"""Transcoding frames and whole instances: round trips on pydicom's test
files, what is kept and what is updated, and what is refused up front."""

from __future__ import annotations

import io
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from gateway.dicom.codecs import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    HTJ2K_LOSSLESS,
    J2K_LOSSLESS,
    JPEG_BASELINE,
    JPEG_LS_LOSSLESS,
    RLE_LOSSLESS,
    decode_frame,
)
from gateway.dicom.frames import PixelInfo, frame_bytes, pixel_info
from gateway.dicom.part10 import read_part10
from gateway.dicom.transcode import (
    TARGETS,
    TranscodeError,
    can_transcode,
    transcode_frame,
    transcode_instance,
)

LOSSLESS = [EXPLICIT_VR_LITTLE_ENDIAN, RLE_LOSSLESS, J2K_LOSSLESS, HTJ2K_LOSSLESS, JPEG_LS_LOSSLESS]

SOURCES = [
    "CT_small.dcm",  # native CT, signed 16-bit
    "MR_small_implicit.dcm",  # native MR, implicit VR
    "MR_small_bigendian.dcm",  # retired big endian
    "SC_rgb.dcm",  # native RGB
    "color-pl.dcm",  # RGB, colour-by-plane
    "SC_rgb_16bit_2frame.dcm",  # multi-frame RGB 16-bit
    "emri_small.dcm",  # multi-frame 12-bit
    "emri_small_RLE.dcm",  # multi-frame RLE
    "emri_small_jpeg_2k_lossless.dcm",  # multi-frame J2K
    "US1_J2KR.dcm",  # J2K YBR_RCT
    "JPEG-LL.dcm",  # JPEG lossless, signed
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS, signed
    "OBXXXX1A_2frame.dcm",  # palette colour, 2 frames
    "J2K_pixelrep_mismatch.dcm",  # signed pixels in an unsigned codestream
    "image_dfl.dcm",  # deflated
]


def _raw(name: str) -> bytes:
    return Path(get_testdata_file(name)).read_bytes()


def _decoded(raw: bytes) -> tuple[PixelInfo, Any]:
    part10 = read_part10(raw)
    info = pixel_info(part10)
    frames = [
        decode_frame(frame_bytes(part10.data, info, i), info) for i in range(info.number_of_frames)
    ]
    return info, np.stack(frames)


@pytest.mark.parametrize("target", LOSSLESS)
@pytest.mark.parametrize("name", SOURCES)
def test_lossless_round_trip(name: str, target: str) -> None:
    raw = _raw(name)
    source_info, source = _decoded(raw)
    out = transcode_instance(raw, target)

    ds = pydicom.dcmread(io.BytesIO(out))  # pydicom reads the result
    original = pydicom.dcmread(io.BytesIO(raw))
    assert ds.file_meta.TransferSyntaxUID == target
    assert ds.SOPInstanceUID == original.SOPInstanceUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
    assert ds.file_meta.MediaStorageSOPClassUID == original.SOPClassUID
    assert ds.PatientName == original.PatientName

    info, pixels = _decoded(out)
    assert info.number_of_frames == source_info.number_of_frames
    assert np.array_equal(pixels, source)
    if target != JPEG_LS_LOSSLESS:  # pydicom has no JPEG-LS decoder installed
        reference = ds.pixel_array.reshape(pixels.shape)
        if info.photometric_interpretation == "RGB" or info.samples_per_pixel == 1:
            assert np.array_equal(reference, pixels)
    if target not in (EXPLICIT_VR_LITTLE_ENDIAN, source_info.transfer_syntax_uid):
        # PS3.5 A.4: one fragment per frame, and the Basic Offset Table filled.
        assert len(info.basic_offsets) == info.number_of_frames
        assert [len(f) for f in info.frame_fragments] == [1] * info.number_of_frames
        if info.samples_per_pixel > 1:
            assert ds.PlanarConfiguration == 0


def test_native_target_keeps_the_planar_configuration() -> None:
    out = pydicom.dcmread(io.BytesIO(transcode_instance(_raw("color-pl.dcm"), J2K_LOSSLESS)))
    assert out.PlanarConfiguration == 0  # PS3.5 8.2.4: the codestream decides
    native = transcode_instance(_raw("color-pl.dcm"), EXPLICIT_VR_LITTLE_ENDIAN)
    assert pydicom.dcmread(io.BytesIO(native)).PlanarConfiguration == 1
    # Through RLE (Planar Configuration 0) and back: interleaved like color-px.
    rle = transcode_instance(_raw("color-pl.dcm"), RLE_LOSSLESS)
    back = pydicom.dcmread(io.BytesIO(transcode_instance(rle, EXPLICIT_VR_LITTLE_ENDIAN)))
    assert back.PlanarConfiguration == 0
    assert back.PixelData == pydicom.dcmread(get_testdata_file("color-px.dcm")).PixelData


def test_ycbcr_sources_decode_to_rgb() -> None:
    for name in ("US1_J2KR.dcm", "SC_rgb_dcmtk_+eb+cy+s2.dcm"):
        ds = pydicom.dcmread(io.BytesIO(transcode_instance(_raw(name), EXPLICIT_VR_LITTLE_ENDIAN)))
        assert ds.PhotometricInterpretation == "RGB"


def test_big_endian_values_are_swapped() -> None:
    big = pydicom.dcmread(
        io.BytesIO(transcode_instance(_raw("MR_small_bigendian.dcm"), RLE_LOSSLESS))
    )
    little = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    assert np.array_equal(big.pixel_array, little.pixel_array)
    assert big.SmallestImagePixelValue == little.SmallestImagePixelValue


def test_one_bit_pixels_only_go_native() -> None:
    raw = _raw("liver.dcm")
    info = pixel_info(read_part10(raw))
    assert can_transcode(info.transfer_syntax_uid, EXPLICIT_VR_LITTLE_ENDIAN, info)
    for target in TARGETS - {EXPLICIT_VR_LITTLE_ENDIAN}:
        assert not can_transcode(info.transfer_syntax_uid, target, info)
    big = transcode_instance(_raw("liver_expb.dcm"), EXPLICIT_VR_LITTLE_ENDIAN)
    assert np.array_equal(
        pydicom.dcmread(io.BytesIO(big)).pixel_array, pydicom.dcmread(io.BytesIO(raw)).pixel_array
    )


def test_jpeg_baseline_target() -> None:
    raw = _raw("SC_rgb.dcm")
    out = transcode_instance(raw, JPEG_BASELINE)
    ds = pydicom.dcmread(io.BytesIO(out))
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    # PS3.3 C.7.6.1.1.5: lossy compression is recorded, with ratio and method.
    assert ds.LossyImageCompression == "01"
    assert ds.LossyImageCompressionMethod == "ISO_10918_1"
    assert float(ds.LossyImageCompressionRatio) > 1
    source = pydicom.dcmread(io.BytesIO(raw)).pixel_array.astype(int)
    assert np.abs(ds.pixel_array.astype(int) - source).mean() < 3


def test_jpeg_baseline_only_for_8_bit_unsigned() -> None:
    for name in ("CT_small.dcm", "emri_small.dcm", "OBXXXX1A.dcm", "SC_rgb_16bit.dcm"):
        raw = _raw(name)
        info = pixel_info(read_part10(raw))
        assert not can_transcode(info.transfer_syntax_uid, JPEG_BASELINE, info), name
        with pytest.raises(TranscodeError):
            transcode_instance(raw, JPEG_BASELINE)
        with pytest.raises(TranscodeError):
            part10 = read_part10(raw)
            transcode_frame(frame_bytes(part10.data, info, 0), info, JPEG_BASELINE)


def test_lossy_source_stays_marked_lossy() -> None:
    """PS3.3 C.7.6.1.1.5: Lossy Image Compression "01" is never reset, and a
    lossy source without it gets it."""
    for name, target in (
        ("693_J2KI.dcm", EXPLICIT_VR_LITTLE_ENDIAN),
        ("JPEG2000.dcm", RLE_LOSSLESS),
    ):
        raw = _raw(name)
        info = pixel_info(read_part10(raw))
        assert can_transcode(info.transfer_syntax_uid, target, info)  # lossy -> lossless: allowed
        ds = pydicom.dcmread(io.BytesIO(transcode_instance(raw, target)))
        assert ds.LossyImageCompression == "01"


def test_can_transcode() -> None:
    info = pixel_info(read_part10(_raw("CT_small.dcm")))
    ts = info.transfer_syntax_uid
    assert can_transcode(ts, ts, info)
    assert all(can_transcode(ts, target, info) for target in LOSSLESS)
    assert not can_transcode(ts, "1.2.840.10008.1.2.4.70", info)  # not an encoder we have
    assert not can_transcode(ts, "1.2.840.10008.1.2", info)  # never Implicit VR (WADO-02)
    assert not can_transcode("1.2.3.4", J2K_LOSSLESS, info)  # unknown source
    rtdose = pixel_info(read_part10(_raw("rtdose.dcm")))  # 32-bit
    assert can_transcode(rtdose.transfer_syntax_uid, RLE_LOSSLESS, rtdose)
    assert not can_transcode(rtdose.transfer_syntax_uid, J2K_LOSSLESS, rtdose)


def test_same_syntax_is_returned_untouched() -> None:
    raw = _raw("emri_small_jpeg_2k_lossless.dcm")
    assert transcode_instance(raw, J2K_LOSSLESS) == raw
    part10 = read_part10(raw)
    info = pixel_info(part10)
    frame = frame_bytes(part10.data, info, 4)
    assert transcode_frame(frame, info, J2K_LOSSLESS) == bytes(frame)


def test_transcode_frame_to_native_matches_the_native_instance() -> None:
    compressed = read_part10(_raw("emri_small_jpeg_2k_lossless.dcm"))
    native = read_part10(_raw("emri_small.dcm"))
    c_info, n_info = pixel_info(compressed), pixel_info(native)
    for i in range(10):
        frame = frame_bytes(compressed.data, c_info, i)
        expected = bytes(frame_bytes(native.data, n_info, i))
        assert transcode_frame(frame, c_info, EXPLICIT_VR_LITTLE_ENDIAN) == expected


def test_transcode_frame_is_thread_safe() -> None:
    part10 = read_part10(_raw("US1_J2KR.dcm"))
    info = pixel_info(part10)
    frame = bytes(frame_bytes(part10.data, info, 0))
    targets = [HTJ2K_LOSSLESS, EXPLICIT_VR_LITTLE_ENDIAN, RLE_LOSSLESS, JPEG_LS_LOSSLESS] * 4
    serial = [transcode_frame(frame, info, t) for t in targets]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda t: transcode_frame(frame, info, t), targets))
    assert parallel == serial


def test_basic_offset_table_points_at_each_frame() -> None:
    out = transcode_instance(_raw("emri_small.dcm"), HTJ2K_LOSSLESS)
    ds = pydicom.dcmread(io.BytesIO(out))
    value = ds.PixelData
    tag, length = struct.unpack_from("<LL", value, 0)
    assert tag == 0xE000FFFE and length == 10 * 4
    offsets = struct.unpack_from("<10L", value, 8)
    first = 8 + length
    for offset in offsets:
        assert value[first + offset : first + offset + 4] == b"\xfe\xff\x00\xe0"
        assert value[first + offset + 8 : first + offset + 12] == b"\xff\x4f\xff\x51"


def test_extended_offset_table_past_32_bit_offsets(monkeypatch: pytest.MonkeyPatch) -> None:
    """PS3.3 C.7.6.3.1.8: offsets that do not fit the Basic Offset Table go
    to the Extended Offset Table (the 4 GiB limit is lowered for the test)."""
    import gateway.dicom.transcode as transcode

    monkeypatch.setattr(transcode, "_MAX_LENGTH", 1000)
    raw = _raw("emri_small.dcm")
    out = transcode_instance(raw, HTJ2K_LOSSLESS)
    ds = pydicom.dcmread(io.BytesIO(out))
    assert "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds
    info, pixels = _decoded(out)
    assert info.basic_offsets == () and info.extended_offsets is not None
    assert np.array_equal(pixels, _decoded(raw)[1])
    assert np.array_equal(ds.pixel_array, pixels)
