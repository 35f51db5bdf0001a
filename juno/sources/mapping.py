"""Column mapping: any other export (WooCommerce, a warehouse extract, an invoice-line file) read
through `[mapping]` in juno.toml.

Each Juno column comes from a source column or a small expression over source columns
(`Quantity * UnitPrice`, `sum(Quantity * UnitPrice)` when lines are folded into orders), and
`[mapping.rules]` marks rows as cancellations or refunds. Expressions are parsed with `ast` against
a whitelist and evaluated vectorised on pandas columns; nothing is ever passed to `eval`.
"""

from __future__ import annotations

import ast
import difflib
import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from juno.errors import ConfigError, InputError
from juno.parse import parse_number
from juno.sources.base import (
    FILE_COL,
    LINE_COL,
    TABLES,
    InputFile,
    RawTable,
    SourceResult,
)
from juno.sources.expr import (
    Expression,
    Value,
    _as_text,
    _Eval,
    _series,
    format_numbers,
    parse_expression,
)

# The contract's columns per table (PRODUCT.md section 3), plus the extras adapters may carry.
CONTRACT: dict[str, tuple[str, ...]] = {
    "orders": (
        "order_id", "customer_id", "email", "ordered_at", "revenue", "discount", "refunded",
        "cancelled", "cancelled_at", "cost", "currency", "discount_code", "is_subscription_order",
        "channel", "financial_status", "tags",
    ),
    "order_lines": (
        "order_id", "sku", "product_name", "category", "quantity", "price", "line_discount", "cost",
    ),
    "customers": (
        "customer_id", "email", "phone", "first_name", "last_name", "created_at", "email_consent",
        "sms_consent", "email_suppressed", "tags", "country", "total_spent", "total_orders",
    ),
    "support_tickets": (
        "customer_id", "email", "opened_at", "closed_at", "status", "topic", "severity", "csat",
    ),
    "subscriptions": (
        "customer_id", "status", "sku", "category", "interval_days", "next_charge_at",
        "started_at", "cancelled_at",
    ),
}
# Each inner tuple: at least one of these must be mapped.
REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    "orders": (("order_id",), ("ordered_at",), ("revenue",), ("customer_id", "email")),
    "order_lines": (("order_id",),),
    "customers": (("customer_id",),),
    "support_tickets": (("opened_at",), ("customer_id", "email")),
    "subscriptions": (("customer_id",), ("status",)),
}
DATE_COLUMNS = frozenset(
    {"ordered_at", "cancelled_at", "created_at", "opened_at", "closed_at", "next_charge_at",
     "started_at"}
)
DEFAULT_NA = ["", "NA", "N/A", "n/a", "#N/A", "NULL", "null", "None", "NaN", "nan"]


# --------------------------------------------------------------------------- the TOML shape


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TableSpec(_Spec):
    """One Juno table read from one or more source files."""

    file: str | list[str] = Field(
        description="path(s) relative to the config file; glob patterns allowed"
    )
    group_by: str | list[str] | None = Field(
        default=None, description="fold rows sharing these source columns into one row"
    )
    columns: dict[str, str] = Field(
        description="Juno column = source column or expression"
    )


class RulesSpec(_Spec):
    """Row conditions for orders: which rows are cancellations and which are refunds."""

    cancelled: str | None = Field(
        default=None, description="an order with any matching row is cancelled"
    )
    refund: str | None = Field(
        default=None,
        description="matching rows of orders not cancelled are returns: their amount counts as refunded",
    )


class MappingSpec(_Spec):
    """`[mapping]` in juno.toml."""

    date_format: str | None = Field(
        default=None, description="strftime format of the date columns (default: ISO 8601)"
    )
    na_values: list[str] = Field(
        default=DEFAULT_NA, description="cells read as missing"
    )
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    encoding: str = "utf-8"
    rules: RulesSpec = RulesSpec()
    orders: TableSpec
    order_lines: TableSpec | None = None
    customers: TableSpec | None = None
    support_tickets: TableSpec | None = None
    subscriptions: TableSpec | None = None

    def tables(self) -> dict[str, TableSpec]:
        return {t: s for t in TABLES if (s := getattr(self, t)) is not None}


# --------------------------------------------------------------------------- validation


def _pydantic_error(exc: ValidationError, where: str) -> ConfigError:
    first = exc.errors()[0]
    loc = ["mapping", *(str(p) for p in first["loc"])]
    key = ".".join(loc)
    if first["type"] == "extra_forbidden":
        parent: type[BaseModel] = MappingSpec
        for part in loc[1:-1]:
            ann = parent.model_fields[part].annotation if part in parent.model_fields else None
            parent = next(
                (a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type)
                 and issubclass(a, BaseModel)),
                parent,
            )
        valid = list(parent.model_fields)
        close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.5)
        return ConfigError(
            f"unknown config key `{key}`",
            file=where,
            hint=f"did you mean `{'.'.join(loc[:-1])}.{close[0]}`?" if close
            else "valid keys here: " + ", ".join(valid),
        )
    if first["type"] == "missing":
        return ConfigError(f"missing config key `{key}`", file=where,
                           hint="see examples/online_retail/juno.toml")
    return ConfigError(
        f"invalid value for config key `{key}`: {first['msg']}",
        file=where,
        examples=[f"{key} = {first.get('input')!r}"],
    )


@dataclass(frozen=True)
class _Parsed:
    spec: MappingSpec
    exprs: dict[str, dict[str, Expression]]  # table -> contract column -> expression
    rules: dict[str, Expression]


def parse_mapping(data: dict[str, Any], where: str = "[mapping]") -> MappingSpec:
    """Validate the `[mapping]` table; ConfigError names the key and suggests the valid one."""
    return _parse(data, where).spec


def _parse(data: dict[str, Any], where: str) -> _Parsed:
    try:
        spec = MappingSpec.model_validate(data)
    except ValidationError as exc:
        raise _pydantic_error(exc, where) from None
    exprs: dict[str, dict[str, Expression]] = {}
    for table, ts in spec.tables().items():
        valid = CONTRACT[table]
        for col in ts.columns:
            if col not in valid:
                close = difflib.get_close_matches(col, valid, n=1, cutoff=0.5)
                raise ConfigError(
                    f"unknown Juno column `mapping.{table}.columns.{col}`",
                    file=where,
                    expected=f"{table} columns: " + ", ".join(valid),
                    hint=f"did you mean `{close[0]}`?" if close else None,
                )
        for need in REQUIRED[table]:
            if not any(n in ts.columns for n in need):
                raise ConfigError(
                    f"`mapping.{table}.columns` lacks {' or '.join(need)}",
                    file=where,
                    expected=f"required for {table}: "
                    + ", ".join(" or ".join(n) for n in REQUIRED[table]),
                )
        parsed = {
            c: parse_expression(t, f"mapping.{table}.columns.{c}") for c, t in ts.columns.items()
        }
        for e in parsed.values():
            if e.has_aggregate and ts.group_by is None:
                raise ConfigError(
                    f"`{e.key}` aggregates ({e.text!r}) but `mapping.{table}` has no group_by",
                    file=where,
                    hint=f"add group_by = \"<column>\" under [mapping.{table}] to fold rows",
                )
        exprs[table] = parsed
    rules = {
        k: parse_expression(v, f"mapping.rules.{k}")
        for k, v in (("cancelled", spec.rules.cancelled), ("refund", spec.rules.refund))
        if v is not None
    }
    for k, e in rules.items():
        if e.has_aggregate:
            raise ConfigError(f"`{e.key}` is a row condition; aggregates are not allowed there")
        if k in spec.orders.columns and k == "cancelled":
            raise ConfigError(
                "`cancelled` is both mapped in [mapping.orders.columns] and a rule", file=where,
                hint="keep one of the two",
            )
    if "refund" in rules:
        if "refunded" in spec.orders.columns:
            raise ConfigError(
                "`refunded` is both mapped in [mapping.orders.columns] and implied by "
                "`mapping.rules.refund`", file=where, hint="keep one of the two",
            )
        rev = exprs["orders"]["revenue"].tree
        if spec.orders.group_by is not None and not (
            isinstance(rev, ast.Call) and isinstance(rev.func, ast.Name) and rev.func.id == "sum"
        ):
            raise ConfigError(
                "`mapping.rules.refund` needs the folded revenue to be a sum of a row amount",
                file=where,
                expected='revenue = "sum(<row amount>)", e.g. "sum(Quantity * UnitPrice)"',
            )
    return _Parsed(spec, exprs, rules)


# --------------------------------------------------------------------------- reading files


def read_csv_text(
    path: Path,
    *,
    null_values: list[str] | None = None,
    delimiter: str = ",",
    encoding: str = "utf-8",
) -> pd.DataFrame:
    """Every column as text (pyarrow), names as in the file, plus `_file` and `_line`.

    `_line` is the physical line where the record starts (the header is line 1), counting the
    newlines that quoted cells may hold.
    """
    read = pacsv.ReadOptions(encoding=encoding)
    parse = pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True)
    try:
        head = pacsv.open_csv(path, read_options=pacsv.ReadOptions(
            encoding=encoding, block_size=1 << 16), parse_options=parse)
        names = head.schema.names
        head.close()
        table = pacsv.read_csv(
            path,
            read_options=read,
            parse_options=parse,
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=True,
                null_values=null_values if null_values is not None else [""],
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        msg = str(exc).splitlines()[0]
        raise InputError(
            f"the file cannot be read as CSV: {msg}",
            file=str(path),
            expected=f"a {encoding} CSV file with one header line, delimiter {delimiter!r}",
        ) from None
    frame = _to_text_frame(table)
    frame[FILE_COL] = path.name
    frame[LINE_COL] = _physical_lines(table)
    return frame


def _to_text_frame(table: pa.Table) -> pd.DataFrame:
    frame = table.to_pandas(types_mapper=lambda t: pd.StringDtype())
    if not isinstance(frame, pd.DataFrame):  # pragma: no cover - to_pandas of a Table
        raise TypeError("expected a DataFrame")
    return frame


def _physical_lines(table: pa.Table) -> np.ndarray:
    n = table.num_rows
    extra = np.zeros(n, dtype=np.int64)
    for col in table.columns:
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            extra += pc.count_substring(col, "\n").fill_null(0).to_numpy().astype(np.int64)
    before = np.concatenate([[0], np.cumsum(extra)[:-1]]) if n else extra
    return np.asarray(2 + np.arange(n, dtype=np.int64) + before)


def _read_parquet_text(path: Path) -> pd.DataFrame:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"the file is not a readable Parquet file: {exc}", file=str(path)) from None
    table = pa.table({n: pc.cast(table[n], pa.string()) for n in table.column_names})
    frame = _to_text_frame(table)
    frame[FILE_COL] = path.name
    frame[LINE_COL] = np.arange(2, len(frame) + 2, dtype=np.int64)
    return frame


def _resolve(item: str, config_dir: Path, store: Path) -> list[Path]:
    p = Path(item).expanduser()
    bases = [p] if p.is_absolute() else [config_dir / p] + ([store / p] if store.is_dir() else [])
    for cand in bases:
        if any(ch in item for ch in "*?["):
            hits = sorted(Path(h) for h in glob.glob(str(cand)) if Path(h).is_file())
            if hits:
                return hits
        elif cand.is_file():
            return [cand]
    raise InputError(
        "a file named in [mapping] does not exist",
        file=item,
        expected=f"a path relative to the config file's folder ({config_dir})",
        examples=[str(b) for b in bases],
    )


# --------------------------------------------------------------------------- reading a table


@dataclass
class _TableOut:
    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def _group_codes(src: pd.DataFrame, keys: list[str]) -> tuple[np.ndarray, int]:
    """Group codes in first-appearance order; rows with an empty key are groups of their own."""
    if len(keys) == 1:
        raw, _ = pd.factorize(src[keys[0]], sort=False, use_na_sentinel=True)
        codes = np.asarray(raw, dtype=np.int64)
    else:
        ng = src[keys].groupby(keys, sort=False, dropna=False).ngroup()
        codes = np.asarray(ng, dtype=np.int64)
        codes[np.asarray(src[keys].isna().any(axis=1))] = -1
    empty = codes < 0
    if empty.any():
        codes[empty] = codes.max() + 1 + np.arange(int(empty.sum()))
    final, uniques = pd.factorize(codes, sort=False)
    return np.asarray(final, dtype=np.int64), len(uniques)


def _dates(col: str, values: pd.Series, fmt: str | None, notes: list[str], label: str) -> pd.Series:
    if fmt is None:
        return values
    aware = "%z" in fmt or "%Z" in fmt
    parsed = pd.to_datetime(values, format=fmt, errors="coerce", utc=aware)
    ok = parsed.notna()
    text = parsed.dt.strftime("%Y-%m-%d %H:%M:%S" + ("+00:00" if aware else ""))
    bad = int((values.notna() & ~ok).sum())
    if bad:
        ex = values[values.notna() & ~ok].head(2).tolist()
        notes.append(
            f"{label}: {bad:,} {col} values do not match date_format {fmt!r} "
            f"(e.g. {', '.join(map(repr, ex))}); kept as they are"
        )
    return text.where(ok, values).astype("string")


def _read_table(
    table: str,
    ts: TableSpec,
    exprs: dict[str, Expression],
    rules: dict[str, Expression],
    src: pd.DataFrame,
    label: str,
    spec: MappingSpec,
) -> _TableOut:
    notes: list[str] = []
    rules = rules if table == "orders" else {}
    probe = _Eval(src, label)
    for e in [*exprs.values(), *rules.values()]:
        probe.check(e)
    keys_raw = [ts.group_by] if isinstance(ts.group_by, str) else list(ts.group_by or [])
    keys = [probe.column(k) for k in keys_raw]
    used = {probe.column(n) for e in [*exprs.values(), *rules.values()] for n in e.names}
    src = src[[c for c in src.columns if c in used or c in keys or c in (FILE_COL, LINE_COL)]]

    if keys and table == "customers":
        blank = src[keys].isna().any(axis=1)
        if blank.any():
            notes.append(
                f"{label}: {int(blank.sum()):,} rows without {', '.join(keys)} name no customer; "
                "left out of the customers table"
            )
            src = src[~blank].reset_index(drop=True)
    if keys:
        codes, ngroups = _group_codes(src, keys)
        ev = _Eval(src, label, codes, ngroups)
        out_index: pd.Index = pd.RangeIndex(ngroups)
        first_rows = np.zeros(ngroups, dtype=np.int64)
        first_rows[codes[::-1]] = np.arange(len(src))[::-1]  # the last write wins: the first row
    else:
        codes, ev, out_index = None, probe, src.index
        first_rows = np.arange(len(src))

    # Rules are row conditions; folded, an order is cancelled when any of its rows is.
    cancel_row = ev._bool(ev.rows(rules["cancelled"])) if "cancelled" in rules else None
    cancel: pd.Series | None = None
    if cancel_row is not None:
        cancel = ev._agg("any", [cancel_row]) if codes is not None else cancel_row
        notes.append(
            f"{label}: {int(cancel_row.sum()):,} rows match the cancellation rule "
            f"({rules['cancelled'].text}); {int(cancel.sum()):,} orders marked cancelled "
            "(excluded from net revenue)"
        )
    refund_row = ev._bool(ev.rows(rules["refund"])) if "refund" in rules else None
    if refund_row is not None and cancel is not None:
        # A cancelled order is out as a whole: none of its rows is a refund.
        refund_row = refund_row & ~np.asarray(cancel)[codes if codes is not None else slice(None)]

    cols: dict[str, Value] = {}
    for c, e in exprs.items():
        if c == "revenue" and refund_row is not None:
            continue
        cols[c] = ev.groups(e) if codes is not None else ev.rows(e)
        picked = _picked_column(e)
        if codes is not None and c in ("customer_id", "email", "ordered_at") and picked \
                and ev.column(picked) not in keys:
            pairs = pd.DataFrame({"g": codes, "v": src[ev.column(picked)]})
            multi = int((pairs.dropna().drop_duplicates()["g"].value_counts() > 1).sum())
            if multi:
                notes.append(
                    f"{label}: {multi:,} {table} have differing {picked} across their rows; "
                    f"the {'last' if e.text.startswith('last') else 'first'} row's value is used"
                )

    if refund_row is not None:
        rev_tree = exprs["revenue"].tree
        if codes is not None:
            assert isinstance(rev_tree, ast.Call)
            amount = _series(ev._num(ev.rows_of(rev_tree.args[0])), src.index)
            base = ev._bool(ev.rows_of(rev_tree.args[1])) if len(rev_tree.args) > 1 else True
            cols["revenue"] = ev.sum_where(amount, base & ~refund_row)
            refunded = ev.sum_where(amount, base & refund_row).abs().fillna(0.0)
        else:
            amount = _series(ev._num(ev.rows(exprs["revenue"])), src.index)
            cols["revenue"] = amount.where(~refund_row, amount.abs())
            refunded = amount.abs().where(refund_row, 0.0)
        cols["refunded"] = refunded
        notes.append(
            f"{label}: {int(refund_row.sum()):,} rows of orders not cancelled match the refund "
            f"rule ({rules['refund'].text}); their amount, {refunded.sum():,.2f} in all, counts "
            "as refunded"
        )

    if cancel is not None and cancel_row is not None:
        rev = cols.get("revenue")
        if isinstance(rev, pd.Series):
            num = _series(ev._num(rev), out_index)
            # A credit note's negative total is reported as the positive amount cancelled.
            flip = cancel & (num < 0).fillna(False)
            cols["revenue"] = _as_text(rev, out_index).mask(flip, format_numbers(num.abs()))
        cols["cancelled"] = cancel

    frame = pd.DataFrame(index=out_index)
    for c, v in cols.items():
        text = _as_text(v, out_index)
        if c in DATE_COLUMNS:
            text = _dates(c, text, spec.date_format, notes, label)
        frame[c] = text
    frame[FILE_COL] = pd.Series(src[FILE_COL].to_numpy()[first_rows], index=out_index,
                                dtype="string")
    frame[LINE_COL] = np.asarray(src[LINE_COL].to_numpy()[first_rows], dtype=np.int64)
    if keys:
        notes.insert(
            0, f"{label}: {len(src):,} rows folded into {len(out_index):,} {table} by "
            f"{', '.join(keys)}"
        )
    for col, (nbad, ex) in sorted(ev.bad_numbers.items()):
        notes.append(
            f"{label}: {nbad:,} {col} values are not numbers (e.g. {', '.join(map(repr, ex))}); "
            "amounts computed from them leave those values out"
        )
    if table == "orders":
        notes.extend(_unattributed_note(frame, label))
    return _TableOut(frame, notes)


def _picked_column(e: Expression) -> str | None:
    """The column a folded expression picks one value of: `Col`, `first(Col)`, `last(Col)`."""
    t = e.tree
    if isinstance(t, ast.Call) and isinstance(t.func, ast.Name) and t.func.id in ("first", "last") \
            and len(t.args) == 1:
        t = t.args[0]
    return t.id if isinstance(t, ast.Name) else None


def _unattributed_note(frame: pd.DataFrame, label: str) -> list[str]:
    who = pd.Series(False, index=frame.index)
    for c in ("customer_id", "email"):
        if c in frame.columns:
            who |= frame[c].fillna("").str.strip() != ""
    n = int((~who).sum())
    if not n:
        return []
    rev, _ = parse_number(frame.loc[~who, "revenue"]) if "revenue" in frame else (pd.Series(), 0)
    return [
        f"{label}: {n:,} orders have no customer id or email: kept as unattributed "
        f"(revenue {rev.sum():,.2f}), not counted for any customer"
    ]


def read_mapped(store: Path, mapping: dict[str, Any], config_dir: Path) -> SourceResult:
    """Read the tables `[mapping]` describes; ConfigError for a mapping the files do not fit."""
    where = f"[mapping] in the config in {config_dir}"
    parsed = _parse(mapping, where)
    spec = parsed.spec
    cache: dict[Path, pd.DataFrame] = {}
    first_table: dict[Path, str] = {}
    tables: dict[str, RawTable] = {}
    notes: list[str] = []
    for table, ts in spec.tables().items():
        paths = [p for item in ([ts.file] if isinstance(ts.file, str) else ts.file)
                 for p in _resolve(item, config_dir, store)]
        parts = []
        for p in paths:
            key = p.resolve()
            if key not in cache:
                if p.suffix.lower() in (".parquet", ".pq"):
                    cache[key] = _read_parquet_text(p)
                else:
                    cache[key] = read_csv_text(
                        p, null_values=spec.na_values, delimiter=spec.delimiter,
                        encoding=spec.encoding,
                    )
            first_table.setdefault(key, table)
            parts.append(cache[key])
        src = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        label = ", ".join(dict.fromkeys(p.name for p in paths))
        out = _read_table(table, ts, parsed.exprs[table], parsed.rules, src, label, spec)
        tables[table] = RawTable(table, out.frame)
        notes.extend(out.notes)
    from juno.sources.csvfiles import sha256_file

    files = [
        InputFile(
            path=str(p),
            table=first_table[p],
            sha256=sha256_file(p),
            rows=len(cache[p]),
            format="parquet" if p.suffix.lower() in (".parquet", ".pq") else "csv",
        )
        for p in cache
    ]
    return SourceResult(kind="mapping", tables=tables, files=files, notes=notes)
