"""Micro-benchmark: DICOM JSON from bytes, ours against pydicom (DESIGN.md 3).

Run with ``python -m pytest tests/bench/test_bench_dicom_json.py -m bench -s``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian

from gateway.dicom.dicom_json import dataset_to_json
from gateway.dicom.part10 import read_part10


def _ct_512() -> bytes:
    """A 512x512 16-bit CT instance: CT_small's attributes (private ones
    included), with a full-size Pixel Data."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Rows = ds.Columns = 512
    ds.PixelData = bytes(512 * 512 * 2)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _ours(data: bytes) -> dict[str, Any]:
    part10 = read_part10(data)
    return dataset_to_json(
        part10.data,
        offset=part10.offset,
        explicit_vr=part10.explicit_vr,
        little_endian=part10.little_endian,
        bulk_data_uri=lambda path: "bulk",
    )


def _pydicom(data: bytes) -> dict[str, Any]:
    ds = pydicom.dcmread(io.BytesIO(data))
    return ds.to_json_dict(bulk_data_element_handler=lambda element: "bulk")


def _best_ms(function: Callable[[bytes], object], data: bytes, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        function(data)
    return (time.perf_counter() - start) / calls * 1000


def _instance(name: str) -> bytes:
    if name == "generated CT 512x512":
        return _ct_512()
    return Path(get_testdata_file(name)).read_bytes()


@pytest.mark.bench
@pytest.mark.parametrize(
    "name", ["generated CT 512x512", "CT_small.dcm", "MR_small_implicit.dcm", "rtplan.dcm"]
)
def test_dicom_json_speed(name: str) -> None:
    data = _instance(name)
    assert _ours(data).keys() == {k for k in _pydicom(data) if not k.endswith("0000")}
    # Interleaved rounds, best of each: the machine is shared and noisy.
    calls = max(1, int(0.2 / (_best_ms(_ours, data, 1) / 1000)))
    ours = theirs = float("inf")
    for _ in range(5):
        ours = min(ours, _best_ms(_ours, data, calls))
        theirs = min(theirs, _best_ms(_pydicom, data, max(1, calls // 10)))
    ratio = theirs / ours
    print(f"\n{name}: ours {ours:.3f} ms, pydicom {theirs:.3f} ms per instance, {ratio:.1f}x")
    assert ratio > 5, "the fast path lost its point"
