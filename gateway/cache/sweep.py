"""Housekeeping that walks the disk: emptying the trash and removing the temporary
files of writes a crash interrupted. Both are slow on a big cache and run in a
worker thread in the background; neither touches the index.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from gateway.cache.layout import is_temp_name

log = logging.getLogger(__name__)


def empty_trash(trash: Path) -> None:
    """Delete what wipes and rebuilds moved to the trash (entry by entry, so that a
    wipe renaming into the trash meanwhile is not disturbed)."""
    try:
        entries = list(os.scandir(trash))
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            Path(entry.path).unlink(missing_ok=True)


def remove_stale_temps(data: Path, older_than: float) -> int:
    """Delete temporary files last modified before ``older_than`` (epoch seconds); the
    age keeps writes in progress, here or in another replica, out of reach."""
    removed = 0
    for top in _subdirs(data):
        for bucket in _subdirs(top):
            try:
                with os.scandir(bucket) as entries:
                    stale = [
                        e.path
                        for e in entries
                        if is_temp_name(e.name) and e.stat().st_mtime < older_than
                    ]
            except OSError:
                continue
            for path in stale:
                try:
                    os.unlink(path)
                    removed += 1
                except OSError:
                    pass
    if removed:
        log.info("instance cache: removed %d temporary files left by an earlier run", removed)
    return removed


def _subdirs(path: str | Path) -> list[str]:
    try:
        with os.scandir(path) as entries:
            return [e.path for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
