"""A corpus of bad inputs, each with its exact outcome: a JunoError naming file and column (exit 2
from the CLI), or a run whose rejected_rows.csv holds the bad rows with their reasons and that
passes every reconciliation invariant (tests/invariants.py)."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from invariants import check_all

import juno
from juno.config import config_from_dict
from juno.errors import JunoError
from juno.pipeline import RunResult

H = "order_id,customer_id,ordered_at,revenue"
GOOD = "O1,C1,2025-01-01,10\nO2,C2,2025-02-01,20\nO3,C1,2025-03-01,30"

Content = str | bytes | Callable[[Path], None]


def orders(*rows: str, header: str = H) -> str:
    return "\n".join([header, GOOD, *rows]) + "\n"


def parquet(frame: pd.DataFrame | pa.Table) -> Callable[[Path], None]:
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)

    def write(path: Path) -> None:
        pq.write_table(table, path)

    return write


@dataclass(frozen=True)
class Fatal:
    """The run stops: a JunoError whose message holds `needle`, naming `file` and `column`."""

    needle: str
    file: str
    column: str | None = None


@dataclass(frozen=True)
class Case:
    id: str
    files: dict[str, Content]
    fatal: Fatal | None = None
    # Exact reasons (and counts) expected in rejected_rows.csv for a run that completes.
    rejected: dict[str, int] = field(default_factory=dict)
    config: dict[str, object] = field(default_factory=dict)
    check: Callable[[RunResult], None] | None = None


def _customer(result: RunResult, cid: str) -> pd.Series:
    assert result.customers is not None
    return result.customers.set_index("customer_id").loc[cid]


def _revenues(result: RunResult) -> list[float]:
    assert result.store is not None
    return sorted(result.store.orders["revenue"].tolist())


def _expect_revenues(*values: float) -> Callable[[RunResult], None]:
    def check(result: RunResult) -> None:
        assert _revenues(result) == sorted([10.0, 20.0, 30.0, *values])

    return check


def _history(days: int) -> Callable[[RunResult], None]:
    def check(result: RunResult) -> None:
        assert result.brief is not None and result.brief.facts.history_days == days

    return check


def _all_net_zero(result: RunResult) -> None:
    assert result.customers is not None and result.brief is not None
    assert (result.customers["net_revenue_lifetime"] == 0).all()
    assert result.brief.facts.orders_used == 0


def _no_orders_reason(cid: str) -> Callable[[RunResult], None]:
    def check(result: RunResult) -> None:
        row = _customer(result, cid)
        assert row["status"] == "unclassified" and row["unclassified_reason"] == "no orders"

    return check


def _consent_unknown(result: RunResult) -> None:
    assert _customer(result, "C1")["email_consent"] == "unknown"
    assert _customer(result, "C2")["email_consent"] == "subscribed"


def _utc(result: RunResult) -> None:
    assert result.store is not None
    at = result.store.orders.set_index("order_id")["ordered_at"]
    assert at["O4"] == pd.Timestamp("2025-03-02T05:00:00")  # 10:00 at +05:00
    assert at["O5"] == pd.Timestamp("2025-03-02T10:00:00")  # no offset: taken as UTC


def _customer_ids(*ids: str) -> Callable[[RunResult], None]:
    def check(result: RunResult) -> None:
        assert result.customers is not None
        assert sorted(result.customers["customer_id"]) == sorted(ids)

    return check


CUSTOMERS = "customer_id,email,email_consent\nC1,a@x.com,subscribed\nC2,b@x.com,subscribed\n"

CASES: list[Case] = [
    # ---- files that are not tables ----
    Case("empty_file", {"orders.csv": b""}, Fatal("empty", "orders.csv")),
    Case("blank_lines_only", {"orders.csv": "\n \n\t\n"}, Fatal("empty", "orders.csv")),
    Case("header_only", {"orders.csv": H + "\n"}, Fatal("no data rows", "orders.csv")),
    Case("binary_png", {"orders.csv": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"}, Fatal("binary", "orders.csv")),
    Case("gzip_named_csv", {"orders.csv": gzip.compress(orders().encode())}, Fatal("binary", "orders.csv")),
    Case("json_array", {"orders.csv": '[{"order_id": "O1"}]'}, Fatal("JSON", "orders.csv")),
    Case(
        "html_error_page",
        {"orders.csv": "<!DOCTYPE html>\n<html><body><h1>502 Bad Gateway</h1></body></html>\n"},
        Fatal("HTML", "orders.csv"),
    ),
    Case("csv_named_parquet", {"orders.parquet": orders()}, Fatal("not a readable Parquet", "orders.parquet")),
    Case(
        "customers_table_is_html",
        {"orders.csv": orders(), "customers.csv": "<html>login required</html>"},
        Fatal("HTML", "customers.csv"),
    ),
    # ---- header problems ----
    Case(
        "missing_revenue_column",
        {"orders.csv": "order_id,customer_id,ordered_at\nO1,C1,2025-01-01\n"},
        Fatal("lacks required column", "orders.csv", "revenue"),
    ),
    Case(
        "missing_customer_and_email",
        {"orders.csv": "order_id,ordered_at,revenue\nO1,2025-01-01,10\n"},
        Fatal("lacks required column", "orders.csv", "customer_id (or email)"),
    ),
    Case(
        "subscriptions_without_status",
        {"orders.csv": orders(), "subscriptions.csv": "customer_id,sku\nC1,BEANS\n"},
        Fatal("lacks required column", "subscriptions.csv", "status"),
    ),
    Case(
        "duplicate_column_names",
        {"orders.csv": "order_id,customer_id,ordered_at,revenue,revenue\nO1,C1,2025-01-01,10,11\n"},
        Fatal("same name", "orders.csv", "revenue"),
    ),
    Case(
        "duplicate_names_after_normalising",
        {"orders.csv": "order_id,Customer ID,customer_id,ordered_at,revenue\nO1,C1,C1,2025-01-01,10\n"},
        Fatal("same name", "orders.csv", "customer_id"),
    ),
    Case(
        "million_column_header",
        {"orders.csv": lambda p: p.write_text(H + ",x" * 1_000_000 + "\n" + GOOD + "\n")},
        Fatal("more than 10,000 columns", "orders.csv"),
    ),
    Case(
        "million_field_line_only_row",
        {"orders.csv": H + "\nO1,C1,2025-01-01,10" + "," * 1_000_000 + "\n"},
        Fatal("no row has as many fields as the header", "orders.csv"),
    ),
    # ---- whole-store problems ----
    Case(
        "several_currencies",
        {"orders.csv": orders("O4,C3,2025-03-02,5,EUR", header=H + ",currency").replace(",10\n", ",10,USD\n")},
        Fatal("several currencies", "orders.csv", "currency"),
    ),
    Case(
        "every_row_rejected",
        {"orders.csv": H + "\nO1,C1,yesterday,10\nO2,C2,31/31/2025,10\n"},
        Fatal("no usable orders", "orders.csv"),
    ),
    Case(
        "every_order_after_as_of",
        {"orders.csv": orders()},
        Fatal("every order is dated after as_of", "orders.csv", "ordered_at"),
        config={"as_of": "2020-01-01"},
    ),
    Case(
        "no_order_in_the_chosen_currency",
        {"orders.csv": H + ",currency\nO1,C1,2025-01-01,10,USD\nO2,C2,2025-02-01,9,USD\n"},
        Fatal("every order is in another currency", "orders.csv", "currency"),
        config={"currency": "GBP"},
    ),
    Case(
        "parquet_epoch_integer_dates",
        {
            "orders.parquet": parquet(
                pd.DataFrame({"order_id": ["O1"], "customer_id": ["C1"], "ordered_at": [1735689600], "revenue": [1.0]})
            )
        },
        Fatal("no usable orders", "orders.parquet"),
    ),
    # ---- encodings and delimiters: read as intended ----
    Case("semicolon_delimiter", {"orders.csv": orders().replace(",", ";")}, check=_expect_revenues()),
    Case("tab_delimiter", {"orders.tsv": orders().replace(",", "\t")}, check=_expect_revenues()),
    Case("utf8_bom", {"orders.csv": b"\xef\xbb\xbf" + orders().encode()}, check=_expect_revenues()),
    Case(
        "latin1_bytes",
        {"orders.csv": orders("O4,Zo\xeb,2025-03-02,5").encode("latin-1")},
        check=_customer_ids("C1", "C2", "Zoë"),
    ),
    Case(
        "latin1_after_the_sniffed_head",
        {
            "orders.csv": (H + "\n" + "".join(f"O{i},C1,2025-01-01,1\n" for i in range(5000))).encode()
            + "O9999,Zo\xeb,2025-03-02,5\n".encode("latin-1")
        },
        check=_customer_ids("C1", "Zoë"),
    ),
    Case(
        "latin1_byte_ending_a_short_file",
        {"orders.csv": orders().encode() + b"O4,C\xdc"},
        rejected={"wrong number of fields for the header": 1},
    ),
    Case(
        "ragged_latin1_row_past_the_sniffed_head",
        {
            "orders.csv": (H + "\n" + "".join(f"O{i},C1,2025-01-01,1\n" for i in range(5000))).encode()
            + b"O9999,C\xdc\n"
        },
        rejected={"wrong number of fields for the header": 1},
    ),
    Case("crlf_line_ends", {"orders.csv": orders().replace("\n", "\r\n")}, check=_expect_revenues()),
    Case(
        "trailing_unnamed_columns",
        {"orders.csv": orders().replace("\n", ",,\n")},
        check=_expect_revenues(),
    ),
    # ---- rows with the wrong shape ----
    Case(
        "ragged_rows",
        {"orders.csv": orders("O4,C3,2025-03-02,5,extra", "O5,C4")},
        rejected={"wrong number of fields for the header": 2},
    ),
    Case(
        "million_field_line",
        {"orders.csv": orders("O4,C3,2025-03-02,5" + "," * 1_000_000)},
        rejected={"wrong number of fields for the header": 1},
    ),
    Case(
        "ten_mb_single_cell",
        {"orders.csv": orders(), "order_lines.csv": "order_id,product_name\nO1," + "x" * (10 << 20) + "\n"},
        check=lambda r: r.store is not None and r.store.lines is not None and len(r.store.lines) == 1,
    ),
    Case(
        "ten_mb_quoted_multiline_cell",
        {
            "orders.csv": orders(),
            "order_lines.csv": 'order_id,product_name\nO1,"' + "x\n" * (5 << 20) + '"\n',
        },
        check=lambda r: r.store is not None and r.store.lines is not None and len(r.store.lines) == 1,
    ),
    # ---- dates ----
    Case(
        "unparseable_dates",
        {"orders.csv": orders("O4,C3,not a date,5", "O5,C3,2025-02-30,5", "O6,C3,,5")},
        rejected={"unparseable or implausible ordered_at": 2, "missing ordered_at": 1},
    ),
    Case(
        "mixed_date_formats",
        {"orders.csv": orders("O4,C3,03/02/2025,5", "O5,C3,Mar 3 2025,5", "O6,C3,2025-03-04 10:00:00,5")},
        check=_expect_revenues(5, 5, 5),
    ),
    Case(
        "dates_with_and_without_offsets",
        {"orders.csv": orders("O4,C3,2025-03-02T10:00:00+05:00,5", "O5,C3,2025-03-02T10:00:00,5")},
        check=_utc,
    ),
    Case(
        "dates_after_as_of",
        {"orders.csv": orders("O4,C3,2025-07-05,5", "O5,C1,2026-01-01,5")},
        rejected={"ordered after as_of": 2},
        config={"as_of": "2025-06-30"},
    ),
    Case(
        "year_1900",
        {"orders.csv": orders("O4,C3,1900-01-01,5")},
        rejected={"unparseable or implausible ordered_at": 1},
    ),
    Case(
        "parquet_timezone_timestamps",
        {
            "orders.parquet": parquet(
                pd.DataFrame(
                    {
                        "order_id": ["O1", "O2"],
                        "customer_id": ["C1", "C2"],
                        "ordered_at": pd.to_datetime(["2025-01-01T10:00", "2025-01-02T10:00"]).tz_localize(
                            "America/New_York"
                        ),
                        "revenue": [10.0, 20.0],
                    }
                )
            )
        },
        check=lambda r: (
            r.store is not None and r.store.orders["ordered_at"].iloc[0] == pd.Timestamp("2025-01-01T15:00")
        ),
    ),
    # ---- revenue ----
    Case(
        "negative_revenue",
        {"orders.csv": orders("O4,C3,2025-03-02,-5")},
        rejected={"negative revenue that is not a refund or cancellation": 1},
    ),
    Case(
        "nan_and_null_words",
        {"orders.csv": orders("O4,C3,2025-03-02,NaN", "O5,C3,2025-03-02,N/A")},
        rejected={"missing revenue": 2},
    ),
    Case(
        "huge_revenues",
        {"orders.csv": orders("O4,C3,2025-03-02,1e12", "O5,C3,2025-03-02,1e400", "O6,C3,2025-03-02,inf")},
        rejected={"revenue implausibly large": 1, "revenue is not a number": 2},
    ),
    Case(
        "text_revenues",
        {"orders.csv": orders("O4,C3,2025-03-02,ten", "O5,C3,2025-03-02,1.234,50".replace("1.234,50", '"1.234,50"'))},
        rejected={"revenue is not a number": 2},
    ),
    Case(
        "thousands_separators_and_currency_symbols",
        {
            "orders.csv": orders(
                'O4,C3,2025-03-02,"1,234.50"',
                "O5,C3,2025-03-02,$12.50",
                "O6,C3,2025-03-02,€3",
                "O7,C3,2025-03-02,12.50 USD",
                "O8,C3,2025-03-02,(4.00)",
            )
        },
        rejected={"negative revenue that is not a refund or cancellation": 1},
        check=_expect_revenues(1234.5, 12.5, 3.0, 12.5),
    ),
    Case(
        "several_currencies_with_one_chosen",
        {"orders.csv": (H + ",currency\nO1,C1,2025-01-01,10,usd\nO2,C2,2025-02-01,9,EUR\nO3,C1,2025-03-01,8,USD\n")},
        rejected={"currency is not USD": 1},
        config={"currency": "USD"},
    ),
    Case(
        "parquet_revenue_as_text",
        {
            "orders.parquet": parquet(
                pd.DataFrame(
                    {
                        "order_id": ["O1", "O2"],
                        "customer_id": [1, 2],
                        "ordered_at": ["2025-01-01", "2025-01-02"],
                        "revenue": ["10", "ten"],
                    }
                )
            )
        },
        rejected={"revenue is not a number": 1},
        check=_customer_ids("1", "2"),
    ),
    Case(
        "parquet_decimal_and_date32",
        {
            "orders.parquet": parquet(
                pa.table(
                    {
                        "order_id": pa.array(["O1", "O2"]),
                        "customer_id": pa.array(["C1", "C2"]),
                        "ordered_at": pa.array([pd.Timestamp("2025-01-01").date(), pd.Timestamp("2025-01-05").date()]),
                        "revenue": pa.array([Decimal("10.00"), Decimal("20.00")], pa.decimal128(10, 2)),
                    }
                )
            )
        },
        check=lambda r: r.store is not None and r.store.orders["revenue"].tolist() == [10.0, 20.0],
    ),
    # ---- ids ----
    Case(
        "duplicate_order_ids_equal_content",
        {"orders.csv": orders("O1,C1,2025-01-01,10")},
        rejected={"duplicate order id (identical row, first kept)": 1},
    ),
    Case(
        "duplicate_order_ids_different_content",
        {"orders.csv": orders("O1,C1,2025-01-01,99")},
        rejected={"duplicate order id with different content (first kept)": 1},
    ),
    Case(
        "missing_order_id_and_customer",
        {"orders.csv": orders(",C3,2025-03-02,5", "O5,,2025-03-02,5")},
        rejected={"missing order_id": 1, "no customer id or email (unattributed)": 1},
    ),
    Case(
        "customer_whose_only_order_is_rejected",
        {"orders.csv": orders("O4,C9,not a date,5")},
        rejected={"unparseable or implausible ordered_at": 1},
        check=_no_orders_reason("C9"),
    ),
    Case(
        "orders_of_unknown_customers",
        {"orders.csv": orders("O4,C3,2025-03-02,5"), "customers.csv": CUSTOMERS},
        check=lambda r: r.store is not None and any("no row in the customers table" in n for n in r.store.notes),
    ),
    Case(
        "customers_without_orders",
        {"orders.csv": orders(), "customers.csv": CUSTOMERS + "C7,c@x.com,subscribed\n"},
        check=_no_orders_reason("C7"),
    ),
    Case(
        "duplicate_customer_rows",
        {"orders.csv": orders(), "customers.csv": CUSTOMERS + "C1,other@x.com,unsubscribed\n"},
        rejected={"duplicate customer_id (first row kept)": 1},
    ),
    Case(
        "tickets_and_subscriptions_of_unknown_customers",
        {
            "orders.csv": orders(),
            "support_tickets.csv": "customer_id,opened_at,status\nC1,2025-02-01,open\nC404,2025-02-01,open\n",
            "subscriptions.csv": "customer_id,status\nC1,active\nC404,active\nC2,on_a_break\n",
        },
        rejected={
            "ticket of an unknown customer": 1,
            "subscription of an unknown customer": 1,
            "status is not active, paused or cancelled": 1,
        },
    ),
    Case(
        "lines_of_unknown_or_rejected_orders",
        {
            "orders.csv": orders("O4,C3,bad date,5"),
            "order_lines.csv": "order_id,sku,quantity,price\nO1,A,1,10\nO4,A,1,5\nO404,A,1,5\nO2,A,two,20\n",
        },
        rejected={
            "unparseable or implausible ordered_at": 1,
            "line of an unknown or rejected order": 2,
            "quantity, price, discount or cost is not a number": 1,
        },
    ),
    Case(
        "consent_outside_the_vocabulary",
        {
            "orders.csv": orders(),
            "customers.csv": "customer_id,email_consent\nC1,maybe later\nC2,SUBSCRIBED\n",
        },
        check=_consent_unknown,
    ),
    # ---- degenerate but valid stores ----
    Case(
        "single_customer_store",
        {"orders.csv": H + "\nO1,C1,2025-01-01,10\n"},
        check=_customer_ids("C1"),
    ),
    Case(
        "one_day_of_history",
        {"orders.csv": H + "\nO1,C1,2025-01-01T08:00,10\nO2,C2,2025-01-01T17:00,20\n"},
        check=_history(0),
    ),
    Case(
        "every_order_refunded",
        {"orders.csv": H + ",refunded\nO1,C1,2025-01-01,10,10\nO2,C2,2025-02-01,20,20\n"},
        check=_all_net_zero,
    ),
    Case(
        "every_order_cancelled",
        {"orders.csv": H + ",cancelled\nO1,C1,2025-01-01,10,true\nO2,C2,2025-02-01,20,yes\n"},
        check=_all_net_zero,
    ),
]

XFAIL: dict[str, pytest.MarkDecorator] = {}


def _write(folder: Path, files: dict[str, Content]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = folder / name
        if callable(content):
            content(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return folder


def _params() -> list[object]:
    return [pytest.param(c, id=c.id, marks=[XFAIL[c.id]] if c.id in XFAIL else []) for c in CASES]


def test_the_corpus_is_large_and_uniquely_named() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", _params())
def test_bad_input(case: Case, tmp_path: Path) -> None:
    store = _write(tmp_path / "store", case.files)
    config = config_from_dict(dict(case.config))
    out = tmp_path / "out"
    if case.fatal is not None:
        with pytest.raises(JunoError) as info:
            juno.run(store, out, config=config, narrative="template")
        err = info.value
        assert case.fatal.needle in err.message, err.render()
        assert err.file is not None and any(Path(f.strip()).name == case.fatal.file for f in err.file.split(",")), (
            err.render()
        )
        assert err.column == case.fatal.column, err.render()
        assert len(err.render()) < 2000, "the message must stay readable"
        assert not out.exists() and not list(tmp_path.glob(".out.*"))
        return
    result = juno.run(store, out, config=config, narrative="template")
    written = pd.read_csv(out / "rejected_rows.csv", dtype=str, keep_default_na=False)
    assert dict(Counter(written["reason"])) == case.rejected
    assert (written["file"] != "").all() and written["line"].str.fullmatch(r"\d+").all()
    if case.check is not None:
        assert case.check(result) is not False
    check_all(result, out, tmp_path / "again")


CLI_CASES = [
    c
    for c in CASES
    if c.id
    in {
        "empty_file",
        "html_error_page",
        "missing_revenue_column",
        "duplicate_column_names",
        "several_currencies",
    }
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_exits_2_naming_file_and_column(case: Case, tmp_path: Path) -> None:
    assert case.fatal is not None
    store = _write(tmp_path / "store", case.files)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "juno",
            "run",
            str(store),
            "--out",
            str(tmp_path / "out"),
            "-q",
            "--narrative",
            "template",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OPENAI_API_KEY": ""},
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("juno: error: ") and case.fatal.needle in proc.stderr
    assert re.search(rf"\n  file: +\S*\b{re.escape(case.fatal.file)}\n", proc.stderr), proc.stderr
    if case.fatal.column:
        assert f"column:   {case.fatal.column}" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_rejected_rows_name_file_and_true_line(tmp_path: Path) -> None:
    store = _write(tmp_path / "s", {"orders.csv": orders("O4,C3,2025-03-02,5,extra", "O5,C3,bad,5")})
    result = juno.run(store, narrative="template")
    assert result.store is not None
    rej = result.store.rejected.set_index("line")
    assert rej.loc[5, "reason"] == "wrong number of fields for the header"
    assert rej.loc[6, "reason"] == "unparseable or implausible ordered_at"
    assert set(rej["file"]) == {"orders.csv"}


# ---- the same invariants on every bundled example ----
EXAMPLES = Path(__file__).parents[1] / "examples"


@pytest.mark.parametrize("name", ["store", "shopify", "online_retail"])
def test_examples_reconcile(name: str, tmp_path: Path) -> None:
    from juno.config import load_config

    folder = EXAMPLES / name
    if not folder.is_dir() or not any(p.suffix in (".csv", ".toml", ".parquet") for p in folder.iterdir()):
        pytest.skip(f"examples/{name} does not exist yet")
    toml = folder / "juno.toml"
    config = load_config(toml if toml.is_file() else None)
    config_dir = folder if toml.is_file() else None
    try:
        result = juno.run(folder, tmp_path / "out", config=config, narrative="template", config_dir=config_dir)
    except JunoError as err:  # e.g. a mapping that points at shared data this checkout lacks
        pytest.skip(f"examples/{name} does not run here: {err.message}")
    assert check_all(result, tmp_path / "out", tmp_path / "again", config_dir) == [
        "customers", "rows", "revenue", "determinism",
    ]  # fmt: skip


QUICK = [c for c in CASES if "million" not in c.id and "ten_mb" not in c.id]


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.id, marks=[XFAIL[c.id]] if c.id in XFAIL else []) for c in QUICK]
)
def test_check_agrees_with_run(case: Case, tmp_path: Path) -> None:
    """`juno check` calls a store usable exactly when `juno run` completes, and never crashes."""
    from juno.quality import quality_report

    store = _write(tmp_path / "store", case.files)
    try:
        _, usable = quality_report(store, config_from_dict(dict(case.config)), None)
    except JunoError:
        usable = False
    assert usable == (case.fatal is None)
