"""WADO-URI ``anonymize=yes`` (PS3.18 9.4.2.14): the Basic Application Level
Confidentiality Profile of PS3.15 E.1, for one object.

The profile is applied by retaining, not by removing: only attributes on the
list below (the image, its geometry and display, the modality's technique --
none of them in PS3.15 Table E.1-1) are kept, at every nesting level; every
other attribute, private ones included, is dropped.  So an identifying
attribute missing from a hand-made removal list cannot slip through, which a
removal list of Table E.1-1's several hundred rows would risk.  Then:

* the patient and study attributes the IODs require (Type 1/2) come back with
  a dummy or empty value (E.1-1 "Z"/"D");
* every UID other than a SOP Class or Transfer Syntax UID is replaced (E.1-1
  "U"), the same original UID by the same new one within the object, so that
  references inside it still agree (the meta header's too);
* Patient Identity Removed and De-identification Method say what was done.

Not hot: pydicom is used.
"""

from __future__ import annotations

import io

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

#: Kept as they are: none of these is in PS3.15 Table E.1-1.
_RETAINED = frozenset(
    {
        # SOP common, series and image identity (UIDs among them are replaced below)
        "SpecificCharacterSet",
        "SOPClassUID",
        "SOPInstanceUID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "FrameOfReferenceUID",
        "Modality",
        "ImageType",
        "SeriesNumber",
        "InstanceNumber",
        "AcquisitionNumber",
        "ConversionType",
        "Laterality",
        "ImageLaterality",
        "PatientPosition",
        "ViewPosition",
        "PositionReferenceIndicator",
        "ReferencedSOPClassUID",
        "ReferencedSOPInstanceUID",
        "ReferencedImageSequence",
        "ReferencedFrameNumber",
        # geometry
        "PatientOrientation",
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "SliceThickness",
        "SliceLocation",
        "SpacingBetweenSlices",
        "PixelSpacing",
        "ImagerPixelSpacing",
        "PixelAspectRatio",
        # image pixel, multi-frame, cine
        "Rows",
        "Columns",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "PlanarConfiguration",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "PixelData",
        "FloatPixelData",
        "DoubleFloatPixelData",
        "NumberOfFrames",
        "FrameIncrementPointer",
        "FrameTime",
        "FrameTimeVector",
        "SmallestImagePixelValue",
        "LargestImagePixelValue",
        "PixelPaddingValue",
        "PixelPaddingRangeLimit",
        "ExtendedOffsetTable",
        "ExtendedOffsetTableLengths",
        "LossyImageCompression",
        "LossyImageCompressionRatio",
        "LossyImageCompressionMethod",
        # display: modality LUT, VOI LUT, palette, presentation
        "RescaleIntercept",
        "RescaleSlope",
        "RescaleType",
        "ModalityLUTSequence",
        "LUTDescriptor",
        "LUTExplanation",
        "ModalityLUTType",
        "LUTData",
        "WindowCenter",
        "WindowWidth",
        "WindowCenterWidthExplanation",
        "VOILUTFunction",
        "VOILUTSequence",
        "PresentationLUTShape",
        "RedPaletteColorLookupTableDescriptor",
        "GreenPaletteColorLookupTableDescriptor",
        "BluePaletteColorLookupTableDescriptor",
        "RedPaletteColorLookupTableData",
        "GreenPaletteColorLookupTableData",
        "BluePaletteColorLookupTableData",
        "SegmentedRedPaletteColorLookupTableData",
        "SegmentedGreenPaletteColorLookupTableData",
        "SegmentedBluePaletteColorLookupTableData",
        # enhanced multi-frame functional groups (their items are filtered the same way)
        "SharedFunctionalGroupsSequence",
        "PerFrameFunctionalGroupsSequence",
        "PixelMeasuresSequence",
        "PlanePositionSequence",
        "PlaneOrientationSequence",
        "PixelValueTransformationSequence",
        "FrameVOILUTSequence",
        "FrameContentSequence",
        "DimensionIndexValues",
        "StackID",
        "InStackPositionNumber",
        "TemporalPositionIndex",
        # acquisition technique (CT, MR, XA, US, NM ...)
        "KVP",
        "ExposureTime",
        "XRayTubeCurrent",
        "Exposure",
        "ConvolutionKernel",
        "ReconstructionDiameter",
        "GantryDetectorTilt",
        "TableHeight",
        "RotationDirection",
        "ScanOptions",
        "ScanningSequence",
        "SequenceVariant",
        "MRAcquisitionType",
        "RepetitionTime",
        "EchoTime",
        "InversionTime",
        "EchoNumbers",
        "EchoTrainLength",
        "FlipAngle",
        "MagneticFieldStrength",
        "ImagedNucleus",
        "NumberOfAverages",
        "ImagingFrequency",
        "PixelBandwidth",
        "SequenceName",
        "ImagesInAcquisition",
    }
)

#: Required by the IODs (Type 1/2), so replaced rather than removed (E.1-1 Z/D).
_REPLACED = {
    "PatientName": "ANONYMIZED",
    "PatientID": "ANONYMIZED",
    "PatientBirthDate": "",
    "PatientSex": "",
    "StudyDate": "",
    "StudyTime": "",
    "AccessionNumber": "",
    "ReferringPhysicianName": "",
    "StudyID": "",
}

#: UIDs that name a kind of thing, not an instance: never replaced.
_CLASS_UIDS = frozenset({"SOPClassUID", "ReferencedSOPClassUID", "TransferSyntaxUID"})


def _retain(ds: Dataset, new_uid: dict[str, str]) -> None:
    """Drop what is not retained, recursively; replace instance UIDs (same old, same new)."""
    for element in list(ds):
        keyword = element.keyword
        if element.tag.is_private or keyword not in _RETAINED:
            del ds[element.tag]
        elif element.VR == "SQ":
            for item in element.value:
                _retain(item, new_uid)
        elif element.VR == "UI" and keyword not in _CLASS_UIDS and element.value:
            values = element.value if element.VM > 1 else [element.value]
            replaced = [new_uid.setdefault(str(v), generate_uid()) for v in values]
            element.value = replaced if element.VM > 1 else replaced[0]


def anonymize_part10(data: bytes) -> bytes:
    """The object with identifying attributes removed or replaced, new UIDs."""
    ds = pydicom.dcmread(io.BytesIO(data), force=False)
    new_uid: dict[str, str] = {}
    _retain(ds, new_uid)
    for keyword, value in _REPLACED.items():
        setattr(ds, keyword, value)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "PS3.15 E.1 Basic Application Level Confidentiality Profile"
    meta = ds.file_meta
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle"):
        if keyword in meta:
            delattr(meta, keyword)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
