"""The reviewer's file: `review.toml`, one decision per cohort, written by `juno run`.

Juno writes it with every cohort `pending`, the rule each cohort was generated from and a
fingerprint of the run; a lifecycle manager edits it; `juno review` reads it back and counts who
each cohort would reach on its channel; `juno finalize` turns it into the final brief.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from juno.checks import HOLD_FLAGS
from juno.errors import JunoError
from juno.render import FORMULA_START, written_sha256
from juno.sources.csvfiles import sha256_file

if TYPE_CHECKING:
    from juno.pipeline import RunResult

REVIEW_FILE = "review.toml"
DECISIONS = ("pending", "approve", "hold", "reject")
CHANNELS = ("email", "sms", "paid_audience", "onsite", "none")
TOP_KEYS = ("reviewer", "cohorts", "fingerprint")
COHORT_KEYS = ("decision", "action", "channel", "timing", "notes", "rule", "carried_from")
FINGERPRINT_KEYS = ("juno_version", "config_sha256", "store", "inputs", "outputs")
# Run files the final brief and member files are built from; their hashes are fixed at run time.
FINGERPRINTED_OUTPUTS = ("customers.csv", "cohorts.csv", "brief.json")
# The flag `no_consent` is about the configured primary channel; each cohort's own channel is
# checked against email_ok / sms_ok instead, so it is not a hold here.
CHANNEL_HOLDS = tuple(f for f in HOLD_FLAGS if f != "no_consent")


class ReviewError(JunoError):
    """review.toml (or the run folder it belongs to) cannot be used as it is."""

    def __init__(self, message: str, *, line: int | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.line = line


@dataclass
class CohortReview:
    """One cohort's entry: the reviewer's decision and wording, and the rule it was made on."""

    cohort: str
    rule: str
    decision: str = "pending"
    action: str = ""
    channel: str = "email"
    timing: str = ""
    notes: str = ""
    carried_from: str = ""


@dataclass
class Fingerprint:
    """What the decisions were made on: inputs, config, Juno version and the run's own files."""

    juno_version: str
    config_sha256: str
    store: str
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass
class Review:
    reviewer: str
    fingerprint: Fingerprint
    cohorts: dict[str, CohortReview]

    @property
    def pending(self) -> list[str]:
        return [c.cohort for c in self.cohorts.values() if c.decision == "pending"]


# ---------------------------------------------------------------- hashing and the fingerprint


def config_sha256(config: dict[str, Any]) -> str:
    """The resolved config as run.json records it, hashed in a key-order-free form."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fingerprint_of(info: dict[str, Any], folder: Path) -> Fingerprint:
    """The fingerprint of a run being written: run.json's facts plus the hashes of its files."""
    return Fingerprint(
        juno_version=str(info["juno_version"]),
        config_sha256=config_sha256(info["config"]),
        store=str(Path(info["store"]).expanduser().resolve()),
        inputs={str(f["path"]): str(f["sha256"]) for f in info["inputs"]},
        outputs={
            n: written_sha256(folder / n) or sha256_file(folder / n)
            for n in FINGERPRINTED_OUTPUTS
            if (folder / n).exists()
        },
    )


# ---------------------------------------------------------------- writing


def _q(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's, bar DEL)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _key(text: str) -> str:
    bare = text.replace("_", "").replace("-", "").isalnum() and text.isascii()
    return text if bare else _q(text)


def _kv(key: str, value: str, comment: str = "") -> str:
    line = f"{key} = {_q(value)}"
    return f"{line:<32}  # {comment}" if comment else line


def render_review(review: Review, header: list[str], about: dict[str, str] | None = None) -> str:
    """review.toml's text: reviewer, one table per cohort (editable), the fingerprint (not)."""
    out = [f"# {h}" if h else "#" for h in header]
    out += ["", _kv("reviewer", review.reviewer, "your name (finalize records --reviewer)"), ""]
    for c in review.cohorts.values():
        out.append(f"[cohorts.{_key(c.cohort)}]")
        if about and c.cohort in about:
            out.append(f"# {about[c.cohort]}")
        out.append(_kv("decision", c.decision, "pending | approve | hold | reject"))
        out.append(_kv("action", c.action))
        out.append(_kv("channel", c.channel, "email | sms | paid_audience | onsite | none"))
        out.append(_kv("timing", c.timing))
        out.append(_kv("notes", c.notes, "required for hold and reject: why"))
        if c.carried_from:
            out.append(_kv("carried_from", c.carried_from, "decision copied: the rule is unchanged"))
        out.append(_kv("rule", c.rule, "generated by Juno: do not edit"))
        out.append("")
    fp = review.fingerprint
    out += [
        "# The run these decisions were made on. Generated by Juno: do not edit.",
        "[fingerprint]",
        _kv("juno_version", fp.juno_version),
        _kv("config_sha256", fp.config_sha256),
        _kv("store", fp.store),
        "",
        "[fingerprint.inputs]",
        *[f"{_q(k)} = {_q(v)}" for k, v in fp.inputs.items()],
        "",
        "[fingerprint.outputs]",
        *[f"{_q(k)} = {_q(v)}" for k, v in fp.outputs.items()],
    ]
    return "\n".join(out) + "\n"


def carry_forward(new: dict[str, CohortReview], previous: Path) -> dict[str, CohortReview]:
    """Copy an earlier run's decisions for cohorts whose rule is unchanged; reset the others."""
    old = load_review(previous).cohorts
    src = str(previous)
    out: dict[str, CohortReview] = {}
    for cid, entry in new.items():
        before = old.get(cid)
        if before is None or (before.decision == "pending" and not before.notes):
            out[cid] = entry
        elif before.rule == entry.rule:
            out[cid] = CohortReview(
                cohort=cid,
                rule=entry.rule,
                decision=before.decision,
                action=before.action,
                channel=before.channel,
                timing=before.timing,
                notes=before.notes,
                carried_from=src,
            )
        else:
            note = (
                f"rule changed since {src} (was: {before.rule}); "
                f"the decision there was {before.decision}, reset to pending"
            )
            out[cid] = CohortReview(**{**entry.__dict__, "notes": note})
    return out


def write(result: RunResult, folder: Path) -> None:
    """Write review.toml into the run folder being built (every cohort pending unless carried)."""
    from juno.pipeline import run_info

    brief = result.brief
    assert brief is not None
    channel = result.config.consent.primary_channel
    entries = {
        c.cohort: CohortReview(
            cohort=c.cohort, rule=c.definition, action=c.action, channel=channel, timing=c.timing
        )
        for c in sorted(brief.facts.cohorts, key=lambda c: int(c.priority[1:]))
    }
    if result.previous is not None:
        entries = carry_forward(entries, result.previous)
    review = Review(reviewer="", fingerprint=fingerprint_of(run_info(result), folder), cohorts=entries)
    header = [
        f"Juno review for the run of {brief.facts.scope.store} as of {brief.facts.scope.as_of}.",
        "For each cohort set decision (approve, hold or reject), and edit action, channel, timing",
        "and notes as needed; then `juno review RUN` to check reach, `juno finalize RUN --reviewer NAME`.",
        "Nothing is sent anywhere: finalize writes files only.",
    ]
    about = {
        c.cohort: f"{c.priority} {c.title}: {c.size:,} members, {c.outreach_ready:,} outreach-ready,"
        f" {c.held_back:,} held back; confidence {c.confidence}"
        for c in brief.facts.cohorts
    }
    (folder / REVIEW_FILE).write_text(render_review(review, header, about), encoding="utf-8")


# ---------------------------------------------------------------- reading


def _header_path(line: str) -> tuple[str, ...] | None:
    s = line.strip()
    if not s.startswith("[") or s.startswith("[["):
        return None
    end = s.find("]")
    if end < 0:
        return None
    return tuple(p.strip().strip("\"'") for p in s[1:end].split("."))


def _line_key(line: str) -> str | None:
    s = line.strip()
    if not s or s.startswith(("#", "[")) or "=" not in s:
        return None
    return s.split("=", 1)[0].strip().strip("\"'")


def find_line(text: str, table: tuple[str, ...], key: str | None = None) -> int | None:
    """The 1-based line defining `key` in `table` (or the table itself): tomllib does not say."""
    current: tuple[str, ...] = ()
    lines = text.splitlines()
    for i, line in enumerate(lines, start=1):
        head = _header_path(line)
        if head is not None:
            current = head
            if key is None and head == table:
                return i
        elif key is not None and current == table and _line_key(line) == key:
            return i
    if key is None and table:  # a table written inline or as a dotted key: `vip = {...}`
        return find_line(text, table[:-1], table[-1])
    if key is not None:  # dotted keys (`cohorts.vip.decision = ...`)
        dotted = ".".join((*table, key))
        for i, line in enumerate(lines, start=1):
            k = _line_key(line)
            if k is not None and k.replace(" ", "").replace('"', "") == dotted:
                return i
    return None


def _error(
    path: Path, text: str, message: str, table: tuple[str, ...], key: str | None, **kw: Any
) -> ReviewError:
    line = find_line(text, table, key)
    where = f"{path}:{line}" if line else str(path)
    prefix = f"{path.name} line {line}: " if line else f"{path.name}: "
    example = [text.splitlines()[line - 1].strip()] if line else []
    return ReviewError(prefix + message, line=line, file=where, examples=kw.pop("examples", example), **kw)


def run_cohorts(run: Path) -> pd.DataFrame:
    """The run's cohort table (cohort, rule, next_action, timing, ...) as text, unescaped."""
    path = run / "cohorts.csv"
    if not path.is_file():
        raise ReviewError("not a Juno run folder: cohorts.csv is missing", file=str(run))
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return frame.apply(unescape)


def unescape(s: pd.Series) -> pd.Series:
    """Undo escape_cells: a quote put in front of a formula-looking cell."""
    t = s.astype(str)
    risky = t.str.startswith("'") & t.str[1:].str.startswith(FORMULA_START)
    return t.where(~risky, t.str[1:])


def _text(value: Any, path: Path, text: str, table: tuple[str, ...], key: str) -> str:
    if not isinstance(value, str):
        raise _error(path, text, f"`{key}` must be a quoted string", table, key)
    return value


def load_review(run: Path) -> Review:
    """Parse and check RUN/review.toml against the run's cohorts; errors name the line."""
    path = run / REVIEW_FILE
    if not path.is_file():
        raise ReviewError(
            "no review.toml in the run folder", file=str(run), hint="run `juno run` again to write one"
        )
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ReviewError(f"{path.name} is not valid TOML: {exc}", file=str(path)) from None
    known = run_cohorts(run)
    # The configured definition, not the resolved cut: decisions outlive weekly data changes.
    column = "definition" if "definition" in known.columns else "rule"
    rules = dict(zip(known["cohort"], known[column], strict=True))
    for key in data:
        if key not in TOP_KEYS:
            raise _error(path, text, f"unknown key `{key}`", (), key, expected="reviewer, [cohorts.*]")
    reviewer = _text(data.get("reviewer", ""), path, text, (), "reviewer")
    cohorts_raw = data.get("cohorts", {})
    if not isinstance(cohorts_raw, dict):
        raise _error(path, text, "`cohorts` must be a table of cohorts", (), "cohorts")
    cohorts: dict[str, CohortReview] = {}
    for cid, body in cohorts_raw.items():
        table = ("cohorts", cid)
        if cid not in rules:
            raise _error(
                path, text, f"unknown cohort `{cid}`: this run has no such cohort", table, None,
                expected="one of " + ", ".join(rules),
            )
        if not isinstance(body, dict):
            raise _error(path, text, f"cohort `{cid}` must be a table", table, None)
        for key in body:
            if key not in COHORT_KEYS:
                raise _error(
                    path, text, f"unknown key `{key}` in [cohorts.{cid}]", table, key,
                    expected="one of " + ", ".join(COHORT_KEYS),
                )
        entry = CohortReview(cohort=cid, rule=rules[cid])
        for key in COHORT_KEYS:
            if key in body:
                setattr(entry, key, _text(body[key], path, text, table, key))
        if entry.decision not in DECISIONS:
            raise _error(
                path, text, f"invalid decision `{entry.decision}` for {cid}", table, "decision",
                expected=" | ".join(DECISIONS),
            )
        if entry.channel not in CHANNELS:
            raise _error(
                path, text, f"invalid channel `{entry.channel}` for {cid}", table, "channel",
                expected=" | ".join(CHANNELS),
            )
        if entry.rule != rules[cid]:
            raise _error(
                path, text, f"the rule of {cid} was edited; it is generated by Juno", table, "rule",
                expected=rules[cid], hint="restore the line or run `juno run` again",
            )
        cohorts[cid] = entry
    for cid in rules:  # a cohort left out of the file is still to be decided
        cohorts.setdefault(cid, CohortReview(cohort=cid, rule=rules[cid]))
    return Review(reviewer=reviewer, fingerprint=_fingerprint(data, path, text), cohorts=cohorts)


def _fingerprint(data: dict[str, Any], path: Path, text: str) -> Fingerprint:
    raw = data.get("fingerprint")
    if not isinstance(raw, dict):
        raise ReviewError(
            f"{path.name} has no [fingerprint] table", file=str(path), hint="run `juno run` again"
        )
    for key in raw:
        if key not in FINGERPRINT_KEYS:
            raise _error(path, text, f"unknown key `{key}` in [fingerprint]", ("fingerprint",), key)
    inputs, outputs = raw.get("inputs", {}), raw.get("outputs", {})
    if not isinstance(inputs, dict) or not isinstance(outputs, dict):
        raise _error(path, text, "fingerprint inputs/outputs must be tables", ("fingerprint",), "inputs")
    return Fingerprint(
        juno_version=str(raw.get("juno_version", "")),
        config_sha256=str(raw.get("config_sha256", "")),
        store=str(raw.get("store", "")),
        inputs={str(k): str(v) for k, v in inputs.items()},
        outputs={str(k): str(v) for k, v in outputs.items()},
    )


# ---------------------------------------------------------------- who a channel reaches


@dataclass
class Reach:
    """Primary members of a cohort and who is left once a channel's exclusions apply."""

    cohort: str
    channel: str
    members: int
    held_back: int  # any hold flag other than consent
    held_by_flag: dict[str, int]  # overlapping counts, one per flag
    no_consent: int  # not held, but no consent (or no address) for the channel
    reachable: int


def read_customers(run: Path) -> pd.DataFrame:
    path = run / "customers.csv"
    if not path.is_file():
        raise ReviewError("not a Juno run folder: customers.csv is missing", file=str(run))
    return pd.read_csv(path, dtype=str, keep_default_na=False).apply(unescape)


def reachable_mask(members: pd.DataFrame, channel: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(held back, no consent for the channel, reachable) over the given member rows."""
    flags = members["flags"].astype(str).str.split(";")
    held = flags.map(lambda fs: any(f in CHANNEL_HOLDS for f in fs)).to_numpy(bool)

    def truthy(col: str) -> np.ndarray:
        if col not in members:
            return np.zeros(len(members), dtype=bool)
        return members[col].astype(str).str.lower().isin(["true", "1", "yes"]).to_numpy(bool)

    def present(col: str) -> np.ndarray:
        if col not in members:
            return np.zeros(len(members), dtype=bool)
        return (members[col].astype(str).str.strip() != "").to_numpy(bool)

    if channel == "email":
        ok = truthy("email_ok")
    elif channel == "sms":
        ok = truthy("sms_ok")
    elif channel == "paid_audience":  # no marketing consent needed, but something to match on
        ok = present("email") | present("phone")
    elif channel == "onsite":
        ok = np.ones(len(members), dtype=bool)
    else:
        ok = np.zeros(len(members), dtype=bool)
    no_consent = ~held & ~ok
    return held, no_consent, ~held & ok


def primary_members(customers: pd.DataFrame, cohort: str) -> pd.DataFrame:
    """One message per customer: the members whose primary cohort this is."""
    status = customers["status"] if "status" in customers else pd.Series("classified", index=customers.index)
    return customers[(customers["primary_cohort"] == cohort) & (status == "classified")]


def reach(customers: pd.DataFrame, cohort: str, channel: str) -> Reach:
    members = primary_members(customers, cohort)
    held, no_consent, ok = reachable_mask(members, channel)
    flags = members["flags"].astype(str).str.split(";")
    by_flag = {f: int(flags.map(lambda fs, f=f: f in fs).sum()) for f in CHANNEL_HOLDS}
    return Reach(
        cohort=cohort,
        channel=channel,
        members=len(members),
        held_back=int(held.sum()),
        held_by_flag={k: v for k, v in by_flag.items() if v},
        no_consent=int(no_consent.sum()),
        reachable=int(ok.sum()),
    )
