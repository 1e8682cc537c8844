"""The page in headless Chromium (Playwright) against a uvicorn server on 127.0.0.1.

Skips, saying why, when Playwright or a browser is missing: Debian's `chromium` package is used
where installed, else Playwright's own build (`python -m playwright install chromium`). With
PIXELWISE_DOCS_SCREENSHOTS=1 the screenshot goes to docs/images/serve_page.png."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image
from serve_samples import sample_image

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

DOCS_SCREENSHOT = Path(__file__).parents[2] / "docs" / "images" / "serve_page.png"
# One number per overlay state: how many pixels are drawn, and a checksum of their colours.
OVERLAY_PIXELS = """() => {
  const canvas = document.getElementById("overlay");
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let opaque = 0, checksum = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3]) { opaque++; checksum = (checksum * 31 + data[i] + 7 * data[i + 1]) % 1e9; }
  }
  return [opaque, checksum];
}"""


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        found = shutil.which("chromium") or shutil.which("chromium-browser")
        failures = []
        for options in ([{"executable_path": found}] if found else []) + [{}]:
            try:
                browser = playwright.chromium.launch(headless=True, **options)
            except sync_api.Error as error:
                failures.append(str(error).strip().splitlines()[0])
                continue
            yield browser
            browser.close()
            return
        pytest.skip(f"no browser could be launched ({'; '.join(failures)}); try apt-get install "
                    "chromium, or python -m playwright install chromium")


def test_upload_shows_overlay_and_legend_and_toggling_a_class_changes_the_overlay(
        browser, live_server, tmp_path):
    path = tmp_path / "cells.png"
    Image.fromarray(sample_image(240, 320, seed=3)).save(path)  # display_max 256: shown scaled
    page = browser.new_page(viewport={"width": 1000, "height": 620})
    page.goto(live_server)
    page.wait_for_function("document.getElementById('model-name').textContent.length > 0")
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#viewer:not([hidden])", timeout=20_000)

    assert page.locator("#legend tbody tr").count() == 3
    assert page.locator("#legend tbody").inner_text().split("\n")[0].strip().startswith(
        "background")
    assert page.eval_on_selector("#overlay", "c => [c.width, c.height]") == [256, 192]
    before = page.evaluate(OVERLAY_PIXELS)
    assert before[0] == 256 * 192  # every class shown: every pixel coloured
    present = page.evaluate("() => state.result.classes.filter(c => c.area_px > 0)"
                            ".map(c => c.id)")
    page.click(f"[data-testid=toggle-{present[-1]}]")
    after = page.evaluate(OVERLAY_PIXELS)
    assert after[0] < before[0] and after[1] != before[1]
    page.click(f"[data-testid=toggle-{present[-1]}]")
    assert page.evaluate(OVERLAY_PIXELS) == before

    box = page.locator("#overlay").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    assert " p = " in page.inner_text("#pointer")
    assert page.get_attribute("#download-png", "download") == "cells_label.png"
    assert page.get_attribute("#download-geojson", "download") == "cells.geojson"
    shot = DOCS_SCREENSHOT if os.environ.get("PIXELWISE_DOCS_SCREENSHOTS") else tmp_path / "p.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    page.close()


def test_a_refused_upload_shows_the_servers_error(browser, live_server, tmp_path):
    path = tmp_path / "notes.png"
    path.write_bytes(b"not really a png")
    page = browser.new_page()
    page.goto(live_server)
    page.wait_for_function("document.getElementById('model-name').textContent.length > 0")
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#status.error")
    assert page.inner_text("#status").startswith("415: the upload must be")
    page.close()
