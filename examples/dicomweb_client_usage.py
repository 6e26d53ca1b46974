#!/usr/bin/env python3
"""The gateway through the `dicomweb-client` package: search, retrieve, render, store.

    python examples/dicomweb_client_usage.py http://127.0.0.1:8080/dicomweb
    python examples/dicomweb_client_usage.py http://127.0.0.1:8080/dicomweb \
        --patient-id DEMO-0003 --out ./out

Walks one patient's data (``--patient-id``, else the first study found) through every
DICOMweb service dicomweb-client offers: QIDO-RS searches at the three levels, series
metadata, the series' instances (pydicom datasets), frames, a rendered frame and a
rendered instance (JPEG), then stores the first instance back with STOW-RS (the PACS
replaces an instance it already has; point it at a test system).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset


def first(item: dict[str, dict], keyword_tag: str) -> str:
    """The first value of a DICOM JSON attribute, as text."""
    values = item.get(keyword_tag, {}).get("Value", [""])
    v = values[0]
    return str(v.get("Alphabetic", v)) if isinstance(v, dict) else str(v)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("base_url", help="DICOMweb root, e.g. http://127.0.0.1:8080/dicomweb")
    parser.add_argument("--patient-id", help="work on this patient's first study")
    parser.add_argument("--out", type=Path, default=Path("dicomweb-client-out"))
    parser.add_argument("--no-store", action="store_true", help="skip the STOW-RS step")
    args = parser.parse_args(argv)
    client = DICOMwebClient(url=args.base_url.rstrip("/"), timeout=120)
    args.out.mkdir(parents=True, exist_ok=True)

    # QIDO-RS: studies, then the series of the study, then the instances of the series.
    filters = {"PatientID": args.patient_id} if args.patient_id else {}
    studies = client.search_for_studies(
        search_filters=filters, fields=["StudyDescription", "ModalitiesInStudy"], limit=10
    )
    print(f"search_for_studies: {len(studies)} studies")
    if not studies:
        return 1
    study = first(studies[0], "0020000D")
    print(f"  study {study}: {first(studies[0], '00100010')} {first(studies[0], '00081030')}")

    series_list = client.search_for_series(study_instance_uid=study, fields=["SeriesDescription"])
    print(f"search_for_series: {len(series_list)} series")
    series = first(series_list[0], "0020000E")
    instances = client.search_for_instances(
        study_instance_uid=study,
        series_instance_uid=series,
        fields=["InstanceNumber", "NumberOfFrames"],
    )
    print(f"search_for_instances: {len(instances)} instances in series {series}")

    # WADO-RS: metadata (no pixel data), then the instances themselves.
    metadata = client.retrieve_series_metadata(study, series)
    print(f"retrieve_series_metadata: {len(metadata)} instances")
    datasets: list[Dataset] = client.retrieve_series(study, series)
    print(f"retrieve_series: {len(datasets)} datasets")
    datasets.sort(key=lambda ds: int(ds.get("InstanceNumber", 0) or 0))
    for ds in datasets:
        ds.save_as(args.out / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    ds = datasets[0]
    sop = str(ds.SOPInstanceUID)
    frames_in_instance = int(ds.get("NumberOfFrames", 1) or 1)
    print(f"  wrote {len(datasets)} files to {args.out}; first {sop}, {ds.Rows}x{ds.Columns}")

    # Frames: the raw pixel bytes of up to two frames.
    numbers = [1, 2] if frames_in_instance > 1 else [1]
    frames = client.retrieve_instance_frames(
        study, series, sop, frame_numbers=numbers, media_types=("application/octet-stream",)
    )
    sizes = ", ".join(f"{len(f)} bytes" for f in frames)
    print(f"retrieve_instance_frames {numbers}: {len(frames)} frames ({sizes})")

    # Rendered: a consumer format, windowed and scaled by the server. An instance of one
    # frame renders to one image; a multi-frame one to multipart (one image per frame),
    # so for those ask for a frame.
    png = client.retrieve_instance_frames_rendered(
        study, series, sop, frame_numbers=[1], media_types=("image/png",)
    )
    (args.out / "frame1.png").write_bytes(png)
    print(f"retrieve_instance_frames_rendered [1]: PNG {len(png)} bytes")
    if frames_in_instance == 1:
        jpeg = client.retrieve_instance_rendered(
            study, series, sop, media_types=("image/jpeg",), params={"viewport": "256,256"}
        )
        (args.out / "instance.jpg").write_bytes(jpeg)
        print(f"retrieve_instance_rendered: JPEG {len(jpeg)} bytes")

    # STOW-RS: store the first instance (back).
    if not args.no_store:
        result = client.store_instances(datasets=[ds])
        stored = result.get("ReferencedSOPSequence", [])
        failed = result.get("FailedSOPSequence", [])
        print(f"store_instances: {len(stored)} stored, {len(failed)} failed")
        if failed:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
