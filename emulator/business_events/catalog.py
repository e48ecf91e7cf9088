"""The business event catalog (System administration > Set up > Business events, ref §5.1): the standard
events the emulator can raise, with their contract fields, and the DMF import/export events of the samples.

Payload shapes come from payloads.py (``build_payload``, ``schema_payload``); ids and fields not taken from a
Microsoft source or a captured payload say so in their ``note`` (UNCONFIRMED / EMULATOR SAMPLE).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from emulator.business_events.payloads import (
    BusinessEventDefinition,
    ContractField,
    FieldType,
    PayloadError,
)

__all__ = ["CATALOG", "event_definition"]


# -- the catalog ------------------------------------------------------------------------------------------


def _f(name: str, kind: FieldType, label: str, example: Any) -> ContractField:
    return ContractField(name, kind, label, example)


_S, _E, _I, _I64, _R = FieldType.STRING, FieldType.ENUM, FieldType.INT, FieldType.INT64, FieldType.REAL
_D, _DT, _ISO = FieldType.DATE, FieldType.DATETIME, FieldType.ISO_DATETIME
_EXAMPLE_DAY = "2024-05-02"
_EXAMPLE_DUE = (datetime(2024, 5, 2, tzinfo=UTC) + timedelta(days=30)).date().isoformat()

_LEGAL_ENTITY = _f("LegalEntity", _S, "Legal entity", "usmf")

_INVOICE_FIELDS = (
    _f("InvoiceAccount", _S, "Invoice account", "US-001"),
    _f("InvoiceAmountInAccountingCurrency", _R, "Invoice amount in accounting currency", 2525.5),
    _f("InvoiceDate", _D, "Invoice date", _EXAMPLE_DAY),
    _f("InvoiceDueDate", _D, "Invoice due date", _EXAMPLE_DUE),
    _f("InvoiceId", _S, "Invoice", "CIV-000101"),
    _f("InvoiceTaxAmount", _R, "Invoice tax amount", 0.0),
    _LEGAL_ENTITY,
)

_BATCH_FIELDS = (
    _f("AdminEmailId", _S, "Admin user email ID", "admin@contoso.com"),
    _f("JobDescription", _S, "Batch job description", "Import customers"),
    _f("JobEndUtcDateTime", _DT, "Job end UTC date time", "2024-05-02T08:15:00Z"),
    _f("JobExecutedByEmailId", _S, "Batch job executed by email ID", "admin@contoso.com"),
    _f("JobId", _I64, "Batch job ID", 5637145326),
    _f("JobOwnerEmailId", _S, "Batch job owner email ID", "admin@contoso.com"),
    _f("JobStatus", _E, "Batch job status", "Error"),
)

_BATCH_NOTE = (
    "UNCONFIRMED id: Microsoft lists the batch events by name only (Batch business events); the fields are "
    "the documented payload and the Download-schema sample of ref §5.1."
)


def _batch_event(event_id: str, name: str, description: str) -> BusinessEventDefinition:
    return BusinessEventDefinition(
        event_id, name, "Batch", "System administration", description, _BATCH_FIELDS, note=_BATCH_NOTE
    )


_DEFINITIONS = (
    BusinessEventDefinition(
        "PurchaseOrderConfirmedBusinessEvent",
        "Purchase order confirmed",
        "Purchase order",
        "Procurement and sourcing",
        "A purchase order is confirmed.",
        (
            _LEGAL_ENTITY,
            _f("PurchaseJournal", _S, "Purchase order confirmation", "00000101-1"),
            _f("PurchaseOrderDate", _D, "Purchase order date", _EXAMPLE_DAY),
            _f("PurchaseOrderNumber", _S, "Purchase order", "00000101"),
            _f("PurchaseType", _E, "Purchase type", "Purch"),
            _f("TransactionCurrencyAmount", _R, "Amount in transaction currency", 90055.6),
            _f("TransactionCurrencyCode", _S, "Currency", "USD"),
            _f("VendorAccount", _S, "Vendor account", "1001"),
        ),
        note="Fields from a captured payload (ref §5.1 example 2).",
    ),
    BusinessEventDefinition(
        "VendorInvoicePostedBusinessEvent",
        "Vendor invoice posted",
        "Vendor invoice",
        "Accounts payable",
        "A vendor invoice is posted.",
        (
            *(f for f in _INVOICE_FIELDS if f.name != "InvoiceId"),
            _f("InvoiceId", _S, "Invoice", "VINV-000042"),
            _f("PurchaseOrderId", _S, "Purchase order", "00000101"),
            _f("VendorAccount", _S, "Vendor account", "1001"),
        ),
        note="UNCONFIRMED fields: modelled on SalesInvoicePostedBusinessEvent; get the real ones from the "
        "catalog's Download schema.",
    ),
    BusinessEventDefinition(
        "SalesInvoicePostedBusinessEvent",
        "Invoice is created from a sales order",
        "Sales order",
        "Accounts receivable",
        "Invoice is created from a sales order.",
        (*_INVOICE_FIELDS, _f("SalesOrderId", _S, "Sales order", "000101")),
        note="Fields from Microsoft's X++ listing (ref §5.1 example 1). Raised when a sales order becomes "
        "Invoiced through OData.",
    ),
    BusinessEventDefinition(
        "SalesOrderConfirmedBusinessEvent",
        "Sales order confirmed",
        "Sales order",
        "Sales and marketing",
        "A sales order is confirmed.",
        (
            _f("ConfirmationDate", _D, "Confirmation date", _EXAMPLE_DAY),
            _f("ConfirmationId", _S, "Confirmation", "USMF-CONF-000101"),
            _f("CustomerAccount", _S, "Customer account", "US-001"),
            _LEGAL_ENTITY,
            _f("SalesOrderNumber", _S, "Sales order", "000101"),
            _f("TransactionCurrencyAmount", _R, "Amount in transaction currency", 2525.5),
            _f("TransactionCurrencyCode", _S, "Currency", "USD"),
        ),
        note="EMULATOR SAMPLE: id and fields are not from a Microsoft source; raised when a sales order's "
        "DocumentStatus becomes Confirmation (the Confirm action or a PATCH).",
    ),
    BusinessEventDefinition(
        "BusinessEventsAlertEvent",
        "Alert",
        "Alerts",
        "System administration",
        "An alert rule fired (alerts as business events).",
        (
            _f("Email", _S, "Email", "admin@contoso.com"),
            _f("FieldId", _I, "Field ID", 3),
            _f("Link", _S, "Link", ""),
            _f("Message", _S, "Message", "LocationChanged"),
            _f("MessageDetails", _S, "Message details", "View Location: BULK-002, 24"),
            _f("ParentTableId", _I, "Parent table ID", 8565),
            _f("RuleId", _S, "Rule ID", "000428"),
            _f("Subject", _S, "Subject", "LocationChanged"),
            _f("TableId", _I, "Table ID", 8565),
            _f("TypeTrigger", _S, "Trigger", "FieldChanged"),
            _f("UserId", _S, "User ID", "Admin"),
        ),
        note="Fields from a captured payload (shared/samples/business-events/BusinessEventsAlertEvent.json).",
    ),
    _batch_event("BatchJobStartedBusinessEvent", "Batch job started", "A batch job is marked as running."),
    _batch_event("BatchJobFinishedBusinessEvent", "Batch job finished", "A batch job is completed."),
    _batch_event("BatchJobFailedBusinessEvent", "Batch job failed", "A batch job fails."),
    _batch_event("BatchJobCancelledBusinessEvent", "Batch job cancelled", "A batch job is canceled."),
    BusinessEventDefinition(
        "NAVAXDMFImportStatusBusinessEvent",
        "DMF import status",
        "Data management",
        "Data management (NAVAX extension)",
        "A data management import project finished (a custom ISV event).",
        (
            _f("EndDateTime", _ISO, "End date/time", "2024-05-02T07:55:30Z"),
            _f("EntityName", _S, "Entity name", "Customer groups"),
            _f("ExecutionId", _S, "Execution ID", "CustGroupImport-2024-05-02T07:55:23-661B8ED5EA024A6F"),
            _f("FileName", _S, "File name", "CustomerGroups.xml"),
            _LEGAL_ENTITY,
            _f("NoOfCreatedRecords", _I, "Created records", 1),
            _f("NoOfRecords", _I, "Records", 2),
            _f("NoOfUpdatedRecords", _I, "Updated records", 0),
            _f("OperationType", _S, "Operation type", "Import"),
            _f("ProjectCategory", _S, "Project category", "Project"),
            _f("RecId", _I64, "Record ID", 5637188829),
            _f("StartedDateTime", _ISO, "Started date/time", "2024-05-02T07:55:27Z"),
            _f("Status", _S, "Status", "Partially succeeded"),
        ),
        note="Shape of shared/samples/business-events/NAVAXDMFImportStatusBusinessEvent.json (ISO dates "
        "mixed with /Date(ms)/, Status an enum label).",
    ),
    BusinessEventDefinition(
        "NAVAXDMFExportBusinessEvent",
        "DMF export",
        "Data management",
        "Data management (NAVAX extension)",
        "A data management export finished; DownloadURL is a SAS link to the file (a custom ISV event).",
        (
            _f("DownloadURL", _S, "Download URL", "https://example.blob.core.windows.net/dmf/export.json"),
            _f("EntityName", _S, "Entity name", "Customer groups"),
            _LEGAL_ENTITY,
            _f("NoOfRecords", _I, "Records", 7),
            _f("OperationType", _S, "Operation type", "Export"),
            _f("ProjectCategory", _S, "Project category", "Integration"),
            _f("RecId", _I64, "Record ID", 68719523988),
        ),
        legacy_omits=frozenset({"BusinessEventId", "ControlNumber"}),
        legacy_braced_event_id=True,
        note="Shape of shared/samples/business-events/NAVAXDMFExportBusinessEvent.json; in the legacy "
        "envelope it has no BusinessEventId and no ControlNumber and a braced EventId, like the sample.",
    ),
)

CATALOG: dict[str, BusinessEventDefinition] = {d.event_id: d for d in _DEFINITIONS}
_BY_LOWER = {d.event_id.lower(): d for d in _DEFINITIONS}


def event_definition(event_id: str) -> BusinessEventDefinition:
    """The catalog entry (case-insensitive id); ``PayloadError`` names the known ids otherwise."""
    found = _BY_LOWER.get(event_id.strip().lower())
    if found is None:
        raise PayloadError(f"unknown business event '{event_id}'; the catalog has: {', '.join(CATALOG)}")
    return found
