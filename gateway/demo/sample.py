"""Deterministic synthetic DICOM data for the demo PACS, the tests and the benchmarks.

Everything here is a pure function of the seed: UIDs are built from a fixed org root plus
the seed and the position of the object, and pixel noise comes from a seeded generator. So
regenerating gives byte-identical files, and re-seeding a PACS is idempotent (same UIDs).

The demo set is small but covers what a DICOMweb gateway trips over in practice: a
realistic CT series, an MR series of another patient, a multi-frame instance, an RGB
secondary capture, signed pixels, and patient names in ISO_IR 100 (Latin-1) and ISO_IR 192
(UTF-8, including a three-group Japanese person name).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

__all__ = [
    "UID_ROOT",
    "SampleInstance",
    "SampleManifest",
    "write_bulk_studies",
    "write_demo_studies",
]

# Fixed org root so every generated UID is recognisably ours and stable across runs.
UID_ROOT = "1.2.826.0.1.3680043.10.1234."

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_IMAGE = "1.2.840.10008.5.1.4.1.1.1.1"
SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"
MF_GRAY_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"

_DEMO_SET = 1
_BULK_SET = 2
_IMPLEMENTATION_VERSION = "DWGW_SAMPLE_1"
_U16 = npt.NDArray[np.uint16]


@dataclass(frozen=True)
class SampleInstance:
    """One written file plus the identifiers a test needs without re-reading it."""

    path: Path
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    patient_id: str = ""
    patient_name: str = ""
    modality: str = ""
    number_of_frames: int = 1


@dataclass(frozen=True)
class SampleManifest:
    """What was written, in write order, so callers can seed a PACS and check answers."""

    root: Path
    instances: tuple[SampleInstance, ...]

    def __len__(self) -> int:
        return len(self.instances)

    def __iter__(self) -> Iterator[SampleInstance]:
        return iter(self.instances)

    def studies(self) -> dict[str, list[SampleInstance]]:
        return _group(self.instances, lambda i: i.study_uid)

    def series(self) -> dict[str, list[SampleInstance]]:
        return _group(self.instances, lambda i: i.series_uid)

    def patients(self) -> dict[str, list[SampleInstance]]:
        return _group(self.instances, lambda i: i.patient_id)

    def sop_class_uids(self) -> set[str]:
        return {i.sop_class_uid for i in self.instances}

    def paths(self) -> list[Path]:
        return [i.path for i in self.instances]

    def instance(self, sop_uid: str) -> SampleInstance:
        for inst in self.instances:
            if inst.sop_uid == sop_uid:
                return inst
        raise KeyError(sop_uid)

    def study_of_patient(self, patient_name: str) -> str:
        """The (first) study UID of a patient, by exact name: tests look patients up by name."""
        for inst in self.instances:
            if inst.patient_name == patient_name:
                return inst.study_uid
        raise KeyError(patient_name)

    def __add__(self, other: SampleManifest) -> SampleManifest:
        return SampleManifest(self.root, self.instances + other.instances)


def _group(
    instances: tuple[SampleInstance, ...], key: Callable[[SampleInstance], str]
) -> dict[str, list[SampleInstance]]:
    out: dict[str, list[SampleInstance]] = defaultdict(list)
    for inst in instances:
        out[key(inst)].append(inst)
    return dict(out)


def _uid(seed: int, *parts: int) -> str:
    """Dotted integers under our root: valid components by construction, and decodable."""
    uid = UID_ROOT + ".".join(str(p) for p in (seed, *parts))
    assert len(uid) <= 64, uid
    return uid


def _check_seed(seed: int) -> None:
    if seed < 0:
        raise ValueError("seed must be a non-negative integer (it becomes a UID component)")


# --------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class _Patient:
    name: str
    pid: str
    birth: str
    sex: str
    charset: str = "ISO_IR 100"


@dataclass(frozen=True)
class _Study:
    uid: str
    date: dt.datetime
    accession: str
    study_id: str
    description: str
    referring: str = "HOUSE^GREGORY^^DR"


def _age(birth: str, on: dt.date) -> str:
    b = dt.datetime.strptime(birth, "%Y%m%d").date()
    years = on.year - b.year - ((on.month, on.day) < (b.month, b.day))
    return f"{years:03d}Y"


def _base(sop_class: str, sop_uid: str, patient: _Patient, study: _Study) -> Dataset:
    """Patient, study, equipment and SOP common modules shared by every generated IOD."""
    ds = Dataset()
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = UID(sop_class)
    fm.MediaStorageSOPInstanceUID = UID(sop_uid)
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    fm.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    fm.ImplementationVersionName = _IMPLEMENTATION_VERSION
    ds.file_meta = fm
    ds.SpecificCharacterSet = patient.charset
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    date, time = study.date.strftime("%Y%m%d"), study.date.strftime("%H%M%S")
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = time
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = date
    ds.SeriesDate = date
    ds.AcquisitionDate = date
    ds.ContentDate = date
    ds.StudyTime = time
    ds.SeriesTime = time
    ds.AcquisitionTime = time
    ds.ContentTime = time
    ds.AccessionNumber = study.accession
    ds.Modality = "OT"
    ds.Manufacturer = "DWGW Synthetic"
    ds.InstitutionName = "Demo General Hospital"
    ds.ReferringPhysicianName = study.referring
    ds.StationName = "SYNTH01"
    ds.StudyDescription = study.description
    ds.ManufacturerModelName = "Phantom 3000"
    ds.PatientName = patient.name
    ds.PatientID = patient.pid
    ds.IssuerOfPatientID = "DEMO"
    ds.PatientBirthDate = patient.birth
    ds.PatientSex = patient.sex
    ds.PatientAge = _age(patient.birth, study.date.date())
    ds.DeviceSerialNumber = "SN-0001"
    ds.SoftwareVersions = "1.0"
    ds.StudyInstanceUID = study.uid
    ds.StudyID = study.study_id
    return ds


def _series(ds: Dataset, uid: str, number: int, description: str, modality: str) -> None:
    ds.Modality = modality
    ds.SeriesInstanceUID = uid
    ds.SeriesNumber = number
    ds.SeriesDescription = description
    ds.ProtocolName = description


def _image_plane(
    ds: Dataset, rows: int, cols: int, spacing: float, z: float, thickness: float
) -> None:
    ds.PatientPosition = "HFS"
    ds.SliceThickness = f"{thickness:g}"
    ds.ImagePositionPatient = [f"{-spacing * cols / 2:g}", f"{-spacing * rows / 2:g}", f"{z:g}"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = f"{z:g}"
    ds.PixelSpacing = [f"{spacing:g}", f"{spacing:g}"]
    ds.PositionReferenceIndicator = ""


def _grey_pixels(
    ds: Dataset, rows: int, cols: int, stored: int, signed: bool, frames: int = 1
) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = stored
    ds.HighBit = stored - 1
    ds.PixelRepresentation = int(signed)
    if frames > 1:
        ds.NumberOfFrames = frames


def _set_pixel_data(ds: Dataset, data: bytes, vr: str = "OW") -> None:
    # Explicit VR so pydicom need not resolve the ambiguous "OB or OW" at write time.
    ds.add_new(0x7FE00010, vr, data)


def _write(ds: Dataset, path: Path) -> None:
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def _record(ds: Dataset, path: Path) -> SampleInstance:
    return SampleInstance(
        path=path,
        study_uid=ds.StudyInstanceUID,
        series_uid=ds.SeriesInstanceUID,
        sop_uid=ds.SOPInstanceUID,
        sop_class_uid=ds.SOPClassUID,
        transfer_syntax=ds.file_meta.TransferSyntaxUID,
        patient_id=ds.PatientID,
        patient_name=str(ds.PatientName),
        modality=ds.Modality,
        number_of_frames=int(ds.get("NumberOfFrames", 1)),
    )


# --------------------------------------------------------------------------- phantoms


_Coords = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]


@functools.cache
def _grid(rows: int, cols: int) -> _Coords:
    """Normalised (x, y) coordinates in [-1, 1), cached since every slice reuses them."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    return (x - cols / 2) / (cols / 2), (y - rows / 2) / (rows / 2)


def _ellipse(
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.float32],
    cx: float,
    cy: float,
    rx: float,
    ry: float,
) -> npt.NDArray[np.bool_]:
    return np.asarray(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0)


def _ct_slice(n: int, t: float, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """A chest-like slice in HU; t in [0, 1] walks head to foot so slices differ."""
    x, y = _grid(n, n)
    hu = np.full((n, n), -1000.0, dtype=np.float32)
    body = _ellipse(x, y, 0.0, 0.0, 0.85, 0.6 + 0.06 * np.sin(np.pi * t))
    hu[body] = 40.0
    r = 0.22 * (0.55 + 0.45 * np.sin(np.pi * t))
    for cx in (-0.38, 0.38):
        hu[_ellipse(x, y, cx, -0.05, r, 1.5 * r)] = -850.0
    hu[_ellipse(x, y, -0.08 + 0.04 * t, 0.0, 0.18, 0.15) & body] = 55.0
    hu[_ellipse(x, y, 0.0, 0.42, 0.07, 0.07)] = 700.0
    hu[_ellipse(x, y, 0.12, 0.25, 0.035, 0.035)] = 180.0  # contrast-filled aorta
    hu += rng.normal(0.0, 12.0, size=hu.shape).astype(np.float32)
    return hu


def _mr_slice(n: int, t: float, rng: np.random.Generator) -> _U16:
    """A T2-ish axial head: bright CSF in ventricles that shrink away from the middle."""
    x, y = _grid(n, n)
    img = np.zeros((n, n), dtype=np.float32)
    scale = 0.75 + 0.2 * np.sin(np.pi * t)
    img[_ellipse(x, y, 0.0, 0.0, 0.72 * scale, 0.88 * scale)] = 900.0  # scalp/fat
    img[_ellipse(x, y, 0.0, 0.0, 0.66 * scale, 0.82 * scale)] = 500.0  # brain
    v = 0.09 * np.sin(np.pi * t)
    for cx in (-0.1, 0.1):
        img[_ellipse(x, y, cx, -0.05, max(v, 0.01), max(2.5 * v, 0.01))] = 1400.0
    img += np.abs(rng.normal(0.0, 20.0, size=img.shape)).astype(np.float32)
    return np.clip(img, 0, 4095).astype(np.uint16)


def _cine_frames(n: int, frames: int, rng: np.random.Generator) -> _U16:
    """A 'beating' ellipse so each frame of the multi-frame object is distinguishable."""
    x, y = _grid(n, n)
    out = np.empty((frames, n, n), dtype=np.uint16)
    for f in range(frames):
        phase = 0.5 + 0.5 * np.cos(2 * np.pi * f / frames)
        img = np.full((n, n), 100.0, dtype=np.float32)
        img[_ellipse(x, y, 0.0, 0.0, 0.7, 0.55)] = 1200.0
        img[_ellipse(x, y, -0.1, 0.05, 0.2 + 0.1 * phase, 0.25 + 0.1 * phase)] = 3000.0
        img[_ellipse(x, y, 0.45, -0.3 + 0.02 * f, 0.05, 0.05)] = 4000.0
        img += rng.normal(0.0, 25.0, size=img.shape).astype(np.float32)
        out[f] = np.clip(img, 0, 4095).astype(np.uint16)
    return out


def _rgb_image(rows: int, cols: int) -> npt.NDArray[np.uint8]:
    """Colour bars plus a disc: checks RGB and non-square handling end to end."""
    x, y = _grid(rows, cols)
    rgb = np.zeros((rows, cols, 3), dtype=np.uint8)
    rgb[..., 0] = ((x + 1) * 127.5).astype(np.uint8)
    rgb[..., 1] = ((y + 1) * 127.5).astype(np.uint8)
    rgb[..., 2] = 96
    rgb[_ellipse(x, y, 0.0, 0.0, 0.4, 0.4)] = (255, 255, 255)
    return rgb


# --------------------------------------------------------------------------- demo set


def _ct_series(
    seed: int, out: Path, patient: _Patient, study: _Study, st: int, slices: int, n: int
) -> list[SampleInstance]:
    rng = np.random.default_rng([seed, st])
    se = 1
    series_uid = _uid(seed, _DEMO_SET, st, se)
    thickness, spacing = 2.5, 350.0 / n
    result = []
    for k in range(slices):
        sop = _uid(seed, _DEMO_SET, st, se, k + 1)
        ds = _base(CT_IMAGE, sop, patient, study)
        _series(ds, series_uid, se, "AXIAL 2.5mm SOFT TISSUE", "CT")
        ds.FrameOfReferenceUID = _uid(seed, _DEMO_SET, st, 0)
        ds.BodyPartExamined = "CHEST"
        ds.ScanOptions = "HELICAL MODE"
        ds.KVP = "120"
        ds.DataCollectionDiameter = "500"
        ds.ReconstructionDiameter = "350"
        ds.ConvolutionKernel = "STANDARD"
        ds.XRayTubeCurrent = 250
        ds.ExposureTime = 600
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        _image_plane(ds, n, n, spacing, -k * thickness, thickness)
        _grey_pixels(ds, n, n, stored=12, signed=False)
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        hu = _ct_slice(n, k / max(slices - 1, 1), rng)
        _set_pixel_data(ds, np.clip(hu + 1024.0, 0, 4095).astype("<u2").tobytes())
        result.append(_save_nested(ds, out))
    return result


def _mr_series(
    seed: int, out: Path, patient: _Patient, study: _Study, st: int, slices: int, n: int
) -> list[SampleInstance]:
    rng = np.random.default_rng([seed, st])
    se = 1
    series_uid = _uid(seed, _DEMO_SET, st, se)
    thickness, gap, spacing = 5.0, 1.0, 230.0 / n
    result = []
    for k in range(slices):
        ds = _base(MR_IMAGE, _uid(seed, _DEMO_SET, st, se, k + 1), patient, study)
        _series(ds, series_uid, se, "AX T2 TSE", "MR")
        ds.FrameOfReferenceUID = _uid(seed, _DEMO_SET, st, 0)
        ds.BodyPartExamined = "HEAD"
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "SK"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.SequenceName = "*tse2d1_15"
        ds.RepetitionTime = "4000"
        ds.EchoTime = "96"
        ds.EchoTrainLength = 15
        ds.ImagingFrequency = "63.68"
        ds.ImagedNucleus = "1H"
        ds.MagneticFieldStrength = "1.5"
        ds.SpacingBetweenSlices = f"{thickness + gap:g}"
        ds.FlipAngle = "150"
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        _image_plane(ds, n, n, spacing, 30.0 + k * (thickness + gap), thickness)
        _grey_pixels(ds, n, n, stored=12, signed=False)
        ds.WindowCenter = "700"
        ds.WindowWidth = "1400"
        _set_pixel_data(ds, _mr_slice(n, (k + 0.5) / slices, rng).astype("<u2").tobytes())
        result.append(_save_nested(ds, out))
    return result


def _multiframe(
    seed: int, out: Path, patient: _Patient, study: _Study, st: int, frames: int, n: int
) -> list[SampleInstance]:
    rng = np.random.default_rng([seed, st])
    se = 1
    ds = _base(MF_GRAY_WORD_SC, _uid(seed, _DEMO_SET, st, se, 1), patient, study)
    _series(ds, _uid(seed, _DEMO_SET, st, se), se, "Cine Überblick", "OT")
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ConversionType = "WSD"
    ds.BodyPartExamined = "HEART"
    ds.InstanceNumber = 1
    ds.FrameTime = "40"
    ds.FrameIncrementPointer = 0x00181063  # -> FrameTime
    ds.NominalScannedPixelSpacing = ["1", "1"]
    _grey_pixels(ds, n, n, stored=12, signed=False, frames=frames)
    ds.WindowCenter = "2048"
    ds.WindowWidth = "4096"
    _set_pixel_data(ds, _cine_frames(n, frames, rng).astype("<u2").tobytes())
    return [_save_nested(ds, out)]


def _rgb_sc(
    seed: int, out: Path, patient: _Patient, study: _Study, st: int
) -> list[SampleInstance]:
    se = 1
    ds = _base(SC_IMAGE, _uid(seed, _DEMO_SET, st, se, 1), patient, study)
    _series(ds, _uid(seed, _DEMO_SET, st, se), se, "Ekran görüntüsü", "OT")
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.ConversionType = "WSD"
    ds.InstanceNumber = 1
    rows, cols = 192, 256
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    _set_pixel_data(ds, _rgb_image(rows, cols).tobytes(), vr="OB")
    return [_save_nested(ds, out)]


def _signed_ct(
    seed: int, out: Path, patient: _Patient, study: _Study, st: int, slices: int, n: int
) -> list[SampleInstance]:
    """Signed 16-bit CT (stored value == HU): exercises PixelRepresentation 1 paths."""
    rng = np.random.default_rng([seed, st])
    se = 1
    result = []
    for k in range(slices):
        ds = _base(CT_IMAGE, _uid(seed, _DEMO_SET, st, se, k + 1), patient, study)
        _series(ds, _uid(seed, _DEMO_SET, st, se), se, "頭部 単純", "CT")
        ds.FrameOfReferenceUID = _uid(seed, _DEMO_SET, st, 0)
        ds.BodyPartExamined = "HEAD"
        ds.KVP = "120"
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        _image_plane(ds, n, n, 250.0 / n, 80.0 - 5.0 * k, 5.0)
        _grey_pixels(ds, n, n, stored=16, signed=True)
        ds.WindowCenter = "40"
        ds.WindowWidth = "80"
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        hu = _ct_slice(n, 0.5 + 0.1 * k, rng)
        _set_pixel_data(ds, np.clip(hu, -1024, 3071).astype("<i2").tobytes())
        result.append(_save_nested(ds, out))
    return result


def _save_nested(ds: Dataset, out: Path) -> SampleInstance:
    path = out / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(ds, path)
    return _record(ds, path)


# Names are public constants so tests can assert on the exact round-tripped values.
CT_PATIENT = _Patient("Doe^Jane^Marie", "DEMO-0001", "19670412", "F")
MR_PATIENT = _Patient("Smith^John", "DEMO-0002", "19801105", "M")
LATIN1_PATIENT = _Patient("Müller^Jürgen", "DEMO-0003", "19550723", "M", "ISO_IR 100")
UTF8_PATIENT = _Patient("Çelik^Ayşe", "DEMO-0004", "19920229", "F", "ISO_IR 192")
JAPANESE_PATIENT = _Patient(
    "Yamada^Tarou=山田^太郎=やまだ^たろう", "DEMO-0005", "19781224", "M", "ISO_IR 192"
)


def write_demo_studies(out_dir: Path, *, seed: int = 1, ct_slices: int = 40) -> SampleManifest:
    """Write the demo set (five studies, five patients) under ``out_dir/<study>/<series>/``.

    Study order and content are fixed; only UIDs and pixel noise depend on ``seed`` so the
    same seed reproduces the same files and a different seed never collides with it.
    """
    _check_seed(seed)
    out_dir = Path(out_dir)
    base = dt.datetime(2024, 3, 14, 9, 26, 53)

    def study(st: int, days: int, desc: str) -> _Study:
        return _Study(
            uid=_uid(seed, _DEMO_SET, st),
            date=base + dt.timedelta(days=days, minutes=37 * st),
            accession=f"DEMO{seed % 1000:03d}{st:04d}",
            study_id=str(st),
            description=desc,
        )

    instances = [
        *_ct_series(
            seed, out_dir, CT_PATIENT, study(1, 0, "CT CHEST W/O CONTRAST"), 1, ct_slices, 512
        ),
        *_mr_series(seed, out_dir, MR_PATIENT, study(2, 3, "MR BRAIN W/O CONTRAST"), 2, 10, 256),
        *_multiframe(seed, out_dir, LATIN1_PATIENT, study(3, 12, "Herz Übersicht"), 3, 20, 128),
        *_rgb_sc(seed, out_dir, UTF8_PATIENT, study(4, 40, "Göğüs grafisi"), 4),
        *_signed_ct(seed, out_dir, JAPANESE_PATIENT, study(5, 95, "頭部CT"), 5, 2, 256),
    ]
    return SampleManifest(out_dir, tuple(instances))


# --------------------------------------------------------------------------- bulk set

_FIRST = (
    "JOHN",
    "JANE",
    "MARIA",
    "PETER",
    "ANNA",
    "LUCAS",
    "SOFIA",
    "DAVID",
    "EMMA",
    "OMAR",
    "YUKI",
    "LI",
    "FATIMA",
    "IVAN",
    "CHLOE",
    "NOAH",
    "MIA",
    "ELIAS",
    "ZOE",
    "ARJUN",
)
_LAST = (
    "SMITH",
    "DOE",
    "GARCIA",
    "MARTIN",
    "ROSSI",
    "TANAKA",
    "NGUYEN",
    "KOWALSKI",
    "DUBOIS",
    "OKAFOR",
    "SILVA",
    "JOHANSSON",
    "NOVAK",
    "HASSAN",
    "BROWN",
    "WILSON",
    "PATEL",
    "KIM",
    "LOPEZ",
    "SCHMIDT",
)
# (modality, SOP class, description choices): the SOP class follows the modality so a
# query by modality and a query by SOP class agree.
_BULK_KINDS = (
    ("CT", CT_IMAGE, ("CT CHEST W/O CONTRAST", "CT ABDOMEN PELVIS W CONTRAST", "CT HEAD")),
    ("CT", CT_IMAGE, ("CT ANGIO CHEST", "CT LUMBAR SPINE", "CT SINUS")),
    ("MR", MR_IMAGE, ("MR BRAIN W/O CONTRAST", "MR KNEE LEFT", "MR LUMBAR SPINE")),
    ("CR", CR_IMAGE, ("CHEST PA AND LATERAL", "HAND LEFT 3 VIEWS")),
    ("DX", DX_IMAGE, ("CHEST AP PORTABLE", "PELVIS AP")),
    ("OT", SC_IMAGE, ("OUTSIDE IMAGES", "SCANNED DOCUMENT")),
)


def write_bulk_studies(
    out_dir: Path, count: int, *, seed: int = 2, rows: int = 8
) -> SampleManifest:
    """Write ``count`` one-instance studies, flat as ``out_dir/<sop>.dcm``, for query volume.

    Patients recur (two studies each), and some patients have a Latin-1/UTF-8 name so
    charset handling is exercised at volume too. Going through ``dcmwrite`` per file costs
    ~2 ms, so the constant part of the file is encoded once by pydicom and only the varying
    text elements are encoded here (the test suite checks the bytes equal pydicom's).
    """
    _check_seed(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 4096, size=(rows, rows), dtype=np.uint16).astype("<u2").tobytes()
    days = rng.integers(0, 3650, size=count)
    minutes = rng.integers(7 * 60, 19 * 60, size=count)
    first = rng.integers(0, len(_FIRST), size=count)
    last = rng.integers(0, len(_LAST), size=count)
    kinds = rng.integers(0, len(_BULK_KINDS), size=count)
    births = rng.integers(0, 80 * 365, size=count)
    epoch = dt.datetime(2015, 1, 1)

    ds = _base(
        CT_IMAGE, "1.2", _Patient("X", "X", "19700101", "O"), _Study("1.2", epoch, "", "", "")
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.InstanceNumber = 1
    ds.SeriesNumber = 1
    ds.SeriesDescription = ""
    ds.SeriesInstanceUID = "1.2"
    ds.AcquisitionNumber = 1
    _grey_pixels(ds, rows, rows, stored=12, signed=False)
    ds.PixelSpacing = ["0.5", "0.5"]
    ds.WindowCenter = "2048"
    ds.WindowWidth = "4096"
    _set_pixel_data(ds, pixels)
    writer = _TemplateWriter(ds)

    instances = []
    for i in range(count):
        modality, sop_class, descs = _BULK_KINDS[int(kinds[i])]
        pno = i // 2  # two studies per patient
        name, charset = f"{_LAST[int(last[pno])]}^{_FIRST[int(first[pno])]}", "ISO_IR 100"
        if pno % 97 == 5:
            name = "Müller^Jürgen"
        elif pno % 389 == 7:
            name, charset = "Çelik^Ayşe", "ISO_IR 192"
        when = epoch + dt.timedelta(days=int(days[i]), minutes=int(minutes[i]))
        birth = (dt.date(1930, 1, 1) + dt.timedelta(days=int(births[pno]))).strftime("%Y%m%d")
        date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
        desc = descs[i % len(descs)]
        values = {
            "MediaStorageSOPClassUID": sop_class,
            "MediaStorageSOPInstanceUID": _uid(seed, _BULK_SET, i + 1, 1, 1),
            "SpecificCharacterSet": charset,
            "SOPClassUID": sop_class,
            "SOPInstanceUID": _uid(seed, _BULK_SET, i + 1, 1, 1),
            "StudyInstanceUID": _uid(seed, _BULK_SET, i + 1),
            "SeriesInstanceUID": _uid(seed, _BULK_SET, i + 1, 1),
            "Modality": modality,
            "AccessionNumber": f"B{seed % 100:02d}{i + 1:07d}",
            "StudyID": str(i + 1),
            "StudyDescription": desc,
            "SeriesDescription": desc,
            "ReferringPhysicianName": ("HOUSE^GREGORY^^DR", "GREY^MEREDITH", "")[i % 3],
            "PatientName": name,
            "PatientID": f"BULK-{seed}-{pno + 1:06d}",
            "PatientBirthDate": birth,
            "PatientSex": "MF"[pno % 2],
            "PatientAge": _age(birth, when.date()),
        }
        values.update(dict.fromkeys(_DATE_KEYWORDS, date))
        values.update(dict.fromkeys(_TIME_KEYWORDS, time))
        path = out_dir / f"{values['SOPInstanceUID']}.dcm"
        path.write_bytes(writer.render(values))
        instances.append(
            SampleInstance(
                path=path,
                study_uid=values["StudyInstanceUID"],
                series_uid=values["SeriesInstanceUID"],
                sop_uid=values["SOPInstanceUID"],
                sop_class_uid=sop_class,
                transfer_syntax=ExplicitVRLittleEndian,
                patient_id=values["PatientID"],
                patient_name=name,
                modality=modality,
            )
        )
    return SampleManifest(out_dir, tuple(instances))


_DATE_KEYWORDS = (
    "InstanceCreationDate",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
)
_TIME_KEYWORDS = (
    "InstanceCreationTime",
    "StudyTime",
    "SeriesTime",
    "AcquisitionTime",
    "ContentTime",
)
_BULK_VARYING = (
    "MediaStorageSOPClassUID",
    "MediaStorageSOPInstanceUID",
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "SeriesDescription",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    *_DATE_KEYWORDS,
    *_TIME_KEYWORDS,
)
_CHARSET_TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC"})
_PYTHON_CODEC = {"ISO_IR 100": "latin_1", "ISO_IR 192": "utf_8", "": "ascii"}


class _TemplateWriter:
    """Explicit VR Little Endian file = constant byte runs + a few short text elements.

    pydicom encodes the constant elements once; ``render`` splices in the varying ones,
    which are all short-form string VRs, so their encoding is a tag, VR, length and value.
    """

    def __init__(self, template: Dataset) -> None:
        from pydicom.datadict import dictionary_VR, tag_for_keyword
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_data_element

        self._slots: list[tuple[int, bytes | str]] = []  # (group, constant bytes | keyword)
        varying: dict[int, str] = {}
        for kw in _BULK_VARYING:
            tag = tag_for_keyword(kw)
            assert tag is not None, kw
            varying[tag] = kw
        self._vr = {kw: dictionary_VR(tag) for tag, kw in varying.items()}
        meta = Dataset()
        meta.FileMetaInformationVersion = b"\x00\x01"
        meta.update(template.file_meta)
        for source in (meta, template):
            for elem in source:
                if elem.tag in varying:
                    self._slots.append((elem.tag.group, varying[elem.tag]))
                else:
                    fp = DicomBytesIO()
                    fp.is_little_endian, fp.is_implicit_VR = True, False
                    write_data_element(fp, elem)
                    self._slots.append((elem.tag.group, fp.getvalue()))
        self._tags = {kw: tag for tag, kw in varying.items()}
        missing = set(_BULK_VARYING) - {s for _, s in self._slots if isinstance(s, str)}
        assert not missing, f"template lacks {missing}"

    def _element(self, keyword: str, value: str, codec: str) -> bytes:
        vr = self._vr[keyword]
        raw = value.encode(codec if vr in _CHARSET_TEXT_VRS else "ascii")
        if len(raw) % 2:
            raw += b"\x00" if vr == "UI" else b" "
        tag = self._tags[keyword]
        return (
            (tag >> 16).to_bytes(2, "little")
            + (tag & 0xFFFF).to_bytes(2, "little")
            + vr.encode()
            + len(raw).to_bytes(2, "little")
            + raw
        )

    def render(self, values: dict[str, str]) -> bytes:
        codec = _PYTHON_CODEC[values.get("SpecificCharacterSet", "")]
        meta: list[bytes] = []
        body: list[bytes] = []
        for group, slot in self._slots:
            out = meta if group == 2 else body
            out.append(
                slot if isinstance(slot, bytes) else self._element(slot, values[slot], codec)
            )
        meta_bytes = b"".join(meta)
        group_length = b"\x02\x00\x00\x00UL\x04\x00" + len(meta_bytes).to_bytes(4, "little")
        return b"\x00" * 128 + b"DICM" + group_length + meta_bytes + b"".join(body)
