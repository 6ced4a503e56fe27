"""`dashboard`: the figures, the terminal view, and the self-contained HTML page with SVG charts."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import run_cli
from fixtures.report_sessions import NOW, build, built  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("utc")  # report days are local days: expectations are in UTC
from session_manager import dashboard
from session_manager.service import Service


@pytest.fixture
def board(built) -> dashboard.Dashboard:
    root, _ids = built
    return Service(root, actor="test", clock=lambda: NOW).dashboard()


class Page(HTMLParser):
    """Collects every start tag with its attributes, and the text, to check structure."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.stack: list[str] = []
        self.text: list[str] = []
        self.unclosed: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        if tag not in ("meta", "br", "img", "input", "link"):
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.unclosed.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k, "").split().count(v) or a.get(k) == v
                                                             for k, v in attrs.items())]


def test_dashboard_figures(board, built) -> None:
    _root, ids = built
    # 30 days back from 11-21 reach F (11-01): A, B and F finished
    assert [(s.session_id, s.status, s.stage, s.stage_status, s.progress_percent) for s in board.in_progress] == [
        (ids["D"], "in_progress", "audio", "in_progress", 66.7), (ids["C"], "failed", "review", "escalated", 33.3)]
    assert (board.finished, board.failed, board.errors) == (3, 1, 3)
    assert board.minutes_per_episode == pytest.approx(76.7)  # (80 + 90 + 60) / 3
    assert board.dollars_per_episode == pytest.approx(4.0)  # (3 + 5 + 4) / 3
    assert board.average_quality == pytest.approx(0.8833)  # (.85 + .9 + .9) / 3: C completed no scored stage
    assert len(board.cost_per_day) == 30
    spent = {p.day: (p.cost_usd, p.budget_usd) for p in board.cost_per_day if p.cost_usd or p.budget_usd}
    assert spent == {"2026-11-01": (4.0, 5.0), "2026-11-15": (3.0, 5.0), "2026-11-16": (5.0, 5.0),
                     "2026-11-17": (0.5, 5.0), "2026-11-18": (0.5, 5.0)}
    assert [p.value for p in board.quality_per_day["overall"]] == [0.9, 0.85, 0.9]  # C: none completed
    stages = {s.stage: (s.mean_seconds, s.gate_failures, s.errors) for s in board.stages}
    assert stages == {"initialization": (None, 0, 1), "research": (1200.0, 0, 1), "review": (1300.0, 2, 0),
                      "audio": (1100.0, 0, 1)}


def test_terminal_dashboard_shows_the_figures_and_sparklines(board) -> None:
    out = dashboard.text(board)
    assert "in progress: 1   finished: 3   failed: 1   errors: 3   minutes / episode: 77" in out
    assert "dollars / episode: $4.00   average quality: 0.88" in out
    assert "cost per day     ▁▁▁▁▁▁▁▁▁▇▁▁▁▁▁▁▁▁▁▁▁▁▁▅█▂▂▁▁▁  2026-10-23 .. 2026-11-21" in out
    assert "(total $13.00, budget $25.00)" in out


def test_terminal_dashboard_lists_sessions_in_progress_with_stage_and_progress(built) -> None:
    root, ids = built
    result = run_cli(root, "dashboard", env={"TZ": "UTC"})  # today's clock: the in-progress list is timeless
    assert result.code == 0, result
    line = next(row for row in result.out.splitlines() if row.startswith(ids["D"]))
    assert "in_progress" in line and "audio" in line and "67%" in line and "███████░░░" in line
    assert "$0.50 / $5.00" in line
    failed = next(row for row in result.out.splitlines() if row.startswith(ids["C"]))
    assert "failed" in failed and "escalated" in failed


CHARTS = ["chart-cost", "chart-quality", "chart-stages", "chart-failures", "chart-score", "chart-episodes"]


def test_html_page_is_self_contained_with_the_six_charts(board, tmp_path: Path) -> None:
    page = Page()
    page.feed(dashboard.html_page(board))
    page.close()
    assert page.unclosed == [] and page.stack == []
    assert [a["id"] for a in page.find("svg")] == CHARTS
    assert all(a["width"] == "100%" and "height" not in a for a in page.find("svg"))  # charts fill their card
    assert [a["data-episode"] for a in page.find("rect", **{"class": "episode"})] == [
        f"ep {n}" for n in (5, 1, 2)]  # F, A, B finished, in the order they finished
    assert "Mean stage duration (minutes)" in " ".join(page.text)
    for tag, attrs in page.tags:  # nothing is fetched: no script, no stylesheet link, no external reference
        assert tag not in ("script", "link", "iframe", "img"), tag
        assert not any(v.startswith(("http:", "https:", "//")) for k, v in attrs.items() if k in ("src", "href"))
    assert len(page.find("rect", **{"class": "cost"})) == 30
    assert {a["data-day"] for a in page.find("rect", **{"class": "over"})} == {"2026-11-16"}  # $5 of $5
    assert len(page.find("line", **{"class": "budget"})) == 5
    assert sorted(a["data-metric"] for a in page.find("polyline", **{"class": "series"})) == [
        "accuracy", "clarity", "overall"]
    assert [a["data-stage"] for a in page.find("rect", **{"class": "duration"})] == ["research", "review", "audio"]
    assert [(a["data-stage"], a["data-value"]) for a in page.find("rect", **{"class": "gate"})] == [("review", "2")]
    assert [a["data-stage"] for a in page.find("rect", **{"class": "error"})] == [
        "initialization", "research", "audio"]
    text = " ".join(page.text)
    assert "minutes / episode" in text and "$4.00" in text and "0.88" in text


def test_html_for_an_empty_project_says_no_data(tmp_path: Path) -> None:
    empty = Service(tmp_path, actor="test", clock=lambda: NOW).dashboard(days=7)
    page = Page()
    page.feed(dashboard.html_page(empty))
    assert len(page.find("svg")) == 6
    assert " ".join(page.text).count("no data in this period") == 6


def test_dashboard_html_cli_writes_the_page(built, tmp_path: Path) -> None:
    root, _ids = built
    out = tmp_path / "out.html"
    result = run_cli(root, "dashboard", "--html", str(out), env={"TZ": "UTC"})
    assert result.code == 0, result
    assert f"wrote {out}" in result.out
    assert out.read_text().startswith("<!DOCTYPE html>")
    missing = run_cli(root, "dashboard", "--html", str(tmp_path / "nope" / "out.html"))
    assert missing.code == 2 and "does not exist" in missing.err


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install -y"
                                    " chromium); the HTML structure is still checked with the stdlib parser")


def _chromium(url: str, *extra: str) -> tuple[str, list[str]]:
    """The DOM after Chromium loaded `url`, and the console messages it logged."""
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", *extra, url], capture_output=True, text=True, timeout=120)
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, console


@needs_chromium
def test_console_check_catches_a_page_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>throw new Error('kaboom')</script></body></html>")
    _dom, console = _chromium(bad.as_uri(), "--dump-dom")
    assert any("kaboom" in line for line in console)


@needs_chromium
def test_dashboard_html_opens_in_headless_chromium_without_console_errors(board, tmp_path: Path) -> None:
    page = tmp_path / "out.html"
    page.write_text(dashboard.html_page(board))
    dom, console = _chromium(page.as_uri(), "--dump-dom")
    assert console == []
    parsed = Page()
    parsed.feed(dom)
    assert [a["id"] for a in parsed.find("svg")] == CHARTS
    assert len(parsed.find("rect", **{"class": "cost"})) == 30
    assert len(parsed.find("polyline", **{"class": "series"})) == 3
    shot = tmp_path / "shot.png"
    _chromium(page.as_uri(), f"--screenshot={shot}", "--window-size=1500,1200", "--hide-scrollbars")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


@pytest.mark.parametrize(("seconds", "unit"), [([30.0], "seconds"), ([90.0, 600.0], "minutes"),
                                               ([3 * 3600.0], "hours"), ([5 * 86_400.0], "days")])
def test_duration_charts_are_labelled_in_a_sensible_unit(seconds: list[float], unit: str) -> None:
    assert dashboard.duration_unit(seconds)[0] == unit
