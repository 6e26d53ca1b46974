"""The File Meta we write must be what pydicom writes and reads."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file

from gateway.dicom.file_meta import IMPLEMENTATION_CLASS_UID, file_meta
from gateway.dicom.part10 import read_part10


def test_part10_from_received_dataset_reads_back() -> None:
    path = get_testdata_file("CT_small.dcm")
    source = read_part10(Path(path).read_bytes())
    dataset = bytes(source.data[source.offset :])
    meta = file_meta(
        source.sop_class_uid, source.sop_instance_uid, source.transfer_syntax_uid, "PACS"
    )
    ds = pydicom.dcmread(io.BytesIO(meta + dataset))
    assert ds.file_meta.TransferSyntaxUID == source.transfer_syntax_uid
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert ds.file_meta.SourceApplicationEntityTitle == "PACS"
    reference = pydicom.dcmread(path)
    assert ds.PixelData == reference.PixelData
    again = read_part10(meta + dataset)
    assert again.offset == len(meta) and again.sop_instance_uid == source.sop_instance_uid


def test_odd_uid_is_padded_with_nul() -> None:
    meta = file_meta("1.2.3", "1.2.34", "1.2.840.10008.1.2.1")
    assert b"1.2.3\x00" in meta and len(meta) % 2 == 0
