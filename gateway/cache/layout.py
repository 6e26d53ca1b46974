"""Where the cache keeps things on disk.

::

    root/index.sqlite            the index (plus -wal, -shm)
    root/data/ab/cd/<name>.dcm   an instance; ab/cd from SHA-1 of the SOP Instance UID
    root/data/ab/cd/<name>.<key> derived data of that instance (metadata, offsets, ...)
    root/data/ab/cd/.<file>.<random>.tmp   a write in progress
    root/trash/<random>/         a wiped data directory, deleted in the background

Two hex levels keep directories small (65,536 buckets) and spread by hash, not
by UID prefix, which is the same for every instance of one organisation. A UID
that is well formed (PS3.5 9.1: digits and dots, at most 64 characters) is its
own file name, which helps a human looking at the disk; anything else (PACS do
send padded or odd UIDs) is named by its hash so that no UID ever needs escaping.
Temporary files live in the final directory so that ``os.replace`` stays on one
file system and is atomic; their leading dot and ``.tmp`` suffix let a sweep
recognise them after a crash. Wiping is a rename of ``data/`` into ``trash/``:
instant, whatever the size of the cache.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from pathlib import Path

_WELL_FORMED_UID = re.compile(r"[0-9][0-9.]{0,63}")
_DERIVED_KEY = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_RESERVED_KEYS = frozenset({"dcm", "tmp"})
TEMP_SUFFIX = ".tmp"


def check_derived_key(key: str) -> str:
    """Derived keys become file name suffixes, so they are a short lowercase word."""
    if not _DERIVED_KEY.fullmatch(key) or key in _RESERVED_KEYS:
        raise ValueError(
            f"derived key must match {_DERIVED_KEY.pattern} and not be dcm/tmp: {key!r}"
        )
    return key


def temp_path(final: Path) -> Path:
    """A fresh temporary name beside ``final`` (same directory, so the rename is atomic)."""
    return final.with_name(f".{final.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


class CacheLayout:
    """Paths under one cache root. Instance paths are built as one string and one
    ``Path`` (pathlib joins cost microseconds each, and a series lookup builds
    hundreds of them)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.index_path = root / "index.sqlite"
        self.data_dir = root / "data"
        self.trash_dir = root / "trash"
        self._data = str(self.data_dir)

    def _base(self, sop_uid: str) -> str:
        digest = hashlib.sha1(sop_uid.encode("utf-8", "surrogateescape"), usedforsecurity=False)
        hexdigest = digest.hexdigest()
        name = sop_uid if _WELL_FORMED_UID.fullmatch(sop_uid) else f"h{hexdigest}"
        return f"{self._data}/{hexdigest[:2]}/{hexdigest[2:4]}/{name}"

    def instance_path(self, sop_uid: str) -> Path:
        return Path(f"{self._base(sop_uid)}.dcm")

    def derived_path(self, sop_uid: str, key: str) -> Path:
        return Path(f"{self._base(sop_uid)}.{check_derived_key(key)}")
