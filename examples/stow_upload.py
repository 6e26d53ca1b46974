#!/usr/bin/env python3
"""Upload a folder of DICOM files to a DICOMweb server with STOW-RS.

The body is streamed with requests-toolbelt's MultipartEncoder: files are read
as the socket takes them, never all into memory, so a folder of gigabytes
uploads with flat memory.  Works against the gateway or any STOW-RS server.

    python examples/stow_upload.py http://127.0.0.1:8080/dicomweb ./my-dicom-folder
    python examples/stow_upload.py http://127.0.0.1:8080/dicomweb ./folder --study 1.2.3 --batch 200
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import ExitStack
from pathlib import Path

import requests
from requests_toolbelt import MultipartEncoder


def dicom_files(folder: Path) -> list[Path]:
    """Files with the DICM marker at byte 128 (PS3.10 7.1), in name order."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        with path.open("rb") as f:
            f.seek(128)
            if f.read(4) == b"DICM":
                found.append(path)
    return found


def stow(base_url: str, files: list[Path], study: str | None = None) -> requests.Response:
    """One STOW-RS request with one part per file."""
    with ExitStack() as stack:
        fields = [
            (f"file{i}", (path.name, stack.enter_context(path.open("rb")), "application/dicom"))
            for i, path in enumerate(files)
        ]
        encoder = MultipartEncoder(fields=fields)
        # MultipartEncoder writes multipart/form-data; STOW-RS wants multipart/related
        # (PS3.18 10.5.1.2): same framing, different media type and a type= parameter.
        content_type = 'multipart/related; type="application/dicom"; boundary='
        headers = {
            "Content-Type": content_type + encoder.boundary_value,
            "Accept": "application/dicom+json",
        }
        url = f"{base_url.rstrip('/')}/studies" + (f"/{study}" if study else "")
        return requests.post(url, data=encoder, headers=headers, timeout=600)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url", help="DICOMweb root, e.g. http://127.0.0.1:8080/dicomweb")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--study", help="POST to /studies/{study}: other studies are refused")
    parser.add_argument("--batch", type=int, default=500, help="files per request")
    args = parser.parse_args(argv)
    files = dicom_files(args.folder)
    if not files:
        print(f"no DICOM files under {args.folder}", file=sys.stderr)
        return 1
    failed = 0
    for start in range(0, len(files), args.batch):
        batch = files[start : start + args.batch]
        response = stow(args.base_url, batch, args.study)
        body = response.json() if response.content else {}
        stored = len(body.get("00081199", {}).get("Value", []))
        failures = body.get("00081198", {}).get("Value", [])
        failed += len(failures) if failures else (len(batch) if response.status_code >= 400 else 0)
        print(f"{response.status_code}: {stored} of {len(batch)} stored")
        for item in failures:
            uid = item.get("00081155", {}).get("Value", ["?"])[0]
            reason = item.get("00081197", {}).get("Value", [0])[0]
            print(f"  failed {uid}: reason 0x{reason:04X}")
        if response.status_code >= 500:
            print(json.dumps(body, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
