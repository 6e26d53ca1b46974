"""gateway.malloc_tuning: freed buffers of a retrieve's size are reused, not faulted
in again. Counted as minor page faults in a fresh interpreter (no timing)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

_PROBE = """
import resource, sys
from gateway.malloc_tuning import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "tuned" else False
pieces = [bytes([i]) * 16384 for i in range(32)]   # a 512 KB data set in 16 KB PDVs
def cycle():
    data = b"".join(pieces)                        # the data set
    chunk = b"".join([b"80000\\r\\n", data, b"\\r\\n"])  # the HTTP chunk
    del data, chunk
for _ in range(20):
    cycle()                                        # warm up
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(300):
    cycle()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_buffers_of_a_retrieve_are_reused_not_faulted_in_again() -> None:
    applied, tuned = _faults("tuned")
    _, default = _faults("default")
    assert applied
    # 300 cycles of two 512 KB buffers: 128 pages each when they are not reused.
    assert default > 300 * 128, default
    assert tuned < 2_000, tuned


def test_the_operators_own_malloc_settings_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.malloc_tuning import keep_freed_memory

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=131072")
    assert keep_freed_memory() is False
