#!/usr/bin/env python
"""Generate a believable synthetic store in Juno's generic input contract.

A coffee, skincare and pet-food shop with a side line of apparel, homeware, accessories, gifts
and brewing equipment, two years of history ending at ``--end``. Every draw comes from one
seeded numpy generator and every step is vectorised (no Python loop per customer or per
order), so the same arguments give byte-identical files and a million customers take minutes.

    python examples/generate_store.py                      # the committed examples/store
    python examples/generate_store.py --customers 1000000 --format parquet --out bench/data/1m

The people are invented: e-mail addresses use example.com / example.org (a few gmail.com
look-alikes for the duplicate cases), phone numbers use the fictional 555-01xx range (and the
UK drama range 020 7946 0xxx); only stores too big for those ranges use other 555 numbers.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HISTORY_DAYS = 730
DAY_S = 86_400

# --------------------------------------------------------------------------------------------
# Catalogue: (sku, product name, category index, price in cents, unit cost in cents, popularity)
# --------------------------------------------------------------------------------------------
CATEGORIES = [
    "coffee",
    "skincare refills",
    "pet food",
    "apparel",
    "home",
    "accessories",
    "gifts",
    "equipment",
]
COFFEE, SKINCARE, PETFOOD, APPAREL, HOME, ACCESSORIES, GIFTS, EQUIPMENT = range(8)
REPLENISH_CYCLE = np.array([30.0, 60.0, 45.0])  # days, for the three replenishable categories

CATALOGUE = [
    ("CF-HOUSE-340", "House Blend Coffee 340g", COFFEE, 1600, 620, 5),
    ("CF-ESPR-340", "Espresso Roast 340g", COFFEE, 1700, 660, 4),
    ("CF-ETHI-340", "Ethiopia Yirgacheffe 340g", COFFEE, 1950, 780, 3),
    ("CF-DECAF-340", "Swiss Water Decaf 340g", COFFEE, 1750, 700, 1),
    ("CF-COLD-1KG", "Cold Brew Blend 1kg", COFFEE, 3800, 1450, 1),
    ("CF-PODS-30", "Compostable Coffee Pods x30", COFFEE, 2100, 820, 2),
    ("SK-CLNS-R", "Gentle Cleanser Refill 200ml", SKINCARE, 2200, 640, 4),
    ("SK-MOIST-R", "Daily Moisturiser Refill 50ml", SKINCARE, 3400, 900, 4),
    ("SK-SERUM-R", "Vitamin C Serum Refill 30ml", SKINCARE, 4200, 1100, 2),
    ("SK-SPF-R", "Mineral SPF 30 Refill 50ml", SKINCARE, 2800, 820, 2),
    ("SK-TONER-R", "Hydrating Toner Refill 150ml", SKINCARE, 2400, 700, 1),
    ("PF-DOG-2KG", "Grain-Free Dog Food 2kg", PETFOOD, 2900, 1500, 4),
    ("PF-DOG-6KG", "Grain-Free Dog Food 6kg", PETFOOD, 6400, 3300, 2),
    ("PF-CAT-15KG", "Salmon Cat Food 1.5kg", PETFOOD, 2400, 1200, 3),
    ("PF-TREATS", "Training Treats 300g", PETFOOD, 950, 380, 1),
    ("AP-TEE", "Organic Cotton Tee", APPAREL, 3200, 1100, 4),
    ("AP-HOOD", "Fleece Hoodie", APPAREL, 6800, 2500, 3),
    ("AP-CAP", "Canvas Cap", APPAREL, 2600, 800, 2),
    ("AP-APRON", "Barista Apron", APPAREL, 4500, 1500, 1),
    ("AP-SOCKS", "Merino Socks 2-pack", APPAREL, 2200, 700, 3),
    ("AP-JACKET", "Waxed Cotton Jacket", APPAREL, 16500, 6200, 1),
    ("HM-MUG", "Stoneware Mug", HOME, 1800, 550, 5),
    ("HM-CANDLE", "Soy Candle", HOME, 2800, 800, 3),
    ("HM-THROW", "Wool Throw", HOME, 9500, 3800, 1),
    ("HM-CANISTER", "Airtight Coffee Canister", HOME, 3400, 1200, 2),
    ("HM-TOWELS", "Linen Tea Towels x2", HOME, 2400, 800, 2),
    ("AC-TOTE", "Market Tote", ACCESSORIES, 2900, 900, 3),
    ("AC-BOTTLE", "Insulated Bottle", ACCESSORIES, 3500, 1300, 3),
    ("AC-FILTERS", "Paper Filters x100", ACCESSORIES, 800, 250, 4),
    ("AC-SCOOP", "Brass Coffee Scoop", ACCESSORIES, 1900, 600, 2),
    ("AC-KEYRING", "Leather Keyring", ACCESSORIES, 1500, 450, 1),
    ("GF-BOX-S", "Coffee Tasting Gift Box", GIFTS, 4900, 2000, 4),
    ("GF-HAMPER", "Deluxe Gift Hamper", GIFTS, 12000, 5200, 1),
    ("GF-SKINSET", "Skincare Discovery Set", GIFTS, 5500, 1900, 3),
    ("GF-ADVENT", "Advent Calendar", GIFTS, 7500, 3000, 2),
    ("EQ-GRINDER", "Burr Coffee Grinder", EQUIPMENT, 18900, 8200, 3),
    ("EQ-KETTLE", "Gooseneck Kettle", EQUIPMENT, 7900, 3100, 3),
    ("EQ-POUROVER", "Pour-Over Set", EQUIPMENT, 4500, 1600, 4),
    ("EQ-ESPRESSO", "Home Espresso Machine", EQUIPMENT, 54900, 26000, 1),
    ("EQ-SCALE", "Brew Scale", EQUIPMENT, 5500, 2100, 2),
]
SKU = np.array([c[0] for c in CATALOGUE])
SKU_NAME = np.array([c[1] for c in CATALOGUE])
SKU_CAT = np.array([c[2] for c in CATALOGUE], dtype=np.int64)
SKU_PRICE = np.array([c[3] for c in CATALOGUE], dtype=np.int64)
SKU_COST = np.array([c[4] for c in CATALOGUE], dtype=np.int64)
SKU_POP = np.array([c[5] for c in CATALOGUE], dtype=np.float64)
CAT_FIRST = np.array([np.flatnonzero(c == SKU_CAT)[0] for c in range(len(CATEGORIES))])
CAT_SIZE = np.bincount(SKU_CAT, minlength=len(CATEGORIES))

# --------------------------------------------------------------------------------------------
# Customer archetypes
# --------------------------------------------------------------------------------------------
NEVER, ONCE, COFFEE_FAN, SKIN_FAN, PET_FAN, OCCASIONAL, LOYAL, HUNTER, WHOLESALE = range(9)
ARCH_SHARE = np.array([0.05, 0.305, 0.235, 0.105, 0.08, 0.125, 0.05, 0.045, 0.005])
# replenishment-cycle buyers (orders every personal cycle) vs Poisson shoppers
CYCLE_ARCH = (COFFEE_FAN, SKIN_FAN, PET_FAN, LOYAL, WHOLESALE)
# mean customer lifetime in days (exponential churn) per archetype
LIFETIME = np.array([0, 0, 1100, 1100, 1100, 750, 900, 600, 900], dtype=np.float64)
# probability that an order of a customer with a replenishable category contains it
P_REP = np.array([0, 1.0, 0.96, 0.96, 0.96, 0.4, 0.7, 0.6, 1.0])
# probability of an add-on line next to the replenishable line; extra lines on top (Poisson)
P_ADDON = np.array([0, 0.5, 0.1, 0.1, 0.1, 0.3, 0.25, 0.2, 0.15])
EXTRA_LINES = np.array([0, 0.3, 0.02, 0.02, 0.02, 0.08, 0.08, 0.06, 0.05])
# probability of a second SKU of the same replenishable category (a second blend, a toner)
P_SAME = np.array([0, 0.25, 0.55, 0.65, 0.5, 0.2, 0.55, 0.25, 0.6])
# weights over the non-replenishable categories (apparel, home, accessories, gifts, equipment)
OTHER_WEIGHTS = np.array(
    [
        [0.2, 0.2, 0.2, 0.2, 0.2],
        [0.32, 0.22, 0.2, 0.1, 0.16],
        [0.12, 0.29, 0.31, 0.02, 0.26],
        [0.33, 0.29, 0.29, 0.03, 0.06],
        [0.28, 0.33, 0.33, 0.02, 0.04],
        [0.29, 0.28, 0.25, 0.03, 0.15],
        [0.25, 0.23, 0.18, 0.02, 0.32],
        [0.34, 0.29, 0.25, 0.02, 0.1],
        [0.05, 0.32, 0.32, 0.01, 0.3],
    ]
)
# mean extra units per line (quantity = 1 + Poisson)
QTY_EXTRA = np.array([0, 0.1, 0.2, 0.15, 0.15, 0.12, 0.3, 0.12, 9.0])
# base probability that an order carries a discount code
DISC_BASE = np.array([0, 0.2, 0.11, 0.11, 0.11, 0.16, 0.07, 0.9, 0.05])

# Discount codes: (code, merchandise discount)
CODES = [
    ("WELCOME10", 0.10),
    ("NEWYEAR15", 0.15),
    ("SPRING20", 0.20),
    ("SUMMER15", 0.15),
    ("FALL10", 0.10),
    ("BFCM25", 0.25),
    ("HOLIDAY20", 0.20),
    ("VIP15", 0.15),
    ("FREESHIP", 0.0),
    ("PODCAST15", 0.15),
    ("SUBSAVE15", 0.15),
    ("STAFF40", 0.40),
    ("TEST100", 1.00),
]
CODE_IX = {c: i for i, (c, _) in enumerate(CODES)}
CODE_PCT = np.array([p for _, p in CODES])

FIRST_NAMES = [
    "Avery", "Blake", "Casey", "Dana", "Elliot", "Frankie", "Gray", "Harper", "Indigo",
    "Jamie", "Kai", "Logan", "Morgan", "Noel", "Oakley", "Parker", "Quinn", "Reese", "Rowan",
    "Sage", "Taylor", "Umber", "Val", "Winter", "Alex", "Bailey", "Cameron", "Drew", "Emerson",
    "Finley", "Hayden", "Jordan", "Kendall", "Lane", "Marley", "Nico", "Peyton", "Riley",
    "Skyler", "Tatum", "Ari", "Bellamy", "Corin", "Darcy", "Ember", "Haven", "Jules", "Lennox",
    "Mika", "Remy", "Shay", "Toby",
]
LAST_NAMES = [
    "Abbott", "Barlow", "Calder", "Dunmore", "Ellery", "Farrow", "Garland", "Hadley", "Ingram",
    "Jessop", "Kestrel", "Lindqvist", "Marlowe", "Northcott", "Oakes", "Pembrook", "Quarry",
    "Radley", "Sterling", "Thackeray", "Underhill", "Vance", "Whitlock", "Yardley", "Ashdown",
    "Brightwater", "Coldwell", "Draycott", "Elmstead", "Fenwick", "Greaves", "Holloway",
    "Ivers", "Kingsley", "Larkspur", "Merriweather", "Nettleton", "Ormsby", "Pickering",
    "Redfern", "Selwood", "Trevelyan", "Upton", "Westbrook", "Ambrose", "Blackwood", "Crane",
    "Delacroix", "Fairweather", "Goodwin",
]
US_AREA = [
    415, 212, 312, 617, 206, 503, 512, 303, 404, 602, 619, 702, 718, 737, 773, 786, 801, 808,
    813, 818, 860, 917, 949, 971, 978, 201, 215, 224, 248, 267, 281, 305, 310, 323, 347, 408,
    425, 469, 510, 571, 614, 646, 650, 678, 704, 713, 720, 805, 832, 858,
]
CA_AREA = [416, 604, 514, 403, 613, 780, 902, 204, 306, 519]
EMAIL_CONSENT = ["subscribed", "unsubscribed", "never_subscribed", "pending", "invalid"]
SMS_CONSENT = ["subscribed", "unsubscribed", "never_subscribed", "pending"]
TOPICS_ORDER = ["damaged item", "wrong item", "refund request", "order cancellation"]
TOPICS_OTHER = ["shipping delay", "product question", "account access", "billing question",
                "subscription change", "address change"]
SEVERITY = ["low", "normal", "high", "urgent"]
TAG_NAMES = ["newsletter", "wholesale", "vip", "subscriber", "loyalty", "test", "staff"]
OFFSETS = ["+00:00", "-05:00", "-06:00", "-07:00", "-08:00", "+01:00", "-04:00"]
OFFSET_MIN = np.array([0, -300, -360, -420, -480, 60, -240])


def log(msg: str, t0: float) -> None:
    print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Small vectorised helpers
# --------------------------------------------------------------------------------------------
def group_starts(counts: np.ndarray) -> np.ndarray:
    """Start offset of each group in a flat array laid out group after group."""
    starts = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    return starts


def position_in_group(counts: np.ndarray) -> np.ndarray:
    """0, 1, ..., n-1 for every group of a flat array laid out group after group."""
    total = int(counts.sum())
    return np.arange(total, dtype=np.int64) - np.repeat(group_starts(counts), counts)


def pick(rng: np.random.Generator, n: int, weights: list[float] | np.ndarray) -> np.ndarray:
    """n draws of an index with the given (unnormalised) weights."""
    cw = np.cumsum(np.asarray(weights, dtype=np.float64))
    return np.searchsorted(cw / cw[-1], rng.random(n), side="right").astype(np.int64)


def pick_sku(rng: np.random.Generator, cats: np.ndarray) -> np.ndarray:
    """One SKU per row, within the row's category, weighted by popularity."""
    out = np.empty(len(cats), dtype=np.int64)
    u = rng.random(len(cats))
    for c in range(len(CATEGORIES)):  # loop over 8 categories, not over rows
        m = cats == c
        lo = CAT_FIRST[c]
        w = np.cumsum(SKU_POP[lo : lo + CAT_SIZE[c]])
        out[m] = lo + np.searchsorted(w / w[-1], u[m], side="right")
    return out


def ids(prefix: str, n: int, width: int) -> pa.Array:
    num = pc.cast(pa.array(np.arange(1, n + 1, dtype=np.int64)), pa.string())
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(num, width, "0"), "")


def id_width(n: int, minimum: int) -> int:
    return max(minimum, len(str(n)))


def take_str(values: list[str] | np.ndarray, index: np.ndarray) -> pa.Array:
    return pc.take(pa.array(list(values), pa.string()), pa.array(index))


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------
class Store:
    """All generated columns as numpy arrays (times in seconds since the epoch, money in cents)."""

    def __init__(
        self, n_customers: int, seed: int, end: date, t0: float, subscription_share: float = 0.025
    ) -> None:
        self.n = n_customers
        self.subscription_share = subscription_share
        self.rng = np.random.default_rng(seed)
        self.t0 = t0
        end_s = int(datetime(end.year, end.month, end.day, tzinfo=UTC).timestamp()) + DAY_S
        self.origin_s = end_s - HISTORY_DAYS * DAY_S  # history starts here (day 0)
        self.end_day = float(HISTORY_DAYS)

    # -- calendar helpers ---------------------------------------------------------------------
    def month_day(self, days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = (np.floor(days).astype(np.int64) * DAY_S + self.origin_s).astype("datetime64[s]")
        d = d.astype("datetime64[D]")
        month = (d.astype("datetime64[M]") - d.astype("datetime64[Y]")).astype(np.int64) + 1
        mday = (d - d.astype("datetime64[M]")).astype(np.int64) + 1
        return month, mday

    def holiday_windows(self) -> list[tuple[float, float]]:
        """(start, end) in history days of each Nov 20 - Dec 20 gift season."""
        first_year = datetime.fromtimestamp(self.origin_s, UTC).year
        out = []
        for year in range(first_year - 1, first_year + 4):  # a handful of seasons, not rows
            lo = (datetime(year, 11, 20, tzinfo=UTC).timestamp() - self.origin_s) / DAY_S
            hi = (datetime(year, 12, 21, tzinfo=UTC).timestamp() - self.origin_s) / DAY_S
            lo, hi = max(lo, 0.0), min(hi, self.end_day)
            if hi - lo > 2:
                out.append((lo, hi))
        return out

    # -- customers ----------------------------------------------------------------------------
    def make_customers(self) -> None:
        rng, n = self.rng, self.n
        arch = pick(rng, n, ARCH_SHARE)
        self.arch = arch

        # replenishable category (-1: none)
        rep = np.full(n, -1, dtype=np.int64)
        rep[arch == COFFEE_FAN] = COFFEE
        rep[arch == SKIN_FAN] = SKINCARE
        rep[arch == PET_FAN] = PETFOOD
        rep[arch == WHOLESALE] = COFFEE
        mix = pick(rng, n, [0.6, 0.25, 0.15])
        u = rng.random(n)
        dabble = ((arch == ONCE) & (u < 0.35)) | ((arch == OCCASIONAL) & (u < 0.3))
        dabble |= ((arch == HUNTER) & (u < 0.3)) | (arch == LOYAL)
        rep[dabble] = mix[dabble]
        self.rep = rep
        self.fav = pick_sku(rng, np.maximum(rep, 0))  # favourite SKU in that category

        # personal rhythm
        cyc = REPLENISH_CYCLE[np.maximum(rep, 0)] * np.exp(rng.normal(0, 0.08, n))
        cyc[arch == WHOLESALE] *= 0.7
        self.cycle = cyc
        gap = np.exp(rng.normal(np.log(np.where(arch == HUNTER, 85.0, 120.0)), 0.3))
        self.poisson_gap = gap

        # first order: growing store (density rises 1.3x over the two years), gift-season bump
        u = rng.random(n)
        g = 0.3
        first = HISTORY_DAYS * (np.sqrt(1 + g * (2 + g) * u) - 1) / g
        seasons = self.holiday_windows()
        gifty = (arch == ONCE) & (rng.random(n) < 0.18)
        which = rng.integers(0, len(seasons), n)
        lo = np.array([s[0] for s in seasons])[which]
        hi = np.array([s[1] for s in seasons])[which]
        first = np.where(gifty, lo + (hi - lo) * rng.random(n), first)
        self.first = np.minimum(first, self.end_day - 1e-3)
        self.gift_first = gifty

        life = rng.exponential(1.0, n) * LIFETIME[arch]
        self.stop = np.minimum(self.first + life, self.end_day)

        # discount appetite; a share of every kind is discount-dependent
        dep = arch == HUNTER
        u = rng.random(n)
        dep |= (arch == LOYAL) & (u < 0.16)
        dep |= np.isin(arch, (COFFEE_FAN, SKIN_FAN, PET_FAN)) & (u < 0.05)
        dep |= (arch == OCCASIONAL) & (u < 0.08)
        self.dependent = dep
        self.disc_prop = np.where(dep, rng.uniform(0.82, 0.97, n), DISC_BASE[arch])

        # who they are
        country = pick(rng, n, [0.88, 0.07, 0.05])  # US, CA, GB
        self.country = country
        tz = np.zeros(n, dtype=np.int64)
        tz_us = 1 + pick(rng, n, [0.45, 0.25, 0.1, 0.2])  # -05, -06, -07, -08
        tz = np.where(country == 0, tz_us, tz)
        tz = np.where(country == 1, np.where(rng.random(n) < 0.6, 6, 4), tz)  # -04 / -08
        tz = np.where(country == 2, np.where(rng.random(n) < 0.5, 0, 5), tz)  # +00 / +01
        self.tz = tz
        self.local_share = np.where(rng.random(n) < 0.3, 0.85, 0.0)  # 30% of customers: local
        self.channel = pick(rng, n, [0.75, 0.1, 0.15])  # web, pos, app

        # special people: staff, test accounts, subscribers
        n_special = max(10, round(n * 0.002))
        pool = np.flatnonzero(np.isin(arch, (ONCE, OCCASIONAL)))
        special = rng.choice(pool, n_special, replace=False)
        self.staff = np.zeros(n, dtype=bool)
        self.test = np.zeros(n, dtype=bool)
        self.staff[special[: n_special // 2]] = True
        self.test[special[n_special // 2 :]] = True
        self.dependent &= ~(self.staff | self.test)

        self.make_subscribers()

    def make_subscribers(self) -> None:
        rng, n = self.rng, self.n
        arch = self.arch
        eligible = np.isin(arch, (COFFEE_FAN, SKIN_FAN)) & (self.first < HISTORY_DAYS - 200)
        share = self.subscription_share * n / max(1, int(eligible.sum()))
        sub = eligible & (rng.random(n) < share)
        self.sub = sub
        idx = np.flatnonzero(sub)
        k = len(idx)
        self.sub_idx = idx
        cat = self.rep[idx]
        interval = np.where(
            cat == COFFEE,
            np.array([28, 30, 30, 30, 42])[rng.integers(0, 5, k)],
            np.array([56, 60, 60, 90])[rng.integers(0, 4, k)],
        ).astype(np.float64)
        self.sub_interval = interval
        self.sub_k = pick(rng, k, [0.3, 0.4, 0.3])  # subscription starts at their 1st/2nd/3rd order
        status = pick(rng, k, [0.6, 0.2, 0.2])  # active, paused, cancelled
        self.sub_status = status
        self.cycle[idx] = np.minimum(self.cycle[idx], interval)
        # active subscribers stay; paused/cancelled ones stopped, many of them long ago
        lapsed = (status > 0) & (rng.random(k) < 0.65)
        stop = np.where(
            status == 0,
            self.end_day,
            np.where(lapsed, self.end_day - rng.uniform(100, 420, k),
                     self.end_day - rng.uniform(5, 95, k)),
        )
        need = (self.sub_k + 4) * interval
        first = np.where(
            status == 0,
            self.first[idx],
            rng.random(k) * np.maximum(stop - need, 1.0),
        )
        self.first[idx] = first
        self.stop[idx] = np.maximum(stop, first + 1)
        self.sub_cancel_u = rng.random(k)
        # a few subscribers live on codes
        dep = rng.random(k) < 0.1
        self.dependent[idx[dep]] = True
        self.disc_prop[idx[dep]] = 0.9

    # -- orders -------------------------------------------------------------------------------
    def make_orders(self) -> None:
        rng = self.rng
        arch, first, stop = self.arch, self.first, self.stop
        parts_c, parts_t, parts_sub, parts_kind = [], [], [], []

        # one-timers: a single order
        once = np.flatnonzero(arch == ONCE)
        parts_c.append(once)
        parts_t.append(first[once])
        parts_sub.append(np.zeros(len(once), dtype=bool))
        parts_kind.append(np.where(self.gift_first[once] & (rng.random(len(once)) < 0.6), 1, 0))

        # cycle buyers: gaps of about their personal cycle, sometimes a skipped cycle
        cyc_c = np.flatnonzero(np.isin(arch, CYCLE_ARCH))
        span = stop[cyc_c] - first[cyc_c]
        c = self.cycle[cyc_c]
        nmax = (np.ceil(span / (0.55 * c)) + 1).astype(np.int64)
        cust = np.repeat(cyc_c, nmax)
        pos = position_in_group(nmax)
        cc = np.repeat(c, nmax)
        gap = cc * np.exp(rng.normal(0.0, 0.12, len(cust)))
        gap = np.maximum(gap, 0.55 * cc)
        skip = rng.random(len(cust)) < 0.07
        gap[skip] += cc[skip] * rng.uniform(0.6, 1.2, int(skip.sum()))
        # subscription orders: exactly every interval from the k-th order on
        is_sub = np.zeros(len(cust), dtype=bool)
        if len(self.sub_idx):
            sub_pos = np.full(self.n, 10**9, dtype=np.int64)
            sub_pos[self.sub_idx] = self.sub_k
            sub_int = np.zeros(self.n)
            sub_int[self.sub_idx] = self.sub_interval
            is_sub = pos >= sub_pos[cust]
            gap = np.where(is_sub & (pos > sub_pos[cust]),
                           sub_int[cust] + rng.normal(0, 0.05, len(cust)), gap)
        gap[pos == 0] = 0.0
        cs = np.cumsum(gap)
        t = first[cust] + cs - np.repeat(cs[group_starts(nmax)], nmax)
        keep = t < stop[cust]
        parts_c.append(cust[keep])
        parts_t.append(t[keep])
        parts_sub.append(is_sub[keep])
        parts_kind.append(np.zeros(int(keep.sum()), dtype=np.int64))
        del cust, pos, cc, gap, skip, is_sub, cs, t, keep

        # Poisson shoppers: first order, then a Poisson number spread over their lifetime
        poi = np.flatnonzero(np.isin(arch, (OCCASIONAL, HUNTER)))
        span = stop[poi] - first[poi]
        cnt = 1 + rng.poisson(span / self.poisson_gap[poi])
        e = rng.exponential(1.0, int(cnt.sum()))
        cs = np.cumsum(e)
        starts = group_starts(cnt)
        base = np.repeat(cs[starts] - e[starts], cnt)
        total = np.repeat(cs[starts + cnt - 1] - cs[starts] + e[starts], cnt)
        frac = (cs - e - base) / total
        cust = np.repeat(poi, cnt)
        parts_c.append(cust)
        parts_t.append(first[cust] + frac * np.repeat(span, cnt))
        parts_sub.append(np.zeros(len(cust), dtype=bool))
        parts_kind.append(np.zeros(len(cust), dtype=np.int64))

        # gift-season extra orders from people who are around at the time
        for lo, hi in self.holiday_windows():  # a handful of seasons
            around = (first < lo) & (stop > lo - 20) & np.isin(arch, (*CYCLE_ARCH, OCCASIONAL))
            pick_c = np.flatnonzero(around & (rng.random(self.n) < 0.1))
            parts_c.append(pick_c)
            parts_t.append(rng.uniform(lo, hi, len(pick_c)))
            parts_sub.append(np.zeros(len(pick_c), dtype=bool))
            parts_kind.append(np.ones(len(pick_c), dtype=np.int64))

        # active subscribers who also bought the same category as a one-off recently
        active_sub = self.sub_idx[self.sub_status == 0]
        extra = active_sub[rng.random(len(active_sub)) < 0.4]
        parts_c.append(extra)
        parts_t.append(self.end_day - rng.uniform(1, 45, len(extra)))
        parts_sub.append(np.zeros(len(extra), dtype=bool))
        parts_kind.append(np.full(len(extra), 2, dtype=np.int64))

        cust = np.concatenate(parts_c)
        t = np.concatenate(parts_t)
        sub = np.concatenate(parts_sub)
        kind = np.concatenate(parts_kind)
        del parts_c, parts_t, parts_sub, parts_kind

        # time of day: a daytime/evening profile; subscription charges run at 08:00 UTC-ish
        hours = np.array([1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 4, 4.5, 5, 5.5, 5, 4.5, 4.5,
                          5, 5.5, 6, 6.5, 6.5, 5.5, 4, 2])
        tod = (pick(rng, len(t), hours) + rng.random(len(t))) / 24.0
        tod = np.where(sub, (8 + rng.random(len(t)) * 0.5) / 24.0, tod)
        t = np.floor(t) + tod
        t = np.minimum(t, self.end_day - 1.0 / DAY_S)

        # chronological order ids
        order = np.lexsort((cust, t))
        self.o_cust = cust[order]
        self.o_t = t[order]
        self.o_sub = sub[order]
        self.o_kind = kind[order]
        n_o = len(order)
        # first order of each customer
        by_c = np.lexsort((self.o_t, self.o_cust))
        is_first = np.zeros(n_o, dtype=bool)
        cs_sorted = self.o_cust[by_c]
        is_first[by_c[np.r_[True, cs_sorted[1:] != cs_sorted[:-1]]]] = True
        self.o_first = is_first
        self.o_tz = np.where(rng.random(n_o) < self.local_share[self.o_cust],
                             self.tz[self.o_cust], 0)
        self.o_channel = np.where(rng.random(n_o) < 0.88, self.channel[self.o_cust],
                                  pick(rng, n_o, [0.75, 0.1, 0.15]))
        log(f"orders placed: {n_o:,}", self.t0)

    # -- discounts ----------------------------------------------------------------------------
    def make_discounts(self) -> None:
        rng = self.rng
        c, n_o = self.o_cust, len(self.o_cust)
        month, mday = self.month_day(self.o_t)
        season = np.select(
            [
                month <= 2,
                month <= 5,
                month <= 8,
                (month <= 10) | ((month == 11) & (mday < 20)),
                (month == 11) | ((month == 12) & (mday <= 2)),
            ],
            [CODE_IX["NEWYEAR15"], CODE_IX["SPRING20"], CODE_IX["SUMMER15"], CODE_IX["FALL10"],
             CODE_IX["BFCM25"]],
            CODE_IX["HOLIDAY20"],
        )
        u = rng.random(n_o)
        code = np.where(u < 0.12, CODE_IX["PODCAST15"], season)
        code = np.where(u > 0.95, CODE_IX["FREESHIP"], code)
        vip = (self.arch[c] == LOYAL) & (rng.random(n_o) < 0.3)
        code = np.where(vip, CODE_IX["VIP15"], code)
        p = self.disc_prop[c].copy()
        p = np.where(self.o_sub & ~self.dependent[c], 0.0, p)  # subscriptions charge full price
        p = np.where(season == CODE_IX["BFCM25"], np.minimum(1.0, p * 2.2), p)
        has = rng.random(n_o) < p
        welcome = self.o_first & ~has & (rng.random(n_o) < 0.22)
        code = np.where(welcome, CODE_IX["WELCOME10"], code)
        has |= welcome
        code = np.where(self.o_sub & has, CODE_IX["SUBSAVE15"], code)
        code = np.where(self.staff[c], CODE_IX["STAFF40"], code)
        code = np.where(self.test[c], CODE_IX["TEST100"], code)
        has |= self.staff[c] | self.test[c]
        self.o_code = np.where(has, code, -1)

    # -- lines --------------------------------------------------------------------------------
    def make_lines(self) -> None:
        rng = self.rng
        c, n_o = self.o_cust, len(self.o_cust)
        arch = self.arch[c]
        rep = self.rep[c]
        kind = self.o_kind
        has_rep = (rep >= 0) & ((rng.random(n_o) < P_REP[arch]) | self.o_sub | (kind == 2))
        has_rep &= kind != 1
        has_same = has_rep & (rng.random(n_o) < P_SAME[arch])
        n_other = np.where(has_rep, rng.random(n_o) < P_ADDON[arch], 1).astype(np.int64)
        n_other += np.minimum(rng.poisson(EXTRA_LINES[arch]), 3)
        n_lines = has_rep.astype(np.int64) + has_same + n_other
        self.o_nlines = n_lines
        l_order = np.repeat(np.arange(n_o, dtype=np.int64), n_lines)
        l_pos = position_in_group(n_lines)
        n_l = len(l_order)
        l_c = c[l_order]
        l_arch = arch[l_order]
        is_rep = has_rep[l_order] & (l_pos == 0)
        is_same = has_same[l_order] & (l_pos == 1)

        # replenishable line: mostly the favourite SKU; subscriptions always
        keep_fav = (rng.random(n_l) < 0.8) | self.o_sub[l_order]
        keep_fav &= kind[l_order] != 2
        rep_c = np.maximum(self.rep[l_c], 0)
        rep_sku = np.where(keep_fav, self.fav[l_c], pick_sku(rng, rep_c))
        # the second SKU of the category: any other one
        off = 1 + (rng.random(n_l) * (CAT_SIZE[rep_c] - 1)).astype(np.int64)
        prev = np.r_[0, rep_sku[:-1]]
        same_sku = CAT_FIRST[rep_c] + (prev - CAT_FIRST[rep_c] + off) % CAT_SIZE[rep_c]
        # other lines: category by archetype (loop over 9 archetypes), gifts in gift orders
        other_cat = self.other_category(l_arch)
        gift_line = (kind[l_order] == 1) & (l_pos == 0)
        other_cat[gift_line] = GIFTS
        other_cat = self.vary_categories(l_c, l_arch, is_rep | is_same, gift_line, other_cat)
        sku = np.where(is_rep, rep_sku, np.where(is_same, same_sku, pick_sku(rng, other_cat)))
        # no SKU twice in a row within an order
        same = np.r_[False, (sku[1:] == sku[:-1]) & (l_order[1:] == l_order[:-1])]
        cat = SKU_CAT[sku]
        sku = np.where(same, CAT_FIRST[cat] + (sku - CAT_FIRST[cat] + 1) % CAT_SIZE[cat], sku)

        qty = 1 + rng.poisson(QTY_EXTRA[l_arch] + np.where(is_rep, 0.2, 0.0))
        qty = np.where((SKU_CAT[sku] == EQUIPMENT) & (l_arch != WHOLESALE), 1, qty)
        qty = np.minimum(qty, 40)
        price = SKU_PRICE[sku]
        gross = qty * price
        code = self.o_code[l_order]
        pct = np.where(code >= 0, CODE_PCT[np.maximum(code, 0)], 0.0)
        disc = np.rint(gross * pct).astype(np.int64)
        cost = qty * SKU_COST[sku]

        starts = group_starts(n_lines)
        self.l_order, self.l_sku, self.l_qty = l_order, sku, qty
        self.l_price, self.l_disc, self.l_cost = price, disc, cost
        self.o_revenue = np.add.reduceat(gross - disc, starts)
        self.o_discount = np.add.reduceat(disc, starts)
        self.o_cost = np.add.reduceat(cost, starts)
        self.o_first_line_net = (gross - disc)[starts]
        log(f"order lines: {n_l:,}", self.t0)

    def other_category(self, arch: np.ndarray) -> np.ndarray:
        """A non-replenishable category per row, by the row's archetype."""
        out = np.empty(len(arch), dtype=np.int64)
        u = self.rng.random(len(arch))
        for a in range(len(ARCH_SHARE)):  # loop over 9 archetypes
            m = arch == a
            w = np.cumsum(OTHER_WEIGHTS[a])
            out[m] = APPAREL + np.searchsorted(w / w[-1], u[m], side="right")
        return out

    def vary_categories(self, l_c: np.ndarray, l_arch: np.ndarray, rep_line: np.ndarray,
                        fixed: np.ndarray, cat: np.ndarray) -> np.ndarray:
        """People rarely rebuy a hoodie next month: a non-replenishable category is redrawn
        when it repeats one of the customer's three previous non-replenishable lines."""
        idx = np.flatnonzero(~rep_line)
        idx = idx[np.argsort(l_c[idx], kind="stable")]  # by customer, then chronological
        cs, cats, fix, arch = l_c[idx], cat[idx].copy(), fixed[idx], l_arch[idx]
        same1 = np.r_[False, cs[1:] == cs[:-1]]
        same2 = np.r_[False, False, cs[2:] == cs[:-2]]
        same3 = np.r_[False, False, False, cs[3:] == cs[:-3]]
        for _ in range(5):  # a few vectorised passes
            prev1 = np.r_[-1, cats[:-1]]
            prev2 = np.r_[-1, -1, cats[:-2]]
            prev3 = np.r_[-1, -1, -1, cats[:-3]]
            clash = (same1 & (cats == prev1)) | (same2 & (cats == prev2))
            clash = ~fix & (clash | (same3 & (cats == prev3)))
            w = OTHER_WEIGHTS[arch[clash]]
            for prev in (prev1, prev2, prev3):  # never one of the last three
                w[np.arange(len(w)), np.maximum(prev[clash] - APPAREL, 0)] *= prev[clash] < 0
            cw = np.cumsum(w, axis=1)
            u = self.rng.random(len(w)) * cw[:, -1]
            cats[clash] = APPAREL + np.minimum((cw <= u[:, None]).sum(axis=1), 4)
        # people who shop the gift season buy their gifts then
        gifter = np.zeros(self.n, dtype=bool)
        gifter[cs[fix]] = True
        stray = ~fix & (cats == GIFTS) & gifter[cs]
        cats[stray] = APPAREL + self.rng.integers(0, 3, int(stray.sum()))
        out = cat.copy()
        out[idx] = cats
        return out

    # -- refunds, cancellations, missing cost -------------------------------------------------
    def make_refunds(self) -> None:
        rng = self.rng
        n_o = len(self.o_cust)
        rev = self.o_revenue
        cancelled = rng.random(n_o) < 0.02
        cancelled &= ~self.o_sub
        refund = ~cancelled & (rng.random(n_o) < 0.026) & (rev > 0)
        full = refund & (rng.random(n_o) < 0.4)
        partial = np.where(self.o_nlines > 1, self.o_first_line_net,
                           np.rint(rev * rng.choice([0.2, 0.25, 0.5], n_o)).astype(np.int64))
        refunded = np.where(full, rev, np.where(refund, np.minimum(partial, rev), 0))
        # paid-then-cancelled orders are refunded in full; a few were never paid
        refunded = np.where(cancelled & (rng.random(n_o) < 0.85), rev, refunded)
        # a couple of customers got every order refunded
        counts = np.bincount(self.o_cust, minlength=self.n)
        cand = np.flatnonzero((self.arch == OCCASIONAL) & (counts >= 2) & (counts <= 4))
        always = rng.choice(cand, min(len(cand), max(2, self.n // 2500)), replace=False)
        self.always_refunded = always
        allr = np.isin(self.o_cust, always)
        refunded = np.where(allr, rev, refunded)
        cancelled &= ~allr
        self.o_refunded = refunded
        self.o_cancelled = cancelled
        delay = rng.uniform(0.02, 2.0, n_o)
        self.o_cancel_t = np.minimum(self.o_t + delay, self.o_t.max())
        self.o_cost_missing = rng.random(n_o) < 0.022

    # -- support tickets ----------------------------------------------------------------------
    def make_tickets(self) -> None:
        rng = self.rng
        n_o = len(self.o_cust)
        last_t = self.o_t.max()
        # tickets about refunded or cancelled orders
        trouble = np.flatnonzero((self.o_refunded > 0) & (rng.random(n_o) < 0.16))
        # general questions, from random orders
        general = np.flatnonzero(rng.random(n_o) < 0.0042)
        c1 = self.o_cust[trouble]
        c2 = self.o_cust[general]
        t1 = self.o_t[trouble] + rng.uniform(0.5, 10, len(trouble))
        t2 = self.o_t[general] + rng.uniform(0.2, 40, len(general))
        top1 = rng.integers(0, len(TOPICS_ORDER), len(trouble))
        top2 = len(TOPICS_ORDER) + rng.integers(0, len(TOPICS_OTHER), len(general))
        # recently active big spenders who wrote in lately (service priority material)
        counts = np.bincount(self.o_cust, minlength=self.n)
        last = np.full(self.n, -1.0)
        np.maximum.at(last, self.o_cust, self.o_t)
        vipish = np.flatnonzero((self.arch == LOYAL) & (last > last_t - 60) & (counts >= 4))
        vipish = vipish[rng.random(len(vipish)) < 0.2]
        t3 = last_t - rng.uniform(0.1, 28, len(vipish))
        top3 = np.where(rng.random(len(vipish)) < 0.5, 0, len(TOPICS_ORDER))
        # regulars who left soon after a bad experience
        gone = np.isin(self.arch, CYCLE_ARCH) & (last < last_t - 90) & (counts >= 3)
        gone = np.flatnonzero(gone & (rng.random(self.n) < 0.12))
        t4 = last[gone] + rng.uniform(0.5, 12, len(gone))
        top4 = rng.integers(0, 3, len(gone))  # damaged, wrong item, refund request
        # only subscribers ask to change a subscription
        sub_change = len(TOPICS_ORDER) + TOPICS_OTHER.index("subscription change")
        top2 = np.where((top2 == sub_change) & ~self.sub[c2], len(TOPICS_ORDER) + 1, top2)
        cust = np.concatenate([c1, c2, vipish, gone])
        opened = np.concatenate([t1, t2, t3, t4])
        topic = np.concatenate([top1, top2, top3, top4])
        sev = np.concatenate([
            pick(rng, len(c1) + len(c2), [0.3, 0.5, 0.15, 0.05]),
            pick(rng, len(vipish), [0.1, 0.4, 0.35, 0.15]),
            pick(rng, len(gone), [0.0, 0.5, 0.4, 0.1]),
        ])
        seen = opened < last_t  # nothing after the last order in the data
        cust, opened, topic, sev = cust[seen], opened[seen], topic[seen], sev[seen]
        n_t = len(cust)
        recent = opened > last_t - 30
        status = np.where(recent, pick(rng, n_t, [0.45, 0.35, 0.2]), pick(rng, n_t, [0.96, 0.025,
                                                                                      0.015]))
        status = np.where(recent & (sev >= 2), pick(rng, n_t, [0.3, 0.45, 0.25]), status)
        closed = opened + rng.lognormal(np.log(1.2), 0.9, n_t)
        status = np.where((status == 0) & (closed > last_t), 2, status)  # still pending
        csat_p = np.array([[0.03, 0.05, 0.12, 0.3, 0.5], [0.2, 0.2, 0.25, 0.2, 0.15]])
        csat = pick(rng, n_t, csat_p[0])
        csat_bad = pick(rng, n_t, csat_p[1])
        csat = np.where(sev >= 2, csat_bad, csat) + 1
        has_csat = (status == 0) & (rng.random(n_t) < 0.55)
        order = np.lexsort((cust, opened))
        self.t_cust = cust[order]
        self.t_opened = opened[order]
        self.t_closed = closed[order]
        self.t_status = status[order]  # 0 closed, 1 open, 2 pending
        self.t_topic = topic[order]
        self.t_sev = sev[order]
        self.t_csat = np.where(has_csat, csat, 0)[order]
        log(f"support tickets: {n_t:,}", self.t0)

    # -- customers' identity ------------------------------------------------------------------
    def make_identity(self) -> None:
        rng, n = self.rng, self.n
        counts = np.bincount(self.o_cust, minlength=n)
        first_order = np.full(n, np.inf)
        np.minimum.at(first_order, self.o_cust, self.o_t)
        self.n_orders = counts
        signup = np.where(
            rng.random(n) < 0.35,
            first_order - rng.uniform(0.5, 60, n),
            first_order - rng.uniform(60, 1800, n) / DAY_S,
        )
        self.created = np.where(counts > 0, signup, rng.uniform(0, self.end_day - 0.01, n))
        self.fn = rng.integers(0, len(FIRST_NAMES), n)
        self.ln = rng.integers(0, len(LAST_NAMES), n)
        self.email_consent = pick(rng, n, [0.6, 0.14, 0.19, 0.04, 0.03])
        self.email_consent = np.where(rng.random(n) < 0.02, -1, self.email_consent)  # blank
        self.consent_upper = rng.random(n) < 0.5
        self.suppressed = (rng.random(n) < 0.012) | ((self.email_consent == 4) & (rng.random(n)
                                                                                   < 0.3))
        # phone numbers from fictional ranges, unique per person
        has_phone = rng.random(n) < 0.55
        self.sms = np.where(has_phone, pick(rng, n, [0.45, 0.1, 0.42, 0.03]), 2)
        self.has_phone = has_phone
        self.phone_fmt = rng.integers(0, 4, n)

        # duplicate pairs: the same person under two customer ids, each with orders
        n_pairs = max(15, round(n * 0.003))
        pool = np.flatnonzero(
            np.isin(self.arch, (ONCE, OCCASIONAL, COFFEE_FAN, SKIN_FAN)) & (counts > 0)
            & ~self.staff & ~self.test
        )
        chosen = rng.choice(pool, 2 * n_pairs, replace=False)
        self.dup_a, self.dup_b = chosen[:n_pairs], chosen[n_pairs:]
        self.dup_type = np.arange(n_pairs) % 4
        self.fn[self.dup_b] = self.fn[self.dup_a]
        self.ln[self.dup_b] = self.ln[self.dup_a]
        self.country[self.dup_b] = self.country[self.dup_a]
        phone_pair = self.dup_type == 3
        for side in (self.dup_a[phone_pair], self.dup_b[phone_pair]):  # the two sides of a pair
            self.has_phone[side] = True
            self.country[side] = 0
        self.phone_fmt[self.dup_a[phone_pair]] = 1
        self.phone_fmt[self.dup_b[phone_pair]] = 4  # bare digits
        self.assign_phones()
        self.domain = (rng.random(n) < 0.2).astype(np.int64)

        # tags
        bits = np.zeros(n, dtype=np.int64)
        bits |= ((self.email_consent == 0) & (rng.random(n) < 0.3)).astype(np.int64) << 0
        bits |= (self.arch == WHOLESALE).astype(np.int64) << 1
        bits |= ((self.arch == LOYAL) & (rng.random(n) < 0.35)).astype(np.int64) << 2
        bits |= self.sub.astype(np.int64) << 3
        bits |= (rng.random(n) < 0.08).astype(np.int64) << 4
        bits |= self.test.astype(np.int64) << 5
        bits |= self.staff.astype(np.int64) << 6
        self.tag_bits = bits

    def reorder_customers(self) -> None:
        """Customer ids follow sign-up order, like a real platform's."""
        perm = np.argsort(self.created, kind="stable")
        inv = np.empty_like(perm)
        inv[perm] = np.arange(self.n)
        self.perm, self.inv = perm, inv

    # -- tables -------------------------------------------------------------------------------
    def ts(self, days: np.ndarray) -> np.ndarray:
        return (np.rint(days * DAY_S).astype(np.int64) + self.origin_s).astype("datetime64[s]")

    def tables(self, fmt: str) -> dict[str, pa.Table]:
        csv = fmt == "csv"
        n = self.n
        cw = id_width(n, 5)
        cust_ids = ids("C", n, cw)  # in sign-up order
        cid_of = self.inv  # generator index -> id position

        def money(cents: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
            if not csv:
                return pa.array(cents / 100.0, pa.float64(), mask=mask)
            dollars = pc.cast(pa.array(cents // 100), pa.string())
            rest = pc.utf8_lpad(pc.cast(pa.array(cents % 100), pa.string()), 2, "0")
            out = pc.binary_join_element_wise(dollars, rest, ".")
            if mask is not None:
                out = pc.if_else(pa.array(mask), pa.scalar(None, pa.string()), out)
            return out

        def stamp(days: np.ndarray, tz: np.ndarray | None = None,
                  mask: np.ndarray | None = None) -> pa.Array:
            secs = self.ts(days)
            if not csv:
                return pa.array(secs, pa.timestamp("s", tz="UTC"), mask=mask)
            tzi = np.zeros(len(days), dtype=np.int64) if tz is None else tz
            local = secs + (OFFSET_MIN[tzi] * 60).astype("timedelta64[s]")
            text = pc.strftime(pa.array(local), format="%Y-%m-%dT%H:%M:%S")
            out = pc.binary_join_element_wise(text, take_str(OFFSETS, tzi), "")
            if mask is not None:
                out = pc.if_else(pa.array(mask), pa.scalar(None, pa.string()), out)
            return out

        out: dict[str, pa.Table] = {}

        # orders
        n_o = len(self.o_cust)
        oc = self.o_cust
        tz = self.o_tz
        code = self.o_code
        code_txt = take_str([c for c, _ in CODES], np.maximum(code, 0))
        code_txt = pc.if_else(pa.array(code < 0), pa.scalar(None, pa.string()), code_txt)
        order_ids = ids("O", n_o, id_width(n_o, 6))
        out["orders"] = pa.table(
            {
                "order_id": order_ids,
                "customer_id": pc.take(cust_ids, pa.array(cid_of[oc])),
                "ordered_at": stamp(self.o_t, tz),
                "revenue": money(self.o_revenue),
                "discount": money(self.o_discount),
                "refunded": money(self.o_refunded),
                "cancelled_at": stamp(self.o_cancel_t, tz, ~self.o_cancelled),
                "cost": money(self.o_cost, self.o_cost_missing),
                "currency": take_str(["USD"], np.zeros(n_o, dtype=np.int64)),
                "discount_code": code_txt,
                "is_subscription_order": pa.array(self.o_sub),
                "channel": take_str(["web", "pos", "app"], self.o_channel),
            }
        )
        log("orders table built", self.t0)

        # order lines
        lo = self.l_order
        out["order_lines"] = pa.table(
            {
                "order_id": pc.take(order_ids, pa.array(lo)),
                "sku": take_str(SKU, self.l_sku),
                "product_name": take_str(SKU_NAME, self.l_sku),
                "category": take_str(CATEGORIES, SKU_CAT[self.l_sku]),
                "quantity": pa.array(self.l_qty),
                "price": money(self.l_price),
                "line_discount": money(self.l_disc),
                "cost": money(self.l_cost, self.o_cost_missing[lo]),
            }
        )
        log("order_lines table built", self.t0)

        # customers (rows in id order)
        p = self.perm
        fn_l = take_str([f.lower() for f in FIRST_NAMES], self.fn[p])
        ln_l = take_str([x.lower() for x in LAST_NAMES], self.ln[p])
        num = pc.cast(pa.array(np.arange(1, n + 1)), pa.string())
        domain = take_str(["example.com", "example.org"], self.domain[p])
        email = pc.binary_join_element_wise(fn_l, ".", ln_l, num, "@", domain, "")
        email_np = email.to_numpy(zero_copy_only=False).astype(object)
        first_np = np.array(FIRST_NAMES)[self.fn[p]]
        last_np = np.array(LAST_NAMES)[self.ln[p]]
        # test and staff accounts
        test = self.test[p]
        staff = self.staff[p]
        qa_num = np.char.mod("%d", np.arange(1, n + 1)[test])
        email_np[test] = np.char.add(np.char.add("qa.test", qa_num), "@example.com")
        first_np[test] = "Test"
        last_np[test] = "Account"
        st = np.flatnonzero(staff)
        email_np[st] = np.char.add(
            np.char.add(np.char.add(np.char.lower(first_np[st]), "."),
                        np.char.lower(last_np[st])), "@staff.example.org")
        # duplicates: the same person written differently under two ids
        a, b = cid_of[self.dup_a], cid_of[self.dup_b]
        ty = self.dup_type
        fa = first_np[a]
        la = last_np[a]
        na = np.char.mod("%d", a + 1)
        base_a = np.char.add(np.char.add(np.char.add(np.char.lower(fa), "."), np.char.lower(la)),
                             na)
        t0m, t1m, t2m = ty == 0, ty == 1, ty == 2
        # 0: Gmail dots and plus-tag
        email_np[a[t0m]] = np.char.add(
            np.char.add(np.char.add(np.char.add(fa[t0m], "."), la[t0m]), na[t0m]),
            "+shop@gmail.com")
        email_np[b[t0m]] = np.char.add(base_a[t0m], "@gmail.com")
        email_np[b[t0m]] = np.char.replace(email_np[b[t0m]].astype(str), ".", "", count=1)
        # 1: case and whitespace
        email_np[a[t1m]] = np.char.add(base_a[t1m], "@example.com")
        email_np[b[t1m]] = np.char.add(
            np.char.add(np.char.add(np.char.add(" ", fa[t1m]), "."), np.char.add(la[t1m],
                                                                                  na[t1m])),
            "@Example.com ")
        # 2: plus-tag
        email_np[a[t2m]] = np.char.add(base_a[t2m], "+promo@example.com")
        email_np[b[t2m]] = np.char.add(base_a[t2m], "@example.com")
        # 3: same phone (written differently), different e-mail
        t3m = ty == 3
        initial = fa[t3m].astype("U1")
        email_np[b[t3m]] = np.char.add(
            np.char.add(np.char.lower(np.char.add(initial, la[t3m])), na[t3m]), "@example.org"
        )
        first_np[b] = fa
        last_np[b] = la

        phone = self.phones(p)

        cons = np.array([c.upper() for c in EMAIL_CONSENT] + EMAIL_CONSENT)
        ec = self.email_consent[p]
        ec_txt = pa.array(cons[np.maximum(ec, 0) + np.where(self.consent_upper[p], 0, 5)])
        ec_txt = pc.if_else(pa.array(ec < 0), pa.scalar(None, pa.string()), ec_txt)
        scons = np.array([c.upper() for c in SMS_CONSENT] + SMS_CONSENT)
        sc_txt = pa.array(scons[self.sms[p] + np.where(self.consent_upper[p], 0, 4)])
        bits = self.tag_bits[p]
        combos = []
        for mask in range(1 << len(TAG_NAMES)):  # 128 tag combinations, not rows
            combos.append(",".join(t for i, t in enumerate(TAG_NAMES) if mask >> i & 1))
        tags = pc.if_else(pa.array(bits == 0), pa.scalar(None, pa.string()),
                          take_str(combos, bits))
        out["customers"] = pa.table(
            {
                "customer_id": cust_ids,
                "email": pa.array(email_np, pa.string()),
                "phone": phone,
                "first_name": pa.array(first_np, pa.string()),
                "last_name": pa.array(last_np, pa.string()),
                "created_at": stamp(self.created[p]),
                "email_consent": ec_txt,
                "sms_consent": sc_txt,
                "email_suppressed": pa.array(self.suppressed[p]),
                "tags": tags,
                "country": take_str(["US", "CA", "GB"], self.country[p]),
            }
        )
        log("customers table built", self.t0)

        # support tickets
        n_t = len(self.t_cust)
        out["support_tickets"] = pa.table(
            {
                "ticket_id": ids("T", n_t, id_width(n_t, 5)),
                "customer_id": pc.take(cust_ids, pa.array(cid_of[self.t_cust])),
                "opened_at": stamp(self.t_opened),
                "closed_at": stamp(self.t_closed, mask=self.t_status != 0),
                "status": take_str(["closed", "open", "pending"], self.t_status),
                "topic": take_str(TOPICS_ORDER + TOPICS_OTHER, self.t_topic),
                "severity": take_str(SEVERITY, self.t_sev),
                "csat": pa.array(self.t_csat, pa.int64(), mask=self.t_csat == 0),
            }
        )

        # subscriptions
        out["subscriptions"] = self.subscription_table(cust_ids, stamp)
        log("all tables built", self.t0)
        return out

    def assign_phones(self) -> None:
        """Unique fictional numbers; the phone twins (duplicate type 3) share one."""
        rng, n = self.rng, self.n
        has, country = self.has_phone, self.country
        area = np.zeros(n, dtype=np.int64)
        line = np.zeros(n, dtype=np.int64)
        ok = np.zeros(n, dtype=bool)
        for ctry, codes in ((0, np.array(US_AREA)), (1, np.array(CA_AREA))):  # US, Canada
            who = np.flatnonzero(has & (country == ctry))
            if len(who) <= 100 * len(codes):
                per_code, line_of = 100, np.arange(100, 200)  # 555-0100..0199: fiction range
            else:  # stores too big for that range use other 555 lines (never 555-1212)
                line_of = np.arange(10000)
                line_of = line_of[line_of != 1212]
                per_code = len(line_of)
            slots = rng.permutation(len(codes) * per_code)[: len(who)]
            who = who[: len(slots)]
            area[who] = codes[slots // per_code]
            line[who] = line_of[slots % per_code]
            ok[who] = True
        gb = np.flatnonzero(has & (country == 2))
        gslots = rng.permutation(1000)[: len(gb)]  # 020 7946 0000..0999: UK drama range
        gb = gb[: len(gslots)]
        line[gb] = gslots
        ok[gb] = True
        t3 = self.dup_type == 3
        a, b = self.dup_a[t3], self.dup_b[t3]
        area[b], line[b], ok[b] = area[a], line[a], ok[a]
        self.phone_area, self.phone_line, self.phone_ok = area, line, ok

    def phones(self, p: np.ndarray) -> pa.Array:
        area, line, fmt = self.phone_area[p], self.phone_line[p], self.phone_fmt[p]
        area_s = pc.cast(pa.array(area), pa.string())
        line_s = pc.utf8_lpad(pc.cast(pa.array(line), pa.string()), 4, "0")
        fmts = pa.array(fmt)
        na_txt = pc.case_when(
            pc.make_struct(*(pc.equal(fmts, i) for i in range(4))),
            pc.binary_join_element_wise("+1 ", area_s, " 555 ", line_s, ""),
            pc.binary_join_element_wise("+1 (", area_s, ") 555-", line_s, ""),
            pc.binary_join_element_wise(area_s, "-555-", line_s, ""),
            pc.binary_join_element_wise("+1", area_s, "555", line_s, ""),
            pc.binary_join_element_wise(area_s, "555", line_s, ""),
        )
        g_line = pc.utf8_lpad(pc.cast(pa.array(line), pa.string()), 3, "0")
        gb_txt = pc.if_else(
            pc.less(fmts, 2),
            pc.binary_join_element_wise("+44 20 7946 0", g_line, ""),
            pc.binary_join_element_wise("020 7946 0", g_line, ""),
        )
        txt = pc.if_else(pa.array(self.country[p] == 2), gb_txt, na_txt)
        return pc.if_else(pa.array(self.phone_ok[p]), txt, pa.scalar(None, pa.string()))

    def subscription_table(self, cust_ids: pa.Array, stamp: Callable[..., pa.Array]) -> pa.Table:
        idx = self.sub_idx
        k = len(idx)
        sub_orders = np.flatnonzero(self.o_sub)
        sc = self.o_cust[sub_orders]
        first_sub = np.full(self.n, np.inf)
        last_sub = np.full(self.n, -np.inf)
        np.minimum.at(first_sub, sc, self.o_t[sub_orders])
        np.maximum.at(last_sub, sc, self.o_t[sub_orders])
        started = first_sub[idx]
        last = last_sub[idx]
        # subscribers whose k-th order never came: started on their first order
        no_orders = ~np.isfinite(started)
        started = np.where(no_orders, self.first[idx], started)
        last = np.where(no_orders, started, last)
        status = self.sub_status
        interval = self.sub_interval
        last_t = self.o_t.max()
        nxt = last + interval
        cancel = np.minimum(last + 1 + self.sub_cancel_u * np.maximum(interval - 3, 1),
                            last_t - 0.01)
        cat = self.rep[idx]
        order = np.argsort(started, kind="stable")
        idx, cat, status, interval = idx[order], cat[order], status[order], interval[order]
        started, nxt, cancel = started[order], nxt[order], cancel[order]
        fav = self.fav[idx]
        f = stamp
        return pa.table(
            {
                "subscription_id": ids("S", k, id_width(k, 5)),
                "customer_id": pc.take(cust_ids, pa.array(self.inv[idx])),
                "status": take_str(["active", "paused", "cancelled"], status),
                "sku": take_str(SKU, fav),
                "category": take_str(CATEGORIES, cat),
                "interval_days": pa.array(interval.astype(np.int64)),
                "next_charge_at": f(nxt, mask=status != 0),
                "started_at": f(started),
                "cancelled_at": f(cancel, mask=status != 2),
            }
        )


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def _csv_cell(col: pa.Array) -> pa.Array:
    """Text of one column, quoted only where CSV needs it; nulls stay null (written empty)."""
    if pa.types.is_boolean(col.type):
        return pc.if_else(col, "true", "false")
    if not pa.types.is_string(col.type):
        return pc.cast(col, pa.string())
    needs = pc.match_substring_regex(col, '[",\r\n]|^\\s|\\s$')
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(col, '"', '""'), '"', "")
    return pc.if_else(needs, quoted, col)


def write_csv(table: pa.Table, path: Path, chunk: int = 500_000) -> None:
    with path.open("wb") as fh:
        fh.write((",".join(table.column_names) + "\n").encode())
        for lo in range(0, table.num_rows, chunk):  # chunks of half a million rows
            part = table.slice(lo, chunk)
            cells = [_csv_cell(part.column(i).combine_chunks()) for i in range(part.num_columns)]
            line = pc.binary_join_element_wise(
                *cells, ",", null_handling="replace", null_replacement=""
            )
            line = pc.binary_join_element_wise(line, "\n", "")
            buffers = line.buffers()
            offsets = np.frombuffer(buffers[1], dtype=np.int32)
            lo_b, hi_b = offsets[line.offset], offsets[line.offset + len(line)]
            fh.write(memoryview(buffers[2])[lo_b:hi_b])


def write(tables: dict[str, pa.Table], out: Path, fmt: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        if fmt == "csv":
            write_csv(table, out / f"{name}.csv")
        else:
            pq.write_table(table, out / f"{name}.parquet", compression="zstd")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=5000, help="number of customer records")
    ap.add_argument("--seed", type=int, default=7, help="random seed")
    ap.add_argument("--out", type=Path, default=Path("examples/store"), help="output folder")
    ap.add_argument("--format", choices=["csv", "parquet", "both"], default="csv")
    ap.add_argument("--end", type=date.fromisoformat, default=date(2026, 11, 30),
                    help="last day of the two-year history (YYYY-MM-DD)")
    ap.add_argument("--subscription-share", type=float, default=0.025,
                    help="subscribers as a share of all customers (capped by the eligible fans)")
    args = ap.parse_args(argv)
    if args.customers < 200:
        ap.error("--customers must be at least 200")
    t0 = time.perf_counter()
    store = Store(args.customers, args.seed, args.end, t0, args.subscription_share)
    store.make_customers()
    store.make_orders()
    store.make_discounts()
    store.make_lines()
    store.make_refunds()
    store.make_tickets()
    store.make_identity()
    store.reorder_customers()
    formats = ["csv", "parquet"] if args.format == "both" else [args.format]
    for fmt in formats:
        tables = store.tables(fmt)
        write(tables, args.out, fmt)
        log(f"{fmt} written to {args.out}", t0)
    for name, table in tables.items():
        print(f"{name:16s} {table.num_rows:>12,d} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
