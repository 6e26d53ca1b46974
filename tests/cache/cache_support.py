"""Helpers shared by the cache tests: a clock that ticks per reading, a cache on a
temporary directory, and instances kept as a retrieve keeps them."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.cache import CachedInstance, InstanceCache

EXPLICIT_LE = "1.2.840.10008.1.2.1"
STUDY = "1.2.3"


class Ticks:
    """One second later at every reading, so the order of accesses is the order of calls."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def new_cache(root: Path, budget: int = 10**9, **options: Any) -> InstanceCache:
    return InstanceCache(root, budget, clock=Ticks(), **options)


def payload(sop_uid: str, size: int) -> bytes:
    unit = f"{sop_uid}|".encode()
    return (unit * (size // len(unit) + 1))[:size]


async def put(
    cache: InstanceCache, series: str, sop: str, size: int = 100, *, study: str = STUDY
) -> CachedInstance:
    """Keep one instance as a retrieve does (``keep``); it must be cached."""
    instance = await (await cache.keep(study, series, sop, EXPLICIT_LE, (payload(sop, size),)))
    assert instance is not None
    return instance


async def put_series(cache: InstanceCache, series: str, n: int, size: int = 100) -> list[str]:
    """Write ``n`` instances and mark the series complete; returns their UIDs."""
    sops = [f"{series}.{i}" for i in range(1, n + 1)]
    for sop in sops:
        await put(cache, series, sop, size)
    assert await cache.mark_series_complete(STUDY, series, sops)
    return sops


def data_files(root: Path) -> list[Path]:
    """Every file under the data directory, temporary ones included."""
    return sorted(p for p in (root / "data").rglob("*") if p.is_file())


def temp_files(root: Path) -> list[Path]:
    return [p for p in data_files(root) if p.name.endswith(".tmp")]


def fail_under(
    monkeypatch: pytest.MonkeyPatch,
    root: Path,
    name: str,
    err: int = errno.ENOSPC,
    *,
    skip: int = 0,
) -> list[int]:
    """Make ``os.<name>`` fail with ``err`` for paths under ``root`` (os.open, os.replace)
    or, for os.write and os.fsync, for descriptors opened under ``root``, after ``skip``
    calls that succeed; returns the failed calls."""
    failed: list[int] = []
    passed: list[int] = []
    real_open = os.open
    real: Callable[..., Any] = getattr(os, name)
    ours: set[int] = set()
    by_fd = name in ("write", "fsync")

    def under(path: Any) -> bool:
        return str(path).startswith(str(root))

    def tracking_open(path: Any, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, *args, **kwargs)
        if under(path):
            ours.add(fd)
        return fd

    def failing(target: Any, *args: Any, **kwargs: Any) -> Any:
        hit = target in ours if by_fd else under(target)
        if hit and len(passed) < skip:
            passed.append(1)
        elif hit:
            failed.append(1)
            raise OSError(err, os.strerror(err), None if by_fd else str(target))
        return real(target, *args, **kwargs)

    if by_fd:
        monkeypatch.setattr(os, "open", tracking_open)
    monkeypatch.setattr(os, name, failing)
    return failed


def warnings_from_cache(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("gateway.cache") and r.levelname == "WARNING"
    ]
