"""The synthetic data is the ground truth for PACS-backed tests, so it must be exact."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest

from gateway.demo.sample import (
    CT_IMAGE,
    JAPANESE_PATIENT,
    LATIN1_PATIENT,
    MF_GRAY_WORD_SC,
    MR_IMAGE,
    SC_IMAGE,
    UID_ROOT,
    UTF8_PATIENT,
    SampleManifest,
    write_bulk_studies,
    write_demo_studies,
)

UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
EXPLICIT_LE = "1.2.840.10008.1.2.1"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> SampleManifest:
    return write_demo_studies(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def bulk(tmp_path_factory: pytest.TempPathFactory) -> SampleManifest:
    return write_bulk_studies(tmp_path_factory.mktemp("bulk"), 1000)


def _uids(m: SampleManifest) -> list[tuple[str, str, str]]:
    return [(i.study_uid, i.series_uid, i.sop_uid) for i in m]


def test_demo_counts(demo: SampleManifest) -> None:
    assert len(demo) == 40 + 10 + 1 + 1 + 2
    assert len(demo.studies()) == 5
    assert len(demo.series()) == 5
    assert len(demo.patients()) == 5
    assert sorted(len(v) for v in demo.series().values()) == [1, 1, 2, 10, 40]
    assert {CT_IMAGE, MR_IMAGE, SC_IMAGE, MF_GRAY_WORD_SC} == demo.sop_class_uids()
    assert len({i.sop_uid for i in demo}) == len(demo)


def test_ct_slices_parameter(tmp_path: Path) -> None:
    m = write_demo_studies(tmp_path, ct_slices=3)
    assert len(m) == 3 + 10 + 1 + 1 + 2
    assert all(i.path.is_file() and i.path.is_relative_to(tmp_path) for i in m)


def test_same_seed_same_uids_and_bytes(tmp_path: Path, demo: SampleManifest) -> None:
    again = write_demo_studies(tmp_path / "again")
    assert _uids(again) == _uids(demo)
    for a, b in zip(again, demo, strict=True):
        assert a.path.read_bytes() == b.path.read_bytes()


def test_other_seed_other_uids(tmp_path: Path, demo: SampleManifest) -> None:
    other = write_demo_studies(tmp_path, seed=7, ct_slices=40)
    mine = {u for t in _uids(demo) for u in t}
    theirs = {u for t in _uids(other) for u in t}
    assert not mine & theirs


def test_negative_seed_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_demo_studies(tmp_path, seed=-1)


def test_uids_valid(demo: SampleManifest, bulk: SampleManifest) -> None:
    for inst in (*demo, *bulk):
        for uid in (inst.study_uid, inst.series_uid, inst.sop_uid):
            assert uid.startswith(UID_ROOT)
            assert len(uid) <= 64
            assert UID_RE.match(uid), uid


def test_every_demo_file_reads_back(demo: SampleManifest) -> None:
    for inst in demo:
        ds = pydicom.dcmread(inst.path)
        meta = ds.file_meta
        assert meta.TransferSyntaxUID == EXPLICIT_LE == inst.transfer_syntax
        assert meta.MediaStorageSOPClassUID == ds.SOPClassUID == inst.sop_class_uid
        assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == inst.sop_uid
        assert ds.StudyInstanceUID == inst.study_uid
        assert ds.SeriesInstanceUID == inst.series_uid
        assert ds.PatientID == inst.patient_id
        assert str(ds.PatientName) == inst.patient_name
        assert ds.Modality == inst.modality
        arr = ds.pixel_array
        frames = int(ds.get("NumberOfFrames", 1))
        assert frames == inst.number_of_frames
        expected = (ds.Rows, ds.Columns) if frames == 1 else (frames, ds.Rows, ds.Columns)
        if ds.SamplesPerPixel == 3:
            expected = (*expected, 3)
        assert arr.shape == expected


CT_ATTRIBUTES = [
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "AccessionNumber",
    "StudyID",
    "ReferringPhysicianName",
    "SeriesNumber",
    "SeriesDescription",
    "Modality",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "SliceLocation",
    "SliceThickness",
    "PixelSpacing",
    "WindowCenter",
    "WindowWidth",
    "RescaleSlope",
    "RescaleIntercept",
    "FrameOfReferenceUID",
    "BodyPartExamined",
    "Manufacturer",
    "SpecificCharacterSet",
    "KVP",
    "PhotometricInterpretation",
]


def test_ct_series_attributes(demo: SampleManifest) -> None:
    ct = [i for i in demo if i.sop_class_uid == CT_IMAGE and i.patient_id == "DEMO-0001"]
    assert len(ct) == 40
    datasets = [pydicom.dcmread(i.path) for i in ct]
    first = datasets[0]
    for kw in CT_ATTRIBUTES:
        assert kw in first, kw
    assert (first.Rows, first.Columns) == (512, 512)
    assert (first.BitsAllocated, first.BitsStored, first.HighBit) == (16, 12, 11)
    assert first.PhotometricInterpretation == "MONOCHROME2"
    assert first.Modality == "CT"
    assert [d.InstanceNumber for d in datasets] == list(range(1, 41))
    z = [float(d.ImagePositionPatient[2]) for d in datasets]
    assert z == sorted(z, reverse=True) and len(set(z)) == 40
    assert len({d.FrameOfReferenceUID for d in datasets}) == 1
    # A phantom, not noise or a constant: air outside, tissue inside, slices differ.
    a, b = datasets[0].pixel_array, datasets[20].pixel_array
    assert a.max() < 4096
    assert a[0, 0] < 200 and 900 < a[256, 256] < 1300
    assert not np.array_equal(a, b)


def test_multiframe_frames_differ(demo: SampleManifest) -> None:
    (mf,) = [i for i in demo if i.sop_class_uid == MF_GRAY_WORD_SC]
    ds = pydicom.dcmread(mf.path)
    assert ds.NumberOfFrames == 20
    arr = ds.pixel_array
    assert arr.shape == (20, 128, 128)
    assert not np.array_equal(arr[0], arr[10])


@pytest.mark.parametrize(
    ("name", "charset", "codec"),
    [
        (LATIN1_PATIENT.name, "ISO_IR 100", "latin_1"),
        (UTF8_PATIENT.name, "ISO_IR 192", "utf_8"),
        (JAPANESE_PATIENT.name, "ISO_IR 192", "utf_8"),
    ],
)
def test_non_ascii_names_round_trip(
    demo: SampleManifest, name: str, charset: str, codec: str
) -> None:
    (inst, *_) = [i for i in demo if i.patient_name == name]
    ds = pydicom.dcmread(inst.path)
    assert ds.SpecificCharacterSet == charset
    assert str(ds.PatientName) == name
    # The bytes on disk really use the declared character set.
    assert ds.PatientName.original_string.rstrip(b" ") == name.encode(codec)


def test_japanese_name_has_three_groups(demo: SampleManifest) -> None:
    (inst, *_) = [i for i in demo if i.patient_name == JAPANESE_PATIENT.name]
    pn = pydicom.dcmread(inst.path).PatientName
    assert (pn.alphabetic, pn.ideographic, pn.phonetic) == (
        "Yamada^Tarou",
        "山田^太郎",
        "やまだ^たろう",
    )


def test_bulk_counts_and_variety(bulk: SampleManifest) -> None:
    assert len(bulk) == 1000
    assert len(bulk.studies()) == 1000
    assert len(bulk.patients()) == 500
    assert {i.modality for i in bulk} == {"CT", "MR", "CR", "DX", "OT"}
    names = {i.patient_name for i in bulk}
    assert "Müller^Jürgen" in names and "Çelik^Ayşe" in names


def test_bulk_deterministic(tmp_path: Path, bulk: SampleManifest) -> None:
    again = write_bulk_studies(tmp_path, 1000)
    assert _uids(again) == _uids(bulk)
    assert again.instances[-1].path.read_bytes() == bulk.instances[-1].path.read_bytes()
    other = write_bulk_studies(tmp_path / "s3", 10, seed=3)
    assert not {i.sop_uid for i in other} & {i.sop_uid for i in bulk}


def test_bulk_bytes_equal_pydicom_encoding(bulk: SampleManifest) -> None:
    """The hand-spliced fast path must produce exactly what dcmwrite would."""
    sample = [i for n, i in enumerate(bulk) if n % 7 == 0 or not i.patient_name.isascii()]
    assert {i.modality for i in sample} == {i.modality for i in bulk}
    for inst in sample:
        raw = inst.path.read_bytes()
        ds = pydicom.dcmread(io.BytesIO(raw))
        assert ds.SOPInstanceUID == inst.sop_uid
        assert ds.SOPClassUID == inst.sop_class_uid
        assert str(ds.PatientName) == inst.patient_name
        assert ds.pixel_array.shape == (8, 8)
        out = io.BytesIO()
        pydicom.dcmwrite(out, ds, enforce_file_format=True)
        assert out.getvalue() == raw, inst.path


def test_bulk_rows_and_demo_disjoint(tmp_path: Path, demo: SampleManifest) -> None:
    m = write_bulk_studies(tmp_path, 3, seed=1, rows=16)
    assert pydicom.dcmread(m.instances[0].path).pixel_array.shape == (16, 16)
    assert not {i.study_uid for i in m} & set(demo.studies())
