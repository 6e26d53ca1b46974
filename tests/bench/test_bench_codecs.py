"""Micro-benchmark: frame extraction, codecs and frame transcoding, per
512x512 16-bit frame (DESIGN.md 4; issue 3 asks for J2K -> Explicit VR LE and
J2K -> HTJ2K of one frame of a cached J2K instance).

Run with ``python -m pytest tests/bench/test_bench_codecs.py -m bench -s``.
Prints a table; never asserts on time. The pixels are a real CT slice
(pydicom-data's 693 series: 512x512, signed, 14 bits stored), repeated into a
multi-frame instance so that frame extraction looks up a frame in the middle.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian

from gateway.dicom.codecs import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    HTJ2K_LOSSLESS,
    J2K_LOSSLESS,
    JPEG_LS_LOSSLESS,
    RLE_LOSSLESS,
    decode_frame,
    encode_frame,
)
from gateway.dicom.frames import PixelInfo, frame_bytes, pixel_info
from gateway.dicom.part10 import read_part10
from gateway.dicom.transcode import transcode_frame

FRAMES = 64


def _median_ms(function: Callable[[], Any], rounds: int) -> tuple[float, float]:
    """Median and best of `rounds` calls, in ms (the best shows the cost on
    an idle machine, the median what a loaded one gives)."""
    function()  # warm up (imports, first-call allocations)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, min(times) * 1000


def _instance(pixels: Any, transfer_syntax: str, frames: list[bytes] | None) -> bytes:
    """A FRAMES-frame instance of the CT slice: native, or `frames` encapsulated."""
    ds = pydicom.dcmread(get_testdata_file("693_UNCR.dcm"))
    ds.NumberOfFrames = FRAMES
    if frames is None:
        ds.PixelData = pixels.astype("<i2").tobytes() * FRAMES
        ds["PixelData"].VR = "OW"
    else:
        ds.PixelData = encapsulate(frames * FRAMES, has_bot=True)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _info(raw: bytes) -> tuple[bytes | memoryview, PixelInfo]:
    part10 = read_part10(raw)
    return part10.data, pixel_info(part10)


@pytest.mark.bench
def test_bench_codecs() -> None:
    ct = pydicom.dcmread(get_testdata_file("693_UNCR.dcm"))
    pixels = ct.pixel_array  # int16, 512 x 512
    bits = int(ct.BitsStored)
    photometric = "MONOCHROME2"

    encoded = {
        ts: encode_frame(pixels, ts, bits_stored=bits, photometric=photometric)
        for ts in (J2K_LOSSLESS, HTJ2K_LOSSLESS, JPEG_LS_LOSSLESS, RLE_LOSSLESS)
    }
    native_raw = _instance(pixels, ExplicitVRLittleEndian, None)
    native_data, native_info = _info(native_raw)
    j2k_raw = _instance(pixels, J2K_LOSSLESS, [encoded[J2K_LOSSLESS]])
    j2k_data, j2k_info = _info(j2k_raw)
    middle = FRAMES // 2
    j2k_frame = bytes(frame_bytes(j2k_data, j2k_info, middle))

    def info_of(ts: str) -> PixelInfo:
        return PixelInfo(
            **{
                **{n: getattr(j2k_info, n) for n in PixelInfo.__dataclass_fields__},
                "transfer_syntax_uid": ts,
            }
        )

    rows: list[tuple[str, tuple[float, float]]] = [
        (
            "pixel_info (read_part10 + walk + locate frames), native 64-frame instance",
            _median_ms(lambda: pixel_info(read_part10(native_raw)), 50),
        ),
        (
            "pixel_info (read_part10 + walk + locate frames), J2K 64-frame instance",
            _median_ms(lambda: pixel_info(read_part10(j2k_raw)), 50),
        ),
        (
            "extract a native frame (frame_bytes, cached info)",
            _median_ms(lambda: frame_bytes(native_data, native_info, middle), 2000),
        ),
        (
            "extract an encapsulated frame (frame_bytes, cached info)",
            _median_ms(lambda: frame_bytes(j2k_data, j2k_info, middle), 2000),
        ),
        (
            "decode J2K lossless (1 thread)",
            _median_ms(lambda: decode_frame(j2k_frame, j2k_info), 15),
        ),
        (
            "decode J2K lossless (2 threads)",
            _median_ms(lambda: decode_frame(j2k_frame, j2k_info, threads=2), 15),
        ),
        (
            "encode J2K lossless",
            _median_ms(
                lambda: encode_frame(
                    pixels, J2K_LOSSLESS, bits_stored=bits, photometric=photometric
                ),
                10,
            ),
        ),
        (
            "encode HTJ2K lossless",
            _median_ms(
                lambda: encode_frame(
                    pixels, HTJ2K_LOSSLESS, bits_stored=bits, photometric=photometric
                ),
                20,
            ),
        ),
        (
            "decode HTJ2K lossless",
            _median_ms(lambda: decode_frame(encoded[HTJ2K_LOSSLESS], info_of(HTJ2K_LOSSLESS)), 30),
        ),
        (
            "encode JPEG-LS lossless",
            _median_ms(
                lambda: encode_frame(
                    pixels, JPEG_LS_LOSSLESS, bits_stored=bits, photometric=photometric
                ),
                20,
            ),
        ),
        (
            "decode JPEG-LS lossless",
            _median_ms(
                lambda: decode_frame(encoded[JPEG_LS_LOSSLESS], info_of(JPEG_LS_LOSSLESS)), 20
            ),
        ),
        (
            "encode RLE",
            _median_ms(
                lambda: encode_frame(
                    pixels, RLE_LOSSLESS, bits_stored=bits, photometric=photometric
                ),
                20,
            ),
        ),
        (
            "decode RLE",
            _median_ms(lambda: decode_frame(encoded[RLE_LOSSLESS], info_of(RLE_LOSSLESS)), 30),
        ),
        (
            "transcode one frame of a cached J2K instance -> Explicit VR LE",
            _median_ms(
                lambda: transcode_frame(
                    frame_bytes(j2k_data, j2k_info, middle), j2k_info, EXPLICIT_VR_LITTLE_ENDIAN
                ),
                15,
            ),
        ),
        (
            "transcode one frame of a cached J2K instance -> HTJ2K lossless",
            _median_ms(
                lambda: transcode_frame(
                    frame_bytes(j2k_data, j2k_info, middle), j2k_info, HTJ2K_LOSSLESS
                ),
                15,
            ),
        ),
    ]
    sizes = ", ".join(
        f"{ts.rsplit('.', 1)[1]}: {len(v) / 1024:.0f} KiB" for ts, v in encoded.items()
    )
    lines = [
        "",
        f"512x512 16-bit CT frame (native {pixels.nbytes // 1024} KiB; {sizes})",
        "| per frame | median ms | best ms |",
        "|---|---:|---:|",
        *(f"| {what} | {median:.3f} | {best:.3f} |" for what, (median, best) in rows),
    ]
    print("\n".join(lines))
    # Sanity, not timing: the transcoded frame is the CT slice.
    native = transcode_frame(j2k_frame, j2k_info, EXPLICIT_VR_LITTLE_ENDIAN)
    assert np.array_equal(np.frombuffer(native, "<i2").reshape(512, 512), pixels)
