"""Where business events come from: OData changes that mean a business event in D365, and explicit raises
(the admin API, and the emulator's DMF / recurring-integration engines when an import or export finishes).

Events are raised after the write commits, never for rolled-back work (ref §5.3), through the OData store's
change listener (``ODataStore.on_change``). Rules:

- ``SalesOrderHeadersV2``: ``SalesOrderStatus`` becoming ``Invoiced`` raises
  ``SalesInvoicePostedBusinessEvent``; ``DocumentStatus`` becoming ``Confirmation`` (the ``Confirm`` action or
  a PATCH) raises
  ``SalesOrderConfirmedBusinessEvent``. Only transitions count: a second Confirm of a confirmed order does not
  raise again; creating an order that is Invoiced already does not post an invoice.
- Other sets (customers, vendors, products) raise nothing: D365 has no business event for master data
  changes (those are data events, ref §5.4, not emulated).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from emulator.business_events.service import BusinessEvents, RaisedEvent

if TYPE_CHECKING:
    from emulator.odata.store import ODataStore, Row
    from emulator.state import EmulatorState

__all__ = ["raise_event", "watch_odata"]

SALES_ORDERS = "SalesOrderHeadersV2"
SALES_INVOICE_POSTED = "SalesInvoicePostedBusinessEvent"
SALES_ORDER_CONFIRMED = "SalesOrderConfirmedBusinessEvent"


def raise_event(
    state: EmulatorState, event_id: str, legal_entity: str | None, fields: Mapping[str, Any] | None = None
) -> RaisedEvent:
    """Raise a catalog event now (e.g. ``NAVAXDMFImportStatusBusinessEvent`` when an import finishes).

    ``fields`` are contract fields by name (dates as ISO text, ``datetime`` or ``/Date(ms)/``); missing ones
    take the catalog's example values, ``LegalEntity`` the legal entity. Delivery is asynchronous; nothing is
    sent when the event is not activated for ``legal_entity``. Raises ``PayloadError`` (a ``ValueError``) for
    an unknown event or field.
    """
    events: BusinessEvents = state.business_events
    return events.raise_event(event_id, legal_entity, fields)


def watch_odata(store: ODataStore, events: BusinessEvents) -> None:
    """Listen to committed sales order changes (the only set with rules: other writes cost nothing)."""

    def changed(entity_set: str, operation: str, before: Row | None, after: Row | None) -> None:
        if entity_set == SALES_ORDERS and operation == "update" and before is not None and after is not None:
            _sales_order_updated(store, events, before, after)

    store.on_change(changed, entity_sets={SALES_ORDERS})


def _became(before: Row, after: Row, name: str, value: str) -> bool:
    return str(after.get(name)) == value and str(before.get(name)) != value


def _sales_order_updated(store: ODataStore, events: BusinessEvents, before: Row, after: Row) -> None:
    company = str(after["dataAreaId"])
    number = str(after["SalesOrderNumber"])
    invoiced = _became(before, after, "SalesOrderStatus", "Invoiced")
    confirmed = _became(before, after, "DocumentStatus", "Confirmation")
    if invoiced and events.activated(SALES_INVOICE_POSTED, company):
        today = _today()
        events.raise_event(
            SALES_INVOICE_POSTED,
            company,
            {
                "InvoiceAccount": str(after.get("InvoiceCustomerAccountNumber") or "")
                or str(after.get("OrderingCustomerAccountNumber") or ""),
                "InvoiceAmountInAccountingCurrency": _order_total(store, after),
                "InvoiceDate": today,
                "InvoiceDueDate": today + timedelta(days=_payment_days(after.get("PaymentTermsName"))),
                "InvoiceId": f"CIV-{number}",
                "InvoiceTaxAmount": 0.0,
                "SalesOrderId": number,
            },
        )
    if confirmed and events.activated(SALES_ORDER_CONFIRMED, company):
        events.raise_event(
            SALES_ORDER_CONFIRMED,
            company,
            {
                "ConfirmationDate": _today(),
                "ConfirmationId": f"{company.upper()}-CONF-{number}",  # what the Confirm action answers
                "CustomerAccount": str(after.get("OrderingCustomerAccountNumber") or ""),
                "SalesOrderNumber": number,
                "TransactionCurrencyAmount": _order_total(store, after),
                "TransactionCurrencyCode": str(after.get("CurrencyCode") or ""),
            },
        )


def _today() -> datetime:
    now = datetime.now(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC)


def _payment_days(terms: object) -> int:
    match = re.search(r"\d+", str(terms or ""))
    return int(match.group()) if match else 30


def _order_total(store: ODataStore, order: Row) -> float:
    """The order's line amounts less its header discount (0 when the lines cannot be read)."""
    try:
        row = (
            store.connection()
            .execute(
                'SELECT COALESCE(SUM("LineAmount"), 0) FROM "SalesOrderLines" '
                'WHERE "dataAreaId" = ? AND "SalesOrderNumber" = ?',
                (order["dataAreaId"], order["SalesOrderNumber"]),
            )
            .fetchone()
        )
    except sqlite3.Error:
        return 0.0
    discount = float(order.get("TotalDiscountPercentage") or 0)
    return round(float(row[0]) * (1 - discount / 100), 2)
