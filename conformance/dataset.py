"""The fixture set the suite ships: generated, deterministic, uploaded by STOW-RS.

Every UID derives from a fixed name, so the same instances land on every
server and a server seeded once (``--seed=none``) is checked against the same
expectations.  The set covers what the checklist needs and no more:

* ``ct``: a CT study (ISO_IR 100 free ASCII names) with a 100-slice series
  (128x128, signed 16-bit, rescale and window) for the viewer replay (OHIF-01),
  and a colour secondary capture with private elements, a private sequence, an
  empty value inside a multi-valued attribute, an empty sequence item and a
  4 KB OB value (bulk data);
* ``latin1``: an MR study with a Latin-1 patient name, three MR slices and a
  five-frame grayscale secondary capture (frames);
* ``utf8``: a study with a UTF-8 Japanese name, one RLE Lossless and one
  JPEG 2000 Lossless instance (compressed frames and transcoding).
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"
SC_MULTIFRAME_WORD = "1.2.840.10008.5.1.4.1.1.7.3"

PRIVATE_CREATOR = "DICOMWEB CONFORMANCE"


def uid(name: str) -> str:
    """A 2.25 UID from a name: the same on every run and every machine."""
    digest = hashlib.sha256(f"dicomweb-conformance/{name}".encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:15], "big"))


@dataclass(frozen=True)
class InstanceFixture:
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    number: int
    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    number_of_frames: int
    part10: bytes
    #: Decoded pixel values per frame, little endian, as a native frame is served.
    native_frames: tuple[bytes, ...]

    def dataset(self) -> Dataset:
        return dcmread(io.BytesIO(self.part10))

    @property
    def native_frame_length(self) -> int:
        return self.rows * self.columns * self.samples_per_pixel * self.bits_allocated // 8

    @property
    def encapsulated(self) -> bool:
        return self.transfer_syntax not in (ExplicitVRLittleEndian, "1.2.840.10008.1.2")


@dataclass(frozen=True)
class SeriesFixture:
    uid: str
    modality: str
    number: int
    description: str
    instances: tuple[InstanceFixture, ...]


@dataclass(frozen=True)
class StudyFixture:
    uid: str
    patient_id: str
    patient_name: str  # as it reads in JSON's Alphabetic (and Ideographic) groups
    birth_date: str
    sex: str
    date: str
    time: str
    accession: str
    referring: str
    study_id: str
    description: str
    charset: str
    series: tuple[SeriesFixture, ...]

    def instances(self) -> Iterator[InstanceFixture]:
        for series in self.series:
            yield from series.instances

    @property
    def modalities(self) -> set[str]:
        return {s.modality for s in self.series}


@dataclass(frozen=True)
class FixtureSet:
    ct: StudyFixture
    latin1: StudyFixture
    utf8: StudyFixture

    @property
    def studies(self) -> tuple[StudyFixture, ...]:
        return (self.ct, self.latin1, self.utf8)

    @property
    def ct_series(self) -> SeriesFixture:
        """The 100-slice CT series (viewer replay, frames, rendering)."""
        return self.ct.series[0]

    @property
    def color(self) -> InstanceFixture:
        """RGB secondary capture with private elements and bulk OB data."""
        return self.ct.series[1].instances[0]

    @property
    def multiframe(self) -> InstanceFixture:
        return self.latin1.series[1].instances[0]

    @property
    def rle(self) -> InstanceFixture:
        return self.utf8.series[0].instances[0]

    @property
    def j2k(self) -> InstanceFixture:
        return self.utf8.series[0].instances[1]

    def instances(self) -> Iterator[InstanceFixture]:
        for study in self.studies:
            yield from study.instances()

    def instance(self, sop_uid: str) -> InstanceFixture:
        for inst in self.instances():
            if inst.sop_uid == sop_uid:
                return inst
        raise KeyError(sop_uid)


# --- building --------------------------------------------------------------


def _study_attrs(ds: Dataset, study: dict[str, str]) -> None:
    ds.SpecificCharacterSet = study["charset"]
    ds.PatientName = study["patient_name"]
    ds.PatientID = study["patient_id"]
    ds.PatientBirthDate = study["birth_date"]
    ds.PatientSex = study["sex"]
    ds.StudyInstanceUID = study["uid"]
    ds.StudyDate = study["date"]
    ds.StudyTime = study["time"]
    ds.AccessionNumber = study["accession"]
    ds.ReferringPhysicianName = study["referring"]
    ds.StudyID = study["study_id"]
    ds.StudyDescription = study["description"]


def _image_attrs(ds: Dataset, pixels: np.ndarray, photometric: str, frames: int) -> None:
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if photometric == "RGB" else pixels.shape[-2:]
    ds.SamplesPerPixel = 3 if photometric == "RGB" else 1
    ds.PhotometricInterpretation = photometric
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    if photometric == "RGB":
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames


def _finish(ds: Dataset, pixels: np.ndarray, syntax: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    if syntax != ExplicitVRLittleEndian:
        ds.compress(syntax, pixels, generate_instance_uid=False)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _instance(
    study: dict[str, str],
    series_uid: str,
    sop_uid: str,
    sop_class: str,
    number: int,
    pixels: np.ndarray,
    photometric: str,
    extra: Dataset,
    syntax: str = ExplicitVRLittleEndian,
) -> InstanceFixture:
    frames = pixels.shape[0] if pixels.ndim == (4 if photometric == "RGB" else 3) else 1
    ds = Dataset()
    _study_attrs(ds, study)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.SeriesInstanceUID = series_uid
    ds.InstanceNumber = number
    ds.update(extra)
    _image_attrs(ds, pixels, photometric, frames)
    part10 = _finish(ds, pixels, syntax)
    per_frame = pixels.reshape((frames, -1)) if frames > 1 else pixels.reshape((1, -1))
    native = tuple(f.astype(f.dtype.newbyteorder("<")).tobytes() for f in per_frame)
    return InstanceFixture(
        study_uid=study["uid"],
        series_uid=series_uid,
        sop_uid=sop_uid,
        sop_class_uid=sop_class,
        transfer_syntax=syntax,
        number=number,
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        samples_per_pixel=int(ds.SamplesPerPixel),
        bits_allocated=int(ds.BitsAllocated),
        number_of_frames=frames,
        part10=part10,
        native_frames=native,
    )


def _series_attrs(modality: str, uid_: str, number: int, description: str) -> Dataset:
    ds = Dataset()
    ds.Modality = modality
    ds.SeriesInstanceUID = uid_
    ds.SeriesNumber = number
    ds.SeriesDescription = description
    return ds


def _ct_study() -> StudyFixture:
    study = {
        "uid": uid("ct/study"),
        "charset": "ISO_IR 100",
        "patient_name": "Conformance^Ct",
        "patient_id": "DWCONF-CT",
        "birth_date": "19700101",
        "sex": "O",
        "date": "20240115",
        "time": "101500",
        "accession": "DWCACC001",
        "referring": "Referrer^Rita",
        "study_id": "DWC1",
        "description": "Conformance CT",
    }
    series_uid = uid("ct/series/axial")
    frame_of_reference = uid("ct/frame-of-reference")
    yy, xx = np.mgrid[0:128, 0:128]
    disc = ((xx - 64) ** 2 + (yy - 64) ** 2) < 50**2
    slices = []
    for index in range(100):
        pixels = (xx * 7 + yy * 13 + index * 31) % 1500 - 1000
        pixels = np.where(disc, pixels + 400 + index * 3, -1000).astype(np.int16)
        extra = _series_attrs("CT", series_uid, 1, "Axial 100")
        extra.FrameOfReferenceUID = frame_of_reference
        extra.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        extra.ImagePositionPatient = [-64.0, -64.0, float(index * 2)]
        extra.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        extra.PixelSpacing = [1.0, 1.0]
        extra.SliceThickness = 2.0
        extra.SliceLocation = float(index * 2)
        extra.RescaleIntercept = 0
        extra.RescaleSlope = 1
        extra.WindowCenter = 40
        extra.WindowWidth = 400
        slices.append(
            _instance(
                study,
                series_uid,
                uid(f"ct/axial/{index}"),
                CT_IMAGE,
                index + 1,
                pixels,
                "MONOCHROME2",
                extra,
            )
        )
    color_series = uid("ct/series/color")
    extra = _series_attrs("OT", color_series, 2, "Colour capture")
    extra.ConversionType = "WSD"
    extra.ImageType = ["DERIVED", "", "SECONDARY"]  # an empty value inside a multi-value
    extra.ProtocolName = ""  # an empty attribute
    extra.ReferencedImageSequence = Sequence([Dataset()])  # an empty item
    block = extra.private_block(0x0009, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", "private text")
    block.add_new(0x02, "OB", bytes(range(256)) * 16)  # 4 KB: bulk data
    item = Dataset()
    item.CodeValue = "T-D0050"
    item.CodingSchemeDesignator = "SRT"
    item.CodeMeaning = "Tissue"
    block.add_new(0x03, "SQ", Sequence([item]))
    yy, xx = np.mgrid[0:48, 0:64]
    rgb = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=-1).astype(np.uint8)
    color = _instance(study, color_series, uid("ct/color/1"), SC_IMAGE, 1, rgb, "RGB", extra)
    return StudyFixture(
        series=(
            SeriesFixture(series_uid, "CT", 1, "Axial 100", tuple(slices)),
            SeriesFixture(color_series, "OT", 2, "Colour capture", (color,)),
        ),
        **{k: v for k, v in study.items() if k != "uid"},
        uid=study["uid"],
    )


def _latin1_study() -> StudyFixture:
    study = {
        "uid": uid("latin1/study"),
        "charset": "ISO_IR 100",
        "patient_name": "Müller^Jürgen",
        "patient_id": "DWCONF-L1",
        "birth_date": "19800229",
        "sex": "M",
        "date": "20230301",
        "time": "083000",
        "accession": "DWCACC002",
        "referring": "Référent^Anaïs",
        "study_id": "DWC2",
        "description": "Conformance MR",
    }
    mr_series = uid("latin1/series/mr")
    yy, xx = np.mgrid[0:64, 0:64]
    slices = []
    for index in range(3):
        pixels = ((xx * 37 + yy * 11 + index * 101) % 4096).astype(np.uint16)
        extra = _series_attrs("MR", mr_series, 1, "T1 axial")
        extra.ImageType = ["ORIGINAL", "PRIMARY"]
        slices.append(
            _instance(
                study,
                mr_series,
                uid(f"latin1/mr/{index}"),
                MR_IMAGE,
                index + 1,
                pixels,
                "MONOCHROME2",
                extra,
            )
        )
    mf_series = uid("latin1/series/multiframe")
    yy, xx = np.mgrid[0:32, 0:32]
    frames = np.stack([((xx + yy * 3 + f * 500) % 4096) for f in range(5)]).astype(np.uint16)
    extra = _series_attrs("OT", mf_series, 2, "Five frames")
    extra.ConversionType = "WSD"
    multiframe = _instance(
        study,
        mf_series,
        uid("latin1/multiframe/1"),
        SC_MULTIFRAME_WORD,
        1,
        frames,
        "MONOCHROME2",
        extra,
    )
    return StudyFixture(
        series=(
            SeriesFixture(mr_series, "MR", 1, "T1 axial", tuple(slices)),
            SeriesFixture(mf_series, "OT", 2, "Five frames", (multiframe,)),
        ),
        **{k: v for k, v in study.items() if k != "uid"},
        uid=study["uid"],
    )


def _utf8_study() -> StudyFixture:
    study = {
        "uid": uid("utf8/study"),
        "charset": "ISO_IR 192",
        "patient_name": "Yamada^Tarou=山田^太郎",
        "patient_id": "DWCONF-U8",
        "birth_date": "19901231",
        "sex": "F",
        "date": "20221231",
        "time": "235959",
        "accession": "DWCACC003",
        "referring": "",
        "study_id": "DWC3",
        "description": "Conformance compressed",
    }
    series_uid = uid("utf8/series/ct")
    yy, xx = np.mgrid[0:64, 0:64]
    instances = []
    for index, syntax in enumerate((RLELossless, JPEG2000Lossless)):
        pixels = ((xx * 17 + yy * 29 + index * 301) % 3000 - 1000).astype(np.int16)
        extra = _series_attrs("CT", series_uid, 1, "Compressed")
        extra.RescaleIntercept = 0
        extra.RescaleSlope = 1
        instances.append(
            _instance(
                study,
                series_uid,
                uid(f"utf8/ct/{index}"),
                CT_IMAGE,
                index + 1,
                pixels,
                "MONOCHROME2",
                extra,
                syntax,
            )
        )
    return StudyFixture(
        series=(SeriesFixture(series_uid, "CT", 1, "Compressed", tuple(instances)),),
        **{k: v for k, v in study.items() if k != "uid"},
        uid=study["uid"],
    )


@functools.cache
def fixture_set() -> FixtureSet:
    """The whole set, built once per process (about a second)."""
    return FixtureSet(ct=_ct_study(), latin1=_latin1_study(), utf8=_utf8_study())
