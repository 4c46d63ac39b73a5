"""The conformance targets of issue 21 over Debian's fail2ban 1.0.2 sample logs (see
conformance.py): every filter loads, no false positive, every case of the mail and auth
filters, 99% of all cases. Each failure prints the per-filter table and the cases at fault;
``python -m tests.conf.filterfiles.conformance -v`` prints the same outside pytest.
"""

from __future__ import annotations

import pytest

from tests.conf.filterfiles.conformance import MAIL_AND_AUTH, Result, run_all, summary, table
from tests.debian_fail2ban import FetchError


@pytest.fixture(scope="module")
def results() -> list[Result]:
    try:
        return run_all()
    except FetchError as e:
        pytest.skip(str(e))


def _report(target: str, results: list[Result], which: list[Result]) -> str:
    """The target missed, the totals, the table of the filters at fault and their cases."""
    lines = [f"issue 21 target missed: {target}", summary(results), "", table(which), "at fault:"]
    lines += [failure for r in which for failure in r.failures[:20]]
    return "\n".join(lines)


def test_the_suite_reads_every_sample_log(results: list[Result]) -> None:
    # Guards the harness itself: a reader that lost the annotations would pass every target.
    assert len(results) >= 85
    assert sum(r.cases for r in results) >= 900
    assert {r.name for r in results} >= set(MAIL_AND_AUTH)


def test_every_filter_loads(results: list[Result]) -> None:
    refused = [r for r in results if r.load_error]
    assert not refused, _report("every filter loads", results, refused)


def test_no_false_positives(results: list[Result]) -> None:
    wrong = [r for r in results if r.false_positives]
    assert not wrong, _report("no false positive", results, wrong)


def test_every_mail_and_auth_case(results: list[Result]) -> None:
    """Every case, but those where applianced differs on purpose (conformance.ON_PURPOSE)."""
    short = [
        r
        for r in results
        if r.name in MAIL_AND_AUTH and (r.ok + r.on_purpose < r.cases or r.load_error)
    ]
    assert not short, _report("every case of the mail and auth filters", results, short)


def test_ninety_nine_percent_of_all_cases(results: list[Result]) -> None:
    cases = sum(r.cases for r in results)
    ok = sum(r.ok for r in results)
    short = [r for r in results if r.ok < r.cases]
    assert ok >= 0.99 * cases, _report("99% of all cases", results, short)
    print(summary(results))
