"""Presentation context profiles: which contexts an association proposes.

Pools are keyed by profile (DESIGN.md section 2): a query association never
needs the 100+ storage contexts of a C-GET, and PS3.8 caps a proposal at 128.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from gateway.dimse.pdu import PresentationContextRQ, RoleSelection

# PS3.4 Annex A.4 and C.6.
VERIFICATION = "1.2.840.10008.1.1"
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"

# Explicit first: identifiers then carry their VRs, so private and unknown
# attributes decode without a dictionary.
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: context IDs are odd numbers 1-255


@dataclass(frozen=True)
class ContextProfile:
    """A named set of (abstract syntax, transfer syntaxes) and role selections."""

    name: str
    syntaxes: tuple[tuple[str, tuple[str, ...]], ...]
    roles: tuple[RoleSelection, ...] = ()

    def __post_init__(self) -> None:
        if len(self.syntaxes) > MAX_CONTEXTS:
            raise ValueError(f"{len(self.syntaxes)} presentation contexts; PS3.8 allows 128")

    def proposal(self) -> tuple[PresentationContextRQ, ...]:
        return tuple(
            PresentationContextRQ(2 * i + 1, abstract, ts)
            for i, (abstract, ts) in enumerate(self.syntaxes)
        )


QUERY = ContextProfile(
    "query",
    (
        (VERIFICATION, UNCOMPRESSED),
        (STUDY_ROOT_FIND, UNCOMPRESSED),
        (PATIENT_ROOT_FIND, UNCOMPRESSED),
    ),
)
