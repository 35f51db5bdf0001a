"""Shopify exports read as they are, without configuration.

`orders_export*.csv` has one row per line item: order fields (Financial Status, Subtotal,
Discount Amount, Refunded Amount, Cancelled at, ...) are filled on an order's first row only and
continuation rows repeat Name, Email, Created at and the Lineitem fields. `customers_export*.csv`
comes in three generations (old `Accepts Marketing`; middle `Accepts Email/SMS Marketing`; new adds
`Customer ID`). Columns are read by name, so the 73-column (2022) and 79-column (2025) headers and
unknown extra columns all work.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from juno.errors import InputError
from juno.parse import parse_number
from juno.sources.base import (
    FILE_COL,
    LINE_COL,
    InputFile,
    RawTable,
    SourceResult,
    normalise_name,
)
from juno.sources.mapping import read_csv_text

ORDERS_PATTERN = "orders_export*.csv"
CUSTOMERS_PATTERN = "customers_export*.csv"
ORDERS_SIGNATURE = ("name", "email", "financial_status", "subtotal", "created_at",
                    "lineitem_quantity")
CUSTOMERS_SIGNATURE = ("email", "total_spent", "total_orders")
CONSENT_COLUMNS = ("accepts_email_marketing", "accepts_marketing")
# Filled on the first row of an order only; a row carrying any of them starts (or is) the order.
ORDER_LEVEL = ("financial_status", "currency", "subtotal", "total")
# Shopify source column -> contract column, taken from the order's first row.
ORDER_FIELDS = {
    "name": "order_id",
    "email": "email",
    "created_at": "ordered_at",
    "subtotal": "revenue",
    "discount_amount": "discount",
    "refunded_amount": "refunded",
    "cancelled_at": "cancelled_at",
    "currency": "currency",
    "discount_code": "discount_code",
    "financial_status": "financial_status",
    "tags": "tags",
    "source": "channel",
}
ORDER_COLUMNS = (
    "order_id", "customer_id", "email", "ordered_at", "revenue", "discount", "refunded",
    "cancelled", "cancelled_at", "cost", "currency", "discount_code", "is_subscription_order",
    "channel", "financial_status", "tags",
)
LINE_FIELDS = {
    "lineitem_sku": "sku",
    "lineitem_name": "product_name",
    "lineitem_quantity": "quantity",
    "lineitem_price": "price",
    "lineitem_discount": "line_discount",
    "vendor": "vendor",
}
# Vendor is a brand, not a category; a product type column, when an app adds one, is.
CATEGORY_COLUMNS = ("lineitem_product_type", "product_type", "lineitem_type")


def _natural(p: Path) -> list[object]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name.lower())]


def _find(folder: Path, pattern: str) -> list[Path]:
    """Files matching `pattern` in any case, in Shopify's order (_1, _2, ..., _10)."""
    hits = [p for p in folder.iterdir() if p.is_file() and fnmatch.fnmatch(p.name.lower(), pattern)]
    return sorted(hits, key=_natural)


def _header(path: Path) -> list[str]:
    """Normalised column names of a CSV file; empty when it cannot be read."""
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 16),
            # A bad row further down must not hide the header: reading reports it later.
            parse_options=pacsv.ParseOptions(
                newlines_in_values=True, invalid_row_handler=lambda row: "skip"
            ),
        )
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError):
        return []
    names = [normalise_name(n) for n in reader.schema.names]
    reader.close()
    return names


def _is_orders(names: list[str]) -> bool:
    return all(c in names for c in ORDERS_SIGNATURE)


def _is_customers(names: list[str]) -> bool:
    return all(c in names for c in CUSTOMERS_SIGNATURE) and any(
        c in names for c in CONSENT_COLUMNS
    )


def is_shopify_store(folder: Path) -> bool:
    """True when `folder` holds a Shopify orders or customers export (checked by header)."""
    if not folder.is_dir():
        return False
    return any(_is_orders(_header(p)) for p in _find(folder, ORDERS_PATTERN)) or any(
        _is_customers(_header(p)) for p in _find(folder, CUSTOMERS_PATTERN)
    )


def _read(path: Path, kind: str) -> pd.DataFrame:
    frame = read_csv_text(path)
    names = [normalise_name(c) if c not in (FILE_COL, LINE_COL) else c for c in frame.columns]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(
            "two columns have the same name (names are compared case- and space-insensitively)",
            file=str(path),
            column=dup[0],
        )
    frame.columns = pd.Index(names)
    ok = _is_orders(names) if kind == "orders" else _is_customers(names)
    if not ok:
        need = ORDERS_SIGNATURE if kind == "orders" else (*CUSTOMERS_SIGNATURE, CONSENT_COLUMNS[0])
        missing = [c for c in need if c not in names]
        raise InputError(
            f"the file is named like a Shopify {kind} export but lacks its columns",
            file=str(path),
            column=missing[0] if missing else None,
            expected="Shopify's header: " + ", ".join(need),
            examples=[", ".join(c for c in frame.columns[:8] if c not in (FILE_COL, LINE_COL))],
        )
    return frame


def _text(frame: pd.DataFrame, col: str) -> pd.Series:
    """A column as text; all missing when the export does not have it."""
    return frame[col].astype("string") if col in frame.columns else _empty(frame)


def _empty(frame: pd.DataFrame) -> pd.Series:
    return pd.Series(pd.NA, index=frame.index, dtype="string")


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Every column but the line number as pandas' string dtype (missing = NA)."""
    out = frame.astype({c: "string" for c in frame.columns if c != LINE_COL})
    out[LINE_COL] = out[LINE_COL].astype("int64")
    return out.reset_index(drop=True)


def _unquote(s: pd.Series) -> pd.Series:
    """Spreadsheet text marker: Shopify writes `'+15551234567`, `'02134`, `'7012345678`."""
    t = s.str.strip().str.removeprefix("'")
    return t.mask(t == "")


def _n(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


def _fold(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Line-item rows -> (orders, order_lines)."""
    name = _text(raw, "name").str.strip()
    present = [c for c in ORDER_LEVEL if c in raw.columns]
    has_fields = raw[present].notna().any(axis=1).to_numpy()
    new_name = (name.isna() | (name != name.shift()).fillna(True)).to_numpy(dtype=bool)
    run = np.cumsum(new_name)
    # A second row with order fields under the same Name is a second order (a repeated export),
    # which validation then reports as a duplicate order id rather than silently merging it.
    seen_before = pd.Series(has_fields).groupby(run).cumsum().to_numpy() - has_fields
    head = new_name | (has_fields & (seen_before > 0))
    order_no = np.cumsum(head) - 1
    n = len(raw)
    pos = np.arange(n)
    first_pos = pd.Series(pos).groupby(order_no).min().to_numpy(dtype=np.int64)
    # Order fields come from the first row; should that row lack them, from the first that has them.
    field_pos = pd.Series(np.where(has_fields, pos, n)).groupby(order_no).min().to_numpy(
        dtype=np.int64
    )
    take: list[int] = np.where(field_pos == n, first_pos, field_pos).tolist()

    src = raw.iloc[take].reset_index(drop=True)
    orders = pd.DataFrame(index=pd.RangeIndex(len(first_pos)))
    for s_col, c_col in ORDER_FIELDS.items():
        orders[c_col] = _text(src, s_col).str.strip().mask(lambda v: v == "")
    for c in ("order_id", "email", "ordered_at"):  # repeated on every row: first one present
        s_col = next(k for k, v in ORDER_FIELDS.items() if v == c)
        orders[c] = orders[c].fillna(
            _text(raw, s_col).str.strip().groupby(order_no).first().reset_index(drop=True)
        )
    orders["_total"] = _text(src, "total")
    orders[FILE_COL] = raw[FILE_COL].to_numpy()[first_pos]
    orders[LINE_COL] = raw[LINE_COL].to_numpy()[first_pos]

    lines = pd.DataFrame({"order_id": orders["order_id"].to_numpy()[order_no]}, index=raw.index)
    lines["order_id"] = lines["order_id"].astype("string")
    for s_col, c_col in LINE_FIELDS.items():
        lines[c_col] = _text(raw, s_col)
    category = next((c for c in CATEGORY_COLUMNS if c in raw.columns), None)
    lines["category"] = _text(raw, category) if category else _empty(raw)
    lines["cost"] = _empty(raw)
    lines[FILE_COL] = raw[FILE_COL]
    lines[LINE_COL] = raw[LINE_COL]
    return orders, lines.reset_index(drop=True)


def _refunds(orders: pd.DataFrame, notes: list[str]) -> None:
    """Refunded merchandise per order, from Financial Status and Refunded Amount (of Total)."""
    status = orders["financial_status"].str.lower().fillna("")
    subtotal, _ = parse_number(orders["revenue"])
    refunded, _ = parse_number(orders["refunded"])
    cancelled = orders["cancelled_at"].notna()
    voided = status == "voided"
    full = status == "refunded"
    # Refunded Amount is part of Total (shipping and tax included); revenue is Subtotal, so a full
    # refund refunds the whole Subtotal and a larger partial refund is capped at it.
    over = ~full & (refunded > subtotal).fillna(False)
    orders["refunded"] = orders["refunded"].mask(full | over, orders["revenue"])
    orders["cancelled"] = np.where(cancelled | voided, "true", "false")
    tags = orders["tags"].str.lower().fillna("")
    orders["is_subscription_order"] = np.where(tags.str.contains("subscription"), "true", "false")
    partial = status == "partially_refunded"
    parts = [
        _n(int(cancelled.sum()), "cancelled order"),
        f"{int(full.sum()):,} refunded in full (refunded = Subtotal)",
        f"{int(partial.sum()):,} partially refunded",
    ]
    if (voided & ~cancelled).any():
        parts.append(f"{int((voided & ~cancelled).sum()):,} voided and not cancelled, "
                     "counted as cancelled (no payment was taken)")
    notes.append("orders export: " + "; ".join(parts))
    if over.any():
        k = int(over.sum())
        notes.append(
            f"{_n(k, 'partial refund')} {'exceeds' if k == 1 else 'exceed'} the order's Subtotal "
            "(Refunded Amount includes shipping and tax): capped at Subtotal, so refunded in full"
        )
    no_amount = partial & refunded.isna()
    if no_amount.any():
        notes.append(
            f"{int(no_amount.sum()):,} partially refunded orders show no Refunded Amount: "
            "counted as not refunded"
        )


def _customers(frame: pd.DataFrame) -> pd.DataFrame:
    """One customers export (any generation) in contract columns."""
    email = _text(frame, "email").str.strip().mask(lambda s: s == "")
    email_key = email.str.lower()
    cid = _unquote(_text(frame, "customer_id")).fillna(email_key)
    consent = "accepts_email_marketing" if "accepts_email_marketing" in frame else "accepts_marketing"
    country = next(
        (c for c in ("country_code", "default_address_country_code", "country") if c in frame),
        None,
    )
    return pd.DataFrame(
        {
            "customer_id": cid,
            "email": email,
            "phone": _unquote(_text(frame, "phone")).fillna(
                _unquote(_text(frame, "default_address_phone"))
            ),
            "first_name": _text(frame, "first_name"),
            "last_name": _text(frame, "last_name"),
            "created_at": _empty(frame),
            "email_consent": _text(frame, consent),
            "sms_consent": _text(frame, "accepts_sms_marketing"),
            "email_suppressed": _empty(frame),
            "tags": _text(frame, "tags"),
            "country": _text(frame, country) if country else _empty(frame),
            "zip": _unquote(_text(frame, "zip")).fillna(
                _unquote(_text(frame, "default_address_zip"))
            ),
            "total_spent": _text(frame, "total_spent"),
            "total_orders": _text(frame, "total_orders"),
            FILE_COL: frame[FILE_COL],
            LINE_COL: frame[LINE_COL],
        }
    )


def _generation(names: pd.Index) -> str:
    if "customer_id" in names:
        return "new (Customer ID)"
    if "accepts_email_marketing" in names:
        return "middle (Accepts Email/SMS Marketing)"
    return "old (Accepts Marketing)"


def _cross_check(orders: pd.DataFrame, customers: pd.DataFrame, label: str) -> str | None:
    """Compare the customers file's Total Orders / Total Spent with the orders export."""
    t_orders, _ = parse_number(customers["total_orders"])
    t_spent, _ = parse_number(customers["total_spent"])
    known = t_orders.notna() & customers["customer_id"].notna()
    if not known.any():
        return None
    cid = orders["customer_id"]
    count = cid.value_counts()
    cancelled = orders["cancelled"] == "true"
    total, _ = parse_number(orders["_total"])
    refunded, _ = parse_number(orders["_refunded_amount"])
    spent = (total.fillna(0) - refunded.fillna(0)).where(~cancelled, 0.0).groupby(cid).sum()
    c = customers[known]
    in_export = c["customer_id"].map(count).fillna(0).to_numpy()
    claimed = t_orders[known].to_numpy()
    more = int((claimed > in_export).sum())
    fewer = int((claimed < in_export).sum())
    spent_export = c["customer_id"].map(spent).fillna(0.0).to_numpy()
    spent_claimed = t_spent[known].to_numpy()
    spent_diff = int((np.abs(np.nan_to_num(spent_claimed) - spent_export) > 0.01).sum())
    if not (more or fewer or spent_diff):
        return (
            f"{label}: Total Orders and Total Spent of all {int(known.sum()):,} customers agree "
            "with the orders export"
        )
    return (
        f"{label}: Total Orders differs from the orders export for {more + fewer:,} of "
        f"{int(known.sum()):,} customers ({more:,} show more orders than the export holds, so the "
        f"orders export may cover a shorter period; {fewer:,} fewer); Total Spent differs for "
        f"{spent_diff:,}. The orders export is what Juno counts"
    )


def _input_file(path: Path, table: str, rows: int) -> InputFile:
    from juno.sources.csvfiles import sha256_file

    return InputFile(path=str(path), table=table, sha256=sha256_file(path), rows=rows, format="csv")


def read_shopify(folder: Path) -> SourceResult:
    """Read a folder of Shopify exports into orders, order_lines and customers."""
    order_paths = _find(folder, ORDERS_PATTERN)
    if not order_paths:
        raise InputError(
            "a Shopify customers export but no orders export",
            file=str(folder),
            expected="orders_export.csv (or orders_export_1.csv, _2, ...) from Shopify's Orders > Export",
        )
    notes: list[str] = []
    files: list[InputFile] = []
    parts = []
    for p in order_paths:
        f = _read(p, "orders")
        parts.append(f)
        files.append(_input_file(p, "orders", len(f)))
    raw = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    orders, lines = _fold(raw)
    for p, f in zip(order_paths, parts, strict=True):
        n_orders = int((orders[FILE_COL] == p.name).sum())
        notes.append(f"{p.name}: {_n(len(f), 'line row')} folded into {_n(n_orders, 'order')}")
    orders["_refunded_amount"] = orders["refunded"]
    _refunds(orders, notes)

    customers = None
    cust_paths = _find(folder, CUSTOMERS_PATTERN)
    if cust_paths:
        cparts = []
        for p in cust_paths:
            f = _read(p, "customers")
            cparts.append(_customers(f))
            files.append(_input_file(p, "customers", len(f)))
            notes.append(f"{p.name}: {_n(len(f), 'customer')}, {_generation(f.columns)} header")
        customers = pd.concat(cparts, ignore_index=True)

    # Customer ids: the customers file's Customer ID where it has one, else the email.
    email_key = orders["email"].str.lower()
    cid = email_key
    if customers is not None:
        with_email = customers.dropna(subset=["email"])
        by_email = pd.Series(
            with_email["customer_id"].to_numpy(),
            index=with_email["email"].str.lower().to_numpy(),
        )
        by_email = by_email[~by_email.index.duplicated(keep="first")]
        mapped = email_key.map(by_email).astype("string")
        unknown = email_key.notna() & mapped.isna()
        if unknown.any():
            notes.append(
                f"{_n(int(unknown.sum()), 'order')} ({_n(int(email_key[unknown].nunique()), 'email')})"
                " not in the customers export: the email stands in for the customer id"
            )
        cid = mapped.fillna(email_key)
    orders.insert(1, "customer_id", cid)
    no_email = orders["email"].isna()
    if no_email.any():
        rev, _ = parse_number(orders.loc[no_email, "revenue"])
        notes.append(
            f"{_n(int(no_email.sum()), 'order')} without email kept as unattributed "
            f"(revenue {rev.sum():,.2f}); they count for no customer"
        )
    if customers is not None:
        label = ", ".join(p.name for p in cust_paths)
        note = _cross_check(orders, customers, label)
        if note:
            notes.append(note)
    orders["cost"] = pd.Series(pd.NA, index=orders.index, dtype="string")
    orders = orders[[*ORDER_COLUMNS, FILE_COL, LINE_COL]]

    tables = {"orders": RawTable("orders", _as_text(orders)),
              "order_lines": RawTable("order_lines", _as_text(lines))}
    if customers is not None:
        tables["customers"] = RawTable("customers", _as_text(customers))
    return SourceResult(kind="shopify", tables=tables, files=files, notes=notes)

