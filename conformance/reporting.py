"""Results by checklist item: a JSON record and a markdown table.

An item passes when every test of it passed, fails when any failed, and is
"not run" when all of its tests were skipped (a switch or URL not given).  An
item with no test at all is listed as such, so a gap in the suite shows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conformance.items import ITEMS, item_of

_KEY = pytest.StashKey["Collector"]()


@dataclass
class Outcome:
    test: str
    outcome: str  # passed, failed, skipped
    detail: str


@dataclass(eq=False)
class Collector:
    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call" and not (report.failed or report.skipped):
            return
        name = report.nodeid.rsplit("::", 1)[-1]
        item = item_of(name)
        if item is None:
            return
        outcome = "failed" if report.failed else "skipped" if report.skipped else "passed"
        if report.when != "call" and outcome == "failed":
            outcome = "failed"
        detail = ""
        if report.failed or report.skipped:
            detail = _first_line(report)
        self.outcomes.setdefault(item.id, []).append(Outcome(name, outcome, detail))


def _first_line(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # skip: (file, line, reason)
        return str(longrepr[2]).removeprefix("Skipped: ")
    text = getattr(longrepr, "reprcrash", None)
    message = text.message if text is not None else str(longrepr)
    for line in message.splitlines():
        line = line.strip()
        if line:
            return line[:300]
    return ""


def summarize(outcomes: dict[str, list[Outcome]]) -> list[dict[str, Any]]:
    """One row per checklist item, in checklist order."""
    rows = []
    for item in ITEMS.values():
        results = outcomes.get(item.id, [])
        failed = [o for o in results if o.outcome == "failed"]
        passed = [o for o in results if o.outcome == "passed"]
        if not results:
            result, detail = "no test", ""
        elif failed:
            result = "FAIL"
            shown = "; ".join(f"{o.test}: {o.detail[:240]}" for o in failed[:2])
            more = f" (and {len(failed) - 2} more)" if len(failed) > 2 else ""
            detail = f"{len(failed)} of {len(results)} tests failed: {shown}{more}"
        elif passed:
            result = "pass"
            skipped = [o for o in results if o.outcome == "skipped"]
            detail = f"{len(passed)} tests"
            if skipped:
                detail += f"; {len(skipped)} skipped ({skipped[0].detail})"
        else:
            result, detail = "not run", results[0].detail
        rows.append(
            {
                "item": item.id,
                "level": item.level,
                "title": item.title,
                "result": result,
                "detail": detail,
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]], title: str) -> str:
    lines = [f"### {title}", "", "| Item | Level | Result | Detail |", "|---|---|---|---|"]
    for row in rows:
        detail = row["detail"].replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {row['item']} | {row['level']} | {row['result']} | {detail} |")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["result"]] = counts.get(row["result"], 0) + 1
    lines += ["", ", ".join(f"{n} {k}" for k, n in sorted(counts.items())), ""]
    return "\n".join(lines)


def addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance")
    group.addoption("--report-json", default="", help="write the per-item results as JSON")
    group.addoption("--report-md", default="", help="write the per-item results as markdown")
    group.addoption("--report-title", default="", help="heading of the markdown report")


def configure(config: pytest.Config) -> None:
    collector = Collector()
    config.stash[_KEY] = collector
    config.pluginmanager.register(collector, "conformance-collector")
    config.pluginmanager.register(_Writer(config), "conformance-writer")


class _Writer:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        collector = self.config.stash[_KEY]
        rows = summarize(collector.outcomes)
        title = str(self.config.getoption("--report-title")) or str(
            self.config.getoption("--base-url")
        )
        if path := str(self.config.getoption("--report-json")):
            Path(path).write_text(json.dumps({"title": title, "items": rows}, indent=1))
        if path := str(self.config.getoption("--report-md")):
            Path(path).write_text(markdown(rows, title))
