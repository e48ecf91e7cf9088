"""In-flight jobs' status asked of D365 live, a few at a time within a time budget.

Read-only calls (the import monitor stays the only writer of job records): ``GetExecutionSummaryStatus``
for package imports, ``GetMessageStatus`` for recurring messages, both through the app's transport and its
resilience policy, each call's total time capped by what is left of ``OVERVIEW_D365_SECONDS`` (the
policy's own deadline, minutes by default, is far too long for a page).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from shared.context import AppContext
from shared.d365.dmf import DEFINITION_GROUPS
from shared.d365.dmf_answers import as_text
from shared.d365.errors import D365ClientError, D365Error
from shared.redact import redact_text

__all__ = ["LiveStatus"]


class LiveStatus:
    """Asks D365 for at most ``limit`` statuses, starting none after ``seconds``."""

    def __init__(
        self,
        context: AppContext,
        *,
        limit: int,
        seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.odata = context.odata
        self.left = limit
        self.clock = clock
        self.deadline = clock() + seconds
        self.skipped = 0

    def ask(self, job: dict[str, Any]) -> tuple[str | None, str | None]:
        """(D365's status word, None) or (None, why it could not be asked); (None, None) when not asked."""
        remaining = self.deadline - self.clock()
        if self.left <= 0 or remaining <= 0:
            self.skipped += 1
            return None, None
        self.left -= 1
        try:
            return self._status(job, remaining), None
        except D365Error as exc:
            return None, redact_text(str(exc))[:300]
        except Exception as exc:  # a malformed job record must not break the overview
            return None, redact_text(f"{type(exc).__name__}: {exc}")[:300]

    def _action(self, name: str, parameters: dict[str, str], timeout: float) -> str:
        value = self.odata.call_action(
            DEFINITION_GROUPS, name, parameters=parameters, idempotent=True, timeout=timeout
        )
        return as_text(value) or "Unknown"

    def _status(self, job: dict[str, Any], timeout: float) -> str:
        if job.get("target") == "package":
            execution_id = str(job.get("execution_id") or job["job_id"])
            try:
                return self._action("GetExecutionSummaryStatus", {"executionId": execution_id}, timeout)
            except D365ClientError as exc:
                if exc.status_code == 400:  # the execution row may not exist yet (ref §1.7)
                    return "NotFoundYet"
                raise
        message_id = str(job.get("message_id") or "").strip().strip('"')
        if not message_id:
            return "not enqueued yet"
        return self._action("GetMessageStatus", {"messageId": message_id}, timeout)
