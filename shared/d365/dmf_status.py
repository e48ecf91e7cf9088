"""Status enums of the DMF package API and the recurring-integrations message API, parsed tolerantly.

D365 and Microsoft's own code disagree on spellings (ref §4.4: ``Preprocessing`` vs ``PreProcessing``,
``PostProcessingFailed`` vs ``PostProcessingError``); parsing ignores case, spaces, ``_`` and ``-`` and knows
both. Anything unrecognised parses to ``UNKNOWN`` (callers keep the raw text, see ``dmf.StatusReading``).
"""

from __future__ import annotations

import enum
import re

__all__ = ["ExecutionStatus", "MessageStatus", "normalize_status"]

_NOISE = re.compile(r"[\s_\-.\"']+")


def normalize_status(text: object) -> str:
    """``text`` lower-cased without spaces, underscores, dashes, dots or quotes (the comparison key)."""
    return _NOISE.sub("", str(text)).lower()


class ExecutionStatus(enum.StrEnum):
    """``DMFExecutionSummaryStatus`` (ref §3.2, §3.4)."""

    UNKNOWN = "Unknown"
    NOT_RUN = "NotRun"
    EXECUTING = "Executing"
    SUCCEEDED = "Succeeded"
    PARTIALLY_SUCCEEDED = "PartiallySucceeded"
    FAILED = "Failed"
    CANCELED = "Canceled"

    @classmethod
    def parse(cls, text: object) -> ExecutionStatus:
        """Tolerant of case and spacing (and ``Cancelled``); anything else is ``UNKNOWN``."""
        key = normalize_status(text)
        if key == "cancelled":
            return cls.CANCELED
        for member in cls:
            if normalize_status(member.value) == key:
                return member
        return cls.UNKNOWN

    @property
    def final(self) -> bool:
        """No further change expected. ``UNKNOWN`` counts as final (RIS treats it as an error, ref §3.4)."""
        return self not in (ExecutionStatus.NOT_RUN, ExecutionStatus.EXECUTING)

    @property
    def succeeded(self) -> bool:
        return self is ExecutionStatus.SUCCEEDED


class MessageStatus(enum.StrEnum):
    """``GetMessageStatus`` values (ref §4.4), with the doc's spellings as values."""

    UNKNOWN = "Unknown"
    ENQUEUED = "Enqueued"
    DEQUEUED = "Dequeued"
    DOWNLOADED = "Downloaded"
    ACKED = "Acked"
    PREPROCESSING = "Preprocessing"
    PROCESSING = "Processing"
    PROCESSED = "Processed"
    PREPROCESSING_ERROR = "PreProcessingError"
    PROCESSED_WITH_ERRORS = "ProcessedWithErrors"
    POSTPROCESSING_FAILED = "PostProcessingFailed"

    @classmethod
    def parse(cls, text: object) -> MessageStatus:
        """Case-insensitive; accepts RIS's ``PostProcessingError``/``PreProcessError`` spellings too."""
        key = normalize_status(text)
        alias = _MESSAGE_ALIASES.get(key)
        if alias is not None:
            return alias
        for member in cls:
            if normalize_status(member.value) == key:
                return member
        return cls.UNKNOWN

    @property
    def final(self) -> bool:
        """Processing ended (``Acked`` ends an export message's life)."""
        return self in _FINAL_MESSAGE

    @property
    def succeeded(self) -> bool:
        return self in (MessageStatus.PROCESSED, MessageStatus.ACKED)

    @property
    def failed(self) -> bool:
        return self.final and not self.succeeded


_MESSAGE_ALIASES = {
    "postprocessingerror": MessageStatus.POSTPROCESSING_FAILED,
    "postprocesserror": MessageStatus.POSTPROCESSING_FAILED,
    "preprocesserror": MessageStatus.PREPROCESSING_ERROR,
    "preprocessingfailed": MessageStatus.PREPROCESSING_ERROR,
}
_FINAL_MESSAGE = frozenset(
    {
        MessageStatus.ACKED,
        MessageStatus.PROCESSED,
        MessageStatus.PREPROCESSING_ERROR,
        MessageStatus.PROCESSED_WITH_ERRORS,
        MessageStatus.POSTPROCESSING_FAILED,
    }
)
