"""`check_instance` on pydicom's files (pydicom is the oracle for the UIDs),
on truncated and garbage bytes, and on instances with UIDs removed."""

from __future__ import annotations

import io
import pickle
import random
import struct
import zlib
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file, get_testdata_files
from pydicom.filereader import read_dataset

from gateway.dicom.instance_check import (
    CANNOT_UNDERSTAND,
    DATASET_DOES_NOT_MATCH_SOP_CLASS,
    CheckedInstance,
    InstanceError,
    check_instance,
)
from gateway.dicom.part10 import read_part10
from gateway.dicom.walker import walk_dataset

MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
A900 = DATASET_DOES_NOT_MATCH_SOP_CLASS
C000 = CANNOT_UNDERSTAND

# Every pydicom file with File Meta Information that `check_instance` refuses,
# and why. Keyed by "<directory>/<file>".
_MISMATCH = "does not match the dataset's"
EXPECTED_FAILURES: dict[str, tuple[int, str]] = {
    # Media Storage SOP Instance UID differs from the dataset's SOP Instance UID.
    "data/bad_sequence.dcm": (A900, _MISMATCH),
    "test_files/badVR.dcm": (A900, _MISMATCH),
    "test_files/rtdose.dcm": (A900, _MISMATCH),
    "test_files/rtdose_1frame.dcm": (A900, _MISMATCH),
    "test_files/rtdose_expb.dcm": (A900, _MISMATCH),
    "test_files/rtdose_expb_1frame.dcm": (A900, _MISMATCH),
    "test_files/rtplan.dcm": (A900, _MISMATCH),
    "charset_files/chrJapMulti.dcm": (A900, _MISMATCH),
    "charset_files/chrJapMultiExplicitIR6.dcm": (A900, _MISMATCH),
    # Cut short: the Pixel Data or a sequence item runs past the end.
    "data/emri_small_jpeg_2k_lossless_too_short.dcm": (C000, "without Sequence Delimitation"),
    "test_files/MR_truncated.dcm": (C000, "(7FE0,0010) runs past the end"),
    "test_files/rtplan_truncated.dcm": (C000, "runs past the end"),
    "dicomdirtests/DICOMDIR-nooffset": (C000, "runs past the end"),
    # Not composite instances: small test datasets of a few elements
    # (character sets, private sequences) have no SOP Class UID. (DICOMDIRs,
    # which have none either, are recognised by their meta, see below.)
    "charset_files/chrSQEncoding.dcm": (A900, "missing SOP Class UID"),
    "charset_files/chrSQEncoding1.dcm": (A900, "missing SOP Class UID"),
    "test_files/UN_sequence.dcm": (A900, "missing SOP Class UID"),
    "test_files/empty_charset_LEI.dcm": (A900, "missing SOP Class UID"),
    "test_files/nested_priv_SQ.dcm": (A900, "missing SOP Class UID"),
    "test_files/no_meta_group_length.dcm": (A900, "missing SOP Class UID"),
    "test_files/priv_SQ.dcm": (A900, "missing SOP Class UID"),
    # JPEG-LS samples reduced to the image: no Study Instance UID.
    "test_files/JPEGLSNearLossless_08.dcm": (A900, "missing Study Instance UID"),
    "test_files/JPEGLSNearLossless_16.dcm": (A900, "missing Study Instance UID"),
    "test_files/SC_rgb_jls_lossy_line.dcm": (A900, "missing Study Instance UID"),
    "test_files/SC_rgb_jls_lossy_sample.dcm": (A900, "missing Study Instance UID"),
    # PS3.10 7.1: (0002,0010) is Type 1; without it C-STORE has no syntax.
    "test_files/meta_missing_tsyntax.dcm": (C000, "no Transfer Syntax UID"),
}


def _file_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _pydicom_files() -> list[Path]:
    files = [Path(f) for f in [*get_testdata_files(), *get_charset_files()]]
    return sorted((f for f in files if f.is_file()), key=_file_id)


def _has_file_meta(path: Path) -> bool:
    try:
        return bool(pydicom.dcmread(path).file_meta)
    except Exception:  # no preamble/"DICM" and no group 0002 at the start
        return False


def _is_dicomdir(path: Path) -> bool:
    meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
    return bool(meta.get("MediaStorageSOPClassUID") == MEDIA_STORAGE_DIRECTORY)


# --- pydicom's files -----------------------------------------------------------------


@pytest.mark.parametrize("path", _pydicom_files(), ids=_file_id)
def test_pydicom_files_pass_or_fail_for_a_documented_reason(path: Path) -> None:
    data = path.read_bytes()
    if not _has_file_meta(path):
        with pytest.raises(InstanceError) as info:
            check_instance(data)
        assert info.value.failure_code == C000
        assert info.value.reason.startswith(("not a DICOM file", "no File Meta Information"))
        return

    expected = EXPECTED_FAILURES.get(_file_id(path))
    if expected is None and _is_dicomdir(path):  # PS3.10 8.6: a File-set, not an instance
        expected = (A900, "missing SOP Class UID")
    if expected is not None:
        code, fragment = expected
        with pytest.raises(InstanceError) as info:
            check_instance(data)
        assert info.value.failure_code == code
        assert fragment in info.value.reason
        return

    checked = check_instance(data)
    ds = pydicom.dcmread(path)
    assert checked.sop_class_uid == ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID
    assert checked.sop_instance_uid == ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    assert checked.study_instance_uid == ds.StudyInstanceUID
    assert checked.series_instance_uid == ds.SeriesInstanceUID
    assert checked.transfer_syntax_uid == ds.file_meta.TransferSyntaxUID
    _assert_dataset_starts_at_offset(data, checked, ds)


def _assert_dataset_starts_at_offset(
    data: bytes, checked: CheckedInstance, ds: pydicom.Dataset
) -> None:
    """pydicom reads the same dataset from `data[dataset_offset:]` alone."""
    rest = data[checked.dataset_offset :]
    if checked.transfer_syntax_uid == pydicom.uid.DeflatedExplicitVRLittleEndian:
        rest = zlib.decompress(rest, -zlib.MAX_WBITS)
    bare = read_dataset(io.BytesIO(rest), not checked.explicit_vr, checked.little_endian)
    assert bare.SOPInstanceUID == ds.SOPInstanceUID
    assert len(bare) == len(ds)


def test_every_expected_failure_is_a_pydicom_file() -> None:
    """The table above names no file that has gone from pydicom's data."""
    names = {_file_id(path) for path in _pydicom_files()}
    assert set(EXPECTED_FAILURES) <= names


def test_a_file_meta_without_preamble_is_accepted() -> None:
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    with_preamble = check_instance(data)
    without = check_instance(data[132:])
    assert without.dataset_offset == with_preamble.dataset_offset - 132
    assert without.sop_instance_uid == with_preamble.sop_instance_uid


def test_deflated_offset_points_at_the_deflated_stream() -> None:
    data = Path(get_testdata_file("image_dfl.dcm")).read_bytes()
    checked = check_instance(data)
    assert checked.transfer_syntax_uid == "1.2.840.10008.1.2.1.99"
    # The first element of the inflated dataset starts a group 0008 element.
    inflated = zlib.decompress(data[checked.dataset_offset :], -zlib.MAX_WBITS)
    assert struct.unpack_from("<H", inflated)[0] == 0x0008


# --- truncated -----------------------------------------------------------------------

TRUNCATION_FILES = [
    "CT_small.dcm",  # explicit VR little endian
    "MR_small_implicit.dcm",  # implicit VR little endian
    "MR_small_bigendian.dcm",  # explicit VR big endian
    "emri_small_jpeg_2k_lossless.dcm",  # encapsulated, 10 frames
    "SC_rgb_rle.dcm",  # encapsulated RLE
    "image_dfl.dcm",  # deflated
]


@pytest.mark.parametrize("name", TRUNCATION_FILES)
def test_cuts_inside_elements_are_truncation(name: str) -> None:
    data = Path(get_testdata_file(name)).read_bytes()
    checked = check_instance(data)
    size = len(data)
    offset = checked.dataset_offset
    cuts = {
        0: "not a DICOM file",  # empty
        100: "not a DICOM file",  # inside the preamble
        134: "not a DICOM file",  # inside the first meta element
        offset + 3: "truncated",  # inside the first dataset element header
        size - 1: "truncated",  # last byte of the Pixel Data (or delimiter)
        size - 7: "truncated",
        (offset + size) // 2: "truncated",
    }
    if name == "image_dfl.dcm":  # a cut deflate stream inflates to less
        cuts = {k: v for k, v in cuts.items() if k < offset}
    for cut, fragment in cuts.items():
        with pytest.raises(InstanceError) as info:
            check_instance(data[:cut])
        assert info.value.failure_code == C000, cut
        assert fragment in info.value.reason, (cut, info.value.reason)


def test_encapsulated_pixel_data_without_sequence_delimiter_is_truncated() -> None:
    data = Path(get_testdata_file("emri_small_jpeg_2k_lossless.dcm")).read_bytes()
    assert data.endswith(struct.pack("<HHL", 0xFFFE, 0xE0DD, 0))
    with pytest.raises(InstanceError) as info:
        check_instance(data[:-8])
    assert info.value.failure_code == C000
    assert "Sequence Delimitation" in info.value.reason


@pytest.mark.parametrize("name", ["CT_small.dcm", "SC_rgb_rle_2frame.dcm", "rtplan.dcm"])
def test_every_cut_is_refused_unless_it_falls_between_top_level_elements(name: str) -> None:
    """Cut the file at (nearly) every byte: a cut between two top-level
    elements leaves a shorter valid dataset (it may still lack a required
    UID); any other cut must be reported as truncated."""
    data = Path(get_testdata_file(name)).read_bytes()
    part = read_part10(data)
    boundaries = {
        value_offset + length + (8 if fragments is not None else 0)
        for _tag, _vr, value_offset, length, _items, fragments in walk_dataset(
            part.data, part.offset, explicit_vr=part.explicit_vr, little_endian=part.little_endian
        )
    }
    # Undefined-length sequences also end with an 8-byte delimiter.
    step = max(1, len(data) // 3000)
    for cut in range(part.offset + 1, len(data), step):
        try:
            checked = check_instance(data[:cut])
        except InstanceError as exc:
            if cut in boundaries:
                assert exc.failure_code == A900, (cut, exc.reason)  # a UID cut away
            else:
                assert exc.failure_code == C000, (cut, exc.reason)
                assert exc.reason.startswith("truncated"), (cut, exc.reason)
            continue
        assert cut in boundaries or _ends_sequence(data, cut), cut
        assert checked.sop_instance_uid == part.sop_instance_uid


def _ends_sequence(data: bytes, cut: int) -> bool:
    return data[cut - 8 : cut] == struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)


# --- garbage -------------------------------------------------------------------------


def _garbage() -> list[bytes]:
    rng = random.Random(20240601)
    samples = [bytes(rng.getrandbits(8) for _ in range(size)) for size in (1, 7, 131, 4096)]
    samples += [
        b"DICM",
        b"\0" * 128 + b"DICM",
        b"\0" * 128 + b"DICM" + bytes(rng.getrandbits(8) for _ in range(300)),
        b'[{"00080018": {"vr": "UI", "Value": ["1.2.3"]}}]',
        b"\x89PNG\r\n\x1a\n" + bytes(100),
        b"%PDF-1.7\n" + b"x" * 2000,
    ]
    return samples


@pytest.mark.parametrize("data", _garbage(), ids=lambda d: f"{len(d)}B")
def test_garbage_is_not_dicom(data: bytes) -> None:
    with pytest.raises(InstanceError) as info:
        check_instance(data)
    assert info.value.failure_code == C000
    assert info.value.reason.startswith(("not a DICOM file", "no File Meta Information"))


def test_empty_part() -> None:
    with pytest.raises(InstanceError, match="empty"):
        check_instance(b"")


def test_a_bare_dataset_is_refused_for_lack_of_file_meta() -> None:
    data = Path(get_testdata_file("ExplVR_LitEndNoMeta.dcm")).read_bytes()
    with pytest.raises(InstanceError) as info:
        check_instance(data)
    assert info.value.failure_code == C000
    assert info.value.reason.startswith("no File Meta Information")


# --- missing or contradictory UIDs ---------------------------------------------------


def _rewrite(change: str) -> bytes:
    """CT_small with one change, written by pydicom."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    if change == "no SOP Instance UID":
        del ds.SOPInstanceUID
    elif change == "empty SOP Instance UID":
        ds.SOPInstanceUID = ""
    elif change == "no SOP Class UID":
        del ds.SOPClassUID
    elif change == "no Study Instance UID":
        del ds.StudyInstanceUID
    elif change == "no Series Instance UID":
        del ds.SeriesInstanceUID
    elif change == "other SOP Instance UID":
        ds.SOPInstanceUID = "1.2.3.4"
    elif change == "other SOP Class UID":
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    out = io.BytesIO()
    ds.save_as(out)  # keeps the original File Meta Information
    return out.getvalue()


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ("no SOP Instance UID", "missing SOP Instance UID (0008,0018)"),
        ("empty SOP Instance UID", "missing SOP Instance UID (0008,0018)"),
        ("no SOP Class UID", "missing SOP Class UID (0008,0016)"),
        ("no Study Instance UID", "missing Study Instance UID (0020,000D)"),
        ("no Series Instance UID", "missing Series Instance UID (0020,000E)"),
        ("other SOP Instance UID", "Media Storage SOP Instance UID (0002,0003)"),
        ("other SOP Class UID", "Media Storage SOP Class UID (0002,0002)"),
    ],
)
def test_missing_or_contradictory_uids_are_a900(change: str, fragment: str) -> None:
    with pytest.raises(InstanceError) as info:
        check_instance(_rewrite(change))
    assert info.value.failure_code == A900
    assert fragment in info.value.reason


@pytest.mark.parametrize("tag", [0x00020002, 0x00020003])
def test_missing_media_storage_uid_in_the_meta_is_c000(tag: int) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.file_meta[tag]
    out = io.BytesIO()
    ds.save_as(out)  # without enforce_file_format pydicom writes it as it is
    with pytest.raises(InstanceError) as info:
        check_instance(out.getvalue())
    assert info.value.failure_code == C000
    assert "in the File Meta Information" in info.value.reason


def test_uids_lose_their_padding() -> None:
    checked = check_instance(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    for uid in (checked.sop_class_uid, checked.sop_instance_uid, checked.study_instance_uid):
        assert uid == uid.strip("\0 ") and uid


def test_instance_error_keeps_its_fields_when_pickled() -> None:
    error = pickle.loads(pickle.dumps(InstanceError("bulk data x missing", A900)))
    assert (error.reason, error.failure_code, str(error)) == (
        "bulk data x missing",
        A900,
        error.reason,
    )
    assert isinstance(error, ValueError)
