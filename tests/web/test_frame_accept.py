"""Frame media type negotiation (WADO-07): aliases, wildcards, mismatched pairs."""

from __future__ import annotations

import pytest

from gateway.services.errors import NotAcceptable
from gateway.web.frame_accept import FrameRepresentation, negotiate_frames

J2K = "1.2.840.10008.1.2.4.90"
JLS = "1.2.840.10008.1.2.4.80"
RLE = "1.2.840.10008.1.2.5"
ELE = "1.2.840.10008.1.2.1"


@pytest.mark.parametrize(
    ("accept", "source", "want"),
    [
        (None, J2K, FrameRepresentation("application/octet-stream", ELE)),
        (
            'multipart/related; type="*/*"',
            J2K,
            FrameRepresentation("application/octet-stream", ELE),
        ),
        (
            "multipart/related; type=application/octet-stream; transfer-syntax=*",
            J2K,
            FrameRepresentation("application/octet-stream", J2K),
        ),
        ('multipart/related; type="image/x-jls"', ELE, FrameRepresentation("image/jls", JLS)),
        (
            'multipart/related; type="image/x-dicom-rle"',
            RLE,
            FrameRepresentation("image/dicom-rle", RLE),
        ),
        (
            f'multipart/related; type="image/jp2"; transfer-syntax={J2K}',
            ELE,
            FrameRepresentation("image/jp2", J2K),
        ),
        (
            f'multipart/related; type="image/jpeg"; transfer-syntax={J2K}, '
            'multipart/related; type="application/octet-stream"; q=0.5',
            J2K,
            FrameRepresentation("application/octet-stream", ELE),
        ),
    ],
)
def test_negotiated(accept: str | None, source: str, want: FrameRepresentation) -> None:
    assert negotiate_frames(accept, None, source) == want


@pytest.mark.parametrize(
    "accept",
    [
        f'multipart/related; type="image/jpeg"; transfer-syntax={J2K}',
        f'multipart/related; type="image/png"; transfer-syntax={ELE}',
        'multipart/related; type="application/dicom"',
        'multipart/related; type="image/jpx"',
        "text/html",
    ],
)
def test_not_acceptable(accept: str) -> None:
    with pytest.raises(NotAcceptable):
        negotiate_frames(accept, None, J2K)
