"""Load DICOM files into a running peer with DCMTK's storescu.

Seeding goes through the PACS's own DICOM interface (not its REST API or its
files on disk) so that what the tests query is exactly what the PACS chose to
keep and index, character sets included.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.data import get_charset_files
from pydicom.filereader import read_file_meta_info

from .common import Peer
from .dcmqrscp import DcmqrscpServer
from .dcmtk import StoreOutcome, storescu

#: How many files one storescu invocation gets (keeps the command line short).
_CHUNK = 400


@dataclass(frozen=True)
class CharsetFile:
    """One of pydicom's character-set test files, with what a test asserts on."""

    path: Path
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax: str
    patient_name: str
    specific_character_set: tuple[str, ...]


def charset_files() -> list[CharsetFile]:
    """pydicom's ``chr*.dcm`` files that are storable instances.

    They live in ``get_charset_files`` (``get_testdata_files("chr*.dcm")``
    returns nothing in pydicom 3). Two are dropped because they are not
    instances at all (``chrSQEncoding*.dcm``: no SOP Class/Instance UID), and
    of the pairs sharing one SOP Instance UID (``chrFren``/``chrFrenMulti``,
    ``chrJapMulti``/``chrJapMultiExplicitIR6``) only the first is kept, so a
    PACS holds a predictable version of each instance.
    """
    seen: set[str] = set()
    out: list[CharsetFile] = []
    for name in sorted(get_charset_files("chr*.dcm")):
        ds = dcmread(name, stop_before_pixels=True)
        sop = str(ds.get("SOPInstanceUID", ""))
        if not sop or "SOPClassUID" not in ds or sop in seen:
            continue
        seen.add(sop)
        charset = ds.get("SpecificCharacterSet", "")
        charsets = tuple(charset) if isinstance(charset, list | tuple) else (str(charset),)
        out.append(
            CharsetFile(
                path=Path(name),
                study_uid=str(ds.StudyInstanceUID),
                series_uid=str(ds.SeriesInstanceUID),
                sop_uid=sop,
                sop_class_uid=str(ds.SOPClassUID),
                transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
                patient_name=str(ds.PatientName),
                specific_character_set=charsets,
            )
        )
    return out


@dataclass
class SeedReport:
    """Which files a peer stored and which it refused (with storescu's reason)."""

    stored: list[Path] = field(default_factory=list)
    refused: dict[Path, str] = field(default_factory=dict)

    def add(self, outcome: StoreOutcome) -> None:
        """Merge one storescu run."""
        self.stored.extend(outcome.stored)
        self.refused.update(outcome.refused)


def _transfer_syntax(item: object) -> tuple[Path, str, str | None]:
    """(path, transfer syntax, study UID if known) of a file or manifest entry."""
    path = getattr(item, "path", None)
    if isinstance(path, Path):
        ts = str(getattr(item, "transfer_syntax", "")) or str(
            read_file_meta_info(path).TransferSyntaxUID
        )
        return path, ts, str(getattr(item, "study_uid", "")) or None
    assert isinstance(item, str | Path), item
    p = Path(item)
    return p, str(read_file_meta_info(p).TransferSyntaxUID), None


def seed(peer: Peer, items: Iterable[object], *, calling_aet: str = "SEEDER") -> SeedReport:
    """Store files into ``peer`` with storescu; returns what was stored/refused.

    ``items`` may be paths or objects with ``path``/``transfer_syntax``/
    ``study_uid`` attributes (``SampleInstance``, :class:`CharsetFile`).
    Files are grouped by transfer syntax because storescu proposes compressed
    syntaxes only with the matching ``-x?`` flag (one association per syntax);
    directories are not scanned, so a stray non-DICOM file cannot abort the run.
    For dcmqrscp the study count is checked against its 500-study cap first.
    """
    groups: dict[str, list[Path]] = defaultdict(list)
    studies: set[str] = set()
    unknown_studies: list[Path] = []
    for item in items:
        path, ts, study = _transfer_syntax(item)
        groups[ts].append(path)
        if study:
            studies.add(study)
        else:
            unknown_studies.append(path)
    if isinstance(peer, DcmqrscpServer):
        for p in unknown_studies:
            studies.add(str(dcmread(p, stop_before_pixels=True).StudyInstanceUID))
        peer.check_capacity(len(studies))
    report = SeedReport()
    for ts, paths in groups.items():
        for i in range(0, len(paths), _CHUNK):
            report.add(
                storescu(
                    peer.host,
                    peer.port,
                    peer.aet,
                    paths[i : i + _CHUNK],
                    transfer_syntax=ts,
                    calling_aet=calling_aet,
                )
            )
    return report


__all__ = ["CharsetFile", "SeedReport", "charset_files", "seed"]
