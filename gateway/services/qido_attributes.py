"""The QIDO-RS attribute tables that are ours to keep (PS3.18 10.6).

Everything here is written as keywords and resolved to tags through
``pydicom.datadict`` at import, so a typo fails loudly at start-up instead of
silently asking the PACS for the wrong element.  A path with more than one tag is
a sequence path: ``(RequestAttributesSequence, RequestedProcedureID)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydicom.datadict import tag_for_keyword

Level = Literal["STUDY", "SERIES", "IMAGE"]
"""Query/Retrieve Level (0008,0052) of the C-FIND; PS3.4 C.6.2.1."""

TagPath = tuple[int, ...]
"""Tags from the top-level element down into sequence items."""

LEVELS: tuple[Level, ...] = ("STUDY", "SERIES", "IMAGE")


def tag_of(keyword: str) -> int:
    """The tag of a PS3.6 keyword; raises KeyError for a keyword pydicom lacks."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"not a DICOM keyword: {keyword!r}")
    return int(tag)


def _paths(*dotted: str) -> tuple[TagPath, ...]:
    return tuple(tuple(tag_of(k) for k in d.split(".")) for d in dotted)


# PS3.18 Table 10.6.3-3 Study Result Attributes.
STUDY_RESULT = _paths(
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "RetrieveURL",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
STUDY_RESULT_IF_KNOWN = _paths("InstanceAvailability", "TimezoneOffsetFromUTC")

# PS3.18 Table 10.6.3-4 Series Result Attributes.
SERIES_RESULT = _paths(
    "Modality",
    "RetrieveURL",
    "SeriesInstanceUID",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
)
SERIES_RESULT_IF_KNOWN = _paths(
    "TimezoneOffsetFromUTC",
    "SeriesDescription",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "RequestAttributesSequence.ScheduledProcedureStepID",
    "RequestAttributesSequence.RequestedProcedureID",
)

# PS3.18 Table 10.6.3-5 Instance Result Attributes.
INSTANCE_RESULT = _paths("SOPClassUID", "SOPInstanceUID", "RetrieveURL", "InstanceNumber")
INSTANCE_RESULT_IF_KNOWN = _paths(
    "InstanceAvailability",
    "TimezoneOffsetFromUTC",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
)

RESULT_ATTRIBUTES: Mapping[Level, tuple[TagPath, ...]] = {
    "STUDY": STUDY_RESULT + STUDY_RESULT_IF_KNOWN,
    "SERIES": SERIES_RESULT + SERIES_RESULT_IF_KNOWN,
    "IMAGE": INSTANCE_RESULT + INSTANCE_RESULT_IF_KNOWN,
}

# PS3.18 Table 10.6.1-5 Required Matching Attributes.
REQUIRED_MATCHING: Mapping[Level, tuple[TagPath, ...]] = {
    "STUDY": _paths(
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "PatientName",
        "PatientID",
        "StudyInstanceUID",
        "StudyID",
    ),
    "SERIES": _paths(
        "Modality",
        "SeriesInstanceUID",
        "SeriesNumber",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "RequestAttributesSequence.ScheduledProcedureStepID",
        "RequestAttributesSequence.RequestedProcedureID",
    ),
    "IMAGE": _paths("SOPClassUID", "SOPInstanceUID", "InstanceNumber"),
}

# Our choice, not a PS3.18 table: what `includefield=all` adds at each level on top
# of RESULT_ATTRIBUTES.  The optional keys of the Study Root information model
# (PS3.4 C.6.2.1) that PACS commonly index, plus the image attributes viewers use
# to pick a hanging protocol and lay out a stack (geometry, pixel description,
# VOI and rescale).  "All available attributes" (PS3.18 8.3.4.3) cannot be asked
# of a C-FIND SCP, so this list is the gateway's answer to it: each of them is an
# attribute `includefield=<keyword>` would ask for alone (docs/qido.md).  The
# instance-level Rows, Columns, BitsAllocated and NumberOfFrames are already
# return keys of every instance search (INSTANCE_RESULT_IF_KNOWN).
INCLUDE_ALL: Mapping[Level, tuple[TagPath, ...]] = {
    "STUDY": _paths(
        "StudyDescription",
        "ProcedureCodeSequence",
        "NameOfPhysiciansReadingStudy",
        "AdmittingDiagnosesDescription",
        "ReferencedStudySequence",
        "ReferencedPatientSequence",
        "IssuerOfPatientID",
        "PatientBirthTime",
        "OtherPatientIDsSequence",
        "OtherPatientNames",
        "PatientAge",
        "PatientSize",
        "PatientWeight",
        "EthnicGroup",
        "Occupation",
        "AdditionalPatientHistory",
        "PatientComments",
        "SOPClassesInStudy",
    ),
    "SERIES": _paths(
        "SeriesDate",
        "SeriesTime",
        "BodyPartExamined",
        "ProtocolName",
        "Laterality",
        "OperatorsName",
        "PerformingPhysicianName",
        "PerformedProcedureStepID",
        "PerformedProcedureStepDescription",
        "Manufacturer",
        "ManufacturerModelName",
        "InstitutionName",
        "StationName",
    ),
    "IMAGE": _paths(
        "ImageType",
        "ContentDate",
        "ContentTime",
        "AcquisitionDate",
        "AcquisitionTime",
        "AcquisitionDateTime",
        "AcquisitionNumber",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "BitsStored",
        "PixelRepresentation",
        "ImageComments",
        "ContentLabel",
        "ContentDescription",
        "ConceptNameCodeSequence",
        "CompletionFlag",
        "VerificationFlag",
        "InstanceCreationDate",
        "InstanceCreationTime",
        "ImageLaterality",
        "SliceThickness",
        "SpacingBetweenSlices",
        "SliceLocation",
        "PixelSpacing",
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "HighBit",
        "WindowCenter",
        "WindowWidth",
        "RescaleIntercept",
        "RescaleSlope",
        "RescaleType",
        "LossyImageCompression",
    ),
}

# Filled in by the gateway from its own URLs (PS3.18 10.6.3.3), never asked of the PACS.
GATEWAY_COMPUTED: frozenset[TagPath] = frozenset(_paths("RetrieveURL"))

# Elements the gateway sets itself in the identifier; a query parameter naming
# one of them is ignored rather than allowed to change the C-FIND.
IDENTIFIER_CONTROLLED: frozenset[TagPath] = frozenset(
    _paths("QueryRetrieveLevel", "SpecificCharacterSet")
)

# PS3.18 8.3.4.1 and PS3.4 C.2.2.2.5 (combined date-time matching): a date and
# the time paired with it are matched as one DT.  StudyDate/StudyTime is the pair
# PS3.18 names; the other two are the same construct at series level.
DATE_TIME_PAIRS: tuple[tuple[int, int], ...] = (
    (tag_of("StudyDate"), tag_of("StudyTime")),
    (tag_of("SeriesDate"), tag_of("SeriesTime")),
    (tag_of("PerformedProcedureStepStartDate"), tag_of("PerformedProcedureStepStartTime")),
)


def result_levels(level: Level, *, study_scoped: bool, series_scoped: bool) -> tuple[Level, ...]:
    """Levels whose result attributes a search returns (PS3.18 10.6.3.3).

    All Series also returns the study's attributes; Study's Instances the
    series'; All Instances both.  A scoped search returns only its own level.
    """
    if level == "STUDY":
        return ("STUDY",)
    if level == "SERIES":
        return ("SERIES",) if study_scoped else ("STUDY", "SERIES")
    if series_scoped:
        return ("IMAGE",)
    return ("SERIES", "IMAGE") if study_scoped else ("STUDY", "SERIES", "IMAGE")


def return_keys(
    level: Level, *, study_scoped: bool, series_scoped: bool, include_all: bool
) -> tuple[TagPath, ...]:
    """Return keys a search asks the PACS for, in table order, without duplicates."""
    seen: dict[TagPath, None] = {}
    for lvl in result_levels(level, study_scoped=study_scoped, series_scoped=series_scoped):
        for path in RESULT_ATTRIBUTES[lvl] + (INCLUDE_ALL[lvl] if include_all else ()):
            seen.setdefault(path, None)
    return tuple(seen)


def _levels_by_tag() -> dict[int, Level]:
    seen: dict[int, set[Level]] = {}
    for table in (RESULT_ATTRIBUTES, REQUIRED_MATCHING, INCLUDE_ALL):
        for level, paths in table.items():
            for path in paths:
                seen.setdefault(path[0], set()).add(level)
    return {tag: next(iter(levels)) for tag, levels in seen.items() if len(levels) == 1}


_LEVEL_OF_TAG = _levels_by_tag()


def attribute_level(tag: int) -> Level | None:
    """The information-model level an attribute belongs to, as far as our tables say.

    Patient attributes count as STUDY (the Study Root model keeps them there,
    PS3.4 C.6.2.1); an attribute found at several levels or at none is None.
    """
    return _LEVEL_OF_TAG.get(tag)


_LEVEL_ORDER: Mapping[Level, int] = {"STUDY": 0, "SERIES": 1, "IMAGE": 2}


def is_below(tag: int, level: Level) -> bool:
    """Whether our tables place the attribute at a level below ``level`` (Modality, STUDY)."""
    owner = attribute_level(tag)
    return owner is not None and _LEVEL_ORDER[owner] > _LEVEL_ORDER[level]


# Where a search asks for an attribute of a level below its own (includefield=Modality
# in a study search), the attribute of its own level that summarises it is asked for
# instead: the study-level keys that list the study's modalities and SOP classes.
LOWER_LEVEL_STAND_INS: Mapping[tuple[Level, TagPath], TagPath] = {
    ("STUDY", (tag_of("Modality"),)): (tag_of("ModalitiesInStudy"),),
    ("STUDY", (tag_of("SOPClassUID"),)): (tag_of("SOPClassesInStudy"),),
}
