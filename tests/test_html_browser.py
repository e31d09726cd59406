"""The HTML leaderboard page: self-contained, and sortable in a real headless browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from vlbench.cli.results import leaderboard as leaderboard_command
from vlbench.results.html import render_html
from vlbench.results.leaderboard import build_leaderboard
from vlbench.results.records import find_runs
from vlbench.results.testing import write_run

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-default-apps", "--hide-scrollbars")


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no headless browser: install Chromium (e.g. apt-get install chromium) "
                "to run the HTML page checks")


def _write_page(root: Path, plots: bool) -> Path:
    rng = np.random.default_rng(0)
    # accuracy order: full > small > tiny; parameter order: tiny < small < full
    for variant, acc, params in (("small", 0.55, 300_000), ("full", 0.7, 2_000_000),
                                 ("tiny", 0.3, 20_000)):
        write_run(root / "runs", variant, variant=variant, params=params,
                  scores={"testdev": (rng.random(300) < acc).astype(float)})
    runs, problems = find_runs([root / "runs"])
    html = render_html(build_leaderboard(runs, problems=problems), plots=plots)
    path = root / "board.html"
    path.write_text(html, encoding="utf-8")
    return path


@pytest.fixture()
def page(tmp_path: Path) -> Path:
    """A page without plots (sorting checks); the screenshot test draws its own with plots."""
    return _write_page(tmp_path, plots=False)


def _dump_dom(browser: str, url: str, profile: Path) -> str:
    done = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _variants(dom: str) -> list[str]:
    body = dom.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    rows = re.findall(r"<tr.*?</tr>", body, flags=re.S)
    return [re.findall(r'<td class="text">([^<]*)</td>', r)[1] for r in rows]


def test_page_is_self_contained(page: Path) -> None:
    html = page.read_text(encoding="utf-8")
    assert "<title>vlbench leaderboard (synthetic data)</title>" in html
    assert '<table class="lb"' in html and 'data-col="accuracy"' in html
    # Nothing is fetched: no external scripts, styles, images or fonts.
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', html)
    assert "<link" not in html and "@import" not in html and "url(" not in html
    assert "<script src" not in html


def test_sorting_in_headless_browser(page: Path, tmp_path: Path) -> None:
    browser = _browser()
    url = page.as_uri()
    # Unsorted, the page lists rows best first: full, small, tiny.
    assert _variants(page.read_text(encoding="utf-8")) == ["full", "small", "tiny"]
    dom = _dump_dom(browser, url + "#sort=params", tmp_path / "p2")
    assert 'data-sort="params"' in dom
    assert _variants(dom) == ["tiny", "small", "full"]
    dom = _dump_dom(browser, url + "#sort=-variant", tmp_path / "p3")
    assert _variants(dom) == ["tiny", "small", "full"]
    dom = _dump_dom(browser, url + "#sort=accuracy", tmp_path / "p4")
    assert _variants(dom) == ["tiny", "small", "full"]
    assert 'aria-sort="ascending"' in dom


def test_page_renders_to_a_screenshot(tmp_path: Path) -> None:
    browser = _browser()
    pytest.importorskip("matplotlib")
    page = _write_page(tmp_path, plots=True)
    assert page.read_text(encoding="utf-8").count("data:image/svg+xml;base64,") == 2
    shot = tmp_path / "shot.png"
    done = subprocess.run([browser, *FLAGS, f"--user-data-dir={tmp_path / 'p'}",
                           "--window-size=1400,1000", f"--screenshot={shot}", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 10_000


def test_cli_writes_html(page: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(leaderboard_command)
    out = tmp_path / "site" / "index.html"
    result = CliRunner().invoke(app, [str(page.parent / "runs"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "synthetic data" in text


def test_the_same_runs_give_the_same_page_bytes(tmp_path: Path) -> None:
    """No clock and no random ids: re-tabulating unchanged records rewrites the page as it was."""
    pytest.importorskip("matplotlib")
    first = _write_page(tmp_path / "a", plots=True).read_text()
    runs, problems = find_runs([tmp_path / "a" / "runs"])
    again = render_html(build_leaderboard(runs, problems=problems), plots=True)
    assert "data:image/svg+xml" in first and again == first
