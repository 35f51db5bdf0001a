"""Write a synthetic Shopify store export (seeded, deterministic; no real customer's data).

    python examples/shopify/generate_shopify.py [OUT_DIR]

Writes orders_export_1.csv and orders_export_2.csv (the 2025 79-column header, one row per line
item, split in two files as Shopify does for large exports) and customers_export.csv (the newest
customers header, with Customer ID). Names are invented, emails use the reserved example.com /
.org / .net domains and phones the fictional 555-01xx range.

The first three customers are scripted so that their net revenue can be computed by hand
(tests/test_sources_shopify.py):
  maple.rivera@example.com   #A1: 2 x Beans 18.00 + 1 x Mug 12.00 = 48.00, WELCOME10 -4.80
                              -> Subtotal 43.20, paid
                             #A2: 3 x Tea 9.50 = 28.50, partially refunded 10.26 (one tea + tax)
                             net = 43.20 + (28.50 - 10.26) = 61.44
  jun.okafor@example.com     #B1: 1 x Grinder 89.00, paid
                             #B2: 2 x Beans = 36.00, refunded in full (Refunded Amount = Total)
                             #B3: 1 x Mug 12.00, cancelled and voided
                             net = 89.00
  lena.brandt@example.org    #C1 (ordered as Lena.Brandt@Example.org): Beans 18.00 + Tea 9.50
                                 + 2 x Filters 6.00 + Mug 12.00 = 51.50, SPRING20 -10.30
                                 -> Subtotal 41.20, paid
                             #C2: 1 x Grinder 89.00, partially refunded 96.12 (grinder + tax),
                                 more than the Subtotal: capped at 89.00, so refunded in full
                             net = 41.20
Besides: two point-of-sale orders without email, one order from an email missing from the
customers export, customers whose Total Orders include orders older than the export, notes with
line breaks, and zero-order customers.
"""

from __future__ import annotations

import csv
import random
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

SEED = 20250630
TZ = ZoneInfo("America/New_York")
START = datetime(2024, 1, 1, tzinfo=TZ)
END = datetime(2025, 6, 30, 20, 0, tzinfo=TZ)
TAX = Decimal("0.08")
SHIPPING = Decimal("5.99")
FREE_SHIPPING_FROM = Decimal("40.00")

ORDERS_HEADER = [
    "Name", "Email", "Financial Status", "Paid at", "Fulfillment Status", "Fulfilled at",
    "Accepts Marketing", "Currency", "Subtotal", "Shipping", "Taxes", "Total", "Discount Code",
    "Discount Amount", "Shipping Method", "Created at", "Lineitem quantity", "Lineitem name",
    "Lineitem price", "Lineitem compare at price", "Lineitem sku", "Lineitem requires shipping",
    "Lineitem taxable", "Lineitem fulfillment status", "Billing Name", "Billing Street",
    "Billing Address1", "Billing Address2", "Billing Company", "Billing City", "Billing Zip",
    "Billing Province", "Billing Country", "Billing Phone", "Shipping Name", "Shipping Street",
    "Shipping Address1", "Shipping Address2", "Shipping Company", "Shipping City", "Shipping Zip",
    "Shipping Province", "Shipping Country", "Shipping Phone", "Notes", "Note Attributes",
    "Cancelled at", "Payment Method", "Payment Reference", "Refunded Amount", "Vendor",
    "Outstanding Balance", "Employee", "Location", "Device ID", "Id", "Tags", "Risk Level",
    "Source", "Lineitem discount", "Tax 1 Name", "Tax 1 Value", "Tax 2 Name", "Tax 2 Value",
    "Tax 3 Name", "Tax 3 Value", "Tax 4 Name", "Tax 4 Value", "Tax 5 Name", "Tax 5 Value", "Phone",
    "Receipt Number", "Duties", "Billing Province Name", "Shipping Province Name", "Payment ID",
    "Payment Terms Name", "Next Payment Due At", "Payment References",
]
CUSTOMERS_HEADER = [
    "Customer ID", "First Name", "Last Name", "Email", "Accepts Email Marketing",
    "Default Address Company", "Default Address Address1", "Default Address Address2",
    "Default Address City", "Default Address Province Code", "Default Address Country Code",
    "Default Address Zip", "Default Address Phone", "Phone", "Accepts SMS Marketing", "Total Spent",
    "Total Orders", "Note", "Tax Exempt", "Tags",
]
assert len(ORDERS_HEADER) == 79 and len(CUSTOMERS_HEADER) == 20

# sku: (name, price, vendor, requires shipping)
PRODUCTS = {
    "BEAN-HOUSE-340": ("House Blend Beans 340g", "18.00", "Juniper Roasters"),
    "TEA-SENCHA-100": ("Sencha Green Tea 100g", "9.50", "Leaf & Kettle"),
    "FILTER-V60-100": ("Paper Filters V60 x100", "6.00", "Juniper Roasters"),
    "MUG-STONE-12": ("Stoneware Mug 12oz", "12.00", "Clayworks"),
    "GRIND-BURR-01": ("Burr Grinder", "89.00", "Grindwell"),
    "BEAN-DECAF-340": ("Swiss Water Decaf 340g", "19.50", "Juniper Roasters"),
    "BEAN-ESPR-1KG": ("Espresso Roast 1kg", "42.00", "Juniper Roasters"),
    "TEA-CHAI-200": ("Masala Chai 200g", "11.00", "Leaf & Kettle"),
    "KETTLE-GOOSE": ("Gooseneck Kettle", "64.00", "Grindwell"),
    "GIFT-CARD-25": ("Gift Card $25", "25.00", "Juniper & Oak"),
}
CODES = {"WELCOME10": Decimal("0.10"), "SPRING20": Decimal("0.20"), "LOYAL15": Decimal("0.15")}
FIRST = ["Avery", "Bo", "Cam", "Dana", "Eli", "Fern", "Gus", "Hana", "Ira", "Joss", "Kit", "Lou",
         "Mira", "Nico", "Oli", "Pia", "Quinn", "Rae", "Sol", "Tam", "Uma", "Vic", "Wren", "Yael"]
LAST = ["Abbot", "Bram", "Calder", "Dorsey", "Ekwueme", "Farrow", "Gale", "Holt", "Imre", "Juarez",
        "Kessler", "Lund", "Marlow", "Novak", "Oduya", "Price", "Quill", "Roux", "Sato", "Tran"]
CITIES = [("Albany", "NY", "12207"), ("Boston", "MA", "02134"), ("Hartford", "CT", "06103"),
          ("Newark", "NJ", "07102"), ("Providence", "RI", "02903"), ("Burlington", "VT", "05401")]
PROVINCE_NAMES = {"NY": "New York", "MA": "Massachusetts", "CT": "Connecticut", "NJ": "New Jersey",
                  "RI": "Rhode Island", "VT": "Vermont"}


def money(x: Decimal) -> str:
    return str(x.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S %z")


@dataclass
class Customer:
    cid: int
    first: str
    last: str
    email: str | None
    city: tuple[str, str, str]
    phone: str
    accepts_email: bool
    accepts_sms: bool
    tags: str = ""
    prior_orders: int = 0
    prior_spent: Decimal = Decimal("0")
    orders: list[Order] = field(default_factory=list)


@dataclass
class Order:
    created: datetime
    email: str | None  # as typed at checkout
    customer: Customer | None
    lines: list[tuple[str, int]]  # (sku, quantity)
    code: str | None = None
    status: str = "paid"
    refunded: Decimal | None = None  # Refunded Amount (part of Total)
    cancelled: bool = False
    source: str = "web"
    note: str = ""
    tags: str = ""
    name: str = ""

    def gross(self) -> Decimal:
        return sum((Decimal(PRODUCTS[s][1]) * q for s, q in self.lines), Decimal("0"))

    def discount(self) -> Decimal:
        if not self.code:
            return Decimal("0")
        return (self.gross() * CODES[self.code]).quantize(Decimal("0.01"), ROUND_HALF_UP)

    def subtotal(self) -> Decimal:
        return self.gross() - self.discount()

    def shipping(self) -> Decimal:
        return Decimal("0") if self.source == "pos" or self.subtotal() >= FREE_SHIPPING_FROM \
            else SHIPPING

    def taxes(self) -> Decimal:
        return (self.subtotal() * TAX).quantize(Decimal("0.01"), ROUND_HALF_UP)

    def total(self) -> Decimal:
        return self.subtotal() + self.shipping() + self.taxes()

    def line_discounts(self) -> list[Decimal]:
        """The order's discount spread over its lines, the last line taking the rounding."""
        d, g = self.discount(), self.gross()
        out = [(Decimal(PRODUCTS[s][1]) * q * d / g).quantize(Decimal("0.01"), ROUND_HALF_UP)
               if g else Decimal("0") for s, q in self.lines]
        if out:
            out[-1] = d - sum(out[:-1], Decimal("0"))
        return out


def at(y: int, m: int, d: int, hh: int = 10, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, 0, tzinfo=TZ)


def scripted(customers: list[Customer]) -> list[Order]:
    a, b, c = customers[:3]
    one_tea_with_tax = Decimal("9.50") * (1 + TAX)
    grinder_with_tax = Decimal("89.00") * (1 + TAX)
    return [
        Order(at(2024, 11, 2, 9, 15), a.email, a, [("BEAN-HOUSE-340", 2), ("MUG-STONE-12", 1)],
              code="WELCOME10"),
        Order(at(2025, 2, 14, 18, 40), a.email, a, [("TEA-SENCHA-100", 3)],
              status="partially_refunded", refunded=one_tea_with_tax,
              note="Gift wrap please.\nNo invoice in the box."),
        Order(at(2024, 6, 20, 12, 5), b.email, b, [("GRIND-BURR-01", 1)]),
        Order(at(2025, 1, 8, 8, 30), b.email, b, [("BEAN-HOUSE-340", 2)], status="refunded"),
        Order(at(2025, 4, 3, 21, 10), b.email, b, [("MUG-STONE-12", 1)], status="voided",
              cancelled=True),
        Order(at(2025, 3, 21, 7, 55), "Lena.Brandt@Example.org", c,
              [("BEAN-HOUSE-340", 1), ("TEA-SENCHA-100", 1), ("FILTER-V60-100", 2),
               ("MUG-STONE-12", 1)], code="SPRING20"),
        Order(at(2025, 5, 30, 16, 0), c.email, c, [("GRIND-BURR-01", 1)],
              status="partially_refunded", refunded=grinder_with_tax),
    ]


def make_customers(rng: random.Random) -> list[Customer]:
    people = [("Maple", "Rivera", "maple.rivera@example.com"),
              ("Jun", "Okafor", "jun.okafor@example.com"),
              ("Lena", "Brandt", "lena.brandt@example.org")]
    used = {e for _, _, e in people}
    while len(people) < 150:
        f, last = rng.choice(FIRST), rng.choice(LAST)
        email = f"{f.lower()}.{last.lower()}{rng.randint(1, 99)}@example.{rng.choice(['com', 'net', 'org'])}"
        if email not in used:
            used.add(email)
            people.append((f, last, email))
    out = []
    for i, (f, last, email) in enumerate(people):
        out.append(Customer(
            cid=7301000000000 + 17 * i + 3,
            first=f, last=last, email=email,
            city=rng.choice(CITIES),
            phone=f"+1555010{i % 100:02d}{rng.randint(10, 99)}",
            accepts_email=rng.random() < 0.6,
            accepts_sms=rng.random() < 0.25,
        ))
    # Two SMS-only sign-ups: a phone and no email, never ordered.
    out[-1].email = None
    out[-2].email = None
    out[-1].accepts_sms = out[-2].accepts_sms = True
    out[10].tags = "staff"
    out[11].tags = "test"
    for c in out[3:60:7]:  # customers whose history began before this export's period
        c.prior_orders = rng.randint(1, 4)
        c.prior_spent = Decimal(rng.randint(2000, 30000)) / 100
    for c in out[20:40:5]:
        c.tags = "vip, wholesale" if c.tags == "" else c.tags
    return out


def random_orders(rng: random.Random, customers: list[Customer]) -> list[Order]:
    orders: list[Order] = []
    span = int((END - START).total_seconds())
    buyers = customers[3:120]  # the rest have no orders (newsletter sign-ups)
    for c in buyers:
        n = 1 + min(int(rng.expovariate(0.55)), 7)
        for _ in range(n):
            when = START + timedelta(seconds=rng.randrange(span))
            skus = rng.sample(list(PRODUCTS), k=rng.choice([1, 1, 1, 2, 2, 3, 4]))
            lines = [(s, rng.choice([1, 1, 1, 2, 3])) for s in skus]
            o = Order(when.astimezone(TZ), c.email, c, lines)
            if rng.random() < 0.25:
                o.code = rng.choice(list(CODES))
            r = rng.random()
            if r < 0.05:
                o.status = "refunded"
            elif r < 0.10:
                s, _ = o.lines[0]
                o.status = "partially_refunded"
                o.refunded = Decimal(PRODUCTS[s][1]) * (1 - CODES.get(o.code or "", 0)) * (1 + TAX)
            elif r < 0.13:
                o.cancelled, o.status = True, rng.choice(["voided", "refunded"])
            elif r < 0.15:
                o.status = "pending"
            if rng.random() < 0.04:
                o.tags = "Subscription Recurring Order"
            if rng.random() < 0.03:
                o.note = "Please leave at the back door.\nThanks!"
            orders.append(o)
    # Point-of-sale sales without an email, and a buyer missing from the customers export.
    orders.append(Order(at(2024, 8, 17, 11, 20), None, None, [("MUG-STONE-12", 2)], source="pos"))
    orders.append(Order(at(2025, 5, 3, 14, 45), None, None,
                        [("BEAN-ESPR-1KG", 1), ("FILTER-V60-100", 1)], source="pos",
                        code="LOYAL15"))
    orders.append(Order(at(2025, 6, 12, 10, 5), "guest.buyer@example.net", None,
                        [("TEA-CHAI-200", 2)]))
    return orders


def order_rows(o: Order, rng: random.Random, order_id: int) -> list[dict[str, str]]:
    c = o.customer
    city, prov, zip_ = c.city if c else ("Albany", "NY", "12207")
    full_name = f"{c.first} {c.last}" if c else ""
    phone = f"'{c.phone}" if c else ""
    paid_at = "" if o.status in ("pending", "voided") else stamp(o.created + timedelta(minutes=1))
    refunded = o.total() if o.status == "refunded" else o.refunded
    street = f"{rng.randint(1, 999)} Main St" if c else ""
    rows = []
    for i, ((sku, qty), ldisc) in enumerate(zip(o.lines, o.line_discounts(), strict=True)):
        name, price, vendor = PRODUCTS[sku]
        row = dict.fromkeys(ORDERS_HEADER, "")
        row.update({
            "Name": o.name,
            "Email": o.email or "",
            "Created at": stamp(o.created),
            "Lineitem quantity": str(qty),
            "Lineitem name": name,
            "Lineitem price": price,
            "Lineitem sku": sku,
            "Lineitem requires shipping": "false" if sku.startswith("GIFT") else "true",
            "Lineitem taxable": "true",
            "Lineitem fulfillment status": "pending" if o.cancelled else "fulfilled",
            "Vendor": vendor,
            "Lineitem discount": money(ldisc),
            "Phone": phone if o.source != "pos" else "",
        })
        if i == 0:
            row.update({
                "Financial Status": o.status,
                "Paid at": paid_at,
                "Fulfillment Status": "unfulfilled" if o.cancelled else "fulfilled",
                "Fulfilled at": "" if o.cancelled else stamp(o.created + timedelta(days=1)),
                "Accepts Marketing": "yes" if c and c.accepts_email else "no",
                "Currency": "USD",
                "Subtotal": money(o.subtotal()),
                "Shipping": money(o.shipping()),
                "Taxes": money(o.taxes()),
                "Total": money(o.total()),
                "Discount Code": o.code or "",
                "Discount Amount": money(o.discount()),
                "Shipping Method": "" if o.source == "pos" else "Standard",
                "Billing Name": full_name,
                "Billing Street": street,
                "Billing Address1": street,
                "Billing City": city if c else "",
                "Billing Zip": f"'{zip_}" if c else "",
                "Billing Province": prov if c else "",
                "Billing Country": "US" if c else "",
                "Billing Phone": phone,
                "Shipping Name": full_name,
                "Shipping City": city if c else "",
                "Shipping Zip": f"'{zip_}" if c else "",
                "Shipping Province": prov if c else "",
                "Shipping Country": "US" if c else "",
                "Notes": o.note,
                "Cancelled at": stamp(o.created + timedelta(hours=3)) if o.cancelled else "",
                "Payment Method": "Shopify Payments",
                "Payment Reference": f"c{order_id}.1",
                "Refunded Amount": money(refunded) if refunded is not None else "0.00",
                "Outstanding Balance": money(o.total()) if o.status == "pending" else "0.00",
                "Location": "Main Street Shop" if o.source == "pos" else "",
                "Id": str(order_id),
                "Tags": o.tags,
                "Risk Level": "Low",
                "Source": o.source,
                "Tax 1 Name": "Sales Tax 8%",
                "Tax 1 Value": money(o.taxes()),
                "Billing Province Name": PROVINCE_NAMES[prov] if c else "",
                "Shipping Province Name": PROVINCE_NAMES[prov] if c else "",
                "Payment ID": f"c{order_id}.1",
                "Payment References": f"c{order_id}.1",
            })
        rows.append(row)
    return rows


def customer_row(c: Customer) -> dict[str, str]:
    counted = [o for o in c.orders if not o.cancelled]
    refunded = {id(o): (o.total() if o.status == "refunded" else (o.refunded or Decimal("0")))
                for o in counted}
    spent = c.prior_spent + sum(
        (o.total() - refunded[id(o)].quantize(Decimal("0.01"), ROUND_HALF_UP) for o in counted),
        Decimal("0"),
    )
    city, prov, zip_ = c.city
    return {
        "Customer ID": f"'{c.cid}",
        "First Name": c.first,
        "Last Name": c.last,
        "Email": c.email or "",
        "Accepts Email Marketing": "yes" if c.accepts_email else "no",
        "Default Address Company": "",
        "Default Address Address1": f"{(c.cid % 900) + 1} Main St",
        "Default Address Address2": "",
        "Default Address City": city,
        "Default Address Province Code": prov,
        "Default Address Country Code": "US",
        "Default Address Zip": f"'{zip_}",
        "Default Address Phone": f"'{c.phone}",
        "Phone": f"'{c.phone}",
        "Accepts SMS Marketing": "yes" if c.accepts_sms else "no",
        "Total Spent": money(spent),
        "Total Orders": str(c.prior_orders + len(c.orders)),
        "Note": "",
        "Tax Exempt": "no",
        "Tags": c.tags,
    }


def write(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=header, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def main(out: Path) -> None:
    rng = random.Random(SEED)
    customers = make_customers(rng)
    orders = scripted(customers) + random_orders(rng, customers)
    orders.sort(key=lambda o: o.created)
    for i, o in enumerate(orders):
        o.name = f"#{1001 + i}"
        if o.customer:
            o.customer.orders.append(o)
    # Shopify lists the newest order first and splits a large export into numbered files.
    rows = [r for i, o in reversed(list(enumerate(orders)))
            for r in order_rows(o, rng, 5600000000000 + 37 * i)]
    names = [r["Name"] for r in rows]
    cut = names.index(orders[len(orders) // 2].name)  # never split an order across files
    out.mkdir(parents=True, exist_ok=True)
    write(out / "orders_export_1.csv", ORDERS_HEADER, rows[:cut])
    write(out / "orders_export_2.csv", ORDERS_HEADER, rows[cut:])
    write(out / "customers_export.csv", CUSTOMERS_HEADER, [customer_row(c) for c in customers])
    print(f"{len(orders)} orders, {len(rows)} line rows, {len(customers)} customers -> {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
