"""WADO-URI ``anonymize=yes`` (PS3.18 9.4.2.14): the Basic Application Level
Confidentiality Profile of PS3.15 E.1, for one object.

The actions below are the profile's for the attributes a clinical object of
the kinds a PACS stores commonly carries (PS3.15 Table E.1-1: X remove, Z
empty, D dummy value, U new UID); private attributes are removed, UIDs are
replaced consistently within the object (meta and data set agree), and
Patient Identity Removed / De-identification Method record what was done.
Not hot: pydicom is used.
"""

from __future__ import annotations

import io

import pydicom
from pydicom.uid import generate_uid

# PS3.15 Table E.1-1, Basic Profile column, for the common attributes.
_REMOVE = (
    "AdditionalPatientHistory",
    "AdmittingDiagnosesDescription",
    "BranchOfService",
    "CurrentPatientLocation",
    "DerivationDescription",
    "DeviceSerialNumber",
    "EthnicGroup",
    "ImageComments",
    "InstitutionAddress",
    "InstitutionName",
    "InstitutionalDepartmentName",
    "IssuerOfPatientID",
    "MedicalRecordLocator",
    "MilitaryRank",
    "NameOfPhysiciansReadingStudy",
    "Occupation",
    "OperatorsName",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientAddress",
    "PatientAge",
    "PatientBirthTime",
    "PatientComments",
    "PatientMotherBirthName",
    "PatientReligiousPreference",
    "PatientSize",
    "PatientTelephoneNumbers",
    "PatientWeight",
    "PerformingPhysicianName",
    "PhysiciansOfRecord",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "RequestingPhysician",
    "StationName",
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "RequestAttributesSequence",
    "ReferencedPatientSequence",
    "ReferencedStudySequence",
    "ReferencedPerformedProcedureStepSequence",
)
_EMPTY = (
    "AccessionNumber",
    "PatientBirthDate",
    "PatientSex",
    "ReferringPhysicianName",
    "StudyID",
    "ContentDate",
    "ContentTime",
)
_DUMMY = {"PatientName": "ANONYMIZED", "PatientID": "ANONYMIZED"}
_NEW_UIDS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
)


def anonymize_part10(data: bytes) -> bytes:
    """The object with identifying attributes removed or replaced, new UIDs."""
    ds = pydicom.dcmread(io.BytesIO(data), force=False)
    ds.remove_private_tags()
    for keyword in _REMOVE:
        if keyword in ds:
            delattr(ds, keyword)
    for keyword in _EMPTY:
        if keyword in ds:
            setattr(ds, keyword, "")
    for keyword, value in _DUMMY.items():
        setattr(ds, keyword, value)
    for keyword in _NEW_UIDS:
        if keyword in ds:
            setattr(ds, keyword, generate_uid())
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "PS3.15 E.1 Basic Application Level Confidentiality Profile"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
