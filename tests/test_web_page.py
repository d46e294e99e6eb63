"""The page in a real browser: Debian's /usr/bin/chromium driven by Playwright (nothing is
downloaded); skipped, with the reason, where either is missing. Set
``SEGREFINE_SCREENSHOT=PATH`` to keep the screenshot (the README's picture is made that way),
and ``SEGREFINE_WEB_RUNS=DIR`` / ``SEGREFINE_WEB_IMAGE=FILE`` to drive it with real runs."""

from __future__ import annotations

import os

from PIL import Image
from web_helpers import BROWSER_ARGS, CHROMIUM, chromium_api

from segrefine.data.synthetic import generate_scene

DROP_AN_IMAGE = """async () => {
  const c = document.createElement('canvas'); c.width = 40; c.height = 30;
  c.getContext('2d').fillRect(0, 0, 20, 20);
  const blob = await new Promise((r) => c.toBlob(r, 'image/png'));
  const dt = new DataTransfer();
  dt.items.add(new File([blob], 'dropped.png', {type: 'image/png'}));
  document.querySelector('#input-panel').dispatchEvent(
    new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
}"""


def test_page_segments_refines_and_reports_bad_files(server, tmp_path):
    sync_api = chromium_api()
    image_path = os.environ.get("SEGREFINE_WEB_IMAGE")
    if image_path is None:
        image_path = tmp_path / "scene.png"
        Image.fromarray(generate_scene(4, size=96)[0]).save(image_path)
    (tmp_path / "notes.txt").write_text("not an image\n")
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        # the test's own polling evaluates strings, which the page's CSP forbids; the CSP
        # itself is checked by test_page_runs_under_its_content_security_policy
        page = browser.new_page(viewport={"width": 1280, "height": 860}, bypass_csp=True)
        page.on("request", lambda r: requests.append(r.url))
        page.goto(server)
        page.wait_for_selector("#segmenter option", state="attached")
        page.set_input_files("#file", str(image_path))
        page.click("#run-segment")
        page.wait_for_selector("#results:not([hidden])", timeout=60_000)
        for fig in ("#result-segmenter", "#result-refined", "#result-uncertainty"):
            page.wait_for_function(
                f"document.querySelector('{fig} img').naturalWidth > 0", timeout=10_000
            )
        timings = page.inner_text("#timings")
        assert "segmenter" in timings and "refiner" in timings and "denoiser evaluations" in timings
        assert page.locator("#downloads a").count() == 8  # labels, probs, overlays, uncertainty
        # labels are a layer over the image: the opacity slider and the before/after switch
        page.fill("#opacity", "20")
        assert page.evaluate("getComputedStyle(document.querySelector('#result-refined .layer'))"
                             ".opacity") == "0.2"  # fmt: skip
        page.check("#before")
        assert "segmenter_layer" in page.get_attribute("#result-refined .layer", "src")
        assert "before" in page.inner_text("#refined-caption")
        page.uncheck("#before")
        assert "refined_layer" in page.get_attribute("#result-refined .layer", "src")
        page.fill("#opacity", "55")
        # a click on the refined figure shows that spot at full resolution, before and after
        page.click("#result-refined img", position={"x": 60, "y": 60})
        page.wait_for_function("document.querySelector('#zoom-img').naturalWidth > 0",
                               timeout=10_000)  # fmt: skip
        assert page.is_visible("#zoom") and "(" in page.inner_text("#zoom-at")
        page.select_option("#zoom-side", "128")
        page.wait_for_function(
            "document.querySelector('#zoom-img').src.includes('side=128')"
            " && document.querySelector('#zoom-img').complete"
        )
        page.wait_for_timeout(300)
        shot = os.environ.get("SEGREFINE_SCREENSHOT")
        page.screenshot(path=shot or str(tmp_path / "page.png"), full_page=True)

        page.check("#view-instances")
        assert "instances" in page.inner_text("#instances-table")
        page.check("input[value=semantic]")

        if os.environ.get("SEGREFINE_WEB_IMAGE") is None:  # refine my own mask, same image
            mask = tmp_path / "mask.png"
            Image.fromarray(generate_scene(4, size=96)[1]).save(mask)
            page.set_input_files("#mask", str(mask))
            assert page.is_disabled("#segmenter") and page.is_visible("#mask-note")
            page.click("#run-segment")
            page.wait_for_function("document.querySelector('#result-segmenter figcaption')"
                                   ".textContent === 'Your mask'", timeout=60_000)  # fmt: skip
            page.click("#clear-mask")
            assert not page.is_disabled("#segmenter")

        page.set_input_files("#file", str(tmp_path / "notes.txt"))
        page.click("#run-segment")
        page.wait_for_selector("#error:not([hidden])", timeout=10_000)
        assert "notes.txt: is not an image" in page.inner_text("#error")
        assert page.is_hidden("#results")  # no old result under the new error

        # a file dropped on the image panel is taken like an upload
        page.evaluate(DROP_AN_IMAGE)
        page.wait_for_function("document.querySelector('#preview').naturalWidth === 40")
        assert "dropped.png" in page.inner_text("#input-name")
        browser.close()
    assert all(u.startswith(server) or u.startswith("blob:") for u in requests), requests


def test_page_runs_under_its_content_security_policy(server):
    sync_api = chromium_api()
    problems: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        page = browser.new_page()
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.goto(server)
        page.wait_for_selector("#segmenter option", state="attached")
        page.click(".example >> nth=0")
        page.click("#run-segment")
        page.wait_for_selector("#results:not([hidden])", timeout=60_000)
        page.wait_for_selector("#legend span", state="attached")  # drawn with inline styles
        browser.close()
    assert not [m for m in problems if "Content Security Policy" in m], problems


def test_page_clusters_with_scribbles_drawn_in_the_browser(server):
    sync_api = chromium_api()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860}, bypass_csp=True)
        page.goto(server)
        page.click("#tab-cluster")
        page.click(".example >> nth=1")
        page.wait_for_function("document.querySelector('#preview').naturalWidth > 0")
        canvas = page.locator("#scribble-canvas")
        box = canvas.bounding_box()
        for k, fy in enumerate((0.2, 0.8)):
            page.click(f".swatch >> nth={k}")
            page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * fy)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] * 0.8, box["y"] + box["height"] * fy,
                            steps=5)  # fmt: skip
            page.mouse.up()
        page.fill("#max-iter", "10")
        page.click("#run-cluster")
        page.wait_for_selector("#cluster-results:not([hidden])", timeout=60_000)
        assert "guided by 2 scribble labels" in page.inner_text("#cluster-timings")
        assert page.locator("#cluster-legend span").count() >= 2  # colour and share per segment
        assert "segment" in page.inner_text("#cluster-legend")
        page.wait_for_function(
            "document.querySelector('#cluster-result img').naturalWidth > 0", timeout=10_000
        )
        browser.close()


HOSTILE = "<img src=x onerror=\"document.title='pwned'\">cat"


def test_a_runs_class_names_are_shown_as_text_never_markup(tmp_path, trained_run):
    """A run's config is anyone's file: its class names reach the legend, the instances table
    and the select boxes as text."""
    import json
    import re
    import shutil
    from pathlib import Path

    from web_helpers import running

    from segrefine.web import create_app

    static = Path(__file__).resolve().parents[1] / "src" / "segrefine" / "web" / "static"
    for script in static.glob("*.js"):  # markup from strings nowhere on the page
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write",
                             script.read_text()), script.name  # fmt: skip
    sync_api = chromium_api()
    run = shutil.copytree(trained_run, tmp_path / "runs" / "shared")
    config = json.loads((run / "config.json").read_text())
    config["class_names"][1] = HOSTILE
    (run / "config.json").write_text(json.dumps(config))
    with running(create_app(tmp_path / "runs")) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860}, bypass_csp=True)
        page.goto(url)
        page.wait_for_selector("#segmenter option", state="attached")
        page.select_option("#segmenter", "shared")
        page.select_option("#refiner", "")
        page.click(".example >> nth=0")
        page.click("#run-segment")
        page.wait_for_selector("#results:not([hidden])", timeout=60_000)
        page.check("#view-instances")
        assert HOSTILE in page.inner_text("#instances-table")
        assert page.locator("#results img:not([alt])").count() == 0  # no element made from it
        page.check("input[value=semantic]")
        assert HOSTILE in page.inner_text("#legend")
        assert page.title() != "pwned"
        browser.close()
