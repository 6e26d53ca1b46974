"""What the Containerfile says, stage by stage, for the deploy tests.

A small parser (continuation lines, comments, flags, JSON and shell forms) and the
structural rules the image must keep (``structural_problems``). hadolint checks
Dockerfile practice; these rules check what this project relies on: a numeric non-root
USER, a HEALTHCHECK on /healthz, pinned base images, the settings the ENV lines set.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "Containerfile"
SETTINGS_ENV = {ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}


@dataclass
class Stage:
    image: str
    name: str
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    healthcheck: list[str] | None = None
    healthcheck_flags: dict[str, str] = field(default_factory=dict)
    expose: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    copies: list[tuple[dict[str, str], list[str]]] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)


def instructions(text: str) -> list[tuple[str, dict[str, str], str]]:
    """(KEYWORD, flags, rest) per logical instruction."""
    out = []
    logical = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not logical):
            continue
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        logical += stripped
        keyword, _, rest = logical.strip().partition(" ")
        flags: dict[str, str] = {}
        rest = rest.strip()
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name] = value
            rest = rest.strip()
        out.append((keyword.upper(), flags, rest))
        logical = ""
    return out


def _form(rest: str) -> list[str]:
    if rest.startswith("["):
        value = json.loads(rest)
        assert isinstance(value, list)
        return [str(v) for v in value]
    return ["/bin/sh", "-c", rest]


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), ""), value)


def parse(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for keyword, flags, rest in instructions(text):
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else str(len(stages))
            parent = next((s for s in stages if s.name == words[0]), None)
            stage = Stage(image=words[0], name=name)
            if parent is not None:
                stage.env = dict(parent.env)
                stage.user = parent.user
            stages.append(stage)
            continue
        if not stages:
            continue
        stage = stages[-1]
        if keyword == "ENV":
            words = shlex.split(rest)
            if words and "=" not in words[0]:
                stage.env[words[0]] = " ".join(words[1:])
            for word in words:
                key, eq, value = word.partition("=")
                if eq:
                    stage.env[key] = _expand(value, stage.env)
        elif keyword == "USER":
            stage.user = rest.strip()
        elif keyword == "HEALTHCHECK":
            if rest.upper() == "NONE":
                stage.healthcheck = None
            else:
                stage.healthcheck = _form(rest.partition(" ")[2].strip())
                stage.healthcheck_flags = flags
        elif keyword == "EXPOSE":
            stage.expose += [p.split("/")[0] for p in rest.split()]
        elif keyword == "VOLUME":
            stage.volumes += json.loads(rest) if rest.startswith("[") else rest.split()
        elif keyword == "ENTRYPOINT":
            stage.entrypoint = _form(rest)
        elif keyword == "CMD":
            stage.cmd = _form(rest)
        elif keyword == "COPY":
            stage.copies.append((flags, json.loads(rest) if rest.startswith("[") else rest.split()))
        elif keyword == "RUN":
            stage.runs.append(rest)
    return stages


def structural_problems(text: str) -> list[str]:
    """Every rule the Containerfile breaks; empty when it is fine."""
    problems = []
    stages = parse(text)
    if len(stages) < 2:
        problems.append("not multi-stage: expected a builder stage and a runtime stage")
    if not stages:
        return problems
    names = {s.name for s in stages}
    for s in stages:
        if s.image in names:
            continue
        _, colon, tag = s.image.rpartition(":")
        if not colon or "/" in tag or not tag:
            problems.append(f"FROM {s.image}: no tag (that means latest)")
        elif tag == "latest" or tag.startswith("latest"):
            problems.append(f"FROM {s.image}: latest tag")
    final = stages[-1]
    if final.image != "python:3.11-slim-bookworm":
        problems.append(f"final stage FROM {final.image}, expected python:3.11-slim-bookworm")
    user = final.user or ""
    uid = user.partition(":")[0]
    if not uid.isdigit():
        problems.append(f"final stage USER {user or '(none: root)'}: expected a numeric uid")
    elif int(uid) == 0:
        problems.append("final stage USER is root")
    elif int(uid) != 10001:
        problems.append(f"final stage USER {user}: expected uid 10001")
    if not final.healthcheck:
        problems.append("final stage has no HEALTHCHECK")
    elif not any("/healthz" in part for part in final.healthcheck):
        problems.append("HEALTHCHECK does not call /healthz")
    elif final.healthcheck[0] in ("curl", "wget"):
        problems.append("HEALTHCHECK uses curl/wget, which the slim image lacks")
    if final.entrypoint != ["dicomweb-gateway", "serve"]:
        problems.append(f"ENTRYPOINT {final.entrypoint}: expected dicomweb-gateway serve")
    env = final.env
    if env.get(ENV_PREFIX + "HOST") != "0.0.0.0":
        problems.append("ENV DICOMWEB_GATEWAY_HOST=0.0.0.0 missing: unreachable in a container")
    if env.get(ENV_PREFIX + "STORE_SCP_HOST") != "0.0.0.0":
        problems.append("ENV DICOMWEB_GATEWAY_STORE_SCP_HOST=0.0.0.0 missing")
    for key in ("PORT", "STORE_SCP_PORT"):
        port = env.get(ENV_PREFIX + key, str(getattr(Settings(), key.lower())))
        if port not in final.expose:
            problems.append(f"{ENV_PREFIX}{key}={port} is not EXPOSEd ({final.expose})")
    cache = env.get(ENV_PREFIX + "CACHE_DIR", "")
    if not cache or cache not in final.volumes:
        problems.append(f"cache dir {cache!r} is not a VOLUME ({final.volumes})")
    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in SETTINGS_ENV)
    if unknown:
        problems.append(f"ENV sets unknown settings {unknown}")
    return problems


def ignore_rules(path: Path) -> list[tuple[bool, str]]:
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), line.lstrip("!").strip("/")))
    return rules


def ignored(rel: str, rules: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = rel.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for negate, pattern in rules:
        regex = "^" + re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\[", "[").replace(r"\]", "]") + "$"
        if any(re.match(regex, c) for c in candidates):
            result = not negate
    return result
