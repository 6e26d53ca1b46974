"""``/metrics`` over real HTTP: after QIDO, WADO (cold, warm, transcoded, metadata)
and failing requests, the text parses and each counter moved by exactly what
those requests did. Each test starts its own gateway, so nothing else counts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from tests.peers import OrthancServer
from tests.peers.gateway import GatewayServer

DICOM = 'multipart/related; type="application/dicom"'
RLE = "1.2.840.10008.1.2.5"
FAST = {"connect_timeout": 1.0, "accept_timeout": 1.0, "dimse_timeout": 1.5}

SERIES = "/dicomweb/studies/{study}/series/{series}"

EXPECTED_FAMILIES = {
    "dicomweb_http_requests_total": "counter",
    "dicomweb_http_request_duration_seconds": "histogram",
    "dicomweb_dimse_operations_total": "counter",
    "dicomweb_dimse_operation_duration_seconds": "histogram",
    "dicomweb_pool_associations": "gauge",
    "dicomweb_cache_hits_total": "counter",
    "dicomweb_cache_misses_total": "counter",
    "dicomweb_cache_bytes": "gauge",
    "dicomweb_cache_evictions_total": "counter",
    "dicomweb_response_bytes_total": "counter",
}

# --------------------------------------------------------------------------- a parser

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}

Key = tuple[str, frozenset[tuple[str, str]]]


@dataclass
class Scrape:
    samples: dict[Key, float] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)

    def get(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def series(self, name: str) -> Iterator[tuple[dict[str, str], float]]:
        for (n, labels), value in self.samples.items():
            if n == name:
                yield dict(labels), value


def parse(text: str) -> Scrape:
    """Text format 0.0.4, strictly: every line is a HELP, a TYPE or a sample."""
    out = Scrape()
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            out.helps[name] = help_text
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in out.types, f"two TYPE lines for {name}"
            out.types[name] = kind
        else:
            m = _SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name, raw_labels, raw_value = m.groups()
            labels: dict[str, str] = {}
            if raw_labels:
                consumed = 0
                for pair in _PAIR.finditer(raw_labels):
                    assert pair.start() == consumed, f"bad labels in {line!r}"
                    consumed = pair.end()
                    value = re.sub(r"\\[\\\"n]", lambda e: _UNESCAPE[e.group(0)], pair.group(2))
                    labels[pair.group(1)] = value
                assert consumed == len(raw_labels), f"bad labels in {line!r}"
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in out.types or family in out.types, f"sample before its TYPE: {line}"
            key = (name, frozenset(labels.items()))
            assert key not in out.samples, f"repeated sample {line!r}"
            out.samples[key] = float(raw_value)
    return out


def scrape(gw: GatewayServer) -> Scrape:
    r = requests.get(gw.root + "/metrics", timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(r.text)


def check_histograms(s: Scrape) -> None:
    """Buckets cumulative (never decreasing with le), +Inf == _count, for every series."""
    for family, kind in s.types.items():
        if kind != "histogram":
            continue
        groups: dict[frozenset[tuple[str, str]], list[tuple[float, float]]] = {}
        for labels, value in s.series(family + "_bucket"):
            le = labels.pop("le")
            groups.setdefault(frozenset(labels.items()), []).append((float(le), value))
        for labels_key, buckets in groups.items():
            buckets.sort()
            counts = [v for _, v in buckets]
            assert counts == sorted(counts), (family, labels_key, buckets)
            assert buckets[-1][0] == float("inf")
            count = s.samples[(family + "_count", labels_key)]
            assert buckets[-1][1] == count, (family, labels_key)
            assert (family + "_sum", labels_key) in s.samples


def delta(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.get(name, **labels) - before.get(name, **labels)


# --------------------------------------------------------------------------- tests


@pytest.fixture
def ct(orthanc: OrthancServer) -> Any:
    return next(i for i in orthanc.manifest.instances if i.modality == "CT")


def test_counters_move_by_exactly_what_was_done(orthanc: OrthancServer, ct: Any) -> None:
    pacs = orthanc.pacs_config().name
    with GatewayServer(orthanc.pacs_config()) as gw:
        m0 = scrape(gw)
        assert {n: m0.types.get(n) for n in EXPECTED_FAMILIES} == EXPECTED_FAMILIES
        assert all(m0.helps[n] for n in EXPECTED_FAMILIES)

        qido = requests.get(gw.url + "/studies", timeout=30)
        assert qido.status_code == 200
        m1 = scrape(gw)
        studies = {"route": "/dicomweb/studies", "method": "GET"}
        assert delta(m0, m1, "dicomweb_http_requests_total", **studies, status="200") == 1
        assert delta(m0, m1, "dicomweb_http_request_duration_seconds_count", **studies) == 1
        assert delta(m0, m1, "dicomweb_response_bytes_total", route="/dicomweb/studies") == len(
            qido.content
        )
        find_ok = {"pacs": pacs, "operation": "C-FIND", "status": "success"}
        assert delta(m0, m1, "dicomweb_dimse_operations_total", **find_ok) == 1
        assert (
            delta(
                m0,
                m1,
                "dicomweb_dimse_operation_duration_seconds_count",
                pacs=pacs,
                operation="C-FIND",
            )
            == 1
        )
        # The first scrape is counted once it has been answered, not in itself.
        assert (
            m0.get("dicomweb_http_requests_total", route="/metrics", method="GET", status="200")
            == 0
        )
        assert (
            m1.get("dicomweb_http_requests_total", route="/metrics", method="GET", status="200")
            == 1
        )
        assert m1.get("dicomweb_pool_associations", pacs=pacs, state="open") >= 1
        assert m1.get("dicomweb_pool_associations", pacs=pacs, state="in_use") == 0

        series_url = f"{gw.url}/studies/{ct.study_uid}/series/{ct.series_uid}"
        cold = requests.get(series_url, headers={"Accept": DICOM}, timeout=60)
        assert cold.status_code == 200
        m2 = scrape(gw)
        assert delta(m1, m2, "dicomweb_cache_misses_total") == 1
        assert delta(m1, m2, "dicomweb_cache_hits_total") == 0
        # SOPClassesInStudy (STUDY level), then the series' instance UIDs (IMAGE level)
        assert delta(m1, m2, "dicomweb_dimse_operations_total", **find_ok) == 2
        get_ok = {"pacs": pacs, "operation": "C-GET", "status": "success"}
        assert delta(m1, m2, "dicomweb_dimse_operations_total", **get_ok) == 1
        assert delta(m1, m2, "dicomweb_response_bytes_total", route=SERIES) == len(cold.content)
        assert (
            delta(m1, m2, "dicomweb_http_requests_total", route=SERIES, method="GET", status="200")
            == 1
        )
        cache = gw.app.state.retriever.cache
        assert m2.get("dicomweb_cache_bytes") == cache.stats.bytes > 0

        warm = requests.get(series_url, headers={"Accept": DICOM}, timeout=60)
        assert warm.status_code == 200
        transcoded = requests.get(
            series_url, headers={"Accept": f"{DICOM}; transfer-syntax={RLE}"}, timeout=60
        )
        assert transcoded.status_code == 200
        metadata = requests.get(series_url + "/metadata", timeout=60)
        assert metadata.status_code == 200
        m3 = scrape(gw)
        # Three requests answered from the cache: three hits (the transcoded one looks
        # twice, and counts once), no miss, nothing asked of the PACS.
        assert delta(m2, m3, "dicomweb_cache_hits_total") == 3
        assert delta(m2, m3, "dicomweb_cache_misses_total") == 0
        for op in ("C-FIND", "C-GET"):
            assert sum(
                v
                for labels, v in m3.series("dicomweb_dimse_operations_total")
                if labels["operation"] == op
            ) == sum(
                v
                for labels, v in m2.series("dicomweb_dimse_operations_total")
                if labels["operation"] == op
            )
        assert delta(m2, m3, "dicomweb_response_bytes_total", route=SERIES) == len(
            warm.content
        ) + len(transcoded.content)

        assert requests.get(gw.root + "/no/such/path", timeout=30).status_code == 404
        aets = requests.get(f"{gw.root}/aets/{orthanc.aet}/dicomweb/studies", timeout=30)
        assert aets.status_code == 200
        m4 = scrape(gw)
        assert (
            delta(
                m3,
                m4,
                "dicomweb_http_requests_total",
                route="unmatched",
                method="GET",
                status="404",
            )
            == 1
        )
        aets_route = "/aets/{aet}/dicomweb/studies"
        assert (
            delta(
                m3, m4, "dicomweb_http_requests_total", route=aets_route, method="GET", status="200"
            )
            == 1
        )
        routes = {labels["route"] for labels, _ in m4.series("dicomweb_http_requests_total")}
        assert not any(ct.study_uid in r or orthanc.aet in r for r in routes), routes
        for s in (m1, m2, m3, m4):
            check_histograms(s)
        # The duration sum grew by roughly what the requests took (seconds, not ms).
        grown = delta(
            m0, m4, "dicomweb_http_request_duration_seconds_sum", route=SERIES, method="GET"
        )
        assert 0 < grown < 60


def test_failures_are_counted_by_outcome(closed_port: Any, silent_peer: Any) -> None:
    with GatewayServer((closed_port.pacs_config(), silent_peer.pacs_config()), **FAST) as gw:
        m0 = scrape(gw)
        refused = requests.get(gw.url + "/studies", timeout=30)
        assert refused.status_code == 502
        silent = requests.get(f"{gw.root}/aets/{silent_peer.aet}/dicomweb/studies", timeout=30)
        assert silent.status_code == 504
        m1 = scrape(gw)
    ops = "dicomweb_dimse_operations_total"
    closed, quiet = closed_port.pacs_config().name, silent_peer.pacs_config().name
    assert delta(m0, m1, ops, pacs=closed, operation="C-FIND", status="error") == 1
    assert delta(m0, m1, ops, pacs=quiet, operation="C-FIND", status="timeout") == 1
    assert sum(v for _, v in m1.series(ops)) - sum(v for _, v in m0.series(ops)) == 2
    assert (
        delta(
            m0,
            m1,
            "dicomweb_http_requests_total",
            route="/dicomweb/studies",
            method="GET",
            status="502",
        )
        == 1
    )
    assert (
        delta(
            m0,
            m1,
            "dicomweb_http_requests_total",
            route="/aets/{aet}/dicomweb/studies",
            method="GET",
            status="504",
        )
        == 1
    )
    assert m1.get("dicomweb_pool_associations", pacs=closed, state="open") == 0
    check_histograms(m1)
