"""``python -m conformance --base-url URL [pytest options]``: run the suite.

A thin wrapper over pytest with the suite's own ini file, so that it runs the
same from any directory and never picks up the project's test configuration.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    return int(
        pytest.main(["-c", str(HERE / "pytest.ini"), "--rootdir", str(HERE), str(HERE), *args])
    )


if __name__ == "__main__":
    raise SystemExit(main())
