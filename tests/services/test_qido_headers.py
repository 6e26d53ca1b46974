"""Reading header_attributes from the first bytes of a file (qido_headers.header_json).

A value read from a header is taken as the instance's truth (an absent one does
not match a key), so a prefix that ends before the header does must never pass
for the whole header: at every cut, the answer is either complete or an error
(then the whole file is read).
"""

from __future__ import annotations

import io

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from gateway.dicom.walker import DicomParseError
from gateway.services.qido_headers import header_json

PPS_DATE, REQUEST_ATTRIBUTES, SOP_CLASS = 0x00400244, 0x00400275, 0x00080016
WANTED = frozenset({PPS_DATE, REQUEST_ATTRIBUTES, SOP_CLASS})


def _file(transfer_syntax: str, icon: bool) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = "1.2.3.4"
    ds.ImageComments = "x" * 3000  # a long value before the attributes read
    ds.PerformedProcedureStepStartDate = "20200202"
    item = Dataset()
    item.RequestedProcedureID = "RP1"
    ds.RequestAttributesSequence = Sequence([item])
    if icon:  # a nested Pixel Data (its tag inside a sequence) before the real one
        icon_item = Dataset()
        icon_item.Rows = icon_item.Columns = 2
        icon_item.BitsAllocated = 8
        icon_item.PixelData = bytes(4)
        ds.IconImageSequence = Sequence([icon_item])
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = 8
    ds.PixelData = bytes(64)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
)
@pytest.mark.parametrize("icon", [False, True], ids=["plain", "icon"])
def test_a_prefix_gives_the_whole_header_or_an_error(syntax: str, icon: bool) -> None:
    data = _file(syntax, icon)
    full = header_json(data, WANTED)
    assert full["00400244"] == {"vr": "DA", "Value": ["20200202"]}
    assert full["00400275"]["Value"][0]["00401001"]["Value"] == ["RP1"]
    complete = 0
    for cut in range(200, len(data) + 1):
        try:
            got = header_json(data[:cut], WANTED, whole=False)
        except (ValueError, DicomParseError):
            continue
        assert got == full, cut
        complete += 1
    # Once the prefix holds the Pixel Data tag, the header is read from it; with an
    # icon, the first such tag is the icon's and the whole file is always read.
    assert (complete > 0) is not icon
