"""How D365's status words map to outcomes (both documented spellings; Unknown only after N polls)."""

from __future__ import annotations

import pytest

from shared.d365.connector import DataJobState
from shared.d365.dmf import ExecutionStatus, MessageStatus
from shared.pipelines.imports.monitor import verdict_for_execution, verdict_for_message
from shared.status import Outcome


@pytest.mark.parametrize(
    ("raw", "outcome"),
    [
        ("NotRun", None),
        ("Executing", None),
        ("Succeeded", Outcome.SUCCEEDED),
        ("PartiallySucceeded", Outcome.PARTIALLY_SUCCEEDED),
        ("Failed", Outcome.FAILED),
        ("Canceled", Outcome.FAILED),
        ("Cancelled", Outcome.FAILED),
    ],
)
def test_execution_statuses(raw: str, outcome: Outcome | None) -> None:
    assert verdict_for_execution(ExecutionStatus.parse(raw), raw, 0, 3).outcome is outcome


def test_unknown_counts_as_failed_only_after_the_allowed_polls() -> None:
    assert verdict_for_execution(ExecutionStatus.UNKNOWN, "Unknown", 2, 3).outcome is None
    assert verdict_for_execution(ExecutionStatus.UNKNOWN, "Unknown", 3, 3).outcome is Outcome.FAILED


@pytest.mark.parametrize(
    ("raw", "outcome"),
    [
        ("Enqueued", None),
        ("Preprocessing", None),
        ("PreProcessing", None),
        ("Processing", None),
        ("Processed", Outcome.SUCCEEDED),
        ("ProcessedWithErrors", Outcome.FAILED),
        ("PreProcessingError", Outcome.FAILED),
        ("PostProcessingFailed", Outcome.FAILED),
        ("PostProcessingError", Outcome.FAILED),
    ],
)
def test_message_statuses_in_both_spellings(raw: str, outcome: Outcome | None) -> None:
    assert verdict_for_message(MessageStatus.parse(raw), raw).outcome is outcome


@pytest.mark.parametrize("raw", ["PostProcessError", "PostProcessingError", "postprocessingerror", 7])
def test_jobstatus_error_states_in_both_spellings_are_final_failures(raw: object) -> None:
    state = DataJobState.parse(raw)
    assert state.final
    assert not state.succeeded
