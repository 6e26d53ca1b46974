"""DIMSE-level fixture: one scripted pynetdicom query SCP for the session.

The fault peers (``rejecting_peer``, ``busy_peer``, ``aborting_peer``,
``find_failure_peer``, ``silent_peer``, ``closed_port``, ``make_peer``) come
from ``tests/conftest.py``; helpers live in ``dimse_support.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.dimse.dimse_support import QueryScp


@pytest.fixture(scope="session")
def query_scp() -> Iterator[QueryScp]:
    """Verification + Study/Patient Root FIND, scripted by the query's PatientID."""
    with QueryScp() as scp:
        yield scp
