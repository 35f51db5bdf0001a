"""What every source adapter (generic contract, Shopify, column mapping) hands to validation.

An adapter only finds files and renames columns to the contract's names; typing and row-level
rejection happen once, in `juno.validate`, whatever the source.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

TABLES = ("orders", "order_lines", "customers", "support_tickets", "subscriptions")
# The order validation takes the tables in (customers first: an order may name its customer by
# email alone; the small tables while the order lines are read), which is when a deferred table
# is read.
TAKEN_IN_ORDER = ("customers", "orders", "support_tickets", "subscriptions", "order_lines")

# Columns every raw frame carries besides the contract columns: where the row came from.
FILE_COL = "_file"
LINE_COL = "_line"

REJECTED_COLUMNS = ["file", "line", "table", "reason", "revenue", "detail"]

# Columns each contract table must have (validation refuses the table otherwise); orders and
# support tickets also need a customer_id or an email.
REQUIRED: dict[str, list[str]] = {
    "orders": ["order_id", "ordered_at", "revenue"],
    "order_lines": ["order_id"],
    "customers": ["customer_id"],
    "support_tickets": ["opened_at"],
    "subscriptions": ["customer_id", "status"],
}

# Every column anything reads from a raw contract table (validation, and the backtest's view of
# the past). A reader may leave the others unread: they change no output.
USED_COLUMNS: dict[str, frozenset[str]] = {
    "orders": frozenset(
        (
            "order_id", "customer_id", "email", "ordered_at", "revenue", "discount", "refunded",
            "cost", "cancelled", "cancelled_at", "is_subscription_order", "discount_code", "currency",
        )
    ),
    "order_lines": frozenset(
        ("order_id", "sku", "category", "quantity", "price", "line_discount", "cost")
    ),
    "customers": frozenset(
        (
            "customer_id", "email", "phone", "first_name", "last_name", "created_at",
            "email_consent", "sms_consent", "email_suppressed", "tags", "country",
            "total_spent", "total_orders",
        )
    ),
    "support_tickets": frozenset(
        ("customer_id", "email", "opened_at", "closed_at", "status", "severity")
    ),
    "subscriptions": frozenset(
        ("customer_id", "status", "sku", "category", "started_at", "cancelled_at")
    ),
}

# Text columns with a few distinct values over many rows (a store's SKUs and categories over its
# order lines, the consent words over the customers). A deferred read (`juno run`) takes them as
# dictionaries, one small code per row: validation hands the SKUs and categories on as the
# categoricals `Store.compact` would make of them, and parses each consent word once.
FEW_DISTINCT: dict[str, frozenset[str]] = {
    "order_lines": frozenset(("sku", "category")),
    "customers": frozenset(("email_consent", "sms_consent")),
}


# Number and date-time columns a deferred CSV read (`juno run`) asks the reader to type, where the
# whole file allows it: the text of a million customers' orders is ~0.8 GB, typed ~0.5 GB, and the
# reader's conversion is the one the text would get in validation (juno.sources.csvfiles).
READ_AS_NUMBER: dict[str, frozenset[str]] = {
    "orders": frozenset(("revenue", "discount", "refunded", "cost")),
    "order_lines": frozenset(("quantity", "price", "line_discount", "cost")),
}
READ_AS_DATETIME: dict[str, frozenset[str]] = {
    "orders": frozenset(("ordered_at", "cancelled_at")),
    "customers": frozenset(("created_at",)),
}


def coded_columns(names: Sequence[str], table: str) -> list[str]:
    """The header names among `names` that are FEW_DISTINCT columns of `table`."""
    few = FEW_DISTINCT.get(table, frozenset())
    return [n for n in names if normalise_name(n) in few]


def has_required(table: str, names: list[str]) -> bool:
    """True when the (normalised) column names hold everything validation requires of `table`."""
    cols = set(names)
    if any(c not in cols for c in REQUIRED[table]):
        return False
    if table in ("orders", "support_tickets"):
        return "customer_id" in cols or "email" in cols
    return True


@dataclass(frozen=True)
class InputFile:
    """One file read: its path as given, sha256 and data rows (header excluded)."""

    path: str
    table: str
    sha256: str
    rows: int
    format: str


@dataclass
class RawTable:
    """One contract table as read: contract column names, cell values as read (strings for CSV).

    `frame` always holds FILE_COL (file name) and LINE_COL (1-based line in that file, the header
    being line 1) so that any rejected row can be traced back.
    """

    table: str
    frame: pd.DataFrame
    # Columns a CSV reader typed (see READ_AS_NUMBER): each one's cells as the file wrote them,
    # read again from the file when asked, which is only when a rejected row quotes them.
    text: dict[str, Callable[[], pd.Series]] = field(default_factory=dict)


# Reads one table when called: (raw frame, the file read, rows set aside as REJECTED_COLUMNS,
# the text of the columns the reader typed: RawTable.text).
TableReader = Callable[[], tuple[pd.DataFrame, InputFile, pd.DataFrame, dict[str, Callable[[], pd.Series]]]]


@dataclass
class SourceResult:
    """Everything an adapter read."""

    kind: str  # "generic", "shopify", "mapping"
    tables: dict[str, RawTable]
    files: list[InputFile]
    notes: list[str] = field(default_factory=list)
    # Rows the adapter itself had to set aside, columns REJECTED_COLUMNS.
    rejected: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame({c: pd.Series(dtype="object") for c in REJECTED_COLUMNS})
    )
    # Tables found, their headers checked, but read only when validation reaches them (and then
    # gone from here): only one table's raw cells are held at a time. Their files, set-aside rows
    # and row counts join the rest then.
    deferred: dict[str, TableReader] = field(default_factory=dict)


def normalise_name(name: str) -> str:
    """Column names match case- and space-insensitively: 'Ordered At' -> 'ordered_at'."""
    return "_".join(str(name).replace("\ufeff", "").strip().lower().replace("-", " ").split())


def store_path(path: str | Path) -> Path:
    return Path(path).expanduser()


def projection(names: Sequence[str], table: str) -> list[int] | None:
    """Indices of the columns anything reads from a `table` file with these header names, or
    None to keep them all: when a required column is missing (the error then lists every column
    found) or two names clash (the reader reports that)."""
    norm = [normalise_name(n) for n in names]
    named = [n for n in norm if n]
    if len(set(named)) != len(named) or len(set(names)) != len(names):
        return None
    if not has_required(table, named):
        return None
    used = USED_COLUMNS[table]
    return [i for i, n in enumerate(norm) if n in used]
