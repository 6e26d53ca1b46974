#!/usr/bin/env python3
"""A DICOMweb client with plain requests + requests-toolbelt: STOW, QIDO, WADO-RS.

    python examples/requests_client.py http://127.0.0.1:8080/dicomweb
    python examples/requests_client.py http://127.0.0.1:8080/dicomweb --upload ./folder --out ./out
    python examples/requests_client.py http://127.0.0.1:8080/dicomweb --patient 'Doe*' --study 1.2.3

1. ``--upload FOLDER``: every DICOM file under FOLDER in one STOW-RS request
   (multipart/related, streamed from disk by MultipartEncoder).
2. QIDO-RS: the studies (optionally of ``--patient``, wildcards allowed), one line each.
3. WADO-RS: one study (``--study``, else the first found) as multipart/related; the
   parts are split with requests_toolbelt's MultipartDecoder and written to ``--out``
   as ``<SOPInstanceUID>.dcm``.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import requests
from requests_toolbelt import MultipartEncoder
from requests_toolbelt.multipart.decoder import MultipartDecoder

DICOM_MULTIPART = 'multipart/related; type="application/dicom"'


def value(item: dict[str, Any], tag: str, default: Any = "") -> Any:
    """The first value of a DICOM JSON attribute (PS3.18 F.2)."""
    values = item.get(tag, {}).get("Value", [])
    if not values:
        return default
    first = values[0]
    if isinstance(first, dict) and "Alphabetic" in first:  # person name
        return first["Alphabetic"]
    return first


def dicom_files(folder: Path) -> list[Path]:
    """Files with the DICM marker at byte 128 (PS3.10 7.1)."""
    out = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        with path.open("rb") as f:
            f.seek(128)
            if f.read(4) == b"DICM":
                out.append(path)
    return out


def stow(session: requests.Session, base_url: str, files: list[Path]) -> tuple[int, int, int]:
    """One STOW-RS request; returns (HTTP status, stored, failed)."""
    with ExitStack() as stack:
        fields = [
            (f"file{i}", (p.name, stack.enter_context(p.open("rb")), "application/dicom"))
            for i, p in enumerate(files)
        ]
        encoder = MultipartEncoder(fields=fields)
        # Same framing as multipart/form-data; STOW-RS wants multipart/related + type=.
        headers = {
            "Content-Type": f"{DICOM_MULTIPART}; boundary={encoder.boundary_value}",
            "Accept": "application/dicom+json",
        }
        response = session.post(f"{base_url}/studies", data=encoder, headers=headers)
    body = response.json() if response.content else {}
    stored = len(body.get("00081199", {}).get("Value", []))
    failed = len(body.get("00081198", {}).get("Value", []))
    return response.status_code, stored, failed


def search_studies(
    session: requests.Session, base_url: str, patient: str | None
) -> list[dict[str, Any]]:
    params = {
        "includefield": "StudyDescription,ModalitiesInStudy,NumberOfStudyRelatedInstances",
        "limit": "100",
    }
    if patient:
        params["PatientName"] = patient
    response = session.get(
        f"{base_url}/studies", params=params, headers={"Accept": "application/dicom+json"}
    )
    response.raise_for_status()
    return [] if response.status_code == 204 else list(response.json())


def retrieve_study(session: requests.Session, base_url: str, study: str, out: Path) -> list[Path]:
    """WADO-RS retrieve of a whole study, one file per multipart part."""
    response = session.get(
        f"{base_url}/studies/{study}",
        headers={"Accept": f"{DICOM_MULTIPART}; transfer-syntax=*"},
    )
    response.raise_for_status()
    # MultipartDecoder holds the whole response; fine for a study of an example's size.
    decoder = MultipartDecoder(response.content, response.headers["Content-Type"])
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for index, part in enumerate(decoder.parts):
        content_type = part.headers.get(b"Content-Type", b"").decode()
        if not content_type.startswith("application/dicom"):
            raise ValueError(f"part {index}: unexpected Content-Type {content_type!r}")
        path = out / f"{sop_instance_uid(part.content) or f'part{index:04d}'}.dcm"
        path.write_bytes(part.content)
        written.append(path)
    return written


def sop_instance_uid(part10: bytes) -> str | None:
    """The SOP Instance UID of a Part 10 file, read with pydicom when it is installed."""
    try:
        from io import BytesIO

        import pydicom
    except ImportError:
        return None
    ds = pydicom.dcmread(BytesIO(part10), stop_before_pixels=True)
    return str(ds.SOPInstanceUID)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("base_url", help="DICOMweb root, e.g. http://127.0.0.1:8080/dicomweb")
    parser.add_argument("--upload", type=Path, metavar="FOLDER", help="STOW these files first")
    parser.add_argument("--patient", help="QIDO PatientName filter (wildcards * and ?)")
    parser.add_argument("--study", help="study to retrieve (default: the first one found)")
    parser.add_argument("--out", type=Path, default=Path("retrieved"), help="where to write")
    args = parser.parse_args(argv)
    base_url = args.base_url.rstrip("/")

    with requests.Session() as session:
        if args.upload:
            files = dicom_files(args.upload)
            if not files:
                print(f"no DICOM files under {args.upload}", file=sys.stderr)
                return 1
            status, stored, failed = stow(session, base_url, files)
            print(f"STOW-RS: HTTP {status}, {stored} of {len(files)} stored, {failed} failed")
            if failed or status >= 400:
                return 1

        studies = search_studies(session, base_url, args.patient)
        print(f"QIDO-RS: {len(studies)} studies")
        for s in studies:
            print(
                f"  {value(s, '0020000D')}  {value(s, '00100010')!s:24}  {value(s, '00080020')}"
                f"  {'/'.join(map(str, s.get('00080061', {}).get('Value', []))):5}"
                f"  {value(s, '00081030')}"
            )
        study = args.study or (value(studies[0], "0020000D") if studies else None)
        if not study:
            print("nothing to retrieve")
            return 0

        written = retrieve_study(session, base_url, study, args.out)
        print(f"WADO-RS: study {study}: wrote {len(written)} instances to {args.out}")
        for path in written:
            print(f"  {path.name}  {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
