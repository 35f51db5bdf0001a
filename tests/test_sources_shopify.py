"""Shopify exports: folding line-item rows into orders, refunds, customers export generations."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from juno.config import Config
from juno.errors import InputError
from juno.sources import read_store
from juno.sources.shopify import is_shopify_store, read_shopify
from juno.validate import validate

EXAMPLE = Path(__file__).parents[1] / "examples" / "shopify"

HEADER_2022 = [
    "Name", "Email", "Financial Status", "Paid at", "Fulfillment Status", "Fulfilled at",
    "Accepts Marketing", "Currency", "Subtotal", "Shipping", "Taxes", "Total", "Discount Code",
    "Discount Amount", "Shipping Method", "Created at", "Lineitem quantity", "Lineitem name",
    "Lineitem price", "Lineitem compare at price", "Lineitem sku", "Lineitem requires shipping",
    "Lineitem taxable", "Lineitem fulfillment status", "Billing Name", "Billing Street",
    "Billing Address1", "Billing Address2", "Billing Company", "Billing City", "Billing Zip",
    "Billing Province", "Billing Country", "Billing Phone", "Shipping Name", "Shipping Street",
    "Shipping Address1", "Shipping Address2", "Shipping Company", "Shipping City", "Shipping Zip",
    "Shipping Province", "Shipping Country", "Shipping Phone", "Notes", "Note Attributes",
    "Cancelled at", "Payment Method", "Payment Reference", "Refunded Amount", "Vendor", "Id",
    "Tags", "Risk Level", "Source", "Lineitem discount", "Tax 1 Name", "Tax 1 Value", "Tax 2 Name",
    "Tax 2 Value", "Tax 3 Name", "Tax 3 Value", "Tax 4 Name", "Tax 4 Value", "Tax 5 Name",
    "Tax 5 Value", "Phone", "Receipt Number", "Duties", "Billing Province Name",
    "Shipping Province Name", "Payment Terms Name", "Next Payment Due At",
]
EXTRA_2025 = ["Outstanding Balance", "Employee", "Location", "Device ID", "Payment ID",
              "Payment References"]
HEADER_2025 = HEADER_2022[:51] + EXTRA_2025[:4] + HEADER_2022[51:71] + ["Payment ID"] + \
    HEADER_2022[71:] + ["Payment References"]
CUSTOMERS_OLD = [
    "First Name", "Last Name", "Email", "Company", "Address1", "Address2", "City", "Province",
    "Province Code", "Country", "Country Code", "Zip", "Phone", "Accepts Marketing", "Total Spent",
    "Total Orders", "Tags", "Tax Exempt",
]
CUSTOMERS_MIDDLE = [
    "First Name", "Last Name", "Email", "Accepts Email Marketing", "Company", "Address1",
    "Address2", "City", "Province", "Province Code", "Country", "Country Code", "Zip", "Phone",
    "Accepts SMS Marketing", "Total Spent", "Total Orders", "Tags", "Note", "Tax Exempt",
]
CUSTOMERS_NEW = [
    "Customer ID", "First Name", "Last Name", "Email", "Accepts Email Marketing",
    "Default Address Company", "Default Address Address1", "Default Address Address2",
    "Default Address City", "Default Address Province Code", "Default Address Country Code",
    "Default Address Zip", "Default Address Phone", "Phone", "Accepts SMS Marketing", "Total Spent",
    "Total Orders", "Note", "Tax Exempt", "Tags",
]


def write_csv(path: Path, header: list[str], rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=header, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in header})
    return path


def first_row(name: str, email: str, subtotal: str, **extra: str) -> dict[str, str]:
    """An order's first row: order fields filled."""
    row = {
        "Name": name, "Email": email, "Financial Status": "paid", "Currency": "USD",
        "Subtotal": subtotal, "Shipping": "0.00", "Taxes": "0.00", "Total": subtotal,
        "Discount Amount": "0.00", "Created at": "2025-03-01 10:00:00 -0500",
        "Lineitem quantity": "1", "Lineitem name": "Beans", "Lineitem price": subtotal,
        "Lineitem sku": "B1", "Vendor": "Roaster", "Refunded Amount": "0.00",
        "Source": "web",
    }
    row.update({k.replace("_", " "): v for k, v in extra.items()})
    return row


def continuation(name: str, email: str, sku: str, qty: str, price: str) -> dict[str, str]:
    """A continuation row: Name, Email, Created at and the line item only."""
    return {
        "Name": name, "Email": email, "Created at": "2025-03-01 10:00:00 -0500",
        "Lineitem quantity": qty, "Lineitem name": f"Item {sku}", "Lineitem price": price,
        "Lineitem sku": sku, "Vendor": "Other", "Lineitem discount": "0.00",
    }


def orders_of(folder: Path) -> pd.DataFrame:
    return read_shopify(folder).tables["orders"].frame.set_index("order_id")


def test_first_row_gives_order_fields_and_continuation_rows_give_lines(tmp_path: Path) -> None:
    write_csv(tmp_path / "orders_export.csv", HEADER_2025, [
        first_row("#1001", "a@example.com", "40.00", Discount_Code="SAVE5",
                  Discount_Amount="5.00", Tags="gift", Lineitem_quantity="2",
                  Lineitem_price="15.00"),
        continuation("#1001", "a@example.com", "M1", "1", "15.00"),
        continuation("#1001", "a@example.com", "F1", "1", "0.00"),
        first_row("#1002", "b@example.com", "9.00"),
    ])
    res = read_shopify(tmp_path)
    orders = res.tables["orders"].frame
    assert list(orders["order_id"]) == ["#1001", "#1002"]
    o = orders.iloc[0]
    assert (o["revenue"], o["discount"], o["discount_code"]) == ("40.00", "5.00", "SAVE5")
    assert (o["currency"], o["financial_status"], o["tags"]) == ("USD", "paid", "gift")
    assert o["ordered_at"] == "2025-03-01 10:00:00 -0500"  # offset kept for validation
    assert (o["cancelled"], o["channel"], o["_file"], o["_line"]) == (
        "false", "web", "orders_export.csv", 2)
    assert orders.iloc[1]["_line"] == 5
    lines = res.tables["order_lines"].frame
    assert list(lines["order_id"]) == ["#1001", "#1001", "#1001", "#1002"]
    assert list(lines["sku"]) == ["B1", "M1", "F1", "B1"]
    assert list(lines["quantity"]) == ["2", "1", "1", "1"]
    assert list(lines["_line"]) == [2, 3, 4, 5]
    assert lines["product_name"].iloc[1] == "Item M1"
    assert lines["category"].isna().all()  # Vendor is a brand, not a category
    assert lines["vendor"].iloc[1] == "Other"
    assert "orders_export.csv: 4 line rows folded into 2 orders" in res.notes


def test_refund_statuses(tmp_path: Path) -> None:
    write_csv(tmp_path / "orders_export.csv", HEADER_2025, [
        # Refunded Amount is part of Total (shipping, tax): a full refund refunds the Subtotal.
        first_row("#1", "a@example.com", "30.00", Financial_Status="refunded", Total="37.40",
                  Refunded_Amount="37.40"),
        first_row("#2", "a@example.com", "30.00", Financial_Status="refunded",
                  Refunded_Amount=""),
        first_row("#3", "a@example.com", "30.00", Financial_Status="partially_refunded",
                  Refunded_Amount="10.80"),
        first_row("#4", "a@example.com", "30.00", Financial_Status="partially_refunded",
                  Total="38.39", Refunded_Amount="32.40"),
        first_row("#5", "a@example.com", "30.00", Financial_Status="voided"),
        first_row("#6", "a@example.com", "30.00", Financial_Status="paid"),
    ])
    res = read_shopify(tmp_path)
    o = res.tables["orders"].frame.set_index("order_id")
    assert list(o["refunded"]) == ["30.00", "30.00", "10.80", "30.00", "0.00", "0.00"]
    assert list(o["cancelled"]) == ["false", "false", "false", "false", "true", "false"]
    assert list(o["financial_status"]) == ["refunded", "refunded", "partially_refunded",
                                           "partially_refunded", "voided", "paid"]
    notes = " ".join(res.notes)
    assert "2 refunded in full" in notes and "2 partially refunded" in notes
    assert "1 voided and not cancelled, counted as cancelled" in notes
    assert "1 partial refund exceed" in notes


def test_cancelled_order(tmp_path: Path) -> None:
    write_csv(tmp_path / "orders_export.csv", HEADER_2025, [
        first_row("#1", "a@example.com", "30.00", Cancelled_at="2025-03-02 09:00:00 -0500",
                  Financial_Status="refunded", Refunded_Amount="30.00"),
        continuation("#1", "a@example.com", "X", "1", "0.00"),
        first_row("#2", "a@example.com", "12.00"),
    ])
    o = orders_of(tmp_path)
    assert o.loc["#1", "cancelled"] == "true"
    assert o.loc["#1", "cancelled_at"] == "2025-03-02 09:00:00 -0500"
    assert o.loc["#2", "cancelled"] == "false" and pd.isna(o.loc["#2", "cancelled_at"])


def test_orders_without_email_are_kept_unattributed_and_counted(tmp_path: Path) -> None:
    write_csv(tmp_path / "orders_export.csv", HEADER_2025, [
        first_row("#1", "", "25.00", Source="pos"),
        continuation("#1", "", "X", "1", "0.00"),
        first_row("#2", "", "15.50", Source="pos"),
        first_row("#3", "Someone@Example.com", "10.00"),
    ])
    res = read_shopify(tmp_path)
    o = res.tables["orders"].frame.set_index("order_id")
    assert o.loc[["#1", "#2"], ["customer_id", "email"]].isna().all().all()
    assert o.loc["#3", "customer_id"] == "someone@example.com"  # no customers file: the email
    assert o.loc["#3", "email"] == "Someone@Example.com"
    assert "2 orders without email kept as unattributed (revenue 40.50)" in " ".join(res.notes)
    store = validate(res, Config())
    reasons = store.rejected["reason"].tolist()
    assert reasons.count("no customer id or email (unattributed)") == 2


@pytest.mark.parametrize("header", ["2022", "2025", "2025+extra"])
def test_header_generations_and_unknown_columns(tmp_path: Path, header: str) -> None:
    cols = HEADER_2022 if header == "2022" else HEADER_2025
    if header == "2025+extra":
        # An app's column in the middle and the columns in another order: read by name.
        cols = ["Some App Field", *reversed(cols)]
    assert len(HEADER_2022) == 73 and len(HEADER_2025) == 79
    rows = [
        first_row("#1", "a@example.com", "40.00", Discount_Code="X", Discount_Amount="2.00",
                  Some_App_Field="ignored"),
        continuation("#1", "a@example.com", "M1", "2", "1.00"),
    ]
    write_csv(tmp_path / "orders_export.csv", cols, rows)
    assert is_shopify_store(tmp_path)
    res = read_shopify(tmp_path)
    o = res.tables["orders"].frame
    assert o[["order_id", "revenue", "discount", "discount_code"]].iloc[0].tolist() == [
        "#1", "40.00", "2.00", "X"]
    assert "some_app_field" not in o.columns
    assert res.tables["order_lines"].frame["sku"].tolist() == ["B1", "M1"]


def test_new_customers_export_apostrophes_and_customer_id(tmp_path: Path) -> None:
    write_csv(tmp_path / "orders_export.csv", HEADER_2025, [
        first_row("#1", "Ann@Example.com", "20.00"),
        first_row("#2", "ghost@example.com", "5.00"),
    ])
    write_csv(tmp_path / "customers_export.csv", CUSTOMERS_NEW, [
        {"Customer ID": "'7012345678901", "First Name": "Ann", "Email": "ann@example.com",
         "Accepts Email Marketing": "yes", "Accepts SMS Marketing": "no",
         "Default Address Zip": "'02134", "Default Address Country Code": "US",
         "Phone": "'+15550100123", "Total Spent": "20.00", "Total Orders": "1", "Tags": "vip"},
        {"Customer ID": "'7012345678902", "Email": "", "Phone": "'+15550100999",
         "Accepts Email Marketing": "no", "Accepts SMS Marketing": "yes",
         "Total Spent": "0.00", "Total Orders": "0"},
    ])
    res = read_shopify(tmp_path)
    c = res.tables["customers"].frame
    assert c["customer_id"].tolist() == ["7012345678901", "7012345678902"]
    assert c["phone"].tolist() == ["+15550100123", "+15550100999"]
    assert c["zip"].iloc[0] == "02134"
    assert (c["email_consent"].iloc[0], c["sms_consent"].iloc[0]) == ("yes", "no")
    assert (c["tags"].iloc[0], c["country"].iloc[0]) == ("vip", "US")
    o = res.tables["orders"].frame.set_index("order_id")
    assert o.loc["#1", "customer_id"] == "7012345678901"  # email matched ignoring case
    assert o.loc["#2", "customer_id"] == "ghost@example.com"
    assert any("1 order (1 email) not in the customers export" in n for n in res.notes)
    assert any("new (Customer ID) header" in n for n in res.notes)


@pytest.mark.parametrize(
    ("header", "consent_col", "sms"),
    [(CUSTOMERS_OLD, "Accepts Marketing", False), (CUSTOMERS_MIDDLE, "Accepts Email Marketing", True)],
)
def test_old_and_middle_customers_exports(
    tmp_path: Path, header: list[str], consent_col: str, sms: bool
) -> None:
    write_csv(tmp_path / "orders_export.csv", HEADER_2022, [first_row("#1", "ann@example.com", "9")])
    row = {"First Name": "Ann", "Email": " Ann@Example.com ", consent_col: "yes",
           "Zip": "'02134", "Phone": "'+15550100123", "Country Code": "CA",
           "Total Spent": "9.00", "Total Orders": "1"}
    if sms:
        row["Accepts SMS Marketing"] = "no"
    write_csv(tmp_path / "customers_export.csv", header, [
        row, {"Email": "bo@example.com", consent_col: "no", "Total Spent": "0.00",
              "Total Orders": "0"}])
    res = read_shopify(tmp_path)
    c = res.tables["customers"].frame
    # Without Customer ID, the lower-cased trimmed email is the customer id, in both tables.
    assert c["customer_id"].tolist() == ["ann@example.com", "bo@example.com"]
    assert res.tables["orders"].frame["customer_id"].tolist() == ["ann@example.com"]
    assert c["email_consent"].tolist() == ["yes", "no"]
    if sms:
        assert c["sms_consent"].iloc[0] == "no"
    else:  # the old export has no SMS consent: unknown
        assert pd.isna(c["sms_consent"].iloc[0])
    assert (c["phone"].iloc[0], c["zip"].iloc[0], c["country"].iloc[0]) == (
        "+15550100123", "02134", "CA")
    store = validate(res, Config())
    consent = store.customers.set_index("customer_id")["email_consent"]
    assert consent["ann@example.com"] == "subscribed"
    assert consent["bo@example.com"] == "unsubscribed"


def test_several_orders_files_in_shopify_order(tmp_path: Path) -> None:
    write_csv(tmp_path / "orders_export_10.csv", HEADER_2025, [first_row("#3", "c@example.com", "3")])
    write_csv(tmp_path / "orders_export_2.csv", HEADER_2025, [first_row("#2", "b@example.com", "2")])
    write_csv(tmp_path / "Orders_Export_1.CSV", HEADER_2022, [
        first_row("#1", "a@example.com", "1"),
        continuation("#1", "a@example.com", "M", "1", "0")])
    assert is_shopify_store(tmp_path)
    res = read_shopify(tmp_path)
    assert res.tables["orders"].frame["order_id"].tolist() == ["#1", "#2", "#3"]
    assert [Path(f.path).name for f in res.files] == [
        "Orders_Export_1.CSV", "orders_export_2.csv", "orders_export_10.csv"]
    assert [f.rows for f in res.files] == [2, 1, 1]
    assert "Orders_Export_1.CSV: 2 line rows folded into 1 order" in res.notes


def test_order_repeated_with_its_fields_is_not_merged(tmp_path: Path) -> None:
    write_csv(tmp_path / "orders_export.csv", HEADER_2025, [
        first_row("#1", "a@example.com", "10.00"),
        first_row("#1", "a@example.com", "10.00"),  # the same order exported twice
    ])
    res = read_shopify(tmp_path)
    assert res.tables["orders"].frame["order_id"].tolist() == ["#1", "#1"]
    store = validate(res, Config())
    assert store.rejected["reason"].str.startswith("duplicate order id").sum() == 1


def test_line_numbers_count_line_breaks_inside_cells(tmp_path: Path) -> None:
    write_csv(tmp_path / "orders_export.csv", HEADER_2025, [
        first_row("#1", "a@example.com", "10.00", Notes="leave at the door\nthanks\nA."),
        first_row("#2", "a@example.com", "10.00"),
    ])
    o = read_shopify(tmp_path).tables["orders"].frame
    assert o["_line"].tolist() == [2, 5]


def test_customers_totals_cross_checked_against_orders(tmp_path: Path) -> None:
    write_csv(tmp_path / "orders_export.csv", HEADER_2025, [
        first_row("#1", "a@example.com", "10.00", Total="12.00"),
        first_row("#2", "b@example.com", "10.00", Total="12.00"),
    ])
    write_csv(tmp_path / "customers_export.csv", CUSTOMERS_MIDDLE, [
        {"Email": "a@example.com", "Accepts Email Marketing": "yes", "Total Spent": "12.00",
         "Total Orders": "1"},
        {"Email": "b@example.com", "Accepts Email Marketing": "yes", "Total Spent": "80.00",
         "Total Orders": "4"},  # history older than this orders export
    ])
    note = next(n for n in read_shopify(tmp_path).notes if "Total Orders" in n)
    assert "for 1 of 2 customers (1 show more orders than the export holds" in note
    assert "shorter period" in note and "Total Spent differs for 1" in note

    write_csv(tmp_path / "customers_export.csv", CUSTOMERS_MIDDLE, [
        {"Email": "a@example.com", "Accepts Email Marketing": "yes", "Total Spent": "12.00",
         "Total Orders": "1"}])
    assert any("agree with the orders export" in n for n in read_shopify(tmp_path).notes)


def test_detection(tmp_path: Path) -> None:
    assert not is_shopify_store(tmp_path)
    (tmp_path / "orders.csv").write_text("order_id,customer_id,ordered_at,revenue\n1,a,2025-01-01,3\n")
    assert not is_shopify_store(tmp_path)
    (tmp_path / "orders_export.csv").write_text("id,total\n1,2\n")
    assert not is_shopify_store(tmp_path)  # named like Shopify, but not its header
    (tmp_path / "orders_export.csv").unlink()
    write_csv(tmp_path / "CUSTOMERS_EXPORT.csv", CUSTOMERS_OLD, [{"Email": "a@example.com"}])
    assert is_shopify_store(tmp_path)
    with pytest.raises(InputError, match="no orders export"):
        read_shopify(tmp_path)


def test_read_store_dispatch(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_store(tmp_path / "nope", None, None)
    assert read_store(EXAMPLE, None, None).kind == "shopify"
    (tmp_path / "orders.csv").write_text("order_id,customer_id,ordered_at,revenue\n1,a,2025-01-01,3\n")
    assert read_store(tmp_path, None, None).kind == "generic"
    mapping = {"orders": {"file": "orders.csv", "columns": {
        "order_id": "order_id", "customer_id": "customer_id", "ordered_at": "ordered_at",
        "revenue": "revenue * 2"}}}
    res = read_store(tmp_path, mapping, tmp_path)
    assert res.kind == "mapping"
    assert res.tables["orders"].frame["revenue"].tolist() == ["6"]


# --------------------------------------------------------------------------- the example store


def test_example_is_what_the_generator_writes(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(EXAMPLE / "generate_shopify.py"), str(tmp_path)],
                   check=True, capture_output=True)
    for name in ("orders_export_1.csv", "orders_export_2.csv", "customers_export.csv"):
        assert (tmp_path / name).read_bytes() == (EXAMPLE / name).read_bytes(), name


def test_example_covers_the_cases() -> None:
    header = (EXAMPLE / "orders_export_1.csv").read_text().splitlines()[0].split(",")
    assert header == HEADER_2025
    res = read_store(EXAMPLE, None, None)
    o = res.tables["orders"].frame
    lines = res.tables["order_lines"].frame
    assert res.kind == "shopify" and len(o) > 200
    assert (lines["order_id"].value_counts() > 1).sum() > 50  # multi-line orders
    assert set(o["financial_status"]) >= {"paid", "refunded", "partially_refunded", "voided"}
    assert (o["cancelled"] == "true").sum() >= 3
    assert o["discount_code"].notna().sum() > 20
    assert o["email"].isna().sum() == 2


def test_example_net_revenue_matches_a_hand_computation() -> None:
    """Three scripted customers of examples/shopify (see generate_shopify.py's docstring)."""
    store = validate(read_store(EXAMPLE, None, None), Config())
    ids = store.customers.set_index("email_key")["customer_id"]
    net = store.orders.groupby("customer_id")["net_revenue"].sum()
    # Maple: #A1 2 x 18.00 + 12.00 = 48.00 - WELCOME10 4.80 = 43.20 (paid);
    #        #A2 3 x 9.50 = 28.50, partially refunded 10.26 (one tea + 8% tax) -> 18.24.
    assert net[ids["maple.rivera@example.com"]] == pytest.approx(43.20 + 28.50 - 10.26)
    # Jun: #B1 grinder 89.00 (paid); #B2 refunded in full and #B3 cancelled count nothing.
    assert net[ids["jun.okafor@example.com"]] == pytest.approx(89.00)
    # Lena: #C1 18.00 + 9.50 + 2 x 6.00 + 12.00 = 51.50 - SPRING20 10.30 = 41.20 (ordered as
    #       Lena.Brandt@Example.org); #C2 grinder 89.00 refunded 96.12 incl. tax: capped at the
    #       Subtotal, so refunded in full.
    assert net[ids["lena.brandt@example.org"]] == pytest.approx(41.20)
