"""EMULATOR SAMPLES: a few plausible actions so clients can exercise every action shape offline.

They are not standard F&O actions (real ones are X++ methods with ``[SysODataActionAttribute]``, ref §1.1);
they show the shapes: entity-bound with a validation failure (``Confirm``), collection-bound with a result
(``GetCustomerCount``, ``GetTotalCreditLimit``), entity-bound void with an enum parameter
(``SetOnHoldStatus``), and unbound action imports with typed parameters (``ConvertCurrency``,
``GetApplicationVersion``).
"""

from __future__ import annotations

from typing import Any

from emulator.odata.actions import Action, ActionCall, ActionFailed, ActionParameter, ActionRegistry
from emulator.odata.catalog import CUST_VENDOR_BLOCKED
from emulator.odata.schema import EDM_DECIMAL, EDM_ENUM, EDM_INT32, EDM_STRING
from emulator.odata.serialize import utc_now

APPLICATION_VERSION = "10.0.41 (D365 F&O emulator)"
# Fixed demo exchange rates: units of USD per unit of currency.
_USD_PER_UNIT = {"USD": 1.0, "EUR": 1.08, "GBP": 1.27, "DKK": 0.145, "CAD": 0.73, "JPY": 0.0066}


def _confirm(call: ActionCall) -> str:
    """Confirm a sales order: F&O-like checks first, then DocumentStatus becomes Confirmation."""
    order = call.row
    assert order is not None
    assert call.entity is not None
    number, company = order["SalesOrderNumber"], order["dataAreaId"]
    if order["SalesOrderStatus"] in ("Canceled", "Invoiced"):
        raise ActionFailed(
            f"Sales order {number} has status {order['SalesOrderStatus']} and cannot be confirmed."
        )
    total_row = call.conn.execute(
        'SELECT COUNT(*), COALESCE(SUM("LineAmount"), 0) FROM "SalesOrderLines" '
        'WHERE "dataAreaId" = ? AND "SalesOrderNumber" = ?',
        (company, number),
    ).fetchone()
    if total_row[0] == 0:
        raise ActionFailed(f"Sales order {number} has no lines and cannot be confirmed.")
    customer = call.conn.execute(
        'SELECT "OnHoldStatus", "CreditLimit", "CreditLimitIsMandatory" FROM "CustomersV3" '
        'WHERE "dataAreaId" = ? AND "CustomerAccount" = ?',
        (company, order["OrderingCustomerAccountNumber"]),
    ).fetchone()
    if customer is not None:
        on_hold, limit, mandatory = customer
        if on_hold == "All":
            raise ActionFailed(
                f"Customer {order['OrderingCustomerAccountNumber']} is on hold for all transactions."
            )
        if mandatory == "Yes" and total_row[1] > limit:
            raise ActionFailed(
                f"The credit limit for customer {order['OrderingCustomerAccountNumber']} is "
                f"exceeded: the order total {total_row[1]:.2f} is above the limit {limit:.2f}."
            )
    call.store.update(call.conn, call.entity, order["_RecId"], {"DocumentStatus": "Confirmation"})
    return f"{company.upper()}-CONF-{number}"


def _customer_count(call: ActionCall) -> int:
    sql = 'SELECT COUNT(*) FROM "CustomersV3" WHERE "dataAreaId" = ?'
    params: list[Any] = [call.company]
    for name in ("CustomerGroupId", "OnHoldStatus"):
        if call.parameters.get(name) is not None:
            sql += f' AND "{name}" = ?'
            params.append(call.parameters[name])
    return int(call.conn.execute(sql, params).fetchone()[0])


def _total_credit_limit(call: ActionCall) -> float:
    currency = call.parameters["CurrencyCode"]
    row = call.conn.execute(
        'SELECT COUNT(*), COALESCE(SUM("CreditLimit"), 0) FROM "CustomersV3" WHERE "dataAreaId" = ? '
        'AND "SalesCurrencyCode" = ?',
        (call.company, currency),
    ).fetchone()
    if row[0] == 0:
        raise ActionFailed(f"No customers in company {call.company} use the currency '{currency}'.")
    return float(row[1])


def _set_on_hold(call: ActionCall) -> None:
    assert call.row is not None
    assert call.entity is not None
    call.store.update(
        call.conn,
        call.entity,
        call.row["_RecId"],
        {"OnHoldStatus": call.parameters["OnHoldStatus"], "ModifiedDateTime": utc_now()},
    )


def _convert_currency(call: ActionCall) -> float:
    amount = float(call.parameters["Amount"])
    source, target = call.parameters["FromCurrency"].upper(), call.parameters["ToCurrency"].upper()
    for code in (source, target):
        if code not in _USD_PER_UNIT:
            raise ActionFailed(
                f"No exchange rate is defined between {source} and {target}: currency '{code}' "
                "is not set up in the exchange rate type Default."
            )
    return round(amount * _USD_PER_UNIT[source] / _USD_PER_UNIT[target], 2)


def register_sample_actions(registry: ActionRegistry) -> None:
    registry.register(
        Action(
            "Confirm",
            _confirm,
            return_type=EDM_STRING,
            bound_set="SalesOrderHeadersV2",
            entity_bound=True,
            description="Emulator sample: confirms a sales order; fails without lines, on hold, over credit.",
        )
    )
    registry.register(
        Action(
            "GetCustomerCount",
            _customer_count,
            return_type=EDM_INT32,
            bound_set="CustomersV3",
            parameters=(
                ActionParameter("CustomerGroupId", EDM_STRING),
                ActionParameter("OnHoldStatus", EDM_ENUM, enum_type=CUST_VENDOR_BLOCKED),
            ),
            description="Emulator sample: counts the customers of the caller's company.",
        )
    )
    registry.register(
        Action(
            "GetTotalCreditLimit",
            _total_credit_limit,
            return_type=EDM_DECIMAL,
            bound_set="CustomersV3",
            parameters=(ActionParameter("CurrencyCode", EDM_STRING, nullable=False),),
            description="Emulator sample: sums the credit limits in one currency; fails when none use it.",
        )
    )
    registry.register(
        Action(
            "SetOnHoldStatus",
            _set_on_hold,
            bound_set="CustomersV3",
            entity_bound=True,
            parameters=(
                ActionParameter("OnHoldStatus", EDM_ENUM, nullable=False, enum_type=CUST_VENDOR_BLOCKED),
            ),
            description="Emulator sample: puts a customer on hold (void).",
        )
    )
    registry.register(
        Action(
            "ConvertCurrency",
            _convert_currency,
            return_type=EDM_DECIMAL,
            parameters=(
                ActionParameter("Amount", EDM_DECIMAL, nullable=False),
                ActionParameter("FromCurrency", EDM_STRING, nullable=False),
                ActionParameter("ToCurrency", EDM_STRING, nullable=False),
            ),
            description="Emulator sample: converts an amount with fixed demo exchange rates.",
        )
    )
    registry.register(
        Action(
            "GetApplicationVersion",
            lambda call: APPLICATION_VERSION,
            return_type=EDM_STRING,
            description="Emulator sample: the emulated application version.",
        )
    )
