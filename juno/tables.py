"""Each contract table typed, with its bad rows rejected: validation's per-table work.

`juno.validate` calls these in order (customers, orders, the order -> customer lookup, lines,
tickets, subscriptions) and settles what spans tables: currency, as_of, the customer universe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from juno import background
from juno.config import Config
from juno.grouping import sorted_codes
from juno.parse import (
    Runs,
    arrow_chunks,
    arrow_of,
    arrow_positions,
    blank,
    clean_text,
    has_duplicates,
    lower_text,
    parse_bool,
    parse_consent,
    parse_datetime,
    parse_number,
    positions,
    run_positions,
    upper_text,
    value_runs,
)
from juno.sources.base import FILE_COL, LINE_COL, REJECTED_COLUMNS, RawTable


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

    def add(
        self, mask: pd.Series | np.ndarray, reason: str, detail: pd.Series | Callable[[], pd.Series] | None = None
    ) -> None:
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
        if callable(detail):
            detail = detail()
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


def raw_column(f: pd.DataFrame, name: str) -> pd.Series:
    """A raw table's column, or all missing when the file has no such column."""
    if name in f.columns:
        return f[name]
    # An absent column reads as all missing: Arrow nulls (pandas repeats a scalar NA element by
    # element, ~0.3 s per 4.8M rows).
    return pd.Series(pd.array(pa.nulls(len(f), pa.large_string()), dtype="string"), index=f.index)


def quoted(raw: RawTable, name: str) -> pd.Series | Callable[[], pd.Series]:
    """A column as a rejected row quotes it: its cells as the file wrote them. A column the CSV
    reader typed is read again as text, and only if some row is rejected (`_Rejects.add`)."""
    return raw.text.get(name) or raw_column(raw.frame, name)


def _filled(v: pd.Series, value: float) -> pd.Series:
    """`v.fillna(value)`, sharing `v`'s data when nothing is missing (a column of 7.6M lines)."""
    return v.fillna(value) if v.isna().any() else v


def _zero_floor(v: pd.Series) -> pd.Series:
    """`v.fillna(0.0).clip(lower=0)`, sharing `v`'s data when every value is already +0 or more."""
    a = v.to_numpy()
    if a.dtype.kind == "f" and not (np.isnan(a).any() or np.signbit(a).any()):
        return v
    return v.fillna(0.0).clip(lower=0)


def _email_key(s: pd.Series) -> pd.Series:
    return lower_text(clean_text(s))


def customer_rows(
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


def email_lookup(customers: pd.DataFrame) -> pd.Series:
    """Customer id by email key (first customer per email)."""
    with_email = customers.dropna(subset=["email_key"]).drop_duplicates("email_key")
    return pd.Series(with_email["customer_id"].to_numpy(), index=with_email["email_key"].to_numpy())


def _fill_ids(
    cid: pd.Series, email: Callable[[], pd.Series], lookup: Callable[[], pd.Series | None], keep_email: bool
) -> pd.Series:
    """Missing customer ids from the email: the id of the customer with that email key (else,
    when `keep_email`, the email key itself). Only rows without an id are looked at, and the
    email column is only read for them (an absent one is millions of missing cells to make)."""
    need = np.asarray(cid.isna(), dtype=bool)
    if not need.any():
        return cid
    key = _email_key(email()[need])
    if not key.notna().any():
        return cid
    table = lookup()
    filled = key.map(table).astype("string") if table is not None else pd.Series(pd.NA, index=key.index, dtype="string")
    if keep_email:
        filled = filled.fillna(key)
    out = cid.copy()
    out[need] = filled.to_numpy()
    return out


def customers_table(raw: RawTable) -> tuple[pd.DataFrame, pd.DataFrame]:
    f = raw.frame
    rej = _Rejects(raw)
    cid = clean_text(raw_column(f, "customer_id"))
    rej.add(cid.isna(), "missing customer_id")
    if has_duplicates(cid):
        dup = cid.duplicated(keep="first") & cid.notna()
        rej.add(dup, "duplicate customer_id (first row kept)", cid)
    created, _bad_created = parse_datetime(raw_column(f, "created_at"))
    email_consent, bad_ec = parse_consent(raw_column(f, "email_consent"))
    sms_consent, bad_sc = parse_consent(raw_column(f, "sms_consent"))
    suppressed, _ = parse_bool(raw_column(f, "email_suppressed"))
    email = clean_text(raw_column(f, "email"))
    out = pd.DataFrame(
        {
            "customer_id": cid.astype("string"),
            "email": email,
            "phone": clean_text(raw_column(f, "phone")),
            "first_name": clean_text(raw_column(f, "first_name")),
            "last_name": clean_text(raw_column(f, "last_name")),
            "created_at": created,
            "email_consent": email_consent,
            "sms_consent": sms_consent,
            "email_suppressed": suppressed,
            "tags": clean_text(raw_column(f, "tags")),
            "country": upper_text(clean_text(raw_column(f, "country"))),
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


def orders_table(
    raw: RawTable, config: Config, email_to_id: Callable[[], pd.Series | None]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Index]:
    """(used orders, rejected rows, customer ids named on rejected rows)."""
    f = raw.frame
    rej = _Rejects(raw)
    # The money columns are typed on a second thread while this one types the rest (text read
    # from a CSV file: 0.7 s of number checks and casts at a million customers, outside the GIL).
    money = background.start(_numbers, [raw_column(f, c) for c in ("revenue", "discount", "refunded", "cost")])
    order_id = clean_text(raw_column(f, "order_id"))
    # A row without a customer id: the customer with its email, else the email itself.
    cid = _fill_ids(
        clean_text(raw_column(f, "customer_id")), lambda: raw_column(f, "email"), email_to_id, keep_email=True
    )
    ordered_at, bad_date = parse_datetime(raw_column(f, "ordered_at"))
    cancelled_at, _ = parse_datetime(raw_column(f, "cancelled_at"))
    cancelled = _b(cancelled_at.notna())
    if "cancelled" in f.columns:  # (absent, it is False everywhere: parse_bool of blank cells)
        cancelled = cancelled | _b(parse_bool(f["cancelled"])[0])
    is_sub, _ = parse_bool(raw_column(f, "is_subscription_order"))
    discount_code = clean_text(raw_column(f, "discount_code"))
    currency = upper_text(clean_text(raw_column(f, "currency")))
    (revenue, bad_rev), (discount, bad_disc), (refunded, bad_ref), (cost, bad_cost) = money.result()

    rej.add(order_id.isna(), "missing order_id")
    rej.add(cid.isna(), "no customer id or email (unattributed)", order_id)
    rej.add(blank(raw_column(f, "ordered_at")), "missing ordered_at", order_id)
    rej.add(bad_date, "unparseable or implausible ordered_at", quoted(raw, "ordered_at"))
    rej.add(blank(raw_column(f, "revenue")), "missing revenue", order_id)
    rej.add(bad_rev, "revenue is not a number", quoted(raw, "revenue"))
    rej.add(
        _b(revenue < 0) & ~cancelled & _b(refunded.fillna(0) <= 0),
        "negative revenue that is not a refund or cancellation",
        quoted(raw, "revenue"),
    )
    rej.add(_b(revenue.abs() > 1e9), "revenue implausibly large", quoted(raw, "revenue"))
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


def _numbers(columns: list[pd.Series]) -> list[tuple[pd.Series, pd.Series]]:
    return [parse_number(c) for c in columns]


@dataclass
class PreparedLines:
    """The order lines typed as far as they go without the orders (`prepare_lines`)."""

    raw: RawTable
    order_id: pd.Series
    numbers: list[tuple[pd.Series, pd.Series]]  # (values, not a number) of quantity, price, line_discount, cost
    sku: pd.Series
    category: pd.Series
    runs: Runs | None  # the order ids' runs (lines come grouped by order)


def prepare_lines(raw: RawTable, own: bool = False) -> PreparedLines:
    """Everything of `lines_table` that reads the lines alone. A reader thread does it as soon
    as the lines are read, while the orders are still being typed (juno.validate).

    `own`: the raw table is the caller's to spend (its columns may be dropped as they are typed)."""
    f = raw.frame
    order_id = clean_text(raw_column(f, "order_id"))

    def numbers(names: tuple[str, str]) -> list[tuple[pd.Series, pd.Series]]:
        """Two columns typed at once, one on a second thread (text from a CSV file: ~0.25 s a
        column at a million customers, outside the GIL); their text freed after."""
        other = background.start(parse_number, raw_column(f, names[1]), name="juno-parse")
        parsed = [parse_number(raw_column(f, names[0])), other.result()]
        for name in names:
            if own and name in f.columns:
                del f[name]  # nothing reads a line's raw number again: free its text now
        return parsed

    typed = numbers(("quantity", "price")) + numbers(("line_discount", "cost"))
    category = _text_or_codes(raw_column(f, "category"), lower=True)
    sku = _text_or_codes(raw_column(f, "sku"))
    return PreparedLines(raw, order_id, typed, sku, category, value_runs(order_id))


def lines_table(
    raw: RawTable | PreparedLines, orders: pd.DataFrame, own: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """(used lines, rejected rows, per used line the row of its order in `orders`).

    `raw`: the raw table, or what `prepare_lines` made of it. `own`: see `prepare_lines`."""
    lines = raw if isinstance(raw, PreparedLines) else prepare_lines(raw, own)
    rej = _Rejects(lines.raw)
    order_id = lines.order_id
    (qty, bad_q), (price, bad_p), (line_discount, bad_d), (cost, bad_c) = lines.numbers
    rej.add(order_id.isna(), "missing order_id")
    # One lookup gives both the lines of unknown orders and every line's order row.
    at = run_positions(order_id, orders["order_id"], lines.runs)
    rej.add(at < 0, "line of an unknown or rejected order", order_id)
    rej.add(bad_q | bad_p | bad_d | bad_c, "quantity, price, discount or cost is not a number", order_id)
    out = pd.DataFrame(
        {
            "order_id": order_id,
            "sku": lines.sku,
            "category": lines.category,
            "quantity": _filled(qty, 1.0),
            "price": price,
            "line_discount": _filled(line_discount, 0.0),
            "cost": cost,
        },
        copy=False,  # the columns as built: no copy, no consolidation into 2-D blocks
    )
    ok = rej.ok
    return _keep(out, ok), rej.frame(), at[ok] if not ok.all() else at


def _text_or_codes(s: pd.Series, lower: bool = False) -> pd.Series:
    """`clean_text` (then `lower_text`) of a text column. A categorical (a FEW_DISTINCT column read
    as codes) is cleaned once per distinct value and stays a categorical: the one `Store.compact`
    makes of the cleaned text (categories in text order; rows that end up unused are dropped there)."""
    if not isinstance(s.dtype, pd.CategoricalDtype):
        t = clean_text(s)
        return lower_text(t) if lower else t
    distinct = clean_text(pd.Series(s.cat.categories).astype("string"))
    if lower:
        distinct = lower_text(distinct)
    rank, names = sorted_codes(distinct)  # each raw value's code among the cleaned ones
    codes = np.append(rank, -1)[np.asarray(s.cat.codes, dtype=np.int64)]  # a missing cell (-1) stays -1
    coded = pd.Categorical.from_codes(codes, categories=pd.Index(names, dtype=distinct.dtype))
    return pd.Series(coded, index=s.index, name=s.name)


def tickets_table(
    raw: RawTable, known: pd.Index, email_map: Callable[[], pd.Series | None], as_of: pd.Timestamp
) -> tuple[pd.DataFrame, pd.DataFrame]:
    f = raw.frame
    rej = _Rejects(raw)
    cid = _fill_ids(
        clean_text(raw_column(f, "customer_id")), lambda: raw_column(f, "email"), email_map, keep_email=False
    )
    opened, bad_o = parse_datetime(raw_column(f, "opened_at"))
    closed, _ = parse_datetime(raw_column(f, "closed_at"))
    rej.add(cid.isna(), "ticket without a customer id or email")
    rej.add(~_known(cid, known), "ticket of an unknown customer", cid)
    rej.add(blank(raw_column(f, "opened_at")) | bad_o, "missing or unparseable opened_at", raw_column(f, "opened_at"))
    rej.add(_b(opened > as_of), "ticket opened after as_of")
    status = lower_text(clean_text(raw_column(f, "status"))).fillna("")
    severity = lower_text(clean_text(raw_column(f, "severity"))).fillna("normal")
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


def _known(cid: pd.Series, known: pd.Index) -> np.ndarray:
    """`isin(cid, known)` for the validated customers' ids (unique): their rows looked up, where
    ids of a common shape are compared as integers (juno.idkeys), not by a hash of every id
    (100k subscriptions against a million customers: 0.042 -> 0.014 s)."""
    return positions(cid, known) >= 0


def subscriptions_table(raw: RawTable, known: pd.Index) -> tuple[pd.DataFrame, pd.DataFrame]:
    f = raw.frame
    rej = _Rejects(raw)
    cid = clean_text(raw_column(f, "customer_id"))
    status = lower_text(clean_text(raw_column(f, "status")))
    status = status.replace({"canceled": "cancelled", "expired": "cancelled", "on_hold": "paused"})
    rej.add(cid.isna(), "subscription without a customer id")
    rej.add(~_known(cid, known), "subscription of an unknown customer", cid)
    rej.add(~status.isin(["active", "paused", "cancelled"]), "status is not active, paused or cancelled", status)
    out = pd.DataFrame(
        {
            "customer_id": cid,
            "status": status,
            "sku": clean_text(raw_column(f, "sku")),
            "category": lower_text(clean_text(raw_column(f, "category"))),
        },
        copy=False,  # the columns as built: no copy, no consolidation into 2-D blocks
    )
    return _keep(out, rej.ok), rej.frame()
