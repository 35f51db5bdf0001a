from pathlib import Path

import numpy as np
from helpers import cfg, write_store

from juno.assess import confidence, priority_score, stability
from juno.checks import compute_flags, held_back, next_action_codes
from juno.classify import run_classification
from juno.cohorts import RULES, make_context
from juno.config import Config
from juno.signals import compute_signals
from juno.sources.generic import read_generic
from juno.validate import validate


def _store(tmp_path: Path) -> Path:
    # Ten active buyers; V is the top spender. Each flag is given to one customer.
    orders = ["order_id,customer_id,ordered_at,revenue"]
    for i in range(10):
        orders.append(f"A{i},C{i},2025-03-01,{10 * (i + 1)}")
        orders.append(f"B{i},C{i},2025-04-01,{10 * (i + 1)}")
    orders.append("V1,V,2025-03-01,900")
    orders.append("V2,V,2025-06-27,900")  # 3 days before as_of: recent purchase
    orders.append("Z1,Z,2025-06-30,1")
    return write_store(
        tmp_path,
        orders="\n".join(orders),
        customers="customer_id,email,phone,email_consent\nV,v@x.com,,unsubscribed\nC1,c1@x.com,4155550101,subscribed\nC2,C1@x.com,,subscribed\nC3,c3@x.com,,subscribed\n",
        support_tickets="customer_id,opened_at,status,severity\nC3,2025-06-20,closed,urgent\nC4,2024-01-01,open,low\n",
    )


def _run(folder: Path, config: Config):  # type: ignore[no-untyped-def]
    store = validate(read_generic(folder), config)
    sig = compute_signals(store, config)
    return sig, run_classification(store, sig, config)


def test_flags_per_customer(tmp_path: Path) -> None:
    sig, cl = _run(_store(tmp_path), Config())
    fr = cl.flags.frame.assign(customer_id=sig.frame["customer_id"]).set_index("customer_id")
    assert fr.loc["V", "no_consent"] and not fr.loc["C1", "no_consent"]
    assert fr.loc["C5", "no_consent"]  # not in the customers file: consent unknown
    assert fr.loc["V", "recent_purchase"] and fr.loc["Z", "recent_purchase"]
    assert not fr.loc["C1", "recent_purchase"]
    assert fr.loc["C3", "recent_support_issue"] and fr.loc["C3", "high_severity"]
    assert fr.loc["C4", "recent_support_issue"]  # old ticket, still open
    assert fr.loc["C1", "duplicate_record"] and fr.loc["C2", "duplicate_record"]
    assert not fr.loc["C3", "duplicate_record"]


def test_flags_change_the_action_but_never_membership(tmp_path: Path) -> None:
    sig, cl = _run(_store(tmp_path), Config())
    f = sig.frame
    vip = f["customer_id"][cl.memberships["vip"].mask].tolist()
    assert "V" in vip  # held back, still a member
    i = int(np.flatnonzero(f["customer_id"] == "V")[0])
    assert cl.held[i]
    assert "no marketing send" in cl.actions[i]
    vip_fact = next(c for c in cl.cohort_facts if c.cohort == "vip")
    flags = {b.flag: b.count for b in vip_fact.held_back_by_flag}
    assert flags["no_consent"] >= 1 and flags["recent_purchase"] >= 1
    assert vip_fact.outreach_ready + vip_fact.held_back == vip_fact.size


def test_sms_channel_uses_sms_consent(tmp_path: Path) -> None:
    config = cfg(consent={"primary_channel": "sms"})
    _sig, cl = _run(_store(tmp_path), config)
    assert cl.flags.frame["no_consent"].all()  # nobody has SMS consent


def test_high_severity_ticket_sets_service_recovery(tmp_path: Path) -> None:
    sig, cl = _run(_store(tmp_path), Config())
    prim = np.array(["vip"] * len(sig.frame), dtype=object)
    acts = next_action_codes(prim, cl.flags, {"vip": "loyalty"}, Config()).values()
    i = int(np.flatnonzero(sig.frame["customer_id"] == "C3")[0])
    assert acts[i].startswith("service recovery first")


def test_subscription_conflicts(tmp_path: Path) -> None:
    orders = ["order_id,customer_id,ordered_at,revenue,discount_code"]
    for i in range(10):
        orders.append(f"A{i},C{i},2024-01-01,{100 * (i + 1)}, ")
        orders.append(f"B{i},C{i},2024-06-01,{100 * (i + 1)}, ")
    orders += ["D1,D,2025-05-01,10,X", "D2,D,2025-06-01,10,X", "N1,N,2025-06-30,1,"]
    folder = write_store(
        tmp_path,
        orders="\n".join(orders),
        subscriptions="customer_id,status,category\nC9,paused,coffee\nD,active,coffee\n",
    )
    sig, cl = _run(folder, Config())
    f = sig.frame.assign(conf=cl.flags.frame["subscription_conflict"], detail=cl.flags.detail).set_index(
        "customer_id"
    )
    assert f.loc["C9", "conf"] and "paused or cancelled" in f.loc["C9", "detail"]
    assert f.loc["D", "conf"] and f.loc["D", "detail"] == "subscriber in discount_risk"
    assert not f.loc["C8", "conf"]


def test_thin_sample_and_confidence_reasons(tmp_path: Path) -> None:
    _sig, cl = _run(_store(tmp_path), Config())
    vip = next(c for c in cl.cohort_facts if c.cohort == "vip")
    assert vip.thin and vip.confidence == "low"
    assert any(r.startswith("thin sample") for r in vip.confidence_reasons)
    assert any("thresholds move" in r or "moves +-10%" in r for r in vip.confidence_reasons)


def test_margin_incomplete_without_cost(tmp_path: Path) -> None:
    _sig, cl = _run(_store(tmp_path), Config())
    assert cl.margin_incomplete
    dr = next(c for c in cl.cohort_facts if c.cohort == "discount_risk")
    assert dr.margin_incomplete
    assert not next(c for c in cl.cohort_facts if c.cohort == "vip").margin_incomplete


def test_stability_measures_members_kept() -> None:
    import pandas as pd

    from juno.cycles import Cycles
    from juno.signals import Signals

    f = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(100)],
            "excluded": False,
            "merged_into": pd.Series([pd.NA] * 100, dtype="string"),
            "value_window": np.arange(1, 101, dtype=float),
            "value_lifetime": np.arange(1, 101, dtype=float),
            "value_score": np.arange(1, 101, dtype=float),
            "orders_window": 3,
            "orders_lifetime": 3,
            "recency_days": 10.0,
            "discount_share_window": 0.0,
            "discount_rate_window": 0.0,
            "median_gap_days": np.nan,
            "tenure_days": 400.0,
            "email_consent": "subscribed",
        }
    )
    sig = Signals(f, pd.Timestamp("2025-01-01"), 400, 1.0, "net_revenue", None, None, 0)
    cyc = Cycles(
        pd.DataFrame(columns=["replenishable", "pairs"]), pd.DataFrame(columns=["c"]), pd.DataFrame(), None
    )
    config = Config()
    ctx = make_context(sig, cyc, config)
    m = RULES["vip"].members(ctx)
    assert m.mask.sum() == 10
    kept, key = stability("vip", m.mask, config.thresholds, lambda th: make_context(sig, cyc, config, th))
    assert kept == 0.9 and key == "vip_share"  # 9% of 100 keeps 9 of the 10
    level, reasons = confidence(
        "vip",
        m,
        ctx,
        history_days=400,
        margin_incomplete=False,
        margin_coverage=1.0,
        stable=kept,
        unstable_key=key,
    )
    assert level == "low" and "thin sample" in reasons[0]


def test_priority_score_documented_formula() -> None:
    assert priority_score("vip", 1000.0, 10, 0) == 1000.0
    assert priority_score("replenishment_ready", 1000.0, 10, 5) == 1000.0 * 1.5 * 0.75
    assert held_back is not None and compute_flags is not None
