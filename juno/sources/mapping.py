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
import io
import keyword
import re
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

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
    normalise_name,
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

ROW_FUNCS = frozenset(
    {"abs", "round", "lower", "upper", "strip", "coalesce", "ifelse", "startswith", "endswith",
     "contains", "missing", "present"}
)
AGG_FUNCS = frozenset({"sum", "count", "first", "last", "min", "max", "any", "all"})
_INFIX = frozenset({"startswith", "endswith", "contains"})
_ARITH = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_CMP = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)


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


# --------------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Expression:
    """A parsed mapping expression: the AST and the source columns it names."""

    text: str
    key: str
    tree: ast.expr
    names: tuple[str, ...]
    has_aggregate: bool


def _rewrite_infix(src: str) -> str:
    """`InvoiceNo startswith 'C'` -> `startswith(InvoiceNo, 'C')` (single-token operands)."""
    toks = list(tokenize.generate_tokens(io.StringIO(src).readline))
    operand = {tokenize.NAME, tokenize.STRING, tokenize.NUMBER}
    out: list[tuple[int, str]] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        if (
            t.type == tokenize.NAME
            and t.string in _INFIX
            and out
            and out[-1][0] in operand
            and not keyword.iskeyword(out[-1][1])
            and nxt is not None
            and nxt.type in operand
        ):
            prev = out.pop()
            out += [(tokenize.NAME, t.string), (tokenize.OP, "("), prev, (tokenize.OP, ","),
                    (nxt.type, nxt.string), (tokenize.OP, ")")]
            i += 2
            continue
        out.append((t.type, t.string))
        i += 1
    return str(tokenize.untokenize(out)).strip()


def parse_expression(text: str, key: str) -> Expression:
    """Parse `text` (the value of mapping key `key`); ConfigError when it is not allowed."""
    quoted: dict[str, str] = {}

    def _quote(m: re.Match[str]) -> str:
        name = f"__col{len(quoted)}__"
        quoted[name] = m.group(1)
        return name

    src = re.sub(r"`([^`]+)`", _quote, text.strip())
    if not src:
        raise ConfigError(f"`{key}` is empty", expected="a source column or an expression")
    try:
        tree = ast.parse(_rewrite_infix(src), mode="eval").body
    except (SyntaxError, tokenize.TokenError, ValueError) as exc:
        raise ConfigError(
            f"`{key}` is not a valid mapping expression: {text!r}",
            expected="a column name, `a * b`, `sum(a * b)`, \"Col startswith 'C'\"; "
            "put names with spaces in backticks: `Unit Price`",
            hint=str(exc).splitlines()[0],
        ) from None
    names: list[str] = []
    aggregate = False

    def walk(node: ast.AST, in_agg: bool) -> None:
        nonlocal aggregate
        if isinstance(node, ast.Name):
            node.id = quoted.get(node.id, node.id)
            names.append(node.id)
        elif isinstance(node, ast.Constant):
            if not isinstance(node.value, int | float | str | bool):
                raise _bad(node)
        elif isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
            walk(node.left, in_agg)
            walk(node.right, in_agg)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd | ast.Not):
            walk(node.operand, in_agg)
        elif isinstance(node, ast.BoolOp):
            for v in node.values:
                walk(v, in_agg)
        elif isinstance(node, ast.Compare) and all(isinstance(o, _CMP) for o in node.ops):
            walk(node.left, in_agg)
            for c in node.comparators:
                walk(c, in_agg)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            fn = node.func.id
            if fn in AGG_FUNCS:
                if in_agg:
                    raise ConfigError(f"`{key}`: `{fn}(...)` inside another aggregate: {text!r}")
                aggregate = True
                _arity(fn, node, key, 0 if fn == "count" else 1, 1 if fn == "count" else 2)
            elif fn in ROW_FUNCS:
                lo, hi = {"coalesce": (1, 99), "ifelse": (3, 3), "round": (1, 2)}.get(
                    fn, (2, 2) if fn in _INFIX else (1, 1)
                )
                _arity(fn, node, key, lo, hi)
                if fn in _INFIX and not (
                    isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
                ):
                    raise ConfigError(f"`{key}`: {fn} needs a quoted text: {text!r}")
            else:
                raise ConfigError(
                    f"`{key}`: unknown function `{fn}` in {text!r}",
                    expected="one of " + ", ".join(sorted(ROW_FUNCS | AGG_FUNCS)),
                )
            for a in node.args:
                walk(a, in_agg or fn in AGG_FUNCS)
        else:
            raise _bad(node)

    def _bad(node: ast.AST) -> ConfigError:
        return ConfigError(
            f"`{key}`: `{ast.unparse(node)}` is not allowed in a mapping expression: {text!r}",
            expected="column names, numbers, 'text', + - * /, comparisons, and/or/not, "
            "and the functions " + ", ".join(sorted(ROW_FUNCS | AGG_FUNCS)),
        )

    walk(tree, False)
    return Expression(text, key, tree, tuple(dict.fromkeys(names)), aggregate)


def _arity(fn: str, node: ast.Call, key: str, lo: int, hi: int) -> None:
    if not lo <= len(node.args) <= hi:
        want = str(lo) if lo == hi else f"{lo} to {hi}"
        raise ConfigError(f"`{key}`: {fn}() takes {want} argument(s), got {len(node.args)}")


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


# --------------------------------------------------------------------------- evaluation

Value = pd.Series | str | float | int | bool


class _Eval:
    """Evaluates parsed expressions on one source frame, row-wise or per group."""

    def __init__(
        self,
        frame: pd.DataFrame,
        label: str,
        codes: np.ndarray | None = None,
        ngroups: int = 0,
    ) -> None:
        self.frame = frame
        self.label = label
        self.codes = codes
        self.ngroups = ngroups
        self.bad_numbers: dict[str, tuple[int, list[str]]] = {}
        self._numbers: dict[str, pd.Series] = {}  # source column -> its values as numbers
        self._raw: dict[int, tuple[str, pd.Series]] = {}  # id of a column as read -> its name
        self._lookup: dict[str, str] = {}
        cols = [c for c in frame.columns if c not in (FILE_COL, LINE_COL)]
        for c in cols:
            self._lookup.setdefault(c, c)
        for c in cols:
            self._lookup.setdefault(normalise_name(c), c)
        for c in cols:
            self._lookup.setdefault(_squash(c), c)

    def check(self, e: Expression) -> None:
        for n in e.names:
            self.column(n, e)

    def column(self, name: str, e: Expression | None = None) -> str:
        found = (
            self._lookup.get(name)
            or self._lookup.get(normalise_name(name))
            or self._lookup.get(_squash(name))
        )
        if found is not None:
            return found
        cols = [c for c in self.frame.columns if c not in (FILE_COL, LINE_COL)]
        close = difflib.get_close_matches(name, cols, n=1, cutoff=0.6)
        raise ConfigError(
            f"`{e.key if e else name}` names column `{name}`, which {self.label} does not have",
            file=self.label,
            column=name,
            expected="one of the file's columns: " + ", ".join(cols),
            hint=(f"did you mean `{close[0]}`? " if close else "")
            + "names match ignoring case, spaces and underscores; put odd names in backticks "
            "(`Unit Price (GBP)`) and constant text in quotes (\"'GBP'\")",
        )

    # ---- entry points
    def rows(self, e: Expression) -> Value:
        return self._row(e.tree)

    def groups(self, e: Expression) -> Value:
        return self._group(e.tree)

    def rows_of(self, node: ast.expr) -> Value:
        return self._row(node)

    # ---- row level
    def _row(self, node: ast.expr) -> Value:
        if isinstance(node, ast.Constant):
            return cast(Value, node.value)
        if isinstance(node, ast.Name):
            name = self.column(node.id)
            col = self.frame[name]
            self._raw[id(col)] = (name, col)
            return col
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            fn = node.func.id
            if fn in AGG_FUNCS:  # only reachable through _group
                raise ConfigError(f"`{fn}` cannot be used here")
            return self._func(fn, [self._row(a) for a in node.args], node)
        return self._combine(node, self._row)

    def _combine(self, node: ast.expr, sub: Any) -> Value:
        if isinstance(node, ast.BinOp):
            a, b = self._num(sub(node.left)), self._num(sub(node.right))
            if isinstance(node.op, ast.Add):
                return a + b
            if isinstance(node.op, ast.Sub):
                return a - b
            if isinstance(node.op, ast.Mult):
                return a * b
            if isinstance(b, pd.Series):
                b = b.mask(b == 0)
            elif b == 0:
                b = float("nan")
            return a / b
        if isinstance(node, ast.UnaryOp):
            v = sub(node.operand)
            if isinstance(node.op, ast.Not):
                return ~self._bool(v) if isinstance(v, pd.Series) else not v
            n = self._num(v)
            return -n if isinstance(node.op, ast.USub) else n
        if isinstance(node, ast.BoolOp):
            vals = [self._bool(sub(v)) for v in node.values]
            out = vals[0]
            for v in vals[1:]:
                out = (out & v) if isinstance(node.op, ast.And) else (out | v)
            return cast(Value, out)
        if isinstance(node, ast.Compare):
            left = sub(node.left)
            res: Value = True
            for op, comp in zip(node.ops, node.comparators, strict=True):
                right = sub(comp)
                res = self._bool(res) & self._compare(op, left, right)
                left = right
            return res
        raise ConfigError(f"unsupported expression `{ast.unparse(node)}`")  # pragma: no cover

    def _compare(self, op: ast.cmpop, a: Value, b: Value) -> Value:
        numeric = (
            any(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
            or any(isinstance(v, pd.Series) and v.dtype.kind in "fiu" for v in (a, b))
        ) and not any(isinstance(v, str) for v in (a, b))
        x: Any = self._num(a) if numeric else self._text(a)
        y: Any = self._num(b) if numeric else self._text(b)
        if isinstance(op, ast.Eq):
            r = x == y
        elif isinstance(op, ast.NotEq):
            r = x != y
        elif isinstance(op, ast.Lt):
            r = x < y
        elif isinstance(op, ast.LtE):
            r = x <= y
        elif isinstance(op, ast.Gt):
            r = x > y
        else:
            r = x >= y
        return cast(Value, self._bool(r))

    def _func(self, fn: str, args: list[Value], node: ast.Call) -> Value:
        if fn == "abs":
            return cast(Value, abs(self._num(args[0])))
        if fn == "round":
            digits = int(args[1]) if len(args) > 1 and not isinstance(args[1], pd.Series) else 0
            v = self._num(args[0])
            return v.round(digits) if isinstance(v, pd.Series) else round(float(v), digits)
        if fn in ("lower", "upper", "strip"):
            t = self._text(args[0])
            return cast(Value, getattr(t, fn)() if isinstance(t, str) else getattr(t.str, fn)())
        if fn in ("missing", "present"):
            t = self._text(args[0])
            miss = (t.isna() | (t.str.strip() == "")).fillna(True) if isinstance(t, pd.Series) \
                else t.strip() == ""
            return ~miss if fn == "present" else miss
        if fn in _INFIX:
            t = self._text(args[0])
            pat = str(args[1])
            if isinstance(t, str):
                return t.startswith(pat) if fn == "startswith" else (
                    t.endswith(pat) if fn == "endswith" else pat in t)
            if fn == "contains":
                return cast(Value, self._bool(t.str.contains(pat, regex=False)))
            return cast(Value, self._bool(getattr(t.str, fn)(pat)))
        if fn == "coalesce":
            numeric = all(
                (isinstance(a, pd.Series) and a.dtype.kind in "fiu") or isinstance(a, int | float)
                for a in args
            )
            out = self._num(args[0]) if numeric else self._text(args[0])
            for a in args[1:]:
                nxt = self._num(a) if numeric else self._text(a)
                if isinstance(out, pd.Series):
                    blank = out.isna() if numeric else (out.isna() | (out.str.strip() == ""))
                    out = out.mask(blank.fillna(True), nxt)
            return out
        # ifelse(cond, a, b)
        cond = self._bool(args[0])
        a, b = args[1], args[2]
        numeric = not any(
            isinstance(v, str) or (isinstance(v, pd.Series) and v.dtype.kind not in "fiub")
            for v in (a, b)
        )
        x = self._num(a) if numeric else self._text(a)
        y = self._num(b) if numeric else self._text(b)
        like = next((v for v in (cond, x, y) if isinstance(v, pd.Series)), None)
        if like is None:
            return x if cond else y
        xs = x if isinstance(x, pd.Series) else pd.Series(x, index=like.index)
        return xs.where(cond, y)

    # ---- group level
    def _group(self, node: ast.expr) -> Value:
        if isinstance(node, ast.Constant):
            return cast(Value, node.value)
        if isinstance(node, ast.Name):  # outside an aggregate: the group's first value
            return self._agg("first", [self._row(node)])
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            fn = node.func.id
            if fn in AGG_FUNCS:
                return self._agg(fn, [self._row(a) for a in node.args])
            return self._func(fn, [self._group(a) for a in node.args], node)
        return self._combine(node, self._group)

    def _agg(self, fn: str, args: list[Value]) -> pd.Series:
        assert self.codes is not None
        rows = self.frame.index
        idx = pd.RangeIndex(self.ngroups)
        if fn in ("count", "any", "all"):
            m = self._mask(args[0] if args else True)
            if fn == "all":
                m = ~m
            hits = np.bincount(self.codes, weights=m, minlength=self.ngroups)
            if fn == "count":
                return pd.Series(hits, index=idx, dtype="float64")
            return pd.Series((hits > 0) if fn == "any" else (hits == 0), index=idx)
        v = args[0] if isinstance(args[0], pd.Series) else pd.Series(args[0], index=rows)
        cond = self._mask(args[1]) if len(args) > 1 else None
        if fn == "sum":
            return self.sum_where(_series(self._num(v), rows), cond)
        if fn in ("first", "last"):
            ok = np.asarray(v.notna(), dtype=bool) if cond is None else (cond & np.asarray(
                v.notna(), dtype=bool))
            pos = np.flatnonzero(ok)
            pick = np.full(self.ngroups, -1, dtype=np.int64)
            # Fancy assignment keeps the last write: reversed, that is the first row.
            if fn == "first":
                pick[self.codes[pos[::-1]]] = pos[::-1]
            else:
                pick[self.codes[pos]] = pos
            out = v.iloc[np.maximum(pick, 0)].set_axis(idx)
            return out.mask(pd.Series(pick < 0, index=idx))
        if cond is not None:
            v = v.where(cond)
        g = v.groupby(self.codes)
        return (g.min() if fn == "min" else g.max()).reindex(idx)

    def sum_where(self, num: pd.Series, cond: Any) -> pd.Series:
        """Group sums over rows meeting `cond`; 0 when none does, empty when all are blank."""
        assert self.codes is not None
        c = self._mask(True if cond is None else cond)
        vals = num.to_numpy(dtype="float64", na_value=np.nan)
        present = ~np.isnan(vals)
        total = np.bincount(self.codes, weights=np.where(c & present, vals, 0.0),
                            minlength=self.ngroups)
        has_val = np.bincount(self.codes, weights=c & present, minlength=self.ngroups) > 0
        has_blank = np.bincount(self.codes, weights=c & ~present, minlength=self.ngroups) > 0
        total[~has_val & has_blank] = np.nan
        return pd.Series(total, index=pd.RangeIndex(self.ngroups))

    def _mask(self, v: Any) -> np.ndarray:
        """A row condition as a numpy bool array (missing is False)."""
        b = self._bool(v)
        if isinstance(b, pd.Series):
            return np.asarray(b.to_numpy(dtype=bool, na_value=False), dtype=bool)
        if isinstance(b, np.ndarray):
            return b
        return np.full(len(self.frame), bool(b))

    # ---- coercions
    def _num(self, v: Value) -> pd.Series | float:
        if isinstance(v, bool):
            return float(v)
        if isinstance(v, int | float):
            return float(v)
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                raise ConfigError(f"{v!r} is text where a number is needed") from None
        if v.dtype.kind == "b":
            return v.astype("float64")
        if v.dtype.kind in "fiu":
            return v.astype("float64")
        raw = self._raw.get(id(v))
        if raw is not None and raw[0] in self._numbers:
            return self._numbers[raw[0]]
        try:  # the common case, plain numbers: parsed by arrow at C speed
            values = pd.Series(
                pc.cast(pa.array(v.array, pa.string()), pa.float64()).to_numpy(
                    zero_copy_only=False),
                index=v.index,
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            values, bad = parse_number(v)
            nbad = int(bad.sum())
            if nbad and raw is not None:
                self.bad_numbers[raw[0]] = (nbad, v[bad].astype(str).head(3).tolist())
        if raw is not None:
            self._numbers[raw[0]] = values
        return values

    @staticmethod
    def _text(v: Value) -> pd.Series | str:
        if isinstance(v, pd.Series):
            if isinstance(v.dtype, pd.StringDtype):
                return v
            if v.dtype.kind == "b":
                return v.map({True: "true", False: "false"}).astype("string")
            if v.dtype.kind in "fiu":
                return format_numbers(v)
            return v.astype("string")
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float):
            return _fmt(v)
        return str(v)

    @staticmethod
    def _bool(v: Any) -> Any:
        """Truth values: missing is False; text true/yes/1 is True."""
        if isinstance(v, np.ndarray):
            return v.astype(bool)
        if isinstance(v, pd.Series):
            if v.dtype.kind == "b":
                return v
            if isinstance(v.dtype, pd.BooleanDtype):
                return v.fillna(False).astype(bool)
            if v.dtype.kind in "fiu":
                return v.fillna(0) != 0
            t = v.astype("string").str.strip().str.lower()
            return t.isin(["true", "yes", "y", "1", "t"]).fillna(False).astype(bool)
        return bool(v)


def _squash(name: str) -> str:
    """`unit_price`, `Unit Price` and `UnitPrice` all name the same column."""
    return "".join(ch for ch in normalise_name(name) if ch.isalnum())


def _fmt(x: float) -> str:
    text = format_numbers(pd.Series([x], dtype="float64")).iloc[0]
    return "" if pd.isna(text) else str(text)


def format_numbers(v: pd.Series) -> pd.Series:
    """Numbers as short decimal text (rounded to 6 places: no float noise); missing stays missing."""
    arr = pa.array(v.astype("float64").to_numpy(), from_pandas=True)
    arr = pc.if_else(pc.is_finite(arr), arr, pa.scalar(None, pa.float64()))
    text = pc.cast(pc.round(arr, 6), pa.string())
    text = pc.if_else(pc.equal(text, "-0"), "0", text)
    return _arrow_text(text, v.index)


def _arrow_text(arr: pa.Array, index: pd.Index) -> pd.Series:
    out = arr.to_pandas(types_mapper=lambda t: pd.StringDtype())
    assert isinstance(out, pd.Series)
    return out.set_axis(index)


def _as_text(v: Value, index: pd.Index) -> pd.Series:
    if isinstance(v, pd.Series):
        t = _Eval._text(v)
        assert isinstance(t, pd.Series)
        return t.set_axis(index)
    t0 = _Eval._text(v)
    return _arrow_text(pa.nulls(len(index), pa.string()).fill_null(str(t0)), index)


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


def _series(v: pd.Series | float, index: pd.Index) -> pd.Series:
    return v if isinstance(v, pd.Series) else pd.Series(v, index=index, dtype="float64")


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
    from juno.sources.generic import sha256_file

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
