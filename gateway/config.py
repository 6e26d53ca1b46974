"""One configuration object for the whole service.

Settings come from defaults, then an optional TOML file, then environment
variables named ``DICOMWEB_GATEWAY_<SETTING>`` (upper case), so that a container
can be configured without a file.  Every setting is documented in
``docs/configuration.md``; ``SETTINGS_HELP`` below is the source of that text
and of ``dicomweb-gateway --help``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydicom.datadict import dictionary_VR, tag_for_keyword

ENV_PREFIX = "DICOMWEB_GATEWAY_"

#: VRs the gateway matches itself (services/qido_verify.py), so header_attributes may have them.
_HEADER_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "IS", "LO", "SH", "SL", "SQ", "SS", "SV", "TM", "UC", "UI", "UL"}
    | {"US", "UV"}
)

_AET_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # PS3.5 AE: no backslash, <= 16
# RFC 6454 serialized origin: scheme "://" host [":" port], nothing after.
_ORIGIN_RE = re.compile(r"^[a-z][a-z0-9+.-]*://[^/\s?#]+$")


class ConfigError(ValueError):
    """A setting has a value the gateway cannot use; the message names it."""


@dataclass(frozen=True)
class PacsConfig:
    """One DIMSE peer the gateway forwards to."""

    name: str
    aet: str
    host: str
    port: int
    retrieve_method: Literal["get", "move"] = "get"
    max_associations: int = 4
    header_attributes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: str, name: str = "default") -> PacsConfig:
        """Parse ``AET@host:port`` (the form used by ``--pacs`` and the env variable)."""
        m = re.fullmatch(r"([^@]{1,16})@([^:]+):(\d{1,5})", spec.strip())
        if not m:
            raise ConfigError(f"pacs: expected AET@host:port, got {spec!r}")
        return cls(name=name, aet=m.group(1), host=m.group(2), port=int(m.group(3)))


@dataclass(frozen=True)
class Settings:
    """Every setting of the gateway; see SETTINGS_HELP for what each one does."""

    host: str = "127.0.0.1"
    port: int = 8080
    base_path: str = "/dicomweb"
    public_url: str = ""
    calling_aet: str = "DICOMWEB"
    pacs: tuple[PacsConfig, ...] = ()
    connect_timeout: float = 5.0
    accept_timeout: float = 5.0
    dimse_timeout: float = 30.0
    network_timeout: float = 60.0
    max_pdu_length: int = 1048576
    pool_idle_seconds: float = 60.0
    pool_backoff_seconds: float = 2.0
    qido_max_results: int = 10000
    qido_empty_status: int = 204
    qido_charset: str = "ISO_IR 192"
    qido_fill: Literal["off", "series", "all"] = "all"
    qido_header_retrieves: int = 100
    stow_concurrency: int = 4
    stow_max_bytes: int = 8 << 30
    stow_spool_bytes: int = 8 << 20
    store_scp_host: str = "127.0.0.1"
    store_scp_port: int = 11113
    cache_dir: str = ""
    cache_budget_bytes: int = 2 << 30
    cache_fsync: bool = False
    metadata_bulk_threshold: int = 1024
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    log_phi: bool = False
    progress_log_seconds: float = 10.0
    cors_origins: tuple[str, ...] = ()
    cors_max_age: int = 600
    cross_origin_isolation: bool = False

    def pacs_named(self, name: str | None) -> PacsConfig | None:
        """The PACS with that name or AE title, or the first one for None."""
        if not self.pacs:
            return None
        if name is None:
            return self.pacs[0]
        for p in self.pacs:
            if name in (p.name, p.aet):
                return p
        return None


SETTINGS_HELP: dict[str, str] = {
    "host": "Address the HTTP server listens on.",
    "port": "TCP port of the HTTP server.",
    "base_path": "Path prefix of the DICOMweb resources (QIDO/WADO/STOW).",
    "public_url": "Absolute base URL used in RetrieveURL/BulkDataURI when no "
    "X-Forwarded-* headers are present; empty = derived from the request.",
    "calling_aet": "AE title the gateway uses when it calls the PACS.",
    "pacs": "The PACS, as AET@host:port (env/CLI), or [[pacs]] tables in TOML with "
    "name, aet, host, port, retrieve_method (get|move), max_associations, "
    "header_attributes (series/instance keywords the PACS does not keep for C-FIND, "
    "matched and returned from the instances' headers: docs/qido.md).",
    "connect_timeout": "Seconds to wait for the TCP connection to the PACS.",
    "accept_timeout": "Seconds to wait for A-ASSOCIATE-AC/RJ after the request.",
    "dimse_timeout": "Seconds to wait for each DIMSE response (or pending response).",
    "network_timeout": "While a DIMSE message is still arriving, the DIMSE timeout is "
    "extended as long as bytes keep coming with gaps shorter than this many seconds.",
    "max_pdu_length": "Maximum PDU length the gateway offers to receive (bytes).",
    "pool_idle_seconds": "Idle pooled associations are released after this many seconds.",
    "pool_backoff_seconds": "After the PACS refused or could not be reached, new "
    "associations fail fast for this many seconds.",
    "qido_max_results": "Most matches a QIDO-RS search returns (limit is capped to it).",
    "qido_empty_status": "HTTP status of a search without matches: 204 (no body) or "
    "200 (an empty JSON array).",
    "qido_charset": "Specific Character Set put in a C-FIND when a query value is not "
    "ASCII (ISO_IR 192 = UTF-8, or ISO_IR 100 = Latin-1).",
    "qido_fill": "When the PACS leaves out ModalitiesInStudy and the Number Of ... Related "
    "counts: all = SERIES- and IMAGE-level C-FINDs per returned study (costly on "
    "dcmqrscp, see docs/qido.md); series = only the SERIES-level one (modalities, "
    "series counts, ModalitiesInStudy matching; no instance counts); off = none.",
    "qido_header_retrieves": "Most retrieves one search may start to read a PACS's "
    "header_attributes from the instances; results beyond are returned unchecked, with "
    "a Warning.",
    "stow_concurrency": "Instances of one STOW-RS request stored at once (each on its own "
    "pooled association).",
    "stow_max_bytes": "Largest STOW-RS request body in bytes; larger ones get 413.",
    "stow_spool_bytes": "A STOW-RS part larger than this is spooled to a temporary file "
    "instead of memory.",
    "store_scp_host": "Address the gateway's C-STORE SCP listens on, for the instances a "
    "C-MOVE sends back (only started when a PACS has retrieve_method = move).",
    "store_scp_port": "Port of that C-STORE SCP; its AE title is calling_aet. Register "
    "calling_aet at this host and port as a move destination in the PACS.",
    "cache_dir": "Directory of the instance cache; empty = a temporary directory removed "
    "at shutdown. The cache can be wiped at any time: it holds nothing the PACS lacks.",
    "cache_budget_bytes": "Bytes the instance cache may use; least recently read series "
    "are evicted beyond it.",
    "cache_fsync": "fsync every cached file before it is published (slower; only matters "
    "after a power cut, when a torn file would be a cache miss anyway).",
    "metadata_bulk_threshold": "In /metadata, binary values longer than this many bytes "
    "are given as BulkDataURI instead of InlineBinary (Pixel Data always is).",
    "log_level": "Logging level (DEBUG, INFO, WARNING, ERROR).",
    "log_format": "text (one line per record) or json (one JSON object per line: ts, level, "
    "logger, msg, request_id and the record's extra fields).",
    "log_phi": "Log the full path and query string of each request in the access log (query "
    "values carry PatientName/PatientID), and the UIDs of failed requests and of retrieve "
    "progress lines; off = only route templates and levels.",
    "progress_log_seconds": "While a C-GET/C-MOVE runs, log its progress (instances, MB, "
    "MB/s) every this many seconds; 0 = never.",
    "cors_origins": "Origins allowed to call the gateway from a browser (CORS), comma-"
    "separated in env (a list in TOML), e.g. https://viewer.example.org; * = any; "
    "empty = CORS off.",
    "cors_max_age": "Seconds a browser may cache a CORS preflight answer (Access-Control-Max-Age).",
    "cross_origin_isolation": "Send Cross-Origin-Opener-Policy: same-origin, "
    "Cross-Origin-Embedder-Policy: require-corp and Cross-Origin-Resource-Policy: "
    "cross-origin on every response (viewers that need SharedArrayBuffer).",
}


def _coerce(name: str, raw: Any, default: Any) -> Any:
    """Turn a TOML or environment value into the type of the default."""
    try:
        if isinstance(default, tuple):
            # A list in TOML, comma-separated in the environment (like pacs).
            items = raw.split(",") if isinstance(raw, str) else list(raw)
            return tuple(str(item).strip() for item in items if str(item).strip())
        if isinstance(default, bool):
            if isinstance(raw, bool):
                return raw
            s = str(raw).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: cannot use {raw!r}") from None


def _keywords(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [k for k in raw.split(",") if k.strip()]
    if not isinstance(raw, (list, tuple)):
        raise TypeError(f"header_attributes: expected a list of keywords, got {raw!r}")
    return tuple(str(k).strip() for k in raw)


def _pacs_from_toml(items: Any) -> tuple[PacsConfig, ...]:
    if not isinstance(items, list):
        raise ConfigError("pacs: expected [[pacs]] tables")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            out.append(PacsConfig.parse(item, name=f"pacs{i}" if i else "default"))
            continue
        try:
            out.append(
                PacsConfig(
                    name=str(item.get("name", item["aet"])),
                    aet=str(item["aet"]),
                    host=str(item["host"]),
                    port=int(item["port"]),
                    retrieve_method=item.get("retrieve_method", "get"),
                    max_associations=int(item.get("max_associations", 4)),
                    header_attributes=_keywords(item.get("header_attributes", ())),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"pacs[{i}]: {exc}") from None
    return tuple(out)


def load_settings(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Defaults, then the TOML file, then the environment, then explicit overrides."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    defaults = Settings()
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        for key, raw in data.items():
            if key == "pacs":
                values["pacs"] = _pacs_from_toml(raw)
            elif key in SETTINGS_HELP:
                values[key] = _coerce(key, raw, getattr(defaults, key))
            else:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
    for f in dataclasses.fields(Settings):
        raw_env = env.get(ENV_PREFIX + f.name.upper())
        if raw_env is None:
            continue
        if f.name == "pacs":
            values["pacs"] = tuple(
                PacsConfig.parse(s, name="default" if i == 0 else f"pacs{i}")
                for i, s in enumerate(raw_env.split(","))
                if s.strip()
            )
        else:
            values[f.name] = _coerce(f.name, raw_env, getattr(defaults, f.name))
    values.update({k: v for k, v in overrides.items() if v is not None})
    settings = Settings(**values)
    validate(settings)
    return settings


def validate(s: Settings) -> None:
    """Reject settings that would only fail later, at the first request."""
    if not _AET_RE.match(s.calling_aet):
        raise ConfigError(f"calling_aet: {s.calling_aet!r} is not a valid AE title")
    for p in s.pacs:
        if not _AET_RE.match(p.aet):
            raise ConfigError(f"pacs {p.name}: {p.aet!r} is not a valid AE title")
        if not 0 < p.port < 65536:
            raise ConfigError(f"pacs {p.name}: port {p.port} out of range")
        if p.retrieve_method not in ("get", "move"):
            raise ConfigError(f"pacs {p.name}: retrieve_method must be get or move")
        if p.max_associations < 1:
            raise ConfigError(f"pacs {p.name}: max_associations must be >= 1")
        for keyword in p.header_attributes:
            tag = tag_for_keyword(keyword)
            if tag is None:
                raise ConfigError(f"pacs {p.name}: header_attributes: {keyword!r} is no keyword")
            if dictionary_VR(tag) not in _HEADER_VRS:
                # The gateway would be the only matcher of a key on it, and it does not
                # match these VRs (PN matching, for one, is implementation-defined).
                raise ConfigError(
                    f"pacs {p.name}: header_attributes: {keyword} ({dictionary_VR(tag)}) "
                    "cannot be matched by the gateway"
                )
    if s.qido_empty_status not in (200, 204):
        raise ConfigError("qido_empty_status: must be 200 or 204")
    if not s.base_path.startswith("/") or s.base_path.endswith("/"):
        raise ConfigError("base_path: must start with '/' and not end with '/'")
    if s.cache_budget_bytes < 1:
        raise ConfigError("cache_budget_bytes: must be > 0")
    if s.stow_concurrency < 1:
        raise ConfigError("stow_concurrency: must be >= 1")
    if s.max_pdu_length < 4096:
        raise ConfigError("max_pdu_length: must be at least 4096")
    for name in ("connect_timeout", "accept_timeout", "dimse_timeout", "network_timeout"):
        if getattr(s, name) <= 0:
            raise ConfigError(f"{name}: must be > 0")
    if s.qido_header_retrieves < 0:
        raise ConfigError("qido_header_retrieves: must be >= 0")
    if s.qido_fill not in ("off", "series", "all"):
        raise ConfigError("qido_fill: must be off, series or all")
    if s.log_format not in ("text", "json"):
        raise ConfigError("log_format: must be text or json")
    if s.progress_log_seconds < 0:
        raise ConfigError("progress_log_seconds: must be >= 0 (0 = off)")
    if s.cors_max_age < 0:
        raise ConfigError("cors_max_age: must be >= 0")
    for origin in s.cors_origins:
        if origin != "*" and (not _ORIGIN_RE.match(origin) or origin != origin.lower()):
            raise ConfigError(
                f"cors_origins: {origin!r} is not an origin (scheme://host[:port], "
                "lower case, no path) or *"
            )


def settings_table() -> str:
    """The markdown table of docs/configuration.md (a test keeps the two equal)."""
    defaults = Settings()
    rows = ["| setting | environment variable | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(Settings):
        default = getattr(defaults, f.name)
        if default == ():
            default = "(none)"
        env = ENV_PREFIX + f.name.upper()
        rows.append(f"| `{f.name}` | `{env}` | `{default}` | {SETTINGS_HELP[f.name]} |")
    return "\n".join(rows)


__all__ = [
    "SETTINGS_HELP",
    "ConfigError",
    "PacsConfig",
    "Settings",
    "load_settings",
    "settings_table",
]
