import hashlib
from pathlib import Path

import pandas as pd
import pytest
from helpers import load, write_store

from juno.config import Config, config_from_dict
from juno.errors import InputError
from juno.sources.generic import read_generic, read_table_file
from juno.validate import validate

ORDERS = """
order_id,customer_id,ordered_at,revenue
O1,C1,2025-01-01T10:00:00+00:00,100
O2,C1,2025-02-01T10:00:00+00:00,50
"""


def test_columns_match_case_and_space_insensitively(tmp_path: Path) -> None:
    write_store(tmp_path, orders="Order ID,CUSTOMER_ID, Ordered At ,Revenue\nO1,C1,2025-01-01,10\n")
    s = load(tmp_path)
    assert s.orders["order_id"].tolist() == ["O1"]
    assert s.orders["revenue"].tolist() == [10.0]


def test_parquet_is_read(tmp_path: Path) -> None:
    pd.DataFrame(
        {
            "order_id": ["O1"],
            "customer_id": ["C1"],
            "ordered_at": pd.to_datetime(["2025-01-01"]),
            "revenue": [5.0],
        }
    ).to_parquet(tmp_path / "orders.parquet")
    s = load(tmp_path)
    assert s.orders["net_revenue"].tolist() == [5.0]
    assert s.files[0].format == "parquet"


def test_no_orders_is_fatal(tmp_path: Path) -> None:
    write_store(tmp_path, customers="customer_id\nC1\n")
    with pytest.raises(InputError) as e:
        read_generic(tmp_path)
    assert "no orders table" in str(e.value)


def test_missing_required_column_names_file_column_and_examples(tmp_path: Path) -> None:
    write_store(tmp_path, orders="order_id,customer_id,revenue\nO1,C1,10\n")
    with pytest.raises(InputError) as e:
        load(tmp_path)
    msg = str(e.value)
    assert "ordered_at" in msg and "orders.csv" in msg and "order_id=O1" in msg


@pytest.mark.parametrize(
    "content,needle",
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00binary", "binary"),
        (b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", "HTML"),
        (b'{"orders": []}', "JSON"),
        (b"", "empty"),
    ],
)
def test_files_that_are_not_tables(tmp_path: Path, content: bytes, needle: str) -> None:
    (tmp_path / "orders.csv").write_bytes(content)
    with pytest.raises(InputError) as e:
        read_generic(tmp_path)
    assert needle in str(e.value)


def test_semicolons_bom_and_latin1(tmp_path: Path) -> None:
    text = "\ufefforder_id;customer_id;ordered_at;revenue\nO1;Zoë;2025-01-01;10\n"
    (tmp_path / "orders.csv").write_bytes(text.encode("utf-8"))
    assert load(tmp_path).orders["customer_id"].tolist() == ["Zoë"]
    (tmp_path / "orders.csv").write_bytes(text.replace("\ufeff", "").encode("latin-1"))
    assert load(tmp_path).orders["customer_id"].tolist() == ["Zoë"]


def test_a_legacy_byte_in_a_column_nothing_reads_still_makes_the_file_latin1(tmp_path: Path) -> None:
    """Only the columns Juno uses are converted to text, but the encoding is the whole file's:
    a Latin-1 byte far down an unused column (channel) reads the used ones as Latin-1 too."""
    head = "order_id,customer_id,ordered_at,revenue,channel\n"
    rows = "".join(f"O{i},C{i},2025-01-01,10,web\n" for i in range(50_000))  # past the sniffed head
    utf8 = (head + "O0x,Zo\u00eb,2025-01-01,10,web\n" + rows).encode("utf-8")
    (tmp_path / "orders.csv").write_bytes(utf8 + "O9,C9,2025-01-01,10,caf\u00e9\n".encode("utf-8"))
    frame, _, _, _ = read_table_file(tmp_path / "orders.csv", "orders")
    assert "channel" not in frame.columns
    assert frame["customer_id"].iloc[0] == "Zo\u00eb"
    (tmp_path / "orders.csv").write_bytes(utf8 + "O9,C9,2025-01-01,10,caf\u00e9\n".encode("latin-1"))
    frame, info, _, _ = read_table_file(tmp_path / "orders.csv", "orders")
    assert frame["customer_id"].iloc[0] == "Zo\u00c3\u00ab"  # the UTF-8 bytes of e-umlaut, read as Latin-1
    assert info.sha256 == hashlib.sha256((tmp_path / "orders.csv").read_bytes()).hexdigest()
    assert read_generic(tmp_path).tables["orders"].frame["customer_id"].iloc[0] == "Zo\u00c3\u00ab"


def test_duplicate_column_names_are_fatal(tmp_path: Path) -> None:
    write_store(tmp_path, orders="order_id,Order ID,customer_id,ordered_at,revenue\nO1,O1,C1,2025-01-01,1\n")
    with pytest.raises(InputError) as e:
        load(tmp_path)
    assert "same name" in str(e.value)


def test_row_level_problems_become_rejected_rows_with_line_numbers(tmp_path: Path) -> None:
    write_store(
        tmp_path,
        orders="""
order_id,customer_id,ordered_at,revenue
O1,C1,2025-01-01,10
O2,,2025-01-02,10
O3,C2,not a date,10
O4,C2,2025-01-03,abc
O5,C2,2025-01-03,-5
O1,C1,2025-01-01,10
O6,C3,1900-01-01,10
O7,C3,2025-01-04,"$1,200.50"
""",
    )
    s = load(tmp_path)
    assert s.orders["order_id"].tolist() == ["O1", "O7"]
    assert s.orders["revenue"].tolist() == [10.0, 1200.5]
    rej = s.rejected.set_index("line")["reason"].to_dict()
    assert rej[3].startswith("no customer")
    assert "ordered_at" in rej[4]
    assert rej[5] == "revenue is not a number"
    assert rej[6].startswith("negative revenue")
    assert rej[7].startswith("duplicate order id (identical")
    assert "implausible" in rej[8]
    assert set(s.rejected["file"]) == {"orders.csv"}


def test_duplicate_order_id_with_different_content(tmp_path: Path) -> None:
    write_store(
        tmp_path, orders="order_id,customer_id,ordered_at,revenue\nO1,C1,2025-01-01,10\nO1,C1,2025-01-01,99\n"
    )
    s = load(tmp_path)
    assert s.orders["revenue"].tolist() == [10.0]
    assert s.rejected["reason"].tolist() == ["duplicate order id with different content (first kept)"]


def test_several_currencies_are_fatal_unless_one_is_chosen(tmp_path: Path) -> None:
    write_store(
        tmp_path,
        orders="order_id,customer_id,ordered_at,revenue,currency\nO1,C1,2025-01-01,10,usd\nO2,C1,2025-01-02,10,EUR\n",
    )
    with pytest.raises(InputError) as e:
        load(tmp_path)
    assert "EUR" in str(e.value) and "USD" in str(e.value)
    s = validate(read_generic(tmp_path), config_from_dict({"currency": "USD"}))
    assert s.orders["order_id"].tolist() == ["O1"]
    assert s.rejected["reason"].tolist() == ["currency is not USD"]


def test_as_of_from_config_rejects_later_orders_and_defaults_to_latest(tmp_path: Path) -> None:
    write_store(tmp_path, orders=ORDERS)
    assert load(tmp_path).as_of == pd.Timestamp("2025-02-01 10:00")
    s = validate(read_generic(tmp_path), config_from_dict({"as_of": "2025-01-15"}))
    assert s.orders["order_id"].tolist() == ["O1"]
    assert s.rejected["reason"].tolist() == ["ordered after as_of"]


def test_offsets_are_converted_to_utc(tmp_path: Path) -> None:
    write_store(
        tmp_path, orders="order_id,customer_id,ordered_at,revenue\nO1,C1,2022-01-11 04:32:30 -0500,1\n"
    )
    assert load(tmp_path).orders["ordered_at"].iloc[0] == pd.Timestamp("2022-01-11 09:32:30")


def test_refunds_and_cancellations_in_net_revenue(tmp_path: Path) -> None:
    write_store(
        tmp_path,
        orders="""
order_id,customer_id,ordered_at,revenue,refunded,cancelled_at
O1,C1,2025-01-01,100,20,
O2,C1,2025-01-02,50,50,
O3,C1,2025-01-03,70,,2025-01-04
O4,C1,2025-01-05,0,,
""",
    )
    o = load(tmp_path).orders.set_index("order_id")
    assert o["net_revenue"].to_dict() == {"O1": 80.0, "O2": 0.0, "O3": 0.0, "O4": 0.0}
    assert o["counts"].to_dict() == {"O1": True, "O2": False, "O3": False, "O4": True}


def test_orders_by_email_map_to_customer_ids(tmp_path: Path) -> None:
    write_store(
        tmp_path,
        orders=(
            "order_id,email,ordered_at,revenue\nO1, Ann@Example.com ,2025-01-01,10\n"
            "O2,bob@example.com,2025-01-01,5\n"
        ),
        customers="customer_id,email\nC1,ann@example.com\n",
    )
    s = load(tmp_path)
    assert sorted(s.orders["customer_id"]) == ["C1", "bob@example.com"]
    assert sorted(s.customers["customer_id"]) == ["C1", "bob@example.com"]


def test_customers_tickets_subscriptions_rules(tmp_path: Path) -> None:
    write_store(
        tmp_path,
        orders=ORDERS,
        customers="customer_id,email,email_consent,sms_consent\nC1,a@x.com,SUBSCRIBED,yes\nC1,dup@x.com,no,\nC9,c@x.com,maybe,\n",
        support_tickets="customer_id,opened_at,status\nC1,2025-01-20,open\nC404,2025-01-20,open\n",
        subscriptions="customer_id,status\nC1,Active\nC1,weird\n",
    )
    s = load(tmp_path)
    c = s.customers.set_index("customer_id")
    assert c.loc["C1", "email_consent"] == "subscribed" and c.loc["C1", "sms_consent"] == "subscribed"
    assert c.loc["C9", "email_consent"] == "unknown"
    reasons = set(s.rejected["reason"])
    assert "duplicate customer_id (first row kept)" in reasons
    assert "ticket of an unknown customer" in reasons
    assert "status is not active, paused or cancelled" in reasons
    assert s.tickets is not None and s.tickets["is_open"].tolist() == [True]
    assert s.subscriptions is not None and s.subscriptions["status"].tolist() == ["active"]


def test_every_order_rejected_is_fatal(tmp_path: Path) -> None:
    write_store(tmp_path, orders="order_id,customer_id,ordered_at,revenue\nO1,,2025-01-01,10\n")
    with pytest.raises(InputError) as e:
        load(tmp_path, Config())
    assert "no usable orders" in str(e.value)


def test_digest_tells_whether_a_file_holds_a_quote(tmp_path: Path) -> None:
    from juno.sources.csvfiles import digest_file

    plain = tmp_path / "plain.csv"
    plain.write_bytes(b"a,b\n1,2\n" * 300_000)  # several of the digest's 1 MiB chunks
    quoted = tmp_path / "quoted.csv"
    quoted.write_bytes(b"a,b\n1,2\n" * 300_000 + b'3,"x\ny"\n')
    legacy = tmp_path / "legacy.csv"  # not UTF-8 from its first chunk, a quote in its last
    legacy.write_bytes(b"a,b\n1,caf\xe9\n" + b"1,2\n" * 300_000 + b'3,"x"\n')
    assert digest_file(plain, text=True).quote_free
    assert not digest_file(quoted, text=True).quote_free
    d = digest_file(legacy, text=True)
    assert not d.utf8 and not d.quote_free
    assert digest_file(plain, text=True).sha256 == digest_file(plain, text=False).sha256


def test_digest_utf8_verdict_across_chunks(tmp_path: Path) -> None:
    """ASCII chunks are passed over without decoding, so the verdict must still see a character
    cut by a chunk's end (valid: it goes on in the next chunk), one cut and never finished (the
    next chunk all ASCII), and a Latin-1 byte after many ASCII chunks."""
    from juno.sources.csvfiles import digest_file

    chunk = 1 << 20
    cases = {
        "split_ok": (b"a" * (chunk - 1) + "é".encode() + b"b" * (2 * chunk), True),
        "split_cut": (b"a" * (chunk - 1) + "é".encode()[:1] + b"b" * (2 * chunk), False),
        "cut_at_end": (b"a" * (chunk + 5) + "é".encode()[:1], False),
        # cut, a whole ASCII chunk, then the cut character's last byte: not a character either
        "cut_then_ascii_chunk": (b"a" * (chunk - 1) + "é".encode()[:1] + b"b" * chunk + "é".encode()[1:] + b"c", False),
        "late_latin1": (b"a,b\n" * (chunk // 2) + b"1,caf\xe9\n", False),
        "ascii_only": (b"a,b\n1,2\n" * 300_000, True),
        "non_ascii_ok": ("a,b\n1,Zoë\n".encode() * 300_000, True),
    }
    for name, (data, utf8) in cases.items():
        path = tmp_path / f"{name}.csv"
        path.write_bytes(data)
        want = True
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            want = False
        assert want == utf8, name  # the case is what it says
        assert digest_file(path, text=True).utf8 == utf8, name


def test_quote_free_files_read_the_same_with_the_faster_split(tmp_path: Path) -> None:
    """Without a quote no cell holds a line break: the reader's split at every line break gives
    the same rows, cells and set-aside rows (with their line numbers) as the quote-aware one."""
    from juno.sources.csvfiles import digest_file, read_csv_strings

    rows = ["order_id,customer_id,ordered_at,revenue,channel"]
    for i in range(120_000):  # past one 1 MiB block
        if i % 9_973 == 0:
            rows.append(f"O{i},C{i},2025-01-01")  # too few fields: set aside
        elif i % 7_919 == 0:
            rows.append("")  # an empty line
        else:
            rows.append(f"O{i},C{i % 50},2025-01-{1 + i % 28:02d}T10:00:00+00:00,{i % 97}.5,web")
    path = tmp_path / "orders.csv"
    path.write_bytes(("\r\n".join(rows) + "\r\n").encode())
    assert digest_file(path, text=True).quote_free
    for typed in (False, True):
        slow = read_csv_strings(path, "orders", lambda: True, coded=True, typed=typed)
        fast = read_csv_strings(path, "orders", lambda: True, coded=True, typed=typed, quote_free=lambda: True)
        assert slow[0].equals(fast[0]) and slow[1] == fast[1] and len(slow[1]) == 13
        assert slow[2].keys() == fast[2].keys()
        for name in slow[2]:
            assert slow[2][name]().equals(fast[2][name]())


def test_gzipped_csv_tables_read_as_their_text(tmp_path: Path) -> None:
    """`orders.csv.gz` and the like (README: data contract) are read as the CSV they hold: the
    same outputs as the uncompressed store, the digest taken of the file as stored."""
    import gzip
    import shutil

    from juno.pipeline import run

    plain = tmp_path / "plain" / "store"  # the same folder name: the brief names the store
    shutil.copytree(Path(__file__).parent.parent / "examples" / "store", plain)
    packed = tmp_path / "packed" / "store"
    packed.mkdir(parents=True)
    for f in plain.iterdir():
        if f.suffix == ".csv":
            (packed / (f.name + ".gz")).write_bytes(gzip.compress(f.read_bytes()))
        else:
            shutil.copy(f, packed / f.name)
    a = run(plain, tmp_path / "out_plain", narrative="template")
    b = run(packed, tmp_path / "out_packed", narrative="template")
    for name in ("customers.csv", "cohorts.csv", "brief.md", "cohorts.md"):
        assert (tmp_path / "out_plain" / name).read_bytes() == (tmp_path / "out_packed" / name).read_bytes(), name
    rejected = (tmp_path / "out_packed" / "rejected_rows.csv").read_text().replace(".csv.gz,", ".csv,")
    assert rejected == (tmp_path / "out_plain" / "rejected_rows.csv").read_text()
    assert a.store is not None and b.store is not None
    for fa, fb in zip(a.store.files, b.store.files, strict=True):
        assert fb.path.endswith(".gz") and fb.rows == fa.rows
        assert fb.sha256 == hashlib.sha256(Path(fb.path).read_bytes()).hexdigest()


def test_a_gz_file_that_is_not_gzip_is_refused(tmp_path: Path) -> None:
    (tmp_path / "orders.csv.gz").write_text("order_id,customer_id,ordered_at,revenue\nO1,C1,2025-01-01,10\n")
    with pytest.raises(InputError, match="cannot be decompressed"):
        validate(read_generic(tmp_path), Config())
