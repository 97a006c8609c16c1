"""The baseline run's report.html in a real headless browser (Chromium
driven by Playwright): it loads without console errors and shows the
survival figure, every table and figure, and the provenance block.

Skipped, with the reason, where Playwright or a Chromium is not installed
(``.ci/run`` installs both where it can)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")


def _chromium() -> str:
    for candidate in (os.environ.get("CARSIM_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"),
                      shutil.which("google-chrome")):
        if candidate and os.path.exists(candidate):
            return candidate
    pytest.skip("no Chromium browser installed (apt-get install chromium, or set CARSIM_CHROMIUM)")


def test_baseline_report_in_a_headless_browser(baseline_run, tmp_path):
    _, _, folder = baseline_run
    manifest = json.loads((folder / "manifest.json").read_text())
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            problems = []
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
            page.goto((folder / "report.html").as_uri(), wait_until="load")
            assert page.title() == "baseline: run report"
            survival = page.locator("#fig-survival img")
            assert survival.is_visible()
            # decoded, at the size it was drawn
            assert survival.evaluate("img => img.complete && img.naturalWidth") > 1000
            images = page.locator("img")
            assert images.count() == sum(f.endswith(".png") for f in manifest["files"]) == 2
            assert all(images.nth(i).evaluate("img => img.naturalWidth") > 0 for i in range(images.count()))
            comparison = page.locator("section#comparison table")
            assert comparison.count() >= 6 and comparison.first.is_visible()
            assert page.locator("section#comparison table").first.locator("tbody tr").count() == 2 * 6
            tables = page.locator("table")
            assert all(tables.nth(i).is_visible() for i in range(tables.count()))
            provenance = page.locator("section#provenance")
            assert provenance.is_visible()
            assert manifest["scenario_sha256"] in provenance.inner_text()
            assert f"numpy version\t{manifest['versions']['numpy']}" in provenance.inner_text()
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            assert (tmp_path / "report.png").stat().st_size > 10_000
            assert problems == []
        finally:
            browser.close()
