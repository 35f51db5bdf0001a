"""Validation: raw tables from any source become typed frames; bad rows become rejects.

Fail loud at the edge: after this step the core trusts its data.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from juno import background
from juno.config import Config
from juno.errors import InputError
from juno.grouping import sorted_codes
from juno.parse import is_increasing, positions, string_series
from juno.sources.base import (
    FILE_COL,
    LINE_COL,
    REJECTED_COLUMNS,
    REQUIRED,
    TABLES,
    InputFile,
    RawTable,
    SourceResult,
    TableReader,
)
from juno.tables import (
    PreparedLines,
    customer_rows,
    customers_table,
    email_lookup,
    lines_table,
    orders_table,
    prepare_lines,
    subscriptions_table,
    tickets_table,
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
    _counted_lines: np.ndarray | None = field(default=None, repr=False)

    def line_order_rows(self) -> np.ndarray:
        """Per row of `lines`, the row of its order in `orders` (-1 when absent)."""
        assert self.lines is not None
        if self._line_order_rows is None:
            self._line_order_rows = positions(self.lines["order_id"], self.orders["order_id"])
        return self._line_order_rows

    def counted_lines(self) -> np.ndarray:
        """Per row of `lines`, whether its order is a counted one (False when absent): the lines
        the category signals and the purchase history both read."""
        if self._counted_lines is None:
            pos = self.line_order_rows()
            self._counted_lines = (pos >= 0) & self.orders["counts"].to_numpy(bool)[np.maximum(pos, 0)]
        return self._counted_lines

    def compact(self) -> None:
        """Shrink the tables for a run (about 450 MB at 1M customers and 7.6M lines).

        What the core never reads again once validation is done goes: the lines' order ids
        (`line_order_rows()` keeps each line's order row, so a line's order id is
        `orders["order_id"].take(line_order_rows())`), the orders' customer ids (an order's
        customer id is `customers["customer_id"].take(order_customer_rows())`), and the orders'
        audit columns (source file and line, raw discount code, currency: rejected rows and the
        currency are already settled). SKU and category become categoricals: a few thousand
        distinct texts held once, a small code per line. Values are unchanged. `juno.run` does
        this; `validate` alone (check, backtest) does not.
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
    `astype("category")` has them), from the core's own sorted codes (one Arrow dictionary encode).
    A categorical already (read as codes) keeps only the categories some row holds."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        dtype = s.cat.categories.dtype
    elif isinstance(s.dtype, pd.StringDtype) and s.dtype.storage == "pyarrow":
        dtype = s.dtype
    else:
        return s.astype("category")
    codes, names = sorted_codes(s)
    cat = pd.Categorical.from_codes(codes, categories=pd.Index(names, dtype=dtype))
    return pd.Series(cat, index=s.index, name=s.name)


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


def _file_of(raw: RawTable, files: list[InputFile]) -> str:
    """The file(s) a table's rows came from (one export can feed several tables)."""
    if FILE_COL in raw.frame.columns and len(raw.frame):
        col = raw.frame[FILE_COL]
        if isinstance(col.dtype, pd.CategoricalDtype) and len(col.cat.categories) <= 5:
            # The usual case, one file per table: its categories are all the names there can
            # be, so the names present are found from the codes (a dropna and unique of a
            # million-row column took ~10 ms, for each table).
            codes = col.cat.codes.to_numpy()
            found = [str(c) for i, c in enumerate(col.cat.categories) if bool((codes == i).any())]
        else:
            found = [str(n) for n in col.dropna().unique()[:5]]
        names = sorted(found)
        if names:
            return ", ".join(names)
    names = [fi.path for fi in files if fi.table == raw.table]
    return ", ".join(names) if names else raw.table


def validate(
    source: SourceResult,
    config: Config,
    *,
    consume: bool = False,
    customers_final: Callable[[pd.DataFrame], None] | None = None,
) -> Store:
    """Type every table, reject bad rows with reasons, resolve as_of and the currency.

    `consume`: take each raw table out of `source` as it is typed, so that only one table's raw
    and typed forms are alive together (for a caller that has no further use for the raw tables).
    `customers_final`: called with the customers table as the Store will hold it (every customer,
    in id order) once only the order lines are left to type: usually while they are still being
    read, with a core idle.
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

    # A deferred table can be read on a second thread while the one before it is typed (the
    # reader lets go of the GIL for most of it); the others are read when taken.
    ahead: dict[str, Future[tuple[RawTable, InputFile, pd.DataFrame, PreparedLines | None]]] = {}
    prepared: dict[str, PreparedLines] = {}

    def read(
        name: str, reader: TableReader, prepare: bool
    ) -> tuple[RawTable, InputFile, pd.DataFrame, PreparedLines | None]:
        frame, info, aside, text = reader()
        raw = RawTable(name, frame, text)
        # Read ahead, the lines are typed as far as they go without the orders on that thread too.
        ready = prepare_lines(raw, own=True) if prepare and name == "order_lines" else None
        return raw, info, aside, ready

    def read_ahead(name: str) -> None:
        ahead[name] = background.start(read, name, source.deferred.pop(name), True, name="juno-read")

    if "customers" in source.deferred and "orders" in source.deferred:
        read_ahead("orders")  # while the customers are typed

    def take(name: str) -> RawTable | None:
        if name in ahead or name in source.deferred:  # read only now, while no other table's raw cells are held
            if name in ahead:
                raw, info, aside, ready = ahead.pop(name).result()
            else:
                raw, info, aside, ready = read(name, source.deferred.pop(name), False)
            if ready is not None:
                prepared[name] = ready
            files.append(info)
            rows_read[name] = len(raw.frame) + len(aside)
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
        customers, rej = customers_table(cust_raw)
        rejected_parts.append(rej)
        del cust_raw
    first_customers = customers

    def email_to_id() -> pd.Series | None:
        return email_lookup(first_customers) if first_customers is not None else None

    orders_raw = take("orders")
    assert orders_raw is not None
    if "order_lines" in source.deferred:
        # The lines are read (and typed as far as they go without the orders) while the orders
        # are typed: on the main thread alone, that left a core idle. For CSV lines, whose read
        # uses both cores itself, this was no faster in rounds 7 and 8; once the duplicate
        # identities filled the later wait for the lines, it was (bench/README.md, round 9).
        read_ahead("order_lines")
    # What error messages need of the raw orders: the file column alone.
    orders_ref = RawTable(
        "orders",
        orders_raw.frame[[FILE_COL]] if FILE_COL in orders_raw.frame.columns else orders_raw.frame.iloc[:, :0],
    )
    orders, rej, rejected_customers = orders_table(orders_raw, config, email_to_id)
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
    at, new_ids = customer_rows(orders["customer_id"], rejected_customers, customers)

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
        return email_lookup(sorted_customers)

    # ---- support tickets and subscriptions (small), while the lines are read on a second thread ----
    tickets = None
    tickets_raw = take("support_tickets")
    if tickets_raw is not None:
        tickets, rej = tickets_table(tickets_raw, known, email_map, as_of)
        rejected_parts.append(rej)
    del tickets_raw

    subs = None
    subs_raw = take("subscriptions")
    if subs_raw is not None:
        subs, rej = subscriptions_table(subs_raw, known)
        rejected_parts.append(rej)
    del subs_raw

    if customers_final is not None:
        customers_final(customers)

    # ---- lines ----
    lines = None
    line_order_rows = None
    lines_raw = take("order_lines")
    if lines_raw is not None:
        lines, rej, line_order_rows = lines_table(
            prepared.pop("order_lines", lines_raw), orders, own=consume or "order_lines" in deferred
        )
        rejected_parts.append(rej)
    del lines_raw

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


