"""The dashboard: served by ``contagion viz`` and driven in a real browser (Chromium, through
Playwright; the test is skipped where there is none, see tests/conftest.py), plus its model and
charts without a browser."""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from experiments.app import (
    TITLE,
    CascadePanel,
    DashboardModel,
    EquityPanel,
    PricePanel,
    RoundsPanel,
)
from experiments.cli import main

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``contagion viz`` on a free loopback port; stopped (its whole process group) at the end."""
    port = _free_port()
    log = tmp_path_factory.mktemp("viz") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "experiments.cli", "viz", "--port", str(port), "--no-open"],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            pytest.fail(f"contagion viz exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"the dashboard did not come up: {log.read_text()[-2000:]}")
        time.sleep(0.5)
    yield {"url": url, "log": log}
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _status(page) -> str:
    """The page's text (the status lines above the price chart say what the model holds)."""
    return page.inner_text("body")


_IMAGE_BYTES = """
async () => Promise.all([...document.images].map(async (img) => {
    const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
        text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(text);
}))
"""


def _chart_images(page) -> list[bytes]:
    """The bytes of every image on the page (the charts are PNGs behind blob: URLs)."""
    return [base64.b64decode(b) for b in page.evaluate(_IMAGE_BYTES)]


@pytest.mark.slow
@pytest.mark.browser
def test_dashboard_in_a_real_browser(chromium, server, tmp_path):
    from PIL import Image
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1300})
            page.set_default_timeout(120_000)
            page.goto(server["url"])
            page.get_by_role("button", name="Step").wait_for()
            page.wait_for_function(f"document.title === {TITLE!r}")
            default = DashboardModel()
            expect = f"mean leverage {np.mean(default.recorder.initial_leverage):.1f}x"
            page.wait_for_function(f"document.body.innerText.includes({expect!r})")

            # Move the leverage slider: one click on its track, about 60% of the way along.
            field = page.locator(".v-input", has_text="mean leverage")
            box = field.locator(".v-slider").bounding_box()
            page.mouse.click(box["x"] + 0.6 * box["width"], box["y"] + box["height"] / 2)
            leverage = float(field.locator("[role=slider]").get_attribute("aria-valuenow"))
            assert leverage > 20.0, f"the slider did not move (now {leverage})"
            # Reset builds the model with the slider's value; the page must show that model.
            # (On a busy machine the slider's value can reach the server after a first Reset.)
            model = DashboardModel(leverage=leverage)
            expect = f"mean leverage {np.mean(model.recorder.initial_leverage):.1f}x"
            for attempt in range(3):
                page.wait_for_timeout(1000)
                page.get_by_role("button", name="Reset").click()
                try:
                    page.wait_for_function(
                        f"document.body.innerText.includes({expect!r})", timeout=30_000
                    )
                    break
                except PlaywrightTimeout:
                    if attempt == 2:
                        raise
            before = _chart_images(page)
            assert len(before) >= 6 and all(b.startswith(b"\x89PNG") for b in before)

            # Step to the shock (the same steps in-process give the numbers to expect).
            shock_step = model.config.shocks[0].step
            for k in range(1, shock_step + 1):
                page.get_by_role("button", name="Step").click()
                page.wait_for_function(f"document.body.innerText.includes('step {k} |')")
                model.step()
            liquidated = int((model.liquidation_count > 0).sum())
            assert liquidated > 0
            page.wait_for_function(
                f"document.body.innerText.includes('accounts liquidated so far {liquidated:,}')"
            )
            assert f"{model.last.rounds} rounds, {model.last.accounts:,} accounts" in _status(page)
            page.wait_for_timeout(1500)  # the last charts' images
            after = _chart_images(page)
            changed = sum(a != b for a, b in zip(before, after, strict=True))
            assert changed == len(before), f"only {changed} of {len(before)} charts changed"

            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float) / 255.0
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1500
    assert pixels.std() > 0.1, "the screenshot is blank"
    assert (pixels < 0.6).mean() > 0.03, "the screenshot has almost no ink"
    # the charts are real pictures, not empty frames
    for png in after:
        img = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
        assert img.std() > 10
    if os.environ.get("DASHBOARD_SCREENSHOT"):  # keep a copy to look at
        Path(os.environ["DASHBOARD_SCREENSHOT"]).write_bytes(shot.read_bytes())


def test_dashboard_model_takes_the_sliders_values():
    m = DashboardModel(
        leverage=5.0,
        volatility=0.4,
        margin_mode="isolated",
        depth=2.0,
        shock=-10.0,
        shock_step=2,
        traders=300,
        seed=5,
    )
    cfg = m.config
    assert cfg.traders.leverage == 5.0 and cfg.market.volatility == 0.4
    assert cfg.margin.mode == "isolated" and cfg.traders.count == 300 and cfg.seed == 5
    assert [a.depth for a in cfg.assets] == [2.0e6, 1.0e6]  # the demo's 2:1 ratio
    assert cfg.shocks[0].step == 2 and cfg.shocks[0].return_ == pytest.approx(-0.10)
    assert m.book.n_traders == 300 and m.book.isolated[m.book.qty != 0].all()
    m.step()
    m.step()
    # the history the price chart draws is the model's own market price
    np.testing.assert_allclose(m.price_history[-1], m.market.price)
    assert len(m.price_history) == 3
    fundamental = np.asarray(m.fundamental_history)
    # the shock step: BTC's fundamental falls 10% on top of a small diffusion move
    assert fundamental[2, 0] / fundamental[1, 0] == pytest.approx(0.9, rel=0.02)


def test_charts_draw_a_large_cascade_at_5000_traders(monkeypatch):
    """One step with a large cascade at 5,000 traders and every custom chart rendered to PNG
    (benchmarks/bench.py's ``teaching`` section measures how long that takes)."""
    from PIL import Image

    from experiments import app

    figures = []
    monkeypatch.setattr(app.solara, "FigureMatplotlib", lambda fig, **kw: figures.append(fig))
    m = DashboardModel(traders=5000, leverage=20.0)
    shock_step = m.config.shocks[0].step
    for _ in range(shock_step):
        m.step()  # the last one: the shock and its cascade
    for panel in (PricePanel, EquityPanel, RoundsPanel, CascadePanel):
        panel(m)
    assert m.last.accounts > 1000, "a large cascade, to draw at full size"
    assert len(figures) == 4
    assert figures[3].axes[0].get_title() == f"contagion network of step {shock_step}, by round"
    for fig in figures:
        png = io.BytesIO()
        fig.savefig(png, format="png")
        assert png.getvalue().startswith(b"\x89PNG")
        img = np.asarray(Image.open(png).convert("L"), dtype=float)
        assert img.std() > 10, "a chart with nothing drawn on it"


def test_viz_bad_port_is_one_line_exit_2(capsys, monkeypatch):
    def no_server(*args):
        raise AssertionError("the server must not start on a bad port")

    monkeypatch.setattr(os, "execve", no_server)
    assert main(["viz", "--port", "70000", "--no-open"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--port 70000" in err[0]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["viz", "--port", str(port), "--no-open"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--port {port}" in err[0]


def test_step_charts_have_readable_legend_labels_and_units():
    """Mesa's plot component names its line by the column; the dashboard relabels it."""
    from matplotlib.figure import Figure

    from experiments import app

    for component_labels, column in (
        (("accounts liquidated in the step", "accounts"), "accounts_liquidated"),
        (("insurance fund at the end of the step", "$"), "insurance_fund"),
    ):
        ax = Figure().subplots()
        ax.plot([0, 1], [0, 1], label=column)
        ax.legend()
        app._titled("a title", *component_labels)(ax)
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [component_labels[0]]
        assert ax.get_ylabel() == component_labels[1] and ax.get_title() == "a title"


def test_depth_panel_shows_the_makers_pulling_their_quotes(monkeypatch):
    """With market makers, the depth each round of the shock walked falls below the calm
    depth (the makers' inventory fills); on the static book it stays at 100%."""
    from experiments import app

    figures = []
    monkeypatch.setattr(app.solara, "FigureMatplotlib", lambda fig, **kw: figures.append(fig))
    for liquidity in ("static", "market_makers"):
        m = DashboardModel(liquidity=liquidity, traders=1000)
        assert m.config.liquidity.model == liquidity
        for _ in range(m.config.shocks[0].step):
            m.step()
        app.DepthPanel(m)
        walked = figures[-1].axes[0].lines[0].get_ydata()  # BTC, % of calm, by round
        if liquidity == "static":
            np.testing.assert_allclose(walked, 100.0)
        else:
            assert walked[-1] < 95.0 and walked[0] > walked[-1]
