"""Datasets to bytes, as a DIMSE message carries them (PS3.7 6.3.1)."""

from __future__ import annotations

from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset


def encode_dataset(ds: Dataset, *, explicit_vr: bool) -> bytes:
    """Encode ``ds`` little endian without file meta, in the presentation context's VR form.

    The transfer syntax is stated on the buffer, not taken from the dataset, so a
    dataset built in memory (which has no encoding of its own) is encoded the way
    the negotiated context says.
    """
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = not explicit_vr
    write_dataset(fp, ds)
    return bytes(fp.getvalue())
