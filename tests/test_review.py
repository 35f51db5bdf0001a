"""Review workflow: review.toml, reach per channel, finalize (brief + member files), carry-forward."""

from __future__ import annotations

import csv
import shutil
import tomllib
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import juno.pipeline as pipeline
from juno import review as review_mod
from juno.config import Config, config_from_dict
from juno.errors import JunoError
from juno.finalize import FingerprintError, NotReadyError, finalize, fingerprint_problems
from juno.review import ReviewError, load_review, reach, read_customers

AS_OF = pd.Timestamp("2026-06-30")


def make_store(folder: Path, n: int = 160, seed: int = 7) -> Path:
    """Four kinds of customer (frequent, one recent order, big spender gone quiet, occasional)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"C{i:04d}" for i in range(n)]
    consent = np.array(["subscribed", "unsubscribed", "not_subscribed"])
    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "email": [f"user{i}@example.com" for i in range(n)],
            "phone": [f"+1 555 01{i % 100:02d}" if i % 3 else "" for i in range(n)],
            "email_consent": consent[rng.choice(3, n, p=[0.6, 0.2, 0.2])],
            "sms_consent": consent[rng.choice(3, n, p=[0.4, 0.3, 0.3])],
        }
    )
    rows: list[dict[str, object]] = []
    for i, cid in enumerate(ids):
        kind = i % 4
        if kind == 0:
            days = sorted(rng.integers(5, 330, size=int(rng.integers(2, 7))))
            amounts = rng.uniform(60, 260, len(days))
        elif kind == 1:
            days = [int(rng.integers(8, 50))]
            amounts = rng.uniform(20, 80, 1)
        elif kind == 2:
            days = sorted(rng.integers(200, 500, size=3))
            amounts = rng.uniform(150, 400, 3)
        else:
            days = sorted(rng.integers(30, 700, size=2))
            amounts = rng.uniform(20, 120, 2)
        for d, a in zip(days, amounts, strict=True):
            rows.append(
                {
                    "order_id": f"O{len(rows) + 1:05d}",
                    "customer_id": cid,
                    "ordered_at": (AS_OF - pd.Timedelta(days=int(d))).strftime("%Y-%m-%d"),
                    "revenue": round(float(a), 2),
                }
            )
    customers.to_csv(folder / "customers.csv", index=False)
    pd.DataFrame(rows).to_csv(folder / "orders.csv", index=False)
    return folder


@pytest.fixture(scope="module", autouse=True)
def only_review_writer() -> Iterator[None]:
    """Other modules' outputs are not under test here: the run writes review.toml only."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "extra_writers", lambda: [review_mod.write])
        yield


def do_run(store: Path, out: Path, previous: Path | None = None, config: Config | None = None) -> Path:
    pipeline.run(store, out, config=config or Config(), narrative="template", previous=previous)
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("review")
    store = make_store(root / "store")
    return store, do_run(store, root / "run")


@pytest.fixture
def run(base: tuple[Path, Path], tmp_path: Path) -> Path:
    """A fresh copy of the module's run folder (the store is shared and must not be edited)."""
    return Path(shutil.copytree(base[1], tmp_path / "run"))


@pytest.fixture
def own_store(tmp_path: Path) -> tuple[Path, Path]:
    store = make_store(tmp_path / "store")
    return store, do_run(store, tmp_path / "run")


def edit(run: Path, cohort: str, **values: str) -> None:
    """Set keys of [cohorts.<cohort>] in review.toml the way a reviewer would."""
    path = run / "review.toml"
    lines = path.read_text(encoding="utf-8").splitlines()
    start = lines.index(f"[cohorts.{cohort}]")
    for key, value in values.items():
        for i in range(start + 1, len(lines)):
            if lines[i].startswith("["):
                lines.insert(i - 1, f'{key} = "{value}"')
                break
            if lines[i].startswith(f"{key} = "):
                lines[i] = f'{key} = "{value}"'
                break
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def line_of(run: Path, text: str) -> int:
    lines = (run / "review.toml").read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, start=1) if line.startswith(text))


def cohorts_of(run: Path) -> list[str]:
    return list(load_review(run).cohorts)


def decide_all(run: Path, channels: dict[str, str]) -> None:
    """Approve the cohorts in `channels` on that channel; hold or reject the others, with reasons."""
    for i, cid in enumerate(cohorts_of(run)):
        if cid in channels:
            edit(run, cid, decision="approve", channel=channels[cid])
        else:
            edit(run, cid, decision="hold" if i % 2 else "reject", notes=f"not now: {cid}")


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


# ------------------------------------------------------------------ review.toml as written


def test_run_writes_review_toml_with_every_cohort_pending(base: tuple[Path, Path]) -> None:
    _, run = base
    data = tomllib.loads((run / "review.toml").read_text(encoding="utf-8"))
    cohorts = pd.read_csv(run / "cohorts.csv", dtype=str, keep_default_na=False)
    assert data["reviewer"] == ""
    assert list(data["cohorts"]) == list(cohorts["cohort"])  # in priority order
    for row in cohorts.itertuples():
        entry = data["cohorts"][row.cohort]
        assert entry["decision"] == "pending"
        assert entry["channel"] == "email"
        assert entry["rule"] == row.definition  # the configured rule, stable across weekly runs
        assert entry["action"] == row.next_action
        assert set(entry) <= set(review_mod.COHORT_KEYS)
    fp = data["fingerprint"]
    info = pd.read_json(run / "run.json", typ="series")
    assert fp["inputs"] == {f["path"]: f["sha256"] for f in info["inputs"]}
    assert set(fp["outputs"]) == {"customers.csv", "cohorts.csv", "brief.json"}
    assert fp["juno_version"] == info["juno_version"]
    assert fingerprint_problems(run, load_review(run)) == []


def test_customers_csv_carries_email_and_phone(base: tuple[Path, Path]) -> None:
    customers = read_customers(base[1])
    row = customers.set_index("customer_id").loc["C0001"]
    assert row["email"] == "user1@example.com"
    assert row["phone"] == "+1 555 0101"


# ------------------------------------------------------------------ parsing errors name the line


def test_unknown_key_names_the_line(run: Path) -> None:
    cid = cohorts_of(run)[0]
    edit(run, cid, desicion="approve")
    with pytest.raises(ReviewError) as err:
        load_review(run)
    assert err.value.line == line_of(run, "desicion")
    assert "unknown key `desicion`" in err.value.message
    assert f"line {err.value.line}" in err.value.message


def test_unknown_cohort_names_the_line(run: Path) -> None:
    path = run / "review.toml"
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace("# The run these", '[cohorts.big_spenders]\ndecision = "approve"\n\n# The run these'),
        encoding="utf-8",
    )
    with pytest.raises(ReviewError) as err:
        load_review(run)
    assert err.value.line == line_of(run, "[cohorts.big_spenders]")
    assert "unknown cohort `big_spenders`" in err.value.message


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [("decision", "approved", "invalid decision"), ("channel", "whatsapp", "invalid channel")],
)
def test_invalid_value_names_the_line(run: Path, key: str, value: str, words: str) -> None:
    cid = cohorts_of(run)[-1]
    edit(run, cid, **{key: value})
    with pytest.raises(ReviewError) as err:
        load_review(run)
    assert words in err.value.message
    assert err.value.line == line_of(run, f'{key} = "{value}"')
    assert isinstance(err.value, JunoError) and err.value.exit_code == 2


def test_edited_rule_and_non_string_values_are_errors(run: Path) -> None:
    cid = cohorts_of(run)[0]
    edit(run, cid, rule="everyone")
    with pytest.raises(ReviewError, match=r"rule of .* was edited") as err:
        load_review(run)
    assert err.value.line == line_of(run, 'rule = "everyone"')

    path = run / "review.toml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace('reviewer = ""', "reviewer = 3"), encoding="utf-8")
    with pytest.raises(ReviewError, match="quoted string") as err2:
        load_review(run)
    assert err2.value.line == line_of(run, "reviewer = 3")


def test_unknown_top_level_key_and_bad_toml(run: Path) -> None:
    path = run / "review.toml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace('reviewer = ""', 'reviewer = ""\napprover = "x"'), encoding="utf-8")
    with pytest.raises(ReviewError, match="unknown key `approver`") as err:
        load_review(run)
    assert err.value.line == line_of(run, "approver")
    path.write_text(text.replace('reviewer = ""', 'reviewer = "'), encoding="utf-8")
    with pytest.raises(ReviewError, match=r"not valid TOML.*line"):
        load_review(run)


# ------------------------------------------------------------------ who each channel reaches


def test_exclusions_per_channel() -> None:
    customers = pd.DataFrame(
        [
            # id, primary, status, flags, email_ok, sms_ok, email, phone
            ("a", "vip", "classified", "", "true", "false", "a@x.com", ""),
            ("b", "vip", "classified", "no_consent", "false", "true", "b@x.com", "+1 555 0101"),
            ("c", "vip", "classified", "recent_support_issue", "true", "true", "c@x.com", "+1 555 0102"),
            ("d", "vip", "classified", "no_consent;recent_purchase", "false", "true", "d@x.com", ""),
            ("e", "near_vip", "classified", "", "true", "true", "e@x.com", ""),
            ("f", "", "unclassified", "", "true", "true", "f@x.com", ""),
            ("g", "vip", "classified", "no_consent", "false", "false", "", ""),
        ],
        columns=["customer_id", "primary_cohort", "status", "flags", "email_ok", "sms_ok", "email", "phone"],
    )
    got = {ch: reach(customers, "vip", ch) for ch in review_mod.CHANNELS}
    assert {ch: r.members for ch, r in got.items()} == dict.fromkeys(review_mod.CHANNELS, 5)
    # held back on every channel: c (support issue) and d (recent purchase); no_consent alone is not
    assert {ch: r.held_back for ch, r in got.items()} == dict.fromkeys(review_mod.CHANNELS, 2)
    assert got["email"].reachable == 1  # a; b and g have no email consent
    assert got["sms"].reachable == 1  # b
    assert got["paid_audience"].reachable == 2  # a, b: no consent needed, g has nothing to match on
    assert got["onsite"].reachable == 3  # a, b, g
    assert got["none"].reachable == 0
    assert got["email"].held_by_flag == {"recent_support_issue": 1, "recent_purchase": 1}
    for r in got.values():
        assert r.held_back + r.no_consent + r.reachable == r.members


# ------------------------------------------------------------------ finalize


def test_finalize_refuses_while_pending_or_without_reasons(run: Path) -> None:
    with pytest.raises(NotReadyError, match="still pending"):
        finalize(run, "Ana")
    cids = cohorts_of(run)
    for cid in cids:
        edit(run, cid, decision="approve")
    edit(run, cids[0], decision="hold")
    with pytest.raises(NotReadyError, match="without a reason"):
        finalize(run, "Ana")
    assert not (run / "final").exists()


def test_finalize_writes_brief_and_three_member_files(run: Path) -> None:
    cids = cohorts_of(run)
    approved = {cids[0]: "email", cids[1]: "sms", cids[2]: "paid_audience"}
    decide_all(run, approved)
    edit(run, cids[0], action="=HYPERLINK(evil)", timing="this week")
    out = finalize(run, "Ana Lopez", date(2026, 7, 2))
    customers = read_customers(run)

    brief = (out / "brief.md").read_text(encoding="utf-8")
    assert "DRAFT" not in brief
    assert "Reviewed by Ana Lopez on 2026-07-02" in brief
    not_out = [c for c in cids if c not in approved]
    assert max(brief.index(f"**{c}**") for c in approved) < min(brief.index(f"**{c}**") for c in not_out)
    for c in not_out:
        assert f"not now: {c}" in brief

    for cid, channel in approved.items():
        r = reach(customers, cid, channel)
        header, rows = read_rows(out / "members" / f"{cid}.csv")
        contact = {"email": ["email"], "sms": ["phone"], "paid_audience": ["email", "phone"]}[channel]
        assert header == ["customer_id", *contact, "cohort", "next_action", "priority"]
        assert len(rows) == r.reachable
        ids = {row[0] for row in rows}
        members = customers.set_index("customer_id").loc[sorted(ids)]
        assert (members["primary_cohort"] == cid).all()
        if channel == "email":
            assert (members["email_ok"] == "true").all()
        if channel == "sms":
            assert (members["sms_ok"] == "true").all()
        assert not members["flags"].str.contains("recent_support_issue|recent_purchase|duplicate").any()

        s_header, s_rows = read_rows(out / "members" / f"{cid}_shopify_customer_tags.csv")
        assert s_header == ["Email", "Tags"]
        assert all(row[1] == f"juno-{cid.replace('_', '-')}, juno-2026-07-02" for row in s_rows)
        k_header, k_rows = read_rows(out / "members" / f"{cid}_klaviyo_profiles.csv")
        expected = ["Email", "juno_cohort", "juno_next_action", "juno_priority"]
        assert k_header == (["Phone Number", *expected] if channel == "sms" else expected)
        assert all(cid in row for row in k_rows)

    # formula escaping: the reviewer's wording cannot run in a spreadsheet; phone numbers stay usable
    _, rows = read_rows(out / "members" / f"{cids[0]}.csv")
    assert rows and all(row[-2] == "'=HYPERLINK(evil)" for row in rows)
    _, sms_rows = read_rows(out / "members" / f"{cids[1]}.csv")
    assert all(row[1].startswith("+1 555") for row in sms_rows)
    assert not list((out / "members").glob(f"{not_out[0]}*"))
    from juno import report_html

    if callable(getattr(report_html, "render", None)):  # brief.html when the HTML renderer exists
        page = (out / "brief.html").read_text(encoding="utf-8")
        assert "DRAFT" not in page and "Reviewed by Ana Lopez on 2026-07-02" in page
    decisions = pd.read_json(out / "decisions.json", typ="series")
    assert decisions["reviewer"] == "Ana Lopez" and decisions["date_source"] == "--date"


def test_finalize_refuses_when_an_input_changed(own_store: tuple[Path, Path]) -> None:
    store, run = own_store
    cids = cohorts_of(run)
    decide_all(run, {cids[0]: "email"})
    with (store / "orders.csv").open("a", encoding="utf-8") as f:
        f.write("O99999,C0001,2026-06-29,10.00\n")
    with pytest.raises(FingerprintError) as err:
        finalize(run, "Ana")
    assert any("orders.csv" in e for e in err.value.examples)
    assert not (run / "final").exists()


def test_finalize_refuses_when_a_run_file_changed(run: Path) -> None:
    cids = cohorts_of(run)
    decide_all(run, {cids[0]: "email"})
    path = run / "customers.csv"
    path.write_text(path.read_text(encoding="utf-8").replace("user1@", "someone@"), encoding="utf-8")
    with pytest.raises(FingerprintError) as err:
        finalize(run, "Ana")
    assert err.value.examples == ["run file changed since the run: customers.csv"]


# ------------------------------------------------------------------ carry-forward


def test_decisions_carry_forward_when_the_rule_is_unchanged(base: tuple[Path, Path], tmp_path: Path) -> None:
    store, _ = base
    old = do_run(store, tmp_path / "old")
    cids = cohorts_of(old)
    decide_all(old, {cids[0]: "sms"})
    new = do_run(store, tmp_path / "new", previous=old)
    before, after = load_review(old), load_review(new)
    for cid in cids:
        a, b = before.cohorts[cid], after.cohorts[cid]
        assert (b.decision, b.channel, b.notes, b.action) == (a.decision, a.channel, a.notes, a.action)
        assert b.carried_from == str(old)
    # the same folder as --out and --previous: decisions survive a re-run in place
    again = do_run(store, old, previous=old)
    assert load_review(again).cohorts[cids[0]].decision == "approve"


def test_decisions_carry_forward_to_next_week_when_only_the_data_moved(
    base: tuple[Path, Path], tmp_path: Path
) -> None:
    store, _ = base
    earlier = config_from_dict({"as_of": "2026-06-02"})
    old = do_run(store, tmp_path / "old", config=earlier)
    cids = cohorts_of(old)
    decide_all(old, dict.fromkeys(cids, "email"))
    new = do_run(store, tmp_path / "new", previous=old)
    old_rules = pd.read_csv(old / "cohorts.csv").set_index("cohort")["rule"]
    new_rules = pd.read_csv(new / "cohorts.csv").set_index("cohort")["rule"]
    assert (old_rules != new_rules.reindex(old_rules.index)).any()  # the resolved cuts moved
    after = load_review(new)
    assert all(after.cohorts[c].decision == "approve" for c in cids)


def test_changed_rule_resets_to_pending_with_a_note(base: tuple[Path, Path], tmp_path: Path) -> None:
    store, _ = base
    old = do_run(store, tmp_path / "old")
    cids = cohorts_of(old)
    decide_all(old, dict.fromkeys(cids, "email"))
    looser = config_from_dict({"thresholds": {"vip_share": 0.2}})
    new = do_run(store, tmp_path / "new", previous=old, config=looser)
    before, after = load_review(old), load_review(new)
    assert before.cohorts["vip"].rule != after.cohorts["vip"].rule
    vip = after.cohorts["vip"]
    assert vip.decision == "pending" and not vip.carried_from
    assert "rule changed" in vip.notes and "approve" in vip.notes
    for cid, entry in after.cohorts.items():
        if entry.rule == before.cohorts[cid].rule:
            assert entry.decision == "approve" and entry.carried_from == str(old)


# ------------------------------------------------------------------ the commands


def test_review_and_finalize_commands(run: Path) -> None:
    from juno.cli import app

    runner = CliRunner()
    shown = runner.invoke(app, ["review", str(run)])
    assert shown.exit_code == 0, shown.output
    assert "Pending (" in shown.output and "reach" in shown.output
    refused = runner.invoke(app, ["finalize", str(run), "--reviewer", "Ana"])
    assert isinstance(refused.exception, NotReadyError)
    cids = cohorts_of(run)
    decide_all(run, {cids[0]: "email"})
    done = runner.invoke(app, ["finalize", str(run), "--reviewer", "Ana", "--date", "2026-07-02"])
    assert done.exit_code == 0, done.output
    assert "nothing was sent anywhere" in done.output
    assert (run / "final" / "members" / f"{cids[0]}_klaviyo_profiles.csv").is_file()


def test_finalize_finds_inputs_from_another_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_store(tmp_path / "shop" / "store")
    monkeypatch.chdir(tmp_path / "shop")
    run = do_run(Path("store"), Path("run"))  # relative paths, as a user types them
    decide_all(run, {cohorts_of(run)[0]: "onsite"})
    monkeypatch.chdir(tmp_path)
    assert fingerprint_problems(Path("shop/run"), load_review(Path("shop/run"))) == []
    assert (finalize(Path("shop/run"), "Ana") / "brief.md").is_file()


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "store"


@pytest.mark.skipif(not (EXAMPLE / "orders.csv").is_file(), reason="examples/store not generated")
def test_example_store_end_to_end(tmp_path: Path) -> None:
    run = do_run(EXAMPLE, tmp_path / "run")
    channels = dict(zip(cohorts_of(run), ["email", "sms", "paid_audience", "onsite"], strict=False))
    decide_all(run, channels)
    out = finalize(run, "Ana", date(2026, 12, 4))
    customers = read_customers(run)
    for cid, channel in channels.items():
        r = reach(customers, cid, channel)
        assert r.members > 0 and 0 < r.reachable < r.members
        _, rows = read_rows(out / "members" / f"{cid}.csv")
        assert len(rows) == r.reachable
