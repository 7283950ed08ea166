"""The account book: tiers, fills, equity, liquidation prices (against hand and brute force)."""

import numpy as np
import pytest

from model.accounts import AccountBook, TierTable, apply_fills, maintenance_margin

BINANCE_BTC = [
    (5.0e4, 0.004),
    (2.5e5, 0.005),
    (1.0e6, 0.01),
    (1.0e7, 0.025),
    (2.0e7, 0.05),
    (5.0e7, 0.10),
    (1.0e8, 0.125),
    (2.0e8, 0.15),
    (3.0e8, 0.25),
    (5.0e8, 0.50),
]


def test_tiered_maintenance_by_hand():
    tiers = TierTable.from_lists([BINANCE_BTC])
    # cum: tier 1: 0; tier 2: 50k x 0.001 = 50; tier 3: 50 + 250k x 0.005 = 1300
    n = np.array([[10_000.0], [50_000.0], [100_000.0], [300_000.0], [2_000_000.0]])
    expected = [
        10_000 * 0.004,
        50_000 * 0.004,
        100_000 * 0.005 - 50,
        300_000 * 0.01 - 1300,
        2_000_000 * 0.025 - (1300 + 1_000_000 * 0.015),
    ]
    np.testing.assert_allclose(maintenance_margin(n, tiers)[:, 0], expected, rtol=1e-12)


def test_tiered_maintenance_is_continuous_at_every_cap():
    tiers = TierTable.from_lists([BINANCE_BTC])
    for cap, _ in BINANCE_BTC[:-1]:
        below = maintenance_margin(np.array([[cap * (1 - 1e-12)]]), tiers)[0, 0]
        above = maintenance_margin(np.array([[cap * (1 + 1e-12)]]), tiers)[0, 0]
        assert above == pytest.approx(below, rel=1e-9)


def test_flat_rate_is_one_tier():
    tiers = TierTable.flat([0.01, 0.02])
    n = np.array([[1e3, 1e9], [5.0, 0.0]])
    np.testing.assert_allclose(maintenance_margin(n, tiers), n * [0.01, 0.02])


def test_apply_fills_cases_by_hand():
    q = np.array([[2.0], [2.0], [2.0], [-3.0], [0.0]])
    e = np.array([[100.0], [100.0], [100.0], [50.0], [0.0]])
    dq = np.array([[1.0], [-0.5], [-5.0], [1.0], [-4.0]])
    p = np.array([110.0])
    nq, ne, realized, closed = apply_fills(q, e, dq, p)
    np.testing.assert_allclose(nq[:, 0], [3.0, 1.5, -3.0, -2.0, -4.0])
    # add: average entry (2*100 + 1*110)/3; reduce: keep entry; flip: entry = fill price
    np.testing.assert_allclose(ne[:, 0], [310 / 3, 100.0, 110.0, 50.0, 110.0])
    np.testing.assert_allclose(realized[:, 0], [0.0, 0.5 * 10, 2 * 10, -1 * 60, 0.0])
    np.testing.assert_allclose(closed[:, 0], [0.0, 0.5, 2.0, -1.0, 0.0])


def test_apply_fills_moves_cash_equivalent_by_minus_dq_p():
    rng = np.random.default_rng(3)
    q = rng.normal(size=(500, 3)) * rng.integers(0, 2, (500, 3))
    e = rng.uniform(10, 20, (500, 3)) * (q != 0)
    dq = rng.normal(size=(500, 3))
    p = rng.uniform(10, 20, 3)
    nq, ne, realized, _ = apply_fills(q, e, dq, p)
    # wallet gains `realized`; cash-equivalent W - q e must change by exactly -dq P
    before = -(q * e)
    after = realized - nq * ne
    np.testing.assert_allclose(after - before, -dq * p, atol=1e-9)


def _two_asset_book(isolated=False):
    tiers = TierTable.from_lists([BINANCE_BTC, [(np.inf, 0.02)]])
    qty = np.array([[1.0, -10.0], [0.5, 0.0], [-2.0, 20.0]])
    entry = np.array([[60000.0, 3000.0], [58000.0, 0.0], [61000.0, 2900.0]])
    wallet = np.array([12000.0, 3000.0, 20000.0])
    iso = np.full(qty.shape, isolated) & (qty != 0)
    margin = np.where(iso, 4000.0, 0.0)
    return AccountBook(np.arange(3), wallet, qty, entry, tiers, isolated=iso, margin=margin)


def test_equity_and_margin_ratio_by_hand():
    book = _two_asset_book()
    mark = np.array([59000.0, 3100.0])
    eq = book.cross_equity(mark)
    assert eq[0] == pytest.approx(12000 + 1 * (59000 - 60000) + (-10) * (3100 - 3000))
    mm0 = (59000 * 0.005 - 50) + 10 * 3100 * 0.02
    assert book.cross_maintenance(mark)[0] == pytest.approx(mm0)
    assert book.margin_ratio(mark)[0] == pytest.approx(mm0 / eq[0])


@pytest.mark.parametrize("isolated", [False, True])
@pytest.mark.slow
def test_liquidation_price_matches_brute_force_scan(isolated):
    """Scan each position's price on a fine grid (others fixed) and find where the unit flips."""
    rng = np.random.default_rng(11)
    n, a = 60, 2
    tiers = TierTable.from_lists([BINANCE_BTC, [(1e5, 0.01), (1e6, 0.02), (np.inf, 0.05)]])
    p0 = np.array([60000.0, 3000.0])
    qty = rng.choice([-1, 1], (n, a)) * rng.uniform(0.1, 30, (n, a)) / p0 * 1000
    entry = p0 * rng.uniform(0.9, 1.1, (n, a))
    wallet = np.abs(qty * entry).sum(axis=1) / rng.uniform(2, 60, n)
    iso = np.full((n, a), isolated)
    margin = np.where(iso, (wallet / 2)[:, None], 0.0)
    book = AccountBook(np.arange(n), wallet, qty, entry, tiers, isolated=iso, margin=margin)
    mark = p0.copy()
    lp = book.liquidation_price(mark)
    checked = 0
    for i in range(n):
        for j in range(a):
            grid = np.geomspace(p0[j] * 1e-3, p0[j] * 20, 200_001)
            marks = np.tile(mark, (grid.size, 1))
            marks[:, j] = grid
            # margin condition evaluated independently of liquidation_price
            q, e = qty[i], entry[i]
            notional = np.abs(q)[None, :] * marks
            mm = maintenance_margin(notional, tiers)
            if isolated:
                eq = margin[i, j] + q[j] * (grid - e[j])
                under = eq < mm[:, j]
            else:
                eq = wallet[i] + (q[None, :] * (marks - e[None, :])).sum(axis=1)
                under = eq < mm.sum(axis=1)
            flips = np.flatnonzero(np.diff(under.astype(int)) != 0)
            if np.isnan(lp[i, j]):
                assert flips.size == 0, (i, j)
                continue
            assert flips.size == 1, (i, j, flips)
            k = flips[0]
            assert grid[k] * (1 - 1e-9) <= lp[i, j] <= grid[k + 1] * (1 + 1e-9), (i, j)
            checked += 1
    assert checked > n  # most positions have a liquidation price inside the scanned range


def test_bankruptcy_price_isolated_by_hand():
    book = _two_asset_book(isolated=True)
    bp = book.bankruptcy_price(np.array([60000.0, 3000.0]))
    # long 1 BTC @ 60000 with 4000 margin: 56000; short 10 ETH @ 3000 with 4000: 3400
    assert bp[0, 0] == pytest.approx(56000.0)
    assert bp[0, 1] == pytest.approx(3400.0)
    assert np.isnan(bp[1, 1])


def test_fill_routes_pnl_to_wallet_or_position_margin():
    book = _two_asset_book(isolated=True)
    wallet_before = book.wallet.copy()
    book.fill(np.array([0]), np.array([[-1.0, 0.0]]), np.array([59000.0, 3000.0]))
    assert book.wallet[0] == wallet_before[0]  # isolated: the loss stays in the position margin
    assert book.margin[0, 0] == pytest.approx(4000.0 - 1000.0)
    assert book.margin[0, 1] == 4000.0
    cross = _two_asset_book(isolated=False)
    cross.fill(np.array([0]), np.array([[-1.0, 0.0]]), np.array([59000.0, 3000.0]))
    assert cross.wallet[0] == pytest.approx(12000.0 - 1000.0)


def test_cash_writes_report_their_rows_and_keep_the_aggregates():
    book = _two_asset_book(isolated=True)
    book.watch("screen")
    mark = np.array([61000.0, 2900.0])
    book.aggregate_equity(mark)  # the aggregates exist from here on and are updated in place
    wallet0, margin0 = book.wallet.copy(), book.margin.copy()

    book.charge(np.array([1]), wallet=[30.0], margin=[[5.0, 0.0]])  # a fee from each
    assert book.wallet[1] == wallet0[1] - 30.0 and book.margin[1, 0] == margin0[1, 0] - 5.0
    np.testing.assert_array_equal(book.take_changed("screen"), [1])

    book.credit(np.array([0]), wallet=[12.5])  # bad debt written off
    book.deposit(np.array([2]), [100.0])  # money from outside
    np.testing.assert_array_equal(book.take_changed("screen"), [0, 2])
    assert book.wallet[0] == wallet0[0] + 12.5 and book.wallet[2] == wallet0[2] + 100.0
    # the aggregates moved by the cash moved: -35 + 12.5 + 100
    assert book.aggregate_equity(mark) == pytest.approx(book.total_equity(mark), rel=1e-14)

    book.charge(None, wallet=np.ones(book.n_traders))  # every row: aggregates recomputed
    assert book.take_changed("screen") is None
    assert book.aggregate_equity(mark) == pytest.approx(book.total_equity(mark), rel=1e-14)


def test_moving_margin_and_isolating_keep_equity_and_report_rows():
    book = _two_asset_book(isolated=False)
    book.watch("screen")
    mark = np.array([61000.0, 2900.0])
    equity = book.equity(mark).copy()
    book.set_isolated(np.array([0]), [[False, True]])
    book.move_to_margin(np.array([0]), [[0.0, 250.0]])
    assert book.isolated[0].tolist() == [False, True]
    assert book.margin[0, 1] == 250.0
    np.testing.assert_array_equal(book.equity(mark), equity)  # money moved inside the account
    np.testing.assert_array_equal(book.take_changed("screen"), [0])
    book.set_isolated(np.array([0]), [[False, False]])  # isolated stays isolated
    assert book.isolated[0].tolist() == [False, True]


@pytest.mark.parametrize("writes", [3, 400])
def test_change_log_lists_each_written_row_once_in_order(writes):
    # few rows: sorted and compared with neighbours; more than n/64: a mask over the book
    rng = np.random.default_rng(writes)
    n = 1000
    book = AccountBook(np.arange(n), np.full(n, 100.0), np.ones((n, 1)), np.full((n, 1), 10.0),
                       TierTable.flat([0.01]))  # fmt: skip
    book.watch("screen")
    written = set()
    for _ in range(4):  # out of order, with repeats within and across writes
        rows = rng.integers(0, n, writes)
        book.charge(rows, wallet=np.zeros(writes))
        written.update(rows.tolist())
    assert book.take_changed("screen").tolist() == sorted(written)
    assert book.take_changed("screen").tolist() == []


def test_row_helpers_equal_numpy_indexing_to_the_bit():
    from model.accounts import put_rows, row_any, row_sum, take_rows

    rng = np.random.default_rng(3)
    for a in (1, 2, 3, 7, 8, 9):
        x = rng.standard_normal((500, a)) * 10.0 ** rng.integers(-8, 8, (500, a))
        x[rng.random(x.shape) < 0.2] = -0.0  # signed zeros are where orders of addition show
        x[rng.random(x.shape) < 0.02] = np.inf
        x[rng.random(x.shape) < 0.02] = np.nan
        np.testing.assert_array_equal(row_sum(x).view(np.int64), x.sum(axis=1).view(np.int64))
        mask = x > 0
        np.testing.assert_array_equal(row_any(mask), mask.any(axis=1))
        rows = rng.integers(0, 500, 300)  # unsorted, with repeats
        np.testing.assert_array_equal(take_rows(x, rows), x[rows])
        np.testing.assert_array_equal(take_rows(mask, rows), mask[rows])
        values = rng.standard_normal((300, a))
        expected, got = x.copy(), x.copy()
        expected[rows] = values  # a repeated row keeps the last value written, both ways
        put_rows(got, rows, values)
        np.testing.assert_array_equal(got, expected)
        flags_expected, flags_got = mask.copy(), mask.copy()
        flags_expected[rows] = values > 0
        put_rows(flags_got, rows, values > 0)
        np.testing.assert_array_equal(flags_got, flags_expected)


def test_shared_reads_are_read_only_and_dropped_by_every_write():
    from model.accounts import GATHER_SHARED

    n = 3 * GATHER_SHARED
    book = AccountBook(np.arange(n), np.full(n, 100.0), np.ones((n, 2)), np.full((n, 2), 10.0),
                       TierTable.flat([0.01, 0.01]))  # fmt: skip
    rows = np.arange(0, n, 2)  # enough rows for their gathers to be shared
    (q,) = book.read(rows, "qty")
    assert book.read(rows.copy(), "qty")[0] is q  # the same rows read again: the same gather
    with pytest.raises(ValueError):
        q[0, 0] = 5.0  # shared: nobody may write into it
    mark = np.array([12.0, 11.0])
    before = book.equity(mark, rows)
    book.fill(rows[:10], np.ones((10, 2)), np.array([12.0, 11.0]))  # buys at the mark
    (q2,) = book.read(rows, "qty")
    np.testing.assert_array_equal(q2[:10], 2.0)  # the write dropped the old gather
    np.testing.assert_array_equal(book.equity(mark, rows), before)  # bought at the mark
    book.charge(rows[:3], wallet=np.full(3, 1.0))
    np.testing.assert_array_equal(book.equity(mark, rows)[:4], before[:4] - [1, 1, 1, 0])
    assert book.has_position(rows).all() and not book.has_position(np.array([], int)).size


def _gather_book(n, seed=0):
    rng = np.random.default_rng(seed)
    qty = rng.choice([-1.0, 1.0], (n, 2)) * rng.lognormal(0, 1, (n, 2))
    entry = np.array([100.0, 10.0]) * rng.lognormal(0, 0.1, (n, 2))
    return AccountBook(np.arange(n), rng.lognormal(6, 1, n), qty, entry,
                       TierTable.flat([0.01, 0.02]))  # fmt: skip


NAMES = ("wallet", "qty", "entry", "margin", "isolated")


def _fresh(book, rows):
    """What a read of ``rows`` must give: plain fancy indexing of the book's arrays."""
    return [getattr(book, name)[rows] for name in NAMES]


def test_shared_reads_survive_a_small_write_as_fresh_copies():
    from model.accounts import GATHER_SHARED

    n = 16 * GATHER_SHARED
    book = _gather_book(n)
    rows = np.arange(0, n, 2)  # sorted: a few rows written are re-read into copies
    old = [a.copy() for a in book.read(rows, *NAMES)]
    handed = book.read(rows, *NAMES)
    few = rows[[3, 500, 501, 4000]]
    book.fill(few, np.ones((4, 2)), np.array([120.0, 9.0]))
    book.charge(np.array([rows[7], 1]), wallet=np.array([5.0, 5.0]))  # row 1: not among rows
    assert book.holds_gathers(rows)
    for got, want in zip(book.read(rows, *NAMES), _fresh(book, rows), strict=True):
        np.testing.assert_array_equal(got, want)
    for a, b in zip(handed, old, strict=True):  # what was handed out before is unchanged
        np.testing.assert_array_equal(a, b)
    assert book.read(rows, "qty")[0][3, 0] == old[1][3, 0] + 1.0


def test_shared_reads_are_dropped_by_a_large_write_or_when_unsorted():
    from model.accounts import GATHER_SHARED

    n = 16 * GATHER_SHARED
    book = _gather_book(n, seed=1)
    rows = np.arange(0, n, 2)
    book.read(rows, *NAMES)
    many = rows[: rows.size // 4]  # more than an eighth of the rows: dropped
    book.charge(many, wallet=np.full(many.size, 1.0))
    assert not book.holds_gathers(rows)
    shuffled = np.random.default_rng(2).permutation(rows)  # unsorted: dropped at any write
    book.read(shuffled, *NAMES)
    book.charge(shuffled[:2], wallet=np.array([1.0, 1.0]))
    assert not book.holds_gathers(shuffled)
    for got, want in zip(book.read(shuffled, *NAMES), _fresh(book, shuffled), strict=True):
        np.testing.assert_array_equal(got, want)


def test_shared_reads_are_found_only_for_the_same_rows():
    # Rows of the same size are compared in full only when their ends agree: rows that
    # differ anywhere (at an end, or only inside) are not the held rows; an equal copy is.
    from model.accounts import GATHER_SHARED

    n = 16 * GATHER_SHARED
    book = _gather_book(n, seed=5)
    rows = np.arange(0, n, 2)
    book.read(rows, *NAMES)
    inside = rows.copy()
    inside[rows.size // 2] += 1  # the ends agree
    for other in (rows + 1, rows[::-1].copy(), inside):
        assert not book.holds_gathers(other)
        assert book.holds_gathers(rows)  # (reading nothing: the held rows stay)
    assert book.holds_gathers(rows.copy())
    for got, want in zip(book.read(inside, *NAMES), _fresh(book, inside), strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_fill_of_narrowed_rows_updates_the_gathers_they_were_narrowed_from():
    from model.accounts import GATHER_SHARED

    n = 16 * GATHER_SHARED
    book = _gather_book(n, seed=3)
    rows = np.arange(1, n, 2)
    book.read(rows, "wallet", "qty", "entry", "margin")  # as a trading rule reads its rows
    keep = np.ones(rows.size, dtype=bool)
    keep[[0, 10, 11, 5000]] = False  # a few rows send no order
    book.narrow(rows, keep)
    sent = rows[keep]
    assert book.holds_gathers(sent) and book.holds_gathers(rows)
    dq = np.random.default_rng(4).normal(0, 0.3, (sent.size, 2))
    book.fill(sent, dq, np.array([101.0, 9.5]))
    book.credit(rows[[20, 30]], wallet=np.array([2.0, 3.0]))  # a small write after it
    assert book.holds_gathers(sent) and book.holds_gathers(rows)
    for r in (sent, rows):
        for got, want in zip(book.read(r, *NAMES), _fresh(book, r), strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n_assets", [1, 2, 3, 7, 8, 9])
def test_upnl_equals_numpys_broadcast_product_to_the_bit(n_assets):
    """One asset column at a time below 8 assets: the same bits as ``q (M - e)``, for the
    whole book and for gathered rows."""
    rng = np.random.default_rng(n_assets)
    n = 500
    qty = rng.normal(size=(n, n_assets)) * (rng.random((n, n_assets)) < 0.7)
    entry = rng.lognormal(0, 1, (n, n_assets))
    tiers = TierTable.flat(np.full(n_assets, 0.01))
    book = AccountBook(np.arange(n), np.full(n, 100.0), qty, entry, tiers)
    mark = rng.lognormal(0, 1, n_assets)
    rows = np.sort(rng.choice(n, 120, replace=False))
    for r, sel in ((None, slice(None)), (rows, rows)):
        want = book.qty[sel] * (mark - book.entry[sel])
        assert book.upnl(mark, r).tobytes() == want.tobytes()
