"""Validation: raw tables from any source become typed frames; bad rows become rejects.

Fail loud at the edge: after this step the core trusts its data.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from juno.config import Config
from juno.errors import InputError
from juno.grouping import sorted_codes
from juno.parse import (
    arrow_chunks,
    arrow_of,
    arrow_positions,
    blank,
    clean_text,
    has_duplicates,
    is_increasing,
    isin,
    lower_text,
    parse_bool,
    parse_consent,
    parse_datetime,
    parse_number,
    positions,
    run_positions,
    string_series,
    upper_text,
)
from juno.sources.base import (
    FILE_COL,
    LINE_COL,
    REJECTED_COLUMNS,
    REQUIRED,
    TABLES,
    InputFile,
    RawTable,
    SourceResult,
)

__all__ = ["REQUIRED", "Store", "validate"]


@dataclass
class Store:
    """Typed, validated tables: what the deterministic core works on."""

    orders: pd.DataFrame
    lines: pd.DataFrame | None
    customers: pd.DataFrame
    tickets: pd.DataFrame | None
    subscriptions: pd.DataFrame | None
    rejected: pd.DataFrame
    files: list[InputFile]
    notes: list[str]
    as_of: pd.Timestamp
    as_of_source: str
    currency: str | None
    source_kind: str
    rows_read: dict[str, int] = field(default_factory=dict)
    has_cost: bool = False
    has_lines: bool = False
    # Integer joins computed once per run (validation may fill them; otherwise built on first use).
    _line_order_rows: np.ndarray | None = field(default=None, repr=False)
    _order_customer_rows: np.ndarray | None = field(default=None, repr=False)

    def line_order_rows(self) -> np.ndarray:
        """Per row of `lines`, the row of its order in `orders` (-1 when absent)."""
        assert self.lines is not None
        if self._line_order_rows is None:
            self._line_order_rows = positions(self.lines["order_id"], self.orders["order_id"])
        return self._line_order_rows

    def compact(self) -> None:
        """Shrink the tables for a run (about 450 MB at 1M customers and 7.6M lines).

        What the core never reads again once validation is done goes: the lines' order ids
        (`line_order_rows()` keeps each line's order row, so a line's order id is
        `orders["order_id"].take(line_order_rows())`), the orders' customer ids (an order's
        customer id is `customers["customer_id"].take(order_customer_rows())`), and the orders'
        audit columns (source file and line, raw discount code, currency: rejected rows and the
        currency are already settled). SKU and category become categoricals: a few thousand distinct texts held once, a
        small code per line. Values are unchanged. `juno.run` does this; `validate` alone (check,
        backtest) does not.
        """
        self.order_customer_rows()
        gone = ("customer_id", FILE_COL, LINE_COL, "discount_code", "currency")
        self.orders = self.orders.drop(columns=[c for c in gone if c in self.orders])
        if self.lines is None:
            return
        self.line_order_rows()
        lines = self.lines.drop(columns=["order_id"])
        for col in ("sku", "category"):
            lines[col] = _categorical(lines[col])
        self.lines = lines

    def order_customer_rows(self) -> np.ndarray:
        """Per row of `orders`, the row of its customer in `customers` (-1 when absent)."""
        if self._order_customer_rows is None:
            self._order_customer_rows = positions(self.orders["customer_id"], self.customers["customer_id"])
        return self._order_customer_rows


def _categorical(s: pd.Series) -> pd.Series:
    """The column as a categorical of the same values, categories in text order (as
    `astype("category")` has them), from the core's own sorted codes (one Arrow dictionary encode)."""
    if not (isinstance(s.dtype, pd.StringDtype) and s.dtype.storage == "pyarrow"):
        return s.astype("category")
    codes, names = sorted_codes(s)
    cat = pd.Categorical.from_codes(codes, categories=pd.Index(names, dtype=s.dtype))
    return pd.Series(cat, index=s.index, name=s.name)


def _b(mask: pd.Series) -> np.ndarray:
    return np.asarray(mask.fillna(False).astype(bool), dtype=bool)


class _Rejects:
    """Collects (table, mask, reason) and keeps the first reason per row."""

    def __init__(self, raw: RawTable) -> None:
        self.raw = raw
        n = len(raw.frame)
        # Reason and detail arrays (Python objects, 8 bytes a row) only once a row is rejected.
        self.reason: np.ndarray | None = None
        self.detail: np.ndarray | None = None
        self._ok = np.ones(n, dtype=bool)  # no reason yet
        self.any = False

    def add(self, mask: pd.Series | np.ndarray, reason: str, detail: pd.Series | None = None) -> None:
        m = _b(pd.Series(mask)) if not isinstance(mask, np.ndarray) else mask
        new = m & self._ok
        if not new.any():
            return
        if self.reason is None or self.detail is None:
            self.reason = np.full(len(self._ok), None, dtype=object)
            self.detail = np.full(len(self._ok), None, dtype=object)
        self.any = True
        self.reason[new] = reason
        self._ok[new] = False
        if detail is not None:
            # Text of the rejected cells only: converting the whole column costs seconds per million.
            self.detail[new] = np.asarray(detail[new].astype("string").fillna(""), dtype=object)

    @property
    def ok(self) -> np.ndarray:
        return self._ok.copy()

    def frame(self, revenue: pd.Series | None = None) -> pd.DataFrame:
        if self.reason is None or self.detail is None:
            return pd.DataFrame({c: pd.Series(dtype="object") for c in REJECTED_COLUMNS})
        bad = ~self.ok
        f = self.raw.frame
        return pd.DataFrame(
            {
                # Select, then convert: a whole string column as Python objects is ~0.5 GB per 7M rows.
                "file": f[FILE_COL][bad].to_numpy(),
                "line": f[LINE_COL][bad].to_numpy(),
                "table": self.raw.table,
                "reason": self.reason[bad],
                "revenue": (
                    revenue.to_numpy()[bad] if revenue is not None else np.full(bad.sum(), np.nan)
                ),
                "detail": self.detail[bad],
            }
        )


def _keep(frame: pd.DataFrame, ok: np.ndarray) -> pd.DataFrame:
    """`frame[ok].reset_index(drop=True)`, without copying every column when no row goes."""
    index = frame.index
    if ok.all() and isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1:
        return frame
    return frame[ok].reset_index(drop=True)


def _examples(frame: pd.DataFrame, n: int = 5) -> list[str]:
    cols = [c for c in frame.columns if not c.startswith("_")][:6]
    out = []
    for _, row in frame.head(n).iterrows():
        out.append(", ".join(f"{c}={row[c]!s}"[:40] for c in cols))
    return out


def _require(raw: RawTable, file: str) -> None:
    cols = set(raw.frame.columns)
    missing = [c for c in REQUIRED[raw.table] if c not in cols]
    if raw.table == "orders" and "customer_id" not in cols and "email" not in cols:
        missing.append("customer_id (or email)")
    if raw.table == "support_tickets" and "customer_id" not in cols and "email" not in cols:
        missing.append("customer_id (or email)")
    if missing:
        present = [c for c in raw.frame.columns if not c.startswith("_")]
        raise InputError(
            f"the {raw.table} table lacks required column(s): {', '.join(missing)}",
            file=file,
            column=missing[0],
            expected=f"columns {', '.join(REQUIRED[raw.table])} (names match case- and space-insensitively);"
            f" found: {', '.join(present[:20])}",
            examples=_examples(raw.frame),
        )


def _col(f: pd.DataFrame, name: str) -> pd.Series:
    if name in f.columns:
        return f[name]
    return pd.Series(pd.NA, index=f.index, dtype="string")


def _filled(v: pd.Series, value: float) -> pd.Series:
    """`v.fillna(value)`, sharing `v`'s data when nothing is missing (a column of 7.6M lines)."""
    return v.fillna(value) if v.isna().any() else v


def _zero_floor(v: pd.Series) -> pd.Series:
    """`v.fillna(0.0).clip(lower=0)`, sharing `v`'s data when every value is already +0 or more."""
    a = v.to_numpy()
    if a.dtype.kind == "f" and not (np.isnan(a).any() or np.signbit(a).any()):
        return v
    return v.fillna(0.0).clip(lower=0)


def _file_of(raw: RawTable, files: list[InputFile]) -> str:
    """The file(s) a table's rows came from (one export can feed several tables)."""
    if FILE_COL in raw.frame.columns and len(raw.frame):
        names = sorted(str(n) for n in raw.frame[FILE_COL].dropna().unique()[:5])
        if names:
            return ", ".join(names)
    names = [fi.path for fi in files if fi.table == raw.table]
    return ", ".join(names) if names else raw.table


def _email_key(s: pd.Series) -> pd.Series:
    return lower_text(clean_text(s))


def validate(source: SourceResult, config: Config, *, consume: bool = False) -> Store:
    """Type every table, reject bad rows with reasons, resolve as_of and the currency.

    `consume`: take each raw table out of `source` as it is typed, so that only one table's raw
    and typed forms are alive together (for a caller that has no further use for the raw tables).
    """
    notes = list(source.notes)
    rejected_parts = [source.rejected] if len(source.rejected) else []
    # Rows the adapter set aside (e.g. wrong field count) were read too.
    set_aside = source.rejected["table"].value_counts() if len(source.rejected) else pd.Series()
    rows_read = {name: len(t.frame) + int(set_aside.get(name, 0)) for name, t in source.tables.items()}
    for _name, raw in source.tables.items():
        _require(raw, _file_of(raw, source.files))
    files = list(source.files)
    deferred = list(source.deferred)

    # The orders file is read on a second thread while the customers are typed (the reader lets go
    # of the GIL for most of it); the other deferred tables are read when taken.
    ahead: dict[str, Future[tuple[pd.DataFrame, InputFile, pd.DataFrame]]] = {}
    if "customers" in source.deferred and "orders" in source.deferred:
        pool = ThreadPoolExecutor(max_workers=1)
        ahead["orders"] = pool.submit(source.deferred.pop("orders"))
        pool.shutdown(wait=False)

    def take(name: str) -> RawTable | None:
        reader = source.deferred.pop(name, None)
        if name in ahead:
            reader = ahead.pop(name).result
        if reader is not None:  # read only now, while no other table's raw cells are held
            frame, info, aside = reader()
            raw = RawTable(name, frame)
            files.append(info)
            rows_read[name] = len(frame) + len(aside)
            if len(aside):
                rejected_parts.append(aside)
            _require(raw, _file_of(raw, files))
            return raw
        if consume:
            return source.tables.pop(name, None)
        return source.tables.get(name)

    # ---- customers (first: orders may carry only an email that maps to a customer id) ----
    cust_raw = take("customers")
    customers: pd.DataFrame | None = None
    if cust_raw is not None:
        customers, rej = _customers(cust_raw)
        rejected_parts.append(rej)
        del cust_raw
    first_customers = customers

    def email_to_id() -> pd.Series | None:
        return _email_lookup(first_customers) if first_customers is not None else None

    orders_raw = take("orders")
    assert orders_raw is not None
    # What error messages need of the raw orders: the file column alone.
    orders_ref = RawTable(
        "orders",
        orders_raw.frame[[FILE_COL]] if FILE_COL in orders_raw.frame.columns else orders_raw.frame.iloc[:, :0],
    )
    orders, rej, rejected_customers = _orders(orders_raw, config, email_to_id)
    del orders_raw
    rejected_parts.append(rej)
    if orders.empty and rows_read["orders"] == 0:
        raise InputError(
            "the orders table has no data rows (a header only)",
            file=_file_of(orders_ref, files),
            expected="one row per order under the header",
        )
    if orders.empty:
        raise InputError(
            "no usable orders: every order row was rejected",
            file=_file_of(orders_ref, files),
            expected="order rows with an order id, a customer, a date and a revenue",
            examples=[f"line {r.line}: {r.reason}" for r in rej.head(5).itertuples()],
        )
    # Customers seen on any order row, used or not: each must appear in customers.csv. `at`: per
    # used order, its customer's row in the customers table, where customers without a row there
    # (`new_ids`) are added at its end.
    at, new_ids = _customer_rows(orders["customer_id"], rejected_customers, customers)

    # ---- currency ----
    currency: str | None = config.currency
    cur = orders["currency"].dropna()
    found = sorted(cur.unique().tolist())
    if config.currency is None and len(found) > 1:
        counts = cur.value_counts()
        raise InputError(
            f"orders are in several currencies ({', '.join(found)}) and no conversion is given",
            file=_file_of(orders_ref, files),
            column="currency",
            expected="one currency per store, or `currency = \"...\"` in juno.toml to keep one",
            examples=[f"{k}: {v} orders" for k, v in counts.items()],
        )
    del cur
    if config.currency is not None:
        other = orders["currency"].notna() & (orders["currency"] != config.currency)
        if other.any():
            rejected_parts.append(_drop_reject(orders, other, "orders", f"currency is not {config.currency}"))
            orders = orders[~other]
            at = at[~other.to_numpy(bool)]
    elif found:
        currency = found[0]

    in_currency = len(orders)

    # ---- as_of ----
    if config.as_of is not None:
        resolved = config.as_of_datetime()
        assert resolved is not None
        as_of = pd.Timestamp(resolved)
        as_of_source = "config"
        late = orders["ordered_at"] > as_of
        if late.any():
            rejected_parts.append(_drop_reject(orders, late, "orders", "ordered after as_of"))
            orders = orders[~late]
            at = at[~late.to_numpy(bool)]
    else:
        as_of = orders["ordered_at"].max()
        as_of_source = "latest order in the data"
    if orders.empty:  # every order was in another currency, or dated after as_of
        column = "currency" if in_currency == 0 else "ordered_at"
        why = "in another currency" if in_currency == 0 else "dated after as_of"
        raise InputError(
            f"no usable orders: every order is {why}",
            file=_file_of(orders_ref, files),
            column=column,
            expected=f"orders in {config.currency or 'the store currency'} dated on or before "
            f"{config.as_of or 'as_of'}",
        )
    orders = orders.reset_index(drop=True)

    # ---- customer universe ----
    if customers is None:
        # One row per customer seen on an order (rows end up in id order, as always).
        customers = pd.DataFrame({"customer_id": string_series(new_ids)})
        for c in ("email", "phone", "first_name", "last_name", "tags", "country", "email_key"):
            customers[c] = pd.Series(pd.NA, index=customers.index, dtype="string")
        customers["created_at"] = pd.Series(pd.NaT, index=customers.index, dtype="datetime64[ns]")
        customers["email_consent"] = pd.Series("unknown", index=customers.index, dtype="string")
        customers["sms_consent"] = pd.Series("unknown", index=customers.index, dtype="string")
        customers["email_suppressed"] = False
        customers["in_customers_file"] = False
    else:
        if len(new_ids):
            notes.append(
                f"{len(new_ids):,} customer{'s have' if len(new_ids) != 1 else ' has'} orders but no row"
                " in the customers table (consent unknown)"
            )
            add = pd.DataFrame({"customer_id": string_series(new_ids)})
            add["email_consent"] = "unknown"
            add["sms_consent"] = "unknown"
            add["email_suppressed"] = False
            add["in_customers_file"] = False
            customers = pd.concat([customers, add], ignore_index=True)
        # Customers none of whose orders is used (rejected or filtered out): ids are unique.
        has_order = np.zeros(len(customers), dtype=bool)
        has_order[at] = True
        no_orders = int((~has_order).sum())
        if no_orders:
            notes.append(f"{no_orders:,} customers in the customers table have no usable order")
    if is_increasing(customers["customer_id"]):
        # Already in id order (ids are unique): sorting would copy every column for nothing.
        order_customer_rows = at
    else:
        by_id = customers.sort_values("customer_id", kind="stable")
        order = by_id.index.to_numpy()
        customers = by_id.reset_index(drop=True)
        del by_id
        # Table row i is row rank[i] once sorted.
        rank = np.empty(len(order), dtype=np.intp)
        rank[order] = np.arange(len(order), dtype=np.intp)
        order_customer_rows = rank[at]
        del rank, order
    del at
    known = pd.Index(customers["customer_id"])
    sorted_customers = customers

    def email_map() -> pd.Series:
        return _email_lookup(sorted_customers)

    # ---- lines ----
    lines = None
    line_order_rows = None
    lines_raw = take("order_lines")
    if lines_raw is not None:
        lines, rej, line_order_rows = _lines(lines_raw, orders, own=consume or "order_lines" in deferred)
        rejected_parts.append(rej)
    del lines_raw

    tickets = None
    tickets_raw = take("support_tickets")
    if tickets_raw is not None:
        tickets, rej = _tickets(tickets_raw, known, email_map, as_of)
        rejected_parts.append(rej)
    del tickets_raw

    subs = None
    subs_raw = take("subscriptions")
    if subs_raw is not None:
        subs, rej = _subscriptions(subs_raw, known)
        rejected_parts.append(rej)
    del subs_raw

    if deferred:  # files and counts in table order, as when every table is read up front
        files.sort(key=lambda fi: TABLES.index(fi.table))
        rows_read = {n: rows_read[n] for n in TABLES if n in rows_read}
    rejected = pd.concat(
        [p for p in rejected_parts if len(p)] or [source.rejected], ignore_index=True
    )
    rejected = rejected[REJECTED_COLUMNS].sort_values(["table", "file", "line"], kind="stable")
    has_cost = bool(orders["cost"].notna().any()) or (
        lines is not None and bool(lines["cost"].notna().any())
    )
    return Store(
        orders=orders,
        lines=lines,
        customers=customers,
        tickets=tickets,
        subscriptions=subs,
        rejected=rejected.reset_index(drop=True),
        files=files,
        notes=notes,
        as_of=as_of,
        as_of_source=as_of_source,
        currency=currency,
        source_kind=source.kind,
        rows_read=rows_read,
        has_cost=has_cost,
        has_lines=lines is not None,
        _line_order_rows=line_order_rows,
        _order_customer_rows=order_customer_rows,
    )


def _customer_rows(
    ids: pd.Series, rejected: pd.Index, customers: pd.DataFrame | None
) -> tuple[np.ndarray, pa.Array]:
    """(per order, the row of its customer in `customers` extended by the new ids; the new ids:
    customers named on orders, used or rejected, who have no row in `customers`).

    One hash lookup of every order's id in the customers table; the few new ids are then found
    among themselves. Without a customers table every id is new, in order of first appearance.
    """
    arr = arrow_chunks(ids)
    rejected_ids = pa.array(rejected, type=arr.type, from_pandas=True)
    if customers is None:
        encoded = pc.dictionary_encode(arrow_of(ids))
        seen: pa.Array = encoded.dictionary
        at = np.asarray(encoded.indices.to_numpy(), dtype=np.intp)
        if len(rejected_ids):
            rejected_ids = rejected_ids.filter(pc.invert(pc.is_in(rejected_ids, value_set=seen)))
        return at, pa.concat_arrays([seen, rejected_ids])
    at = arrow_positions(arr, customers["customer_id"])
    absent = at < 0
    new_ids = pa.array([], type=arr.type)
    if absent.any():
        missing = arr.filter(pa.array(absent))
        new_ids = pc.unique(missing)
        found = pc.index_in(missing, value_set=new_ids).to_numpy()
        at[absent] = len(customers) + np.asarray(found, dtype=np.intp)
    if len(rejected_ids):
        known = pc.or_(
            pc.is_in(rejected_ids, value_set=arrow_of(customers["customer_id"])),
            pc.is_in(rejected_ids, value_set=new_ids),
        )
        new_ids = pa.concat_arrays([new_ids, rejected_ids.filter(pc.invert(known))])
    return at, new_ids


def _email_lookup(customers: pd.DataFrame) -> pd.Series:
    """Customer id by email key (first customer per email)."""
    with_email = customers.dropna(subset=["email_key"]).drop_duplicates("email_key")
    return pd.Series(with_email["customer_id"].to_numpy(), index=with_email["email_key"].to_numpy())


def _fill_ids(cid: pd.Series, email: pd.Series, lookup: Callable[[], pd.Series | None], keep_email: bool) -> pd.Series:
    """Missing customer ids from the email: the id of the customer with that email key (else,
    when `keep_email`, the email key itself). Only rows without an id are looked at."""
    need = np.asarray(cid.isna(), dtype=bool)
    if not need.any():
        return cid
    key = _email_key(email[need])
    if not key.notna().any():
        return cid
    table = lookup()
    filled = key.map(table).astype("string") if table is not None else pd.Series(pd.NA, index=key.index, dtype="string")
    if keep_email:
        filled = filled.fillna(key)
    out = cid.copy()
    out[need] = filled.to_numpy()
    return out


def _drop_reject(frame: pd.DataFrame, mask: pd.Series, table: str, reason: str) -> pd.DataFrame:
    part = frame[mask]
    return pd.DataFrame(
        {
            "file": part[FILE_COL].to_numpy(),
            "line": part[LINE_COL].to_numpy(),
            "table": table,
            "reason": reason,
            "revenue": part["revenue"].to_numpy() if "revenue" in part else np.nan,
            "detail": part["order_id"].to_numpy() if "order_id" in part else None,
        }
    )


def _customers(raw: RawTable) -> tuple[pd.DataFrame, pd.DataFrame]:
    f = raw.frame
    rej = _Rejects(raw)
    cid = clean_text(_col(f, "customer_id"))
    rej.add(cid.isna(), "missing customer_id")
    if has_duplicates(cid):
        dup = cid.duplicated(keep="first") & cid.notna()
        rej.add(dup, "duplicate customer_id (first row kept)", cid)
    created, _bad_created = parse_datetime(_col(f, "created_at"))
    email_consent, bad_ec = parse_consent(_col(f, "email_consent"))
    sms_consent, bad_sc = parse_consent(_col(f, "sms_consent"))
    suppressed, _ = parse_bool(_col(f, "email_suppressed"))
    email = clean_text(_col(f, "email"))
    out = pd.DataFrame(
        {
            "customer_id": cid.astype("string"),
            "email": email,
            "phone": clean_text(_col(f, "phone")),
            "first_name": clean_text(_col(f, "first_name")),
            "last_name": clean_text(_col(f, "last_name")),
            "created_at": created,
            "email_consent": email_consent,
            "sms_consent": sms_consent,
            "email_suppressed": suppressed,
            "tags": clean_text(_col(f, "tags")),
            "country": upper_text(clean_text(_col(f, "country"))),
            "email_key": lower_text(email),  # _email_key, from the email cleaned above
            "in_customers_file": True,
            "consent_unrecognised": _b(bad_ec) | _b(bad_sc),
        },
        copy=False,  # the columns as built: no copy, no consolidation into 2-D blocks
    )
    for extra in ("total_spent", "total_orders"):
        if extra in f.columns:
            out[extra] = parse_number(f[extra])[0]
    return _keep(out, rej.ok), rej.frame()


def _orders(
    raw: RawTable, config: Config, email_to_id: Callable[[], pd.Series | None]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Index]:
    """(used orders, rejected rows, customer ids named on rejected rows)."""
    f = raw.frame
    rej = _Rejects(raw)
    order_id = clean_text(_col(f, "order_id"))
    # A row without a customer id: the customer with its email, else the email itself.
    cid = _fill_ids(clean_text(_col(f, "customer_id")), _col(f, "email"), email_to_id, keep_email=True)
    ordered_at, bad_date = parse_datetime(_col(f, "ordered_at"))
    revenue, bad_rev = parse_number(_col(f, "revenue"))
    discount, bad_disc = parse_number(_col(f, "discount"))
    refunded, bad_ref = parse_number(_col(f, "refunded"))
    cost, bad_cost = parse_number(_col(f, "cost"))
    cancelled_flag, _ = parse_bool(_col(f, "cancelled"))
    cancelled_at, _ = parse_datetime(_col(f, "cancelled_at"))
    cancelled = _b(cancelled_flag) | _b(cancelled_at.notna())
    is_sub, _ = parse_bool(_col(f, "is_subscription_order"))
    discount_code = clean_text(_col(f, "discount_code"))
    currency = upper_text(clean_text(_col(f, "currency")))

    rej.add(order_id.isna(), "missing order_id")
    rej.add(cid.isna(), "no customer id or email (unattributed)", order_id)
    rej.add(blank(_col(f, "ordered_at")), "missing ordered_at", order_id)
    rej.add(bad_date, "unparseable or implausible ordered_at", _col(f, "ordered_at"))
    rej.add(blank(_col(f, "revenue")), "missing revenue", order_id)
    rej.add(bad_rev, "revenue is not a number", _col(f, "revenue"))
    rej.add(
        _b(revenue < 0) & ~cancelled & _b(refunded.fillna(0) <= 0),
        "negative revenue that is not a refund or cancellation",
        _col(f, "revenue"),
    )
    rej.add(_b(revenue.abs() > 1e9), "revenue implausibly large", _col(f, "revenue"))
    rej.add(bad_disc | bad_ref | bad_cost, "discount, refunded or cost is not a number", order_id)

    # Duplicate order ids: identical rows are harmless repeats; differing ones are ambiguous.
    ok_now = pd.Series(rej.ok, index=f.index)
    dup_any = (
        order_id.duplicated(keep=False) & ok_now & order_id.notna()
        if has_duplicates(order_id)
        else pd.Series(False, index=f.index)
    )
    if dup_any.any():
        # Only rows sharing an order id can share a content key: build keys for those alone.
        shared = order_id.duplicated(keep=False).to_numpy(bool)
        sig = pd.DataFrame(
            {"o": order_id, "c": cid, "d": ordered_at, "r": revenue, "x": refunded}
        )[shared].astype("string").fillna("")
        key = pd.Series(False, index=f.index)
        key[shared] = sig.agg("|".join, axis=1).duplicated(keep="first").to_numpy(bool)
        cand = dup_any
        first = order_id[cand].duplicated(keep="first")
        later = pd.Series(False, index=f.index)
        later[first.index] = first
        same = later & key
        rej.add(_b(same), "duplicate order id (identical row, first kept)", order_id)
        rej.add(_b(later & ~same), "duplicate order id with different content (first kept)", order_id)

    out = pd.DataFrame(
        {
            "order_id": order_id,
            "customer_id": cid.astype("string"),
            "ordered_at": ordered_at,
            "revenue": revenue,
            "discount": _zero_floor(discount),
            "refunded": _zero_floor(refunded),
            "cancelled": cancelled,
            "cost": cost,
            "currency": currency,
            "discount_code": discount_code,
            "is_subscription_order": _b(is_sub),
            FILE_COL: f[FILE_COL],
            LINE_COL: f[LINE_COL],
        },
        copy=False,  # the columns as built: no copy, no consolidation into 2-D blocks
    )
    out["has_discount"] = _b(out["discount"] > 0) | _b(discount_code.notna())
    refunded_full = _b(out["refunded"] >= out["revenue"] - 0.005) & _b(out["refunded"] > 0)
    out["fully_refunded"] = refunded_full
    # Net revenue: cancelled and fully refunded orders count zero; partial refunds come off.
    net = (out["revenue"] - out["refunded"]).clip(lower=0)
    out["net_revenue"] = net.where(~(out["cancelled"] | refunded_full), 0.0)
    out["counts"] = ~(out["cancelled"] | refunded_full)
    ok = rej.ok
    rejected_customers = pd.Index(cid[~ok].dropna().unique())
    return _keep(out, ok), rej.frame(revenue), rejected_customers


def _lines(
    raw: RawTable, orders: pd.DataFrame, own: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """(used lines, rejected rows, per used line the row of its order in `orders`).

    `own`: the raw table is the caller's to spend (its columns may be dropped as they are typed)."""
    f = raw.frame
    rej = _Rejects(raw)
    order_id = clean_text(_col(f, "order_id"))

    def number(name: str) -> tuple[pd.Series, pd.Series]:
        parsed = parse_number(_col(f, name))
        if own and name in f.columns:
            del f[name]  # nothing reads a line's raw number again: free its text now
        return parsed

    qty, bad_q = number("quantity")
    price, bad_p = number("price")
    line_discount, bad_d = number("line_discount")
    cost, bad_c = number("cost")
    rej.add(order_id.isna(), "missing order_id")
    # One lookup gives both the lines of unknown orders and every line's order row.
    at = run_positions(order_id, orders["order_id"])
    rej.add(at < 0, "line of an unknown or rejected order", order_id)
    rej.add(bad_q | bad_p | bad_d | bad_c, "quantity, price, discount or cost is not a number", order_id)
    category = lower_text(clean_text(_col(f, "category")))
    sku = clean_text(_col(f, "sku"))
    out = pd.DataFrame(
        {
            "order_id": order_id,
            "sku": sku,
            "category": category,
            "quantity": _filled(qty, 1.0),
            "price": price,
            "line_discount": _filled(line_discount, 0.0),
            "cost": cost,
        },
        copy=False,  # the columns as built: no copy, no consolidation into 2-D blocks
    )
    ok = rej.ok
    return _keep(out, ok), rej.frame(), at[ok] if not ok.all() else at


def _tickets(
    raw: RawTable, known: pd.Index, email_map: Callable[[], pd.Series | None], as_of: pd.Timestamp
) -> tuple[pd.DataFrame, pd.DataFrame]:
    f = raw.frame
    rej = _Rejects(raw)
    cid = _fill_ids(clean_text(_col(f, "customer_id")), _col(f, "email"), email_map, keep_email=False)
    opened, bad_o = parse_datetime(_col(f, "opened_at"))
    closed, _ = parse_datetime(_col(f, "closed_at"))
    rej.add(cid.isna(), "ticket without a customer id or email")
    rej.add(~isin(cid, known), "ticket of an unknown customer", cid)
    rej.add(blank(_col(f, "opened_at")) | bad_o, "missing or unparseable opened_at", _col(f, "opened_at"))
    rej.add(_b(opened > as_of), "ticket opened after as_of")
    status = lower_text(clean_text(_col(f, "status"))).fillna("")
    severity = lower_text(clean_text(_col(f, "severity"))).fillna("normal")
    # Open: an open-like status, or no status and no close date; a closed-like status always wins.
    open_like = status.isin(["open", "pending", "new", "hold", "on_hold"]) | (closed.isna() & (status == ""))
    is_open = open_like & ~status.isin(["closed", "solved", "resolved"])
    out = pd.DataFrame(
        {
            "customer_id": cid,
            "opened_at": opened,
            "closed_at": closed,
            "is_open": _b(is_open),
            "severity": severity,
            "high_severity": _b(severity.isin(["high", "urgent", "critical"])),
        },
        copy=False,  # the columns as built: no copy, no consolidation into 2-D blocks
    )
    return _keep(out, rej.ok), rej.frame()


def _subscriptions(raw: RawTable, known: pd.Index) -> tuple[pd.DataFrame, pd.DataFrame]:
    f = raw.frame
    rej = _Rejects(raw)
    cid = clean_text(_col(f, "customer_id"))
    status = lower_text(clean_text(_col(f, "status")))
    status = status.replace({"canceled": "cancelled", "expired": "cancelled", "on_hold": "paused"})
    rej.add(cid.isna(), "subscription without a customer id")
    rej.add(~isin(cid, known), "subscription of an unknown customer", cid)
    rej.add(~status.isin(["active", "paused", "cancelled"]), "status is not active, paused or cancelled", status)
    out = pd.DataFrame(
        {
            "customer_id": cid,
            "status": status,
            "sku": clean_text(_col(f, "sku")),
            "category": lower_text(clean_text(_col(f, "category"))),
        },
        copy=False,  # the columns as built: no copy, no consolidation into 2-D blocks
    )
    return _keep(out, rej.ok), rej.frame()
