"""Suite-wide rules: under CI (APPLIANCED_REQUIRE_ALL=1) a skipped test is a failure; hypothesis
runs without per-example deadlines."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest
from hypothesis import settings

# No per-example deadline: the suite runs on parallel workers on 2 cores, where a slow example
# says nothing about the code (speed lives in bench/), and a deadline would make it flaky.
settings.register_profile("suite", deadline=None)
settings.load_profile("suite")

REQUIRE_ALL = os.environ.get("APPLIANCED_REQUIRE_ALL") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under APPLIANCED_REQUIRE_ALL=1 (CI must run it): {reason}"
