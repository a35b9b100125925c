"""`bench show`: a run's queries and results as a static HTML page, marks checked against
the ground truth, errors for runs that cannot be shown, and the page in a real browser."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner

from irbench.cli.main import cli
from irbench.datasets.registry import load_dataset
from irbench.results.store import read_records
from tests.tiny import make_manifest

pytestmark = pytest.mark.usefixtures("toy_method")


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


class _Page(HTMLParser):
    """The page's query sections, each with its figures' classes and image sources."""

    def __init__(self) -> None:
        super().__init__()
        self.queries: list[dict] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.queries.append({**{k: a.get(k) for k in ("data-index", "data-ap",
                                                           "data-gain")}, "figures": []})
        elif tag == "figure" and self.queries:
            self.queries[-1]["figures"].append({"class": a.get("class"), "src": None})
        elif tag == "img" and self.queries and self.queries[-1]["figures"]:
            self.queries[-1]["figures"][-1]["src"] = a.get("src")


@pytest.fixture
def two_runs(tmp_path):
    manifest = make_manifest(tmp_path / "d")
    common = ["--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"), "-q"]
    for grid in ("1", "3"):
        out = invoke("run", "-m", "mean-color", "-d", f"manifest:{manifest}", "--set",
                     f"grid={grid}", *common)
        assert out.exit_code == 0, out.output
    records, _ = read_records(tmp_path / "r")
    records.sort(key=lambda r: r.config["grid"])
    return manifest, records


def _show(tmp_path, manifest, *runs, out="page"):
    args = ["show", *runs[:1], "--dataset", f"manifest:{manifest}", "--results-dir",
            str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), "-o", str(tmp_path / out),
            "--top", "5"]
    if len(runs) > 1:
        args += ["--vs", runs[1]]
    return invoke(*args)


def test_the_page_marks_every_result_as_the_ground_truth_says(tmp_path, two_runs):
    manifest, (a, b) = two_runs
    out = _show(tmp_path, manifest, a.run_id, b.run_id)
    assert out.exit_code == 0, out.output
    page = tmp_path / "page" / "index.html"
    parser = _Page()
    parser.feed(page.read_text())
    ds = load_dataset(f"manifest:{manifest}")
    assert len(parser.queries) == len(ds.queries)
    for qi, section in enumerate(parser.queries):
        query, *results = section["figures"]
        assert query["class"] == "q" and len(results) == 5
        positives = set(ds.ground_truth[qi]["positives"].tolist())
        expected = ["positive" if i in positives else "wrong"
                    for i in a.ranking["indices"][qi][:5]]
        assert [f["class"] for f in results] == expected
        ap_a, ap_b = (r.metrics["settings"][""]["ap"][qi] for r in (a, b))
        assert float(section["data-ap"]) == pytest.approx(ap_a, abs=1e-6)
        assert float(section["data-gain"]) == pytest.approx(ap_a - ap_b, abs=1e-6)
        for f in section["figures"]:
            assert (page.parent / f["src"]).is_file()
    thumbs = sorted((page.parent / "thumbs").iterdir())
    assert out.output.count("written now") == 1 and f"({len(thumbs)} written now)" in out.output
    again = _show(tmp_path, manifest, a.run_id)  # thumbnails are written once
    assert "(0 written now)" in again.output and "gain" not in (page.read_text().split(
        "<main")[0].split("sort by")[1])


def test_runs_that_cannot_be_shown_say_why(tmp_path, two_runs):
    manifest, (a, _) = two_runs
    common = ["--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r2"), "-q"]
    invoke("run", "-m", "mean-color", "-d", f"manifest:{manifest}", "--keep-ranking", "0",
           *common)
    (bare,), _ = read_records(tmp_path / "r2")
    out = invoke("show", str(tmp_path / "r2" / f"{bare.run_id}.json"), "--dataset",
                 f"manifest:{manifest}", "--cache-dir", str(tmp_path / "c"), "-o",
                 str(tmp_path / "x"))
    assert out.exit_code == 2 and "kept no ranking" in out.output
    moved = tmp_path / "d2"
    shutil.copytree(manifest.parent, moved)
    first = sorted((moved / "db").iterdir())[0]
    first.write_bytes(first.read_bytes()[:-1] + b"\x00")  # other bytes: other data
    out = _show(tmp_path, moved / manifest.name, a.run_id)
    assert out.exit_code == 2 and "other data" in out.output


@pytest.mark.slow
def test_the_page_renders_in_a_headless_browser(tmp_path, two_runs):
    """Chromium (Debian's chromium-headless-shell, which `.ci/run` installs) opens the
    page: no console error, every thumbnail loaded, sorting by AP puts the worst query
    first; the screenshot is kept beside the page."""
    browser = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    playwright = pytest.importorskip("playwright.sync_api")
    if browser is None:
        pytest.skip("no Chromium here: apt-get install chromium-headless-shell")
    manifest, (a, b) = two_runs
    assert _show(tmp_path, manifest, a.run_id, b.run_id).exit_code == 0
    page_path = tmp_path / "page" / "index.html"
    expected_images = len(re.findall(r"<img ", page_path.read_text()))
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=browser, args=["--no-sandbox"])
        try:
            page = chromium.new_page()
            problems = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(page_path.as_uri(), wait_until="load", timeout=60_000)
            loaded = page.evaluate("() => [...document.images].filter("
                                   "i => i.complete && i.naturalWidth > 0).length")
            page.click("button[data-key=ap]")
            first = page.evaluate("() => document.querySelector('#queries .query')"
                                  ".dataset.ap")
            page.screenshot(path=str(tmp_path / "page" / "screenshot.png"))
        finally:
            chromium.close()
    assert not problems, problems
    assert loaded == expected_images > 0
    aps = [v for v in a.metrics["settings"][""]["ap"] if v is not None]
    assert float(first) == pytest.approx(min(aps), abs=1e-6)
    assert (tmp_path / "page" / "screenshot.png").read_bytes()[:4] == b"\x89PNG"
    json.dumps(problems)  # the console messages are plain data
