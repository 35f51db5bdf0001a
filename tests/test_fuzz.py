"""Fuzzing: arbitrary cell values and table shapes never give a traceback. Every example ends in
a JunoError (exit 2, a message naming the file) or a run that passes the reconciliation
invariants (tests/invariants.py).

Examples per table: JUNO_FUZZ_EXAMPLES (default 60; the corpus of hand-written cases lives in
test_bad_inputs.py). Derandomised, so CI sees the same examples on every run; set
JUNO_FUZZ_RANDOM=1 to explore new ones locally.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from invariants import check_all

import juno
from juno.config import config_from_dict
from juno.errors import JunoError

EXAMPLES = int(os.environ.get("JUNO_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("JUNO_FUZZ_RANDOM") != "1",
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

COLUMNS = {
    "orders": [
        "order_id", "customer_id", "email", "ordered_at", "revenue", "discount", "refunded",
        "cancelled", "cancelled_at", "cost", "currency", "discount_code", "is_subscription_order",
    ],
    "order_lines": ["order_id", "sku", "product_name", "category", "quantity", "price", "line_discount", "cost"],
    "customers": [
        "customer_id", "email", "phone", "first_name", "last_name", "created_at", "email_consent",
        "sms_consent", "email_suppressed", "tags", "total_spent",
    ],
    "support_tickets": ["customer_id", "email", "opened_at", "closed_at", "status", "topic", "severity"],
    "subscriptions": ["customer_id", "status", "sku", "category", "interval_days", "next_charge_at"],
}  # fmt: skip
REQUIRED = {
    "orders": ["order_id", "customer_id", "ordered_at", "revenue"],
    "order_lines": ["order_id"],
    "customers": ["customer_id"],
    "support_tickets": ["customer_id", "opened_at"],
    "subscriptions": ["customer_id", "status"],
}
BASE_ORDERS = (
    "order_id,customer_id,email,ordered_at,revenue\n"
    "O1,C1,a@x.com,2025-01-03,40\nO2,C2,b@x.com,2025-02-10,25.5\nO3,C1,a@x.com,2025-04-01,60\n"
    "O4,C3,,2025-05-20,12\nO5,C2,b@x.com,2025-06-30,80\n"
)

WEIRD = st.sampled_from(
    [
        "", " ", "NaN", "null", "N/A", "-", "=1+1", "@SUM(A1)", "1e400", "-0", "0x10", "١٢٣", "1,234.5",
        "1.234,5", "(5)", "$-3", "€", "2025-02-30", "1900-01-01", "9999-12-31", "2025-01-01T25:00",
        "2025-01-01 10:00:00 +0530", "yes", "TRUE", "'C1", '"', "\n", ";", "\t", ",", "\r\n", "C1 ",
        "x" * 300, "{{ 7*7 }}", "<b>", "\ufeff", "Zoë", "🙂", "\\", "a\"b", "subscribed", "NEVER_SUBSCRIBED",
    ]
)  # fmt: skip
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
IDS = st.sampled_from(["C1", "C2", "C3", "C4", " c1", "'C2", "O1", "O2", "O3", "O9", "a@x.com", "B@X.COM "])
DATES = st.datetimes(
    min_value=pd.Timestamp("1890-01-01").to_pydatetime(), max_value=pd.Timestamp("2100-01-01").to_pydatetime()
)
RECENT = st.datetimes(
    min_value=pd.Timestamp("2023-01-01").to_pydatetime(), max_value=pd.Timestamp("2026-06-30").to_pydatetime()
)
DATE_TEXT = st.one_of(
    RECENT.map(lambda d: d.isoformat()),
    RECENT.map(lambda d: d.strftime("%Y-%m-%d")),
    RECENT.map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S +0100")),
    DATES.map(lambda d: d.isoformat()),
    DATES.map(lambda d: d.strftime("%Y-%m-%d")),
    DATES.map(lambda d: d.strftime("%d/%m/%Y")),
    DATES.map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S -0500")),
    st.integers(-(10**12), 10**12).map(str),
)
NUMBERS = st.one_of(
    st.decimals(0, 500, places=2).map(str),
    st.integers(0, 300).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**15), 10**15).map(str),
    st.decimals(-(10**6), 10**6, places=2).map(str),
)
BOOLS = st.sampled_from(["true", "false", "yes", "no", "1", "0", "Y", "maybe", ""])


def _cell_for(column: str) -> st.SearchStrategy[str]:
    if column.endswith("_id") or column in ("email", "sku"):
        typed = IDS
    elif column.endswith("_at"):
        typed = DATE_TEXT
    elif column in ("revenue", "discount", "refunded", "cost", "quantity", "price", "line_discount", "total_spent",
                    "interval_days"):  # fmt: skip
        typed = NUMBERS
    elif column in ("cancelled", "is_subscription_order", "email_suppressed"):
        typed = BOOLS
    elif column == "currency":
        typed = st.sampled_from(["USD", "usd ", "EUR", ""])
    elif column in ("status", "email_consent", "sms_consent", "severity"):
        typed = st.sampled_from(
            ["active", "paused", "cancelled", "canceled", "open", "closed", "subscribed", "yes", "NO", "high", ""]
        )
    else:
        typed = TEXT
    return st.one_of(typed, typed, typed, typed, typed, WEIRD, TEXT)


@st.composite
def csv_tables(draw: st.DrawFn, table: str) -> tuple[bytes, int]:
    """(file, data rows): a header (contract columns, maybe missing, duplicated or unknown ones)
    and 0-8 rows, some ragged."""
    known = COLUMNS[table]
    header = list(REQUIRED[table])
    optional = [c for c in known if c not in header]
    header += draw(st.lists(st.sampled_from(optional), max_size=4, unique=True)) if optional else []
    if draw(st.integers(0, 9)) == 9:  # an unnamed, unknown or duplicated column
        header.append(
            draw(st.sampled_from(["", "notes", "x y", *known, *(c.upper().replace("_", " ") for c in known)]))
        )
    # Rare events on high values: hypothesis favours small integers.
    if draw(st.integers(0, 9)) == 9 and len(header) > 1:
        header.pop(draw(st.integers(0, len(header) - 1)))  # a missing required column
    header = draw(st.permutations(header))
    names = [h.strip().lower().replace(" ", "_") for h in header]
    rows = []
    for _ in range(draw(st.integers(1 if table == "orders" else 0, 8))):
        row = [draw(_cell_for(n)) for n in names]
        shape = draw(st.integers(0, 19))
        if shape == 19:
            row.append(draw(WEIRD))  # one field too many
        elif shape == 18 and row:
            row.pop()  # one field too few
        rows.append(row)
    buf = io.StringIO()
    delimiter = draw(st.sampled_from([",", ",", ",", ";", "\t"]))
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]))
    writer = csv.writer(buf, delimiter=delimiter, quoting=quoting, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(header)
    data_rows = 0
    for row in rows:
        start = buf.tell()
        writer.writerow(row)
        data_rows += buf.getvalue()[start:].strip("\r\n") != ""  # a blank line is no row
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "latin-1"]))
    return buf.getvalue().encode(encoding, errors="replace"), data_rows


OUTCOMES: Counter[str] = Counter()


@pytest.fixture(autouse=True, scope="module")
def _report_outcomes() -> Iterator[None]:
    yield
    print(f"\nfuzz outcomes: {dict(OUTCOMES)}")  # shown with -s


def _outcome(
    files: dict[str, bytes], rows: dict[str, int] | None = None, config: dict[str, object] | None = None
) -> str:
    """Run the store; a JunoError or a reconciled run pass, anything else fails the example.

    `rows`: data rows written per table, so a row the reader loses is caught independently.
    """
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store"
        store.mkdir()
        for name, data in files.items():
            (store / name).write_bytes(data)
        try:
            cfg = config_from_dict(config or {})
            result = juno.run(store, config=cfg, narrative="template")
        except JunoError as err:
            assert err.message and err.file, err.render()
            OUTCOMES["error"] += 1
            OUTCOMES["error: " + err.message[:50]] += 1
            return "error"
        check_all(result)
        assert result.store is not None
        for table, n in (rows or {}).items():
            if re.search(rb"\r(?!\n)", files[f"{table}.csv"]):
                continue  # a bare CR in an unquoted cell ends a line for every CSV reader
            assert result.store.rows_read[table] == n, (table, result.store.rows_read[table], n)
        OUTCOMES["run"] += 1
        return "run"


@FUZZ
@given(
    orders=csv_tables("orders"),
    config=st.sampled_from([{}, {}, {"as_of": "2025-06-30"}, {"currency": "USD"}, {"window_days": 30}]),
)
def test_fuzz_orders(orders: tuple[bytes, int], config: dict[str, object]) -> None:
    _outcome({"orders.csv": orders[0]}, {"orders": orders[1]}, config)


@FUZZ
@given(table=csv_tables("order_lines"))
def test_fuzz_order_lines(table: tuple[bytes, int]) -> None:
    _outcome({"orders.csv": BASE_ORDERS.encode(), "order_lines.csv": table[0]}, {"order_lines": table[1], "orders": 5})


@FUZZ
@given(table=csv_tables("customers"))
def test_fuzz_customers(table: tuple[bytes, int]) -> None:
    _outcome({"orders.csv": BASE_ORDERS.encode(), "customers.csv": table[0]}, {"customers": table[1], "orders": 5})


@FUZZ
@given(table=csv_tables("support_tickets"))
def test_fuzz_support_tickets(table: tuple[bytes, int]) -> None:
    _outcome(
        {"orders.csv": BASE_ORDERS.encode(), "support_tickets.csv": table[0]},
        {"support_tickets": table[1], "orders": 5},
    )


@FUZZ
@given(table=csv_tables("subscriptions"))
def test_fuzz_subscriptions(table: tuple[bytes, int]) -> None:
    _outcome(
        {"orders.csv": BASE_ORDERS.encode(), "subscriptions.csv": table[0]}, {"subscriptions": table[1], "orders": 5}
    )


@FUZZ
@given(
    data=st.binary(min_size=1, max_size=400),
    table=st.sampled_from(list(COLUMNS)),
    after_header=st.booleans(),
)
def test_fuzz_arbitrary_bytes(data: bytes, table: str, after_header: bool) -> None:
    files = {"orders.csv": BASE_ORDERS.encode()} if table != "orders" else {}
    header = (",".join(REQUIRED[table]) + "\n").encode()
    files[f"{table}.csv"] = header + data if after_header else data
    _outcome(files)


PARQUET_COLUMNS = st.one_of(
    st.lists(st.one_of(st.none(), TEXT, WEIRD), min_size=3, max_size=3).map(lambda v: pa.array(v, pa.string())),
    st.lists(st.one_of(st.none(), st.floats()), min_size=3, max_size=3).map(lambda v: pa.array(v, pa.float64())),
    st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), min_size=3, max_size=3).map(
        lambda v: pa.array(v, pa.int64())
    ),
    st.lists(st.one_of(st.none(), st.booleans()), min_size=3, max_size=3).map(lambda v: pa.array(v, pa.bool_())),
    st.lists(st.one_of(st.none(), DATES), min_size=3, max_size=3).map(lambda v: pa.array(v, pa.timestamp("us"))),
    st.lists(st.one_of(st.none(), DATES), min_size=3, max_size=3).map(
        lambda v: pa.array(v, pa.timestamp("us", tz="Europe/Paris"))
    ),
    st.lists(st.lists(TEXT, max_size=2), min_size=3, max_size=3).map(lambda v: pa.array(v, pa.list_(pa.string()))),
)


GOOD_PARQUET = {
    "order_id": pa.array(["O1", "O2", "O3"]),
    "customer_id": pa.array(["C1", "C2", "C1"]),
    "ordered_at": pa.array(pd.to_datetime(["2025-01-01", "2025-02-01", "2025-03-01"])),
    "revenue": pa.array([10.0, 20.0, 30.0]),
}


@st.composite
def parquet_orders(draw: st.DrawFn) -> dict[str, pa.Array]:
    """Each required column well typed, or (one time in four) of an arbitrary Arrow type."""
    return {c: draw(PARQUET_COLUMNS) if draw(st.integers(0, 3)) == 3 else GOOD_PARQUET[c] for c in GOOD_PARQUET}


@FUZZ
@given(columns=parquet_orders())
def test_fuzz_parquet_types(columns: dict[str, pa.Array]) -> None:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    _outcome({"orders.parquet": buf.getvalue()})
