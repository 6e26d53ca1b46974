"""A real OHIF viewer, in a real headless Chromium, shows a CT slice served by the gateway.

The prebuilt OHIF 3.13 (npm ``@ohif/app``) is served from its own origin by a small
static server; its only data source is the gateway, on another origin, so the viewer
depends on the gateway's CORS too. The gateway runs in process in front of a PACS
holding the demo studies. A Node script drives Debian's Chromium through
playwright-core, opens ``/viewer?StudyInstanceUIDs=<CT study>``, and waits until a
cornerstone viewport canvas holds an image. The test then checks, independently:

* the viewport screenshot is not blank (grey-level spread of its central region);
* the viewport overlay names the CT series and its image count (it is the demo CT);
* the gateway itself answered frame (or instance) requests of that series with 200;
* the browser logged no error about a gateway URL and no uncaught exception.

Screenshots and the browser log are kept in ``$TEST_ARTIFACTS`` (default
``tests/browser/artifacts``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from gateway.config import PacsConfig
from gateway.demo.sample import CT_PATIENT
from tests.browser.ohif_support import (
    OHIF_VERSION,
    BrowserTools,
    GatewayRequest,
    RequestLog,
    ViewerServer,
    app_config,
    describe_requests,
    wait_for,
)
from tests.peers.gateway import GatewayServer

pytestmark = pytest.mark.browser

#: Until the first image: 7-20 s measured on 2 cores (the latter under heavy load);
#: OHIF's first load is mostly parsing ~40 MB of JavaScript, so leave a wide margin.
RENDER_TIMEOUT_S = 150
#: Grey-level standard deviation (0-255) the central part of the viewport must exceed.
#: A blank/black or uniformly grey viewport is ~0; the demo CT slice (air, soft tissue,
#: lungs, bone in a 40/400 window) is ~60 on the whole canvas.
MIN_STDDEV = 20.0
#: Slices of the demo CT when the demo PACS is used (the README's demo has 40).
DEMO_CT_SLICES = 40
#: SeriesDescription of the demo CT series (gateway.demo.sample), shown in the overlay.
CT_SERIES_DESCRIPTION = "AXIAL 2.5mm SOFT TISSUE"


@dataclass(frozen=True)
class ViewerPacs:
    kind: str
    config: PacsConfig
    study_uid: str
    series_uid: str
    series_description: str
    slices: int


def _ct_of(manifest: Any) -> tuple[str, str, int]:
    study = manifest.study_of_patient(CT_PATIENT.name)
    ct = [i for i in manifest.instances if i.study_uid == study and i.modality == "CT"]
    return study, ct[0].series_uid, len(ct)


@pytest.fixture(
    params=[
        pytest.param("demo", id="demo-pacs"),
        pytest.param("orthanc", id="orthanc", marks=pytest.mark.orthanc),
    ]
)
def viewer_pacs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ViewerPacs]:
    """The demo CT study in a PACS: the README's demo PACS (pynetdicom qrscp) or Orthanc."""
    if request.param == "demo":
        from gateway.demo.pacs import start_demo_pacs

        pacs = start_demo_pacs(tmp_path / "demo-pacs", ct_slices=DEMO_CT_SLICES)
        try:
            study, series, n = _ct_of(pacs.manifest)
            config = PacsConfig(name="demo", aet=pacs.aet, host=pacs.host, port=pacs.port)
            yield ViewerPacs("demo", config, study, series, CT_SERIES_DESCRIPTION, n)
        finally:
            pacs.stop()
    else:
        orthanc = request.getfixturevalue("orthanc")
        study, series, n = _ct_of(orthanc.manifest)
        yield ViewerPacs("orthanc", orthanc.pacs_config(), study, series, CT_SERIES_DESCRIPTION, n)


def _run_browser(tools: BrowserTools, args: list[str], timeout: float) -> tuple[int, str, str]:
    """Run the Node driver in its own process group, so a timeout kills Chromium too."""
    proc = subprocess.Popen(
        [tools.node, str(tools.script), *args],
        cwd=tools.script.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        err += f"\n[killed after {timeout} s]"
    return proc.returncode, out, err


def _console_tail(result: dict[str, Any], lines: int = 40) -> str:
    entries = result.get("console", [])[-lines:]
    text = "\n".join(
        f"  {e['t'] / 1000:7.2f}s {e['type']:<8} {e['text'][:400]}".rstrip() for e in entries
    )
    return text or "  (empty)"


def _gateway_complaints(result: dict[str, Any], gateway_url: str) -> list[str]:
    """Browser-side errors about the gateway: failed loads, CORS refusals, crashes."""
    out = []
    for e in result.get("consoleErrors", []):
        if gateway_url in e["text"] or gateway_url in e["url"]:
            out.append(f"console.error: {e['text'][:500]} ({e['url'][:200]})")
    for e in result.get("pageErrors", []):
        out.append(f"uncaught: {e['text'][:800]}")
    for e in result.get("failedRequests", []):
        # ERR_ABORTED is OHIF cancelling a prefetch it no longer needs: not a failure.
        if gateway_url in e["url"] and "ERR_ABORTED" not in e["error"]:
            out.append(f"request failed: {e['method']} {e['url'][:200]}: {e['error']}")
    return out


def _central_stddev(png: Path) -> tuple[float, float, tuple[int, int]]:
    """Grey-level std and mean of the middle 60% of the image (overlay text stays out)."""
    grey = np.asarray(Image.open(png).convert("L"), dtype=np.float64)
    h, w = grey.shape
    core = grey[int(h * 0.2) : int(h * 0.8), int(w * 0.2) : int(w * 0.8)]
    return float(core.std()), float(core.mean()), (w, h)


def test_ohif_renders_ct_slice(
    viewer_pacs: ViewerPacs,
    browser_tools: BrowserTools,
    ohif_build: Path,
    artifacts_dir: Path,
) -> None:
    vp = viewer_pacs
    started = time.monotonic()
    viewer = ViewerServer(ohif_build, "")
    gateway = GatewayServer(vp.config, cors_origins=(viewer.origin,))
    log = RequestLog(gateway.app)
    # GatewayServer hands self.app to Hypercorn when it starts, so the wrapper is what
    # serves; it sits outside the gateway's own middleware and sees every request.
    gateway.app = log  # type: ignore[assignment]
    viewer.config_js = app_config(gateway.url, gateway.root + "/wado").encode()

    stem = f"ohif-{OHIF_VERSION}-{vp.kind}"
    shot, page_shot = artifacts_dir / f"{stem}-viewport.png", artifacts_dir / f"{stem}-page.png"
    result_json = artifacts_dir / f"{stem}-browser.json"
    for stale in (shot, page_shot, result_json):
        stale.unlink(missing_ok=True)
    url = f"{viewer.origin}/viewer?StudyInstanceUIDs={vp.study_uid}"

    with viewer, gateway:
        code, out, err = _run_browser(
            browser_tools,
            [
                "--url", url,
                "--screenshot", str(shot),
                "--page-screenshot", str(page_shot),
                "--chromium", browser_tools.chromium,
                "--timeout-ms", str(RENDER_TIMEOUT_S * 1000),
            ],
            timeout=RENDER_TIMEOUT_S + 90,
        )  # fmt: skip
        frames_re = re.compile(
            rf"^{re.escape(gateway.settings.base_path)}/studies/{re.escape(vp.study_uid)}"
            rf"/series/{re.escape(vp.series_uid)}/instances/[0-9.]+(/frames/[0-9,]+)?$"
        )

        def served_pixels() -> list[GatewayRequest]:
            return [
                r
                for r in log.snapshot()
                if r.method == "GET" and r.status == 200 and frames_re.match(r.path)
            ]

        wait_for(lambda: bool(served_pixels()), timeout=5)
        requests_seen = log.snapshot()
        pixels = served_pixels()

    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    if code != 0 or line is None:
        pytest.fail(
            f"the browser driver failed (exit {code}):\n{out[-3000:]}\n{err[-3000:]}",
            pytrace=False,
        )
    result: dict[str, Any] = json.loads(line[len("RESULT ") :])
    result_json.write_text(json.dumps(result, indent=1))
    total = time.monotonic() - started
    print(
        f"\nOHIF {OHIF_VERSION} / {vp.kind}: {result['phase']} after {result['elapsedMs']} ms "
        f"(milestones {result['milestones']}); test {total:.1f} s\n"
        f"  viewport screenshot: {shot}\n  page screenshot: {page_shot}\n"
        f"  browser log: {result_json}"
    )

    def context() -> str:
        return (
            f"\nviewer: {url}\ngateway: {gateway.url}\n"
            f"phase: {result['phase']}; milestones (ms): {result['milestones']}\n"
            f"canvases: {result.get('canvases')}\nbrowser error: {result.get('error')}\n"
            f"page text: {result.get('bodyText', '')[:600]!r}\n"
            f"browser console (tail):\n{_console_tail(result)}\n"
            f"uncaught: {result.get('pageErrors')}\n"
            f"HTTP errors seen by the browser: {result.get('httpErrors')}\n"
            f"gateway requests:\n{describe_requests(requests_seen)}\n"
            f"screenshots: {shot} {page_shot}\nfull browser log: {result_json}"
        )

    assert result["rendered"], "OHIF did not render an image in a viewport" + context()

    assert shot.is_file(), "no viewport screenshot was written" + context()
    std, mean, size = _central_stddev(shot)
    assert std > MIN_STDDEV, (
        f"the viewport screenshot looks blank: grey std {std:.1f} <= {MIN_STDDEV} "
        f"(mean {mean:.1f}, {size[0]}x{size[1]} px)" + context()
    )
    overlay = result.get("viewportText", "")
    assert vp.series_description in overlay and f"/{vp.slices})" in overlay, (
        f"the viewport overlay should name the CT series {vp.series_description!r} and "
        f"its {vp.slices} images ('I:1 (1/{vp.slices})'): {overlay!r}" + context()
    )
    assert pixels, (
        f"the gateway answered no frame/instance request of the CT series {vp.series_uid} "
        "with 200" + context()
    )
    assert any(r.origin == viewer.origin for r in pixels), (
        f"no frame request reached the gateway with Origin {viewer.origin}: the viewer "
        "should be fetching cross-origin" + context()
    )
    complaints = _gateway_complaints(result, gateway.root)
    assert not complaints, "the browser reported errors about the gateway:\n  " + (
        "\n  ".join(complaints) + context()
    )
    print(
        f"  rendered canvas {result['best']}; screenshot centre grey std {std:.1f}; "
        f"gateway served {len(pixels)} frame/instance requests of the CT series"
    )
