"""Accept negotiation (DESIGN 6, QIDO-11, WADO-03, WADO-04, WADO-05)."""

from __future__ import annotations

import pytest

from gateway.services.errors import InvalidParameter, NotAcceptable
from gateway.web.accept import (
    QIDO_JSON,
    QIDO_XML,
    MediaRange,
    Offer,
    choose,
    choose_qido_representation,
    parse_accept,
    parse_accept_parameter,
    qido_representation_of,
)

CORNERSTONE = "multipart/related; type=application/octet-stream; transfer-syntax=*"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def dicom(ts: str) -> Offer:
    return Offer("multipart/related", {"type": "application/dicom", "transfer-syntax": ts})


def frames(ts: str) -> Offer:
    return Offer("multipart/related", {"type": "application/octet-stream", "transfer-syntax": ts})


# --- parsing ------------------------------------------------------------------------


def test_no_header_accepts_anything() -> None:
    assert parse_accept(None) == [MediaRange("*", "*")]
    assert parse_accept("  ") == [MediaRange("*", "*")]


def test_several_ranges_with_q_values() -> None:
    assert parse_accept("application/dicom+json, multipart/related;q=0.5 , */*;q=0.1") == [
        MediaRange("application", "dicom+json"),
        MediaRange("multipart", "related", {}, 0.5),
        MediaRange("*", "*", {}, 0.1),
    ]


def test_quoted_and_unquoted_parameters_are_the_same() -> None:
    quoted = parse_accept('multipart/related; type="application/octet-stream"; transfer-syntax=*')
    assert quoted == parse_accept(CORNERSTONE)
    assert quoted == [
        MediaRange(
            "multipart", "related", {"type": "application/octet-stream", "transfer-syntax": "*"}
        )
    ]


def test_names_and_types_are_case_insensitive() -> None:
    assert parse_accept('Multipart/Related; TYPE="application/dicom"; Q=0.7') == [
        MediaRange("multipart", "related", {"type": "application/dicom"}, 0.7)
    ]


def test_commas_and_semicolons_inside_quotes_do_not_split() -> None:
    (only,) = parse_accept('text/plain; x="a,b;c\\"d"')
    assert only.params == {"x": 'a,b;c"d'}


def test_parameters_after_the_weight_are_ignored() -> None:
    (only,) = parse_accept("application/dicom; q=0.3; level=1")
    assert only == MediaRange("application", "dicom", {}, 0.3)


@pytest.mark.parametrize(
    "bad",
    [
        "json",
        "*/json",
        "application/",
        "a b/c",
        "application/dicom; q=2",
        "application/dicom; q=x",
        "application/dicom; =1",
        "application/dicom; novalue",
    ],
)
def test_ill_formed_ranges_are_skipped(bad: str) -> None:
    assert parse_accept(f"{bad}, application/dicom+json") == [
        MediaRange("application", "dicom+json")
    ]
    assert parse_accept(bad) == []


def test_empty_list_elements_and_stray_semicolons_are_tolerated() -> None:
    assert parse_accept(",application/dicom+json;, ") == [MediaRange("application", "dicom+json")]


# --- choosing -------------------------------------------------------------------------


def test_cornerstone_frames_request_accepts_the_servers_syntax() -> None:
    offers = [frames(EXPLICIT_LE), frames(JPEG_BASELINE)]
    assert choose(parse_accept(CORNERSTONE), offers) == frames(EXPLICIT_LE)


def test_explicit_syntax_must_match() -> None:
    ranges = parse_accept(
        f"multipart/related; type=application/dicom; transfer-syntax={JPEG_BASELINE}"
    )
    assert choose(ranges, [dicom(EXPLICIT_LE)]) is None
    assert choose(ranges, [dicom(EXPLICIT_LE), dicom(JPEG_BASELINE)]) == dicom(JPEG_BASELINE)


def test_type_parameter_must_match() -> None:
    ranges = parse_accept('multipart/related; type="image/jpeg"')
    assert choose(ranges, [dicom(EXPLICIT_LE)]) is None


def test_q_values_pick_the_best() -> None:
    header = (
        f"multipart/related; type=application/dicom; transfer-syntax={EXPLICIT_LE}; q=0.5, "
        f"multipart/related; type=application/dicom; transfer-syntax={JPEG_BASELINE}; q=0.9"
    )
    assert choose(parse_accept(header), [dicom(EXPLICIT_LE), dicom(JPEG_BASELINE)]) == dicom(
        JPEG_BASELINE
    )


def test_q_zero_excludes() -> None:
    header = "application/dicom+json; q=0, */*"
    assert choose(parse_accept(header), [QIDO_JSON]) is None
    assert choose(parse_accept(header), [QIDO_JSON, QIDO_XML]) is QIDO_XML


def test_the_most_specific_range_decides_the_quality() -> None:
    header = (
        "multipart/related; q=0.2, "
        f"multipart/related; type=application/dicom; transfer-syntax={EXPLICIT_LE}"
    )
    offers = [frames(EXPLICIT_LE), dicom(EXPLICIT_LE)]
    assert choose(parse_accept(header), offers) == dicom(EXPLICIT_LE)


def test_ties_go_to_the_servers_first_offer() -> None:
    assert choose(parse_accept("*/*"), [dicom(JPEG_BASELINE), dicom(EXPLICIT_LE)]) == dicom(
        JPEG_BASELINE
    )


def test_a_charset_the_offer_does_not_state_is_not_held_against_it() -> None:
    assert choose(parse_accept("application/dicom+json; charset=utf-8"), [QIDO_JSON]) is QIDO_JSON


def test_offer_as_content_type() -> None:
    assert str(dicom(EXPLICIT_LE)) == (
        f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_LE}'
    )
    assert str(QIDO_JSON) == "application/dicom+json"


# --- QIDO-11 ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "representation"),
    [
        (None, "json"),
        ("", "json"),
        ("*/*", "json"),
        ("application/*", "json"),
        ("application/dicom+json", "json"),
        ("APPLICATION/DICOM+JSON", "json"),
        ("application/json", "json"),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "json"),
        ('multipart/related; type="application/dicom+xml"', "xml-multipart"),
        ("multipart/related; type=application/dicom+xml", "xml-multipart"),
        ("multipart/related", "xml-multipart"),
        ("multipart/*", "xml-multipart"),
        (
            'application/dicom+json;q=0.4, multipart/related; type="application/dicom+xml"',
            "xml-multipart",
        ),
        ("application/dicom+json;q=0, */*", "xml-multipart"),
    ],
)
def test_qido_representation(accept: str | None, representation: str) -> None:
    assert choose_qido_representation(accept) == representation


@pytest.mark.parametrize(
    "accept",
    [
        "text/html",
        "application/dicom",
        "multipart/related; type=application/dicom",
        "application/dicom+xml",
        "application/dicom+json;q=0",
        "garbage",
    ],
)
def test_qido_not_acceptable(accept: str) -> None:
    with pytest.raises(NotAcceptable) as info:
        choose_qido_representation(accept)
    assert info.value.status == 406


# --- WADO-05 accept query parameter ------------------------------------------------


def test_accept_parameter() -> None:
    assert parse_accept_parameter("application/dicom+json") == [
        MediaRange("application", "dicom+json")
    ]
    # A "+" form-decoded into a space is put back.
    assert parse_accept_parameter('multipart/related; type="application/dicom xml"') == [
        MediaRange("multipart", "related", {"type": "application/dicom+xml"})
    ]
    assert qido_representation_of(parse_accept_parameter("application/dicom json")) == "json"


def test_accept_parameter_allows_transfer_syntax_star() -> None:
    (only,) = parse_accept_parameter(CORNERSTONE)
    assert only.params["transfer-syntax"] == "*"


@pytest.mark.parametrize("value", ["*/*", "application/*", "nonsense", "", "application/dicom,*/*"])
def test_accept_parameter_refuses_wildcards_and_garbage(value: str) -> None:
    with pytest.raises(InvalidParameter) as info:
        parse_accept_parameter(value)
    assert info.value.parameter == "accept"
