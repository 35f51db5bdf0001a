"""Mapping expressions: parsed with `ast` against a whitelist, evaluated vectorised on pandas.

`Quantity * UnitPrice`, `sum(Quantity * UnitPrice)` when rows are folded, `InvoiceNo startswith 'C'`;
nothing is ever passed to `eval`. Used by `juno.sources.mapping`.
"""

from __future__ import annotations

import ast
import difflib
import io
import keyword
import re
import tokenize
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from juno.errors import ConfigError
from juno.parse import parse_number
from juno.sources.base import FILE_COL, LINE_COL, normalise_name

ROW_FUNCS = frozenset(
    {"abs", "round", "lower", "upper", "strip", "coalesce", "ifelse", "startswith", "endswith",
     "contains", "missing", "present"}
)
AGG_FUNCS = frozenset({"sum", "count", "first", "last", "min", "max", "any", "all"})
_INFIX = frozenset({"startswith", "endswith", "contains"})
_ARITH = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_CMP = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)


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


def _series(v: pd.Series | float, index: pd.Index) -> pd.Series:
    return v if isinstance(v, pd.Series) else pd.Series(v, index=index, dtype="float64")
