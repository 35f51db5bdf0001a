"""Column mapping: expressions, folding, rules, invalid mappings, and the real UCI sample."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from juno.config import Config, load_config
from juno.errors import ConfigError, InputError
from juno.sources.expr import parse_expression
from juno.sources.mapping import parse_mapping, read_mapped
from juno.validate import validate

UCI = Path(__file__).parents[2] / "shared/data/online_retail_sample.csv"
EXAMPLE = Path(__file__).parents[1] / "examples" / "online_retail"

LINES = """\
Invoice,Sku,Qty,Unit Price,When,Customer,Country
1001,A,2,2.95,12/01/2010 08:26,c1,UK
1001,B,3,0.10,12/01/2010 08:26,c1,UK
C1002,A,-1,2.95,12/02/2010 09:00,c1,UK
1003,A,5,1.00,12/03/2010 10:00,NA,FR
1003,Z,-2,1.50,12/03/2010 10:00,NA,FR
1004,B,1,4.00,not a date,c2,DE
"""


def orders_mapping(**over: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "date_format": "%m/%d/%Y %H:%M",
        "orders": {
            "file": "lines.csv",
            "group_by": "Invoice",
            "columns": {
                "order_id": "Invoice",
                "customer_id": "Customer",
                "ordered_at": "first(When)",
                "revenue": "sum(Qty * unit_price)",
                "currency": "'GBP'",
            },
        },
    }
    m.update(over)
    return m


def read(tmp_path: Path, mapping: dict[str, Any], text: str = LINES) -> Any:
    (tmp_path / "lines.csv").write_text(text)
    return read_mapped(tmp_path, mapping, tmp_path)


def orders(res: Any) -> pd.DataFrame:
    return res.tables["orders"].frame.set_index("order_id")


def test_fold_lines_into_orders(tmp_path: Path) -> None:
    res = read(tmp_path, orders_mapping())
    o = orders(res)
    assert list(o.index) == ["1001", "C1002", "1003", "1004"]
    # 2 x 2.95 + 3 x 0.10 = 6.2, written without float noise
    assert o["revenue"].tolist() == ["6.2", "-2.95", "2", "4"]
    assert o["currency"].tolist() == ["GBP"] * 4
    assert o.loc["1001", "ordered_at"] == "2010-12-01 08:26:00"  # date_format applied
    assert o.loc["1004", "ordered_at"] == "not a date"  # kept: validation rejects it
    assert pd.isna(o.loc["1003", "customer_id"])  # NA is missing
    assert o["_line"].tolist() == [2, 4, 5, 7]
    assert res.notes[0] == "lines.csv: 6 rows folded into 4 orders by Invoice"
    assert any("1 ordered_at values do not match date_format" in n for n in res.notes)
    assert any("1 orders have no customer id or email: kept as unattributed (revenue 2.00)" in n
               for n in res.notes)


def test_rules_mark_cancellations_and_refunds(tmp_path: Path) -> None:
    res = read(tmp_path, orders_mapping(
        rules={"cancelled": "Invoice startswith 'C'", "refund": "Qty < 0"}))
    o = orders(res)
    assert o["cancelled"].tolist() == ["false", "true", "false", "false"]
    # The credit note's amount is shown positive; it is not a refund of its own rows.
    assert o.loc["C1002", "revenue"] == "2.95"
    assert o.loc["C1002", "refunded"] == "0"
    # Invoice 1003: 5 x 1.00 sold, 2 x 1.50 returned.
    assert (o.loc["1003", "revenue"], o.loc["1003", "refunded"]) == ("5", "3")
    notes = " ".join(res.notes)
    assert "1 rows match the cancellation rule (Invoice startswith 'C'); 1 orders marked" in notes
    assert "1 rows of orders not cancelled match the refund rule (Qty < 0)" in notes


def test_rules_on_an_order_per_row_file(tmp_path: Path) -> None:
    text = "id,who,at,amount,status\n1,a,2025-01-01,10,paid\n2,a,2025-01-02,-4,refund\n" \
           "3,b,2025-01-03,7,void\n"
    m = {
        "orders": {"file": "lines.csv", "columns": {
            "order_id": "id", "email": "who", "ordered_at": "at", "revenue": "amount"}},
        "rules": {"cancelled": "status == 'void'", "refund": "amount < 0"},
    }
    o = orders(read(tmp_path, m, text))
    assert o["revenue"].tolist() == ["10", "4", "7"]
    assert o["refunded"].tolist() == ["0", "4", "0"]  # a refund row is refunded in full
    assert o["cancelled"].tolist() == ["false", "false", "true"]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("Qty * unit_price", ["5.9", "0.3", "-2.95", "5", "-3", "4"]),
        ("`Unit Price` / 2 + 1", ["2.475", "1.05", "2.475", "1.5", "1.75", "3"]),
        ("abs(Qty) - 1", ["1", "2", "0", "4", "1", "0"]),
        ("ifelse(Qty < 0, 0, Qty)", ["2", "3", "0", "5", "0", "1"]),
        ("coalesce(Customer, Country)", ["c1", "c1", "c1", "FR", "FR", "c2"]),
        ("lower(Country)", ["uk", "uk", "uk", "fr", "fr", "de"]),
        ("Invoice startswith 'C' or Qty < 0", ["false", "false", "true", "false", "true",
                                                "false"]),
        ("not contains(Sku, 'A') and present(Customer)", ["false", "true", "false", "false",
                                                          "false", "true"]),
        ("missing(Customer)", ["false", "false", "false", "true", "true", "false"]),
        ("round(Qty * 0.333, 1)", ["0.7", "1", "-0.3", "1.7", "-0.7", "0.3"]),
        ("2 <= Qty < 4", ["true", "true", "false", "false", "false", "false"]),
        ("'X'", ["X"] * 6),
    ],
)
def test_row_expressions(tmp_path: Path, expr: str, expected: list[str]) -> None:
    m = {"order_lines": {"file": "lines.csv", "columns": {"order_id": "Invoice", "sku": expr}},
         **orders_mapping()}
    lines = read(tmp_path, m).tables["order_lines"].frame
    assert lines["sku"].tolist() == expected
    assert lines["_line"].tolist() == [2, 3, 4, 5, 6, 7]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("count()", ["2", "1", "2", "1"]),
        ("count(Qty < 0)", ["0", "1", "1", "0"]),
        ("sum(Qty, Qty > 0)", ["5", "0", "5", "1"]),
        ("max(Qty * unit_price)", ["5.9", "-2.95", "5", "4"]),
        ("last(Sku)", ["B", "A", "Z", "B"]),
        ("any(Qty < 0)", ["false", "true", "true", "false"]),
        ("all(Qty > 0)", ["true", "false", "false", "true"]),
        ("Country", ["UK", "UK", "FR", "DE"]),  # outside an aggregate: the first value
        ("sum(Qty) * 10", ["50", "-10", "30", "10"]),
    ],
)
def test_aggregates(tmp_path: Path, expr: str, expected: list[str]) -> None:
    m = orders_mapping()
    m["orders"]["columns"]["channel"] = expr
    assert orders(read(tmp_path, m))["channel"].tolist() == expected


def test_unknown_source_column_lists_the_columns_that_exist(tmp_path: Path) -> None:
    m = orders_mapping()
    m["orders"]["columns"]["revenue"] = "sum(Qty * UnitPrize)"
    with pytest.raises(ConfigError) as err:
        read(tmp_path, m)
    e = err.value
    assert e.column == "UnitPrize" and "mapping.orders.columns.revenue" in e.message
    assert e.expected is not None
    assert "Invoice, Sku, Qty, Unit Price, When, Customer, Country" in e.expected
    assert e.hint is not None and "Unit Price" in e.hint


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"orderz": {}}, r"unknown config key `mapping.orderz`"),
        ({"orders": {"file": "x", "columns": {"order_id": "a"}, "grup_by": "a"}},
         r"did you mean `mapping.orders.group_by`"),
        ({"orders": {"file": "x", "columns": {"order_id": "a", "revnue": "b"}}},
         r"unknown Juno column `mapping.orders.columns.revnue`"),
        ({"orders": {"file": "x", "columns": {"order_id": "a", "ordered_at": "b",
                                               "revenue": "c"}}},
         r"lacks customer_id or email"),
        ({"orders": {"file": "x", "columns": {"order_id": "a", "ordered_at": "b",
                                               "revenue": "sum(c)", "email": "d"}}},
         r"aggregates .* no group_by"),
        ({"rules": {"cancel": "x"}}, r"did you mean `mapping.rules.cancelled`"),
        ({"date_format": 3}, r"invalid value for config key `mapping.date_format`"),
    ],
)
def test_invalid_mappings(change: dict[str, Any], match: str) -> None:
    m = orders_mapping()
    m.update(change)
    with pytest.raises(ConfigError, match=match):
        parse_mapping(m)


@pytest.mark.parametrize(
    "expr",
    ["__import__('os').system('x')", "Qty.real", "[Qty]", "lambda: 1", "Qty ** 2",
     "unknown_fn(Qty)", "Qty if Qty else 1", "sum(sum(Qty))", "startswith(Sku, Qty)", "Qty +"],
)
def test_unsafe_or_unknown_syntax_is_refused(expr: str) -> None:
    with pytest.raises(ConfigError):
        parse_expression(expr, "mapping.orders.columns.revenue")


def test_refund_rule_needs_a_summed_revenue() -> None:
    m = orders_mapping(rules={"refund": "Qty < 0"})
    m["orders"]["columns"]["revenue"] = "first(Qty)"
    with pytest.raises(ConfigError, match="sum of a row amount"):
        parse_mapping(m)


def test_files_relative_to_the_config_and_missing_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "part_1.csv").write_text("id,c,d,r\n1,a,2025-01-01,1\n")
    (data / "part_2.csv").write_text("id,c,d,r\n2,b,2025-01-02,2\n")
    conf = tmp_path / "conf"
    conf.mkdir()
    m = {"orders": {"file": "../data/part_*.csv", "columns": {
        "order_id": "id", "customer_id": "c", "ordered_at": "d", "revenue": "r"}}}
    res = read_mapped(tmp_path / "store", m, conf)
    o = res.tables["orders"].frame
    assert o["order_id"].tolist() == ["1", "2"]
    assert o["_file"].tolist() == ["part_1.csv", "part_2.csv"]
    assert [Path(f.path).name for f in res.files] == ["part_1.csv", "part_2.csv"]
    m["orders"]["file"] = "../data/nope.csv"
    with pytest.raises(InputError, match="does not exist"):
        read_mapped(tmp_path / "store", m, conf)


def test_parquet_source(tmp_path: Path) -> None:
    pd.DataFrame({"id": [1, 2], "c": ["a", None], "d": ["2025-01-01", "2025-01-02"],
                  "r": [1.5, 2.0]}).to_parquet(tmp_path / "o.parquet")
    m = {"orders": {"file": "o.parquet", "columns": {
        "order_id": "id", "customer_id": "c", "ordered_at": "d", "revenue": "r * 2"}}}
    o = read_mapped(tmp_path, m, tmp_path).tables["orders"].frame
    assert o["revenue"].tolist() == ["3", "4"]
    assert o["customer_id"].isna().tolist() == [False, True]


# --------------------------------------------------------------------------- the UCI sample


@pytest.mark.skipif(not UCI.is_file(), reason="shared/data/online_retail_sample.csv is absent")
def test_uci_online_retail_sample_through_the_example_config() -> None:
    config = load_config(EXAMPLE / "juno.toml")
    assert config.mapping is not None
    res = read_mapped(EXAMPLE, config.mapping, EXAMPLE)
    o = res.tables["orders"].frame
    raw = pd.read_csv(UCI, dtype=str, keep_default_na=False)
    assert len(raw) == 20_000
    assert len(o) == raw["InvoiceNo"].nunique() == 9_362
    assert raw["InvoiceNo"].str.startswith("C").sum() == 350
    assert (o["cancelled"] == "true").sum() == 313
    assert (raw["CustomerID"] == "NA").sum() == 5_078
    assert len(res.tables["order_lines"].frame) == 20_000
    assert len(res.tables["customers"].frame) == raw.loc[raw["CustomerID"] != "NA",
                                                         "CustomerID"].nunique()
    notes = "\n".join(res.notes)
    assert "20,000 rows folded into 9,362 orders by InvoiceNo" in notes
    assert "350 rows match the cancellation rule" in notes
    assert "5,078 rows without CustomerID" in notes
    # Revenue of one invoice by hand: every line's Quantity x UnitPrice.
    inv = raw[raw["InvoiceNo"] == o["order_id"].iloc[1]]
    by_hand = (inv["Quantity"].astype(float) * inv["UnitPrice"].astype(float)).sum()
    assert float(o["revenue"].iloc[1]) == pytest.approx(by_hand)
    # Cancellation invoices are cancelled orders with positive amounts.
    assert (o.loc[o["cancelled"] == "true", "revenue"].astype(float) >= 0).all()

    store = validate(res, Config(currency="GBP"))
    unattributed = store.rejected["reason"] == "no customer id or email (unattributed)"
    no_customer = raw.loc[raw["CustomerID"] == "NA", "InvoiceNo"].nunique()
    assert unattributed.sum() == no_customer == 913
    assert len(store.orders) == 9_362 - 913
