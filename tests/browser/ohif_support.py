"""What the OHIF browser test needs besides the gateway: the viewer, a web server, a driver.

* :func:`ohif_dist` fetches the prebuilt OHIF viewer (the npm package ``@ohif/app``,
  whose tarball ships ``package/dist``) with ``npm pack`` -- never ``npm install``, whose
  dependency tree is huge -- checks the tarball's sha512 against the pinned
  :data:`OHIF_INTEGRITY`, and extracts ``dist`` into a git-ignored cache directory that
  later runs reuse.
* :func:`ensure_driver` runs ``npm ci`` in this directory when ``node_modules`` lacks the
  ``playwright-core`` pinned in ``package-lock.json`` (playwright-core downloads no
  browser: the test drives Debian's ``/usr/bin/chromium``).
* :class:`ViewerServer` serves the dist on a free loopback port like a production OHIF
  deployment would (SPA fallback to ``index.html``, right MIME types), with
  ``/app-config.js`` replaced by one whose only data source is the gateway (on another
  origin, so the gateway's CORS is part of what is tested).
* :class:`RequestLog` wraps the gateway's ASGI app and records every request it answers,
  so the test can prove the pixels came through the gateway.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent

#: The OHIF viewer release under test and the sha512 of its npm tarball exactly as the
#: registry publishes it (``npm view @ohif/app@3.13.2 dist.integrity``), from
#: ohif-lock.json. A different tarball (a republished version, a tampering mirror) fails
#: the test instead of running it.
_LOCK = json.loads((HERE / "ohif-lock.json").read_text())
OHIF_PACKAGE: str = _LOCK["package"]
OHIF_VERSION: str = _LOCK["version"]
OHIF_INTEGRITY: str = _LOCK["integrity"]
#: ``dist/ort`` is onnxruntime-web for OHIF's AI segmentation tools (136 of the 204 MB);
#: nothing loads it unless such a tool is used, so it is not extracted.
_SKIPPED_DIST_DIRS = ("ort/",)

CACHE_DIR = Path(os.environ.get("OHIF_TEST_CACHE", HERE / ".cache"))

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


@dataclass(frozen=True)
class BrowserTools:
    """What runs the browser: Node, the Chromium binary, the driver script."""

    node: str
    chromium: str
    driver_version: str
    script: Path


class HarnessError(RuntimeError):
    """The browser test's tooling (npm, the OHIF download) failed: not a gateway bug."""


def _run(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"{' '.join(cmd)} took more than {timeout} s") from exc
    if proc.returncode != 0:
        raise HarnessError(
            f"{' '.join(cmd)} exited with {proc.returncode}:\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def sri_sha512(path: Path) -> str:
    """The Subresource-Integrity form npm uses: ``sha512-<base64 digest>``."""
    h = hashlib.sha512()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha512-" + base64.b64encode(h.digest()).decode()


def ohif_dist(cache_dir: Path = CACHE_DIR) -> Path:
    """The extracted ``dist`` of ``@ohif/app@OHIF_VERSION``; downloaded on first use.

    The finished directory carries a ``.integrity`` stamp written last, so an
    interrupted extraction is never mistaken for a complete one.
    """
    target = cache_dir / f"ohif-{OHIF_VERSION}"
    stamp = target / ".integrity"
    if stamp.is_file() and stamp.read_text().strip() == OHIF_INTEGRITY:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ohif-pack-", dir=cache_dir) as tmp_name:
        tmp = Path(tmp_name)
        # npm pack checks the download against the registry's dist.integrity itself;
        # we check again against our pin so the registry cannot change what we test.
        proc = _run(
            [
                "npm",
                "pack",
                f"{OHIF_PACKAGE}@{OHIF_VERSION}",
                "--json",
                "--prefer-offline",  # a pinned version: npm's cache needs no revalidation
                "--pack-destination",
                str(tmp),
            ],
            cwd=tmp,
            timeout=600,
        )
        try:
            info = json.loads(proc.stdout)[0]
            tgz = tmp / info["filename"]
        except (ValueError, LookupError, TypeError) as exc:
            raise HarnessError(f"unexpected `npm pack --json` output: {proc.stdout[:500]}") from exc
        actual = sri_sha512(tgz)
        if actual != OHIF_INTEGRITY:
            raise HarnessError(
                f"{tgz.name}: sha512 {actual} does not match the pinned {OHIF_INTEGRITY}"
            )
        staging = tmp / "dist"
        prefix = "package/dist/"
        # Streamed ("r|gz"): one pass over the gzip stream, no seeking back.
        with tarfile.open(tgz, "r|gz") as tar:
            for member in tar:
                rel = member.name[len(prefix) :] if member.name.startswith(prefix) else ""
                if not rel or rel.startswith(_SKIPPED_DIST_DIRS):
                    continue
                if not (member.isfile() or member.isdir()):
                    continue
                member.name = rel
                tar.extract(member, staging, filter="data")
        if not (staging / "index.html").is_file():
            raise HarnessError(f"{tgz.name} has no package/dist/index.html")
        (staging / ".integrity").write_text(OHIF_INTEGRITY + "\n")
        shutil.rmtree(target, ignore_errors=True)
        try:
            staging.rename(target)
        except OSError:
            # A concurrent run finished first; use its copy if it is complete.
            if not (stamp.is_file() and stamp.read_text().strip() == OHIF_INTEGRITY):
                raise
    return target


def pinned_driver_version() -> str:
    lock = json.loads((HERE / "package-lock.json").read_text())
    return str(lock["packages"]["node_modules/playwright-core"]["version"])


def ensure_driver() -> str:
    """``npm ci`` when node_modules lacks the pinned playwright-core; returns its version."""
    want = pinned_driver_version()
    installed = HERE / "node_modules" / "playwright-core" / "package.json"
    if installed.is_file() and json.loads(installed.read_text()).get("version") == want:
        return want
    _run(
        ["npm", "ci", "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts"],
        cwd=HERE,
        timeout=600,
    )
    if json.loads(installed.read_text()).get("version") != want:
        raise HarnessError(f"npm ci did not install playwright-core {want}")
    return want


# --------------------------------------------------------------------------- OHIF config


def app_config(dicomweb_url: str, wado_uri_url: str, **overrides: Any) -> str:
    """OHIF's ``window.config`` with one DICOMweb data source: the gateway.

    Based on the ``app-config.js`` shipped in the dist (OHIF's secure default), with the
    data source pointed at the gateway and nothing that opens over the viewport in a
    fresh headless profile: no investigational-use dialog, no onboarding tour, no
    CPU-rendering modal (shown if Chromium had no WebGL; here it has SwiftShader's).
    ``overrides`` replace top-level keys.
    """
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "dicomweb",
        "configuration": {
            "friendlyName": "dicomweb-gateway",
            "name": "gateway",
            "qidoRoot": dicomweb_url,
            "wadoRoot": dicomweb_url,
            "wadoUriRoot": wado_uri_url,
            "qidoSupportsIncludeField": True,
            "supportsReject": False,
            "dicomUploadEnabled": False,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False,
            "supportsWildcard": True,
            "staticWado": False,
            "singlepart": "bulkdata,video",
            "bulkDataURI": {"enabled": True},
            "omitQuotationForMultipartRequest": True,
        },
    }
    config = {
        "name": "dicomweb-gateway browser test",
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        # OHIF's onboarding tour would open a popover over the viewport on every fresh
        # profile; an empty tour list (Global scope beats the extension's default) stops it.
        "customizationService": [{"ohif.tours": {"$set": []}}],
        "showStudyList": True,
        "maxNumberOfWebWorkers": 2,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "investigationalUseDialog": {"option": "never"},
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 10},
        "defaultDataSourceName": "dicomweb",
        "dataSources": [source],
        **overrides,
    }
    return "window.config = " + json.dumps(config, indent=2) + ";\n"


# --------------------------------------------------------------------------- web server

_MIME = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".jpg": "image/jpeg",
    ".gif": "image/gif",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".txt": "text/plain; charset=utf-8",
    ".xml": "application/xml",
}


@dataclass(frozen=True)
class Served:
    method: str
    path: str
    status: int


class ViewerServer:
    """The OHIF dist on ``http://127.0.0.1:{port}`` in a thread, as a static host would
    serve it; ``log`` lists what the browser fetched from it.

    ``config_js`` is served as ``/app-config.js`` (it may be set after construction: the
    port, hence the origin the gateway must allow, is known as soon as this is built).
    """

    def __init__(self, dist: Path, config_js: str) -> None:
        self.dist = dist.resolve()
        self.config_js = config_js.encode()
        self.log: list[Served] = []
        self._log_lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.httpd.daemon_threads = True
        self.port: int = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name=f"ohif-static-{self.port}", daemon=True
        )

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ViewerServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> ViewerServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record(self, method: str, path: str, status: int) -> None:
        with self._log_lock:
            self.log.append(Served(method, path, status))

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the app is ~100 files

            def log_message(self, format: str, *args: Any) -> None:
                pass  # kept in server.log instead of stderr

            def do_GET(self) -> None:
                self._serve(head=False)

            def do_HEAD(self) -> None:
                self._serve(head=True)

            def _serve(self, *, head: bool) -> None:
                try:
                    status = self._static(urlsplit(self.path).path, head)
                except (BrokenPipeError, ConnectionResetError):
                    status = 499  # the browser dropped the request
                server._record(self.command, self.path, status)

            def _send_bytes(self, status: int, body: bytes, ctype: str, head: bool) -> int:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if not head:
                    self.wfile.write(body)
                return status

            def _static(self, path: str, head: bool) -> int:
                if path == "/app-config.js":
                    return self._send_bytes(200, server.config_js, _MIME[".js"], head)
                rel = path.lstrip("/")
                file = (server.dist / rel).resolve() if rel else server.dist / "index.html"
                if not file.is_relative_to(server.dist):
                    return self._send_bytes(404, b"not found", "text/plain", head)
                if file.is_dir():
                    file = file / "index.html"
                if not file.is_file():
                    if "." in rel.rsplit("/", 1)[-1]:
                        # A missing asset (e.g. a lazily loaded chunk): a real 404, not
                        # index.html served as JavaScript, so the console says what broke.
                        return self._send_bytes(404, b"not found", "text/plain", head)
                    file = server.dist / "index.html"  # an SPA route such as /viewer
                ctype = _MIME.get(file.suffix.lower(), "application/octet-stream")
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(file.stat().st_size))
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                if not head:
                    with file.open("rb") as f:
                        shutil.copyfileobj(f, self.wfile, 1 << 20)
                return 200

        return Handler


# --------------------------------------------------------------------------- gateway log


@dataclass(frozen=True)
class GatewayRequest:
    method: str
    path: str
    query: str
    status: int
    origin: str
    seconds: float


class RequestLog:
    """ASGI middleware around the gateway app: records what the gateway itself answered.

    This sits inside the gateway's server, so it sees exactly the requests that reached
    the gateway, with the browser's Origin header.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.requests: list[GatewayRequest] = []
        self._lock = threading.Lock()

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0
        started = time.monotonic()

        async def send_wrapper(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            origin = ""
            for k, v in scope.get("headers", ()):
                if k == b"origin":
                    origin = v.decode("latin-1")
            entry = GatewayRequest(
                scope["method"],
                scope["path"],
                scope.get("query_string", b"").decode("latin-1"),
                status,
                origin,
                time.monotonic() - started,
            )
            with self._lock:
                self.requests.append(entry)

    def snapshot(self) -> list[GatewayRequest]:
        with self._lock:
            return list(self.requests)


def describe_requests(entries: list[GatewayRequest], limit: int = 60) -> str:
    lines = [
        f"  {e.status} {e.method} {e.path}{'?' + e.query if e.query else ''} ({e.seconds:.2f} s)"
        for e in entries[-limit:]
    ]
    more = len(entries) - limit
    return ("\n".join(lines) + (f"\n  ... and {more} earlier" if more > 0 else "")) or "  (none)"


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


__all__ = [
    "CACHE_DIR",
    "OHIF_INTEGRITY",
    "OHIF_PACKAGE",
    "OHIF_VERSION",
    "BrowserTools",
    "GatewayRequest",
    "HarnessError",
    "RequestLog",
    "Served",
    "ViewerServer",
    "app_config",
    "describe_requests",
    "ensure_driver",
    "ohif_dist",
    "pinned_driver_version",
    "sri_sha512",
    "wait_for",
]
