"""The labelling page in a real browser: Debian's Chromium and chromium-driver, driven by Selenium.

Every key the page documents, the grid, undo, a reload, two tabs; screenshots go to
tests/artifacts/screenshots/. The page runs on 127.0.0.1 and the browser goes nowhere else.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from fieldlens_labelling.serve import LabelServer, PageOptions
from tests.helpers.labelling import import_csv, keep_fashion, keep_predicted

pytestmark = pytest.mark.slow

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser() -> Iterator[Any]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        message = "chromium and chromium-driver are not installed: run `make test` (tests/system-deps.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a driver or a browser
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture
def page(tmp_path: Path) -> Iterator[tuple[LabelServer, Path, list[str]]]:
    """The page on five images in the margin order. Without embeddings: once the embedding thread's
    snapshot lands, the default order becomes the typical phase's and the first image changes, which
    raced the first tap of a test (the order with embeddings: test_typical.py, test_embedded.py)."""
    root = tmp_path / "field"
    ids = keep_predicted(root, [("hen", 0.95), ("egg", 0.40), ("fox", 0.70), ("hen", 0.55), ("egg", 0.85)])
    options = PageOptions(
        field_data=root, model_dir=None, cache_dir=tmp_path / "cache", port=0, labeller="tester", embeddings=False
    )
    with LabelServer(options) as server:
        yield server, root, ids


def sidecar(root: Path, image_id: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(next(root.rglob(f"{image_id}.json")).read_text())
    return document


def until(driver: Any, condition: Callable[[], Any], what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 10, poll_frequency=0.05).until(lambda _: condition(), message=what)


def open_page(driver: Any, server: LabelServer, order: str = "uncertain") -> None:
    """The page in ``order`` (the tests' images are in a known uncertainty order; the default,
    ``useful``, is a fixed shuffle until labels show the model can be trusted)."""
    driver.get(f"{server.url}#order={order}")
    until(driver, lambda: driver.find_element("tag name", "body").get_attribute("data-ready") == "true", "page ready")


def settled(driver: Any) -> None:
    """Wait until the page has done every action queued so far (keys, clicks, looks at the server)."""
    driver.execute_async_script("const done = arguments[arguments.length - 1]; S.chain.then(() => done(true));")


def shown_id(driver: Any) -> str:
    return urlsplit(str(driver.find_element("id", "photo").get_attribute("src"))).path.rsplit("/", 1)[-1]


def press(driver: Any, *keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(*keys).perform()


def screenshot(driver: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def test_every_key_labels_through_the_page(browser: Any, page: tuple[LabelServer, Path, list[str]]) -> None:
    from selenium.webdriver.common.keys import Keys

    server, root, ids = page
    open_page(browser, server)
    assert browser.find_element("id", "order").get_attribute("value") == "uncertain"  # from the address
    assert shown_id(browser) == ids[1]  # the most uncertain first (egg at 0.40)
    screenshot(browser, "01-first-image")

    press(browser, Keys.ENTER)  # the top suggestion
    until(browser, lambda: sidecar(root, ids[1]).get("label") == "egg", "Enter labelled egg")
    assert sidecar(root, ids[1])["label_source"] == "human" and sidecar(root, ids[1])["labeller"] == "tester"
    until(browser, lambda: shown_id(browser) == ids[3], "then the next most uncertain (hen at 0.55)")

    press(browser, "2")  # the second suggestion of hen 0.55 is egg (the rest split evenly, egg listed first)
    until(browser, lambda: sidecar(root, ids[3]).get("label") == "egg", "2 picked the second suggestion")

    press(browser, "b")  # blank
    until(browser, lambda: sidecar(root, ids[2]).get("label") == "blank", "b marked blank")

    press(browser, "x")  # unusable
    until(browser, lambda: sidecar(root, ids[4]).get("excluded") is True, "x marked unusable")

    press(browser, "u")  # undo the x: back on that image
    until(browser, lambda: sidecar(root, ids[4]).get("excluded") is False, "u undid x")
    until(browser, lambda: shown_id(browser) == ids[4], "back on the image x marked")
    press(browser, Keys.BACKSPACE)  # undo the b
    until(browser, lambda: "label" not in sidecar(root, ids[2]), "Backspace undid b")
    until(browser, lambda: shown_id(browser) == ids[2], "back on the image b marked")

    # typing filters the label set; Enter takes the highlighted one
    shown = shown_id(browser)
    press(browser, "f", "o")
    until(browser, lambda: browser.find_element("css selector", "#choices li.highlight").text.startswith("fox"), "fox")
    screenshot(browser, "02-filtering")
    press(browser, Keys.ENTER)
    until(browser, lambda: sidecar(root, shown).get("label") == "fox", "typed label")


def test_the_default_order_says_what_it_shows_and_a_chosen_one_is_kept(
    browser: Any, page: tuple[LabelServer, Path, list[str]]
) -> None:
    from selenium.webdriver.support.ui import Select

    server, _, _ = page
    browser.get(server.url)
    until(browser, lambda: browser.find_element("tag name", "body").get_attribute("data-ready") == "true", "ready")
    assert browser.find_element("id", "order").get_attribute("value") == "useful"
    note = browser.find_element("id", "useful-note").text
    assert "representative sample" in note and "agreed with 0 of 0 labels" in note
    screenshot(browser, "07-default-order")
    Select(browser.find_element("id", "order")).select_by_value("margin")
    until(browser, lambda: browser.current_url.endswith("#order=margin"), "the address keeps the order")
    browser.refresh()
    until(browser, lambda: browser.find_element("id", "order").get_attribute("value") == "margin", "kept on reload")


def test_labels_survive_a_reload(browser: Any, page: tuple[LabelServer, Path, list[str]]) -> None:
    from selenium.webdriver.common.keys import Keys

    server, root, ids = page
    open_page(browser, server)
    press(browser, Keys.ENTER)
    until(browser, lambda: sidecar(root, ids[1]).get("label") == "egg", "labelled")
    until(browser, lambda: shown_id(browser) == ids[3], "moved on")
    browser.refresh()
    until(browser, lambda: browser.find_element("tag name", "body").get_attribute("data-ready") == "true", "reloaded")
    assert shown_id(browser) == ids[3]  # the labelled one is done: not shown again
    browser.find_element("id", "show-all").click()
    until(browser, lambda: "1 of 5 labelled" in browser.find_element("id", "progress-text").text, "progress kept")
    screenshot(browser, "03-after-reload")


def test_the_grid_labels_a_selection_in_one_go(browser: Any, page: tuple[LabelServer, Path, list[str]]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    server, root, ids = page
    open_page(browser, server)
    press(browser, "g")
    until(browser, lambda: len(browser.find_elements("css selector", ".thumb img")) == 5, "grid")

    def thumb(n: int) -> Any:  # each click redraws the grid: find the element anew
        return browser.find_elements("css selector", ".thumb")[n]

    thumb(0).click()
    ActionChains(browser).key_down(Keys.SHIFT).click(thumb(2)).key_up(Keys.SHIFT).perform()  # a range of three
    until(browser, lambda: browser.find_element("id", "selection-count").text == "3 selected", "three selected")
    ActionChains(browser).key_down(Keys.CONTROL).click(thumb(1)).key_up(Keys.CONTROL).perform()  # minus the middle
    until(browser, lambda: browser.find_element("id", "selection-count").text == "2 selected", "two selected")
    screenshot(browser, "04-grid-selection")
    chosen = [t.get_attribute("data-id") for t in browser.find_elements("css selector", ".thumb.selected")]
    press(browser, "h", "e", "n", Keys.ENTER)
    until(browser, lambda: all(sidecar(root, str(i)).get("label") == "hen" for i in chosen), "bulk label")
    others = [i for i in ids if i not in chosen]
    assert all("label" not in sidecar(root, i) for i in others)
    screenshot(browser, "05-grid-labelled")


def test_a_second_tab_is_told_instead_of_overwriting(browser: Any, page: tuple[LabelServer, Path, list[str]]) -> None:
    from selenium.webdriver.common.keys import Keys

    from fieldlens_labelling.client import PageClient

    server, root, ids = page
    open_page(browser, server)
    first = browser.current_window_handle
    browser.switch_to.new_window("tab")
    open_page(browser, server)
    press(browser, "3")  # the third suggestion of egg 0.40: not egg
    until(browser, lambda: sidecar(root, ids[1]).get("revision") == 1, "second tab labelled")
    taken = sidecar(root, ids[1])["label"]
    browser.switch_to.window(first)
    until(browser, lambda: shown_id(browser) == ids[3], "back in the first tab, it shows what the second did")
    settled(browser)
    client = PageClient(server.base_url, server.token)  # someone else labels the image this tab shows
    client.label([next(i for i in client.items() if i["id"] == ids[3])], "hen")
    press(browser, Keys.ENTER)  # this tab still shows revision 0
    until(browser, lambda: "changed since you loaded it" in browser.find_element("id", "message").text, "conflict")
    screenshot(browser, "06-conflict")
    assert sidecar(root, ids[3])["label"] == "hen" and sidecar(root, ids[3])["revision"] == 1
    assert sidecar(root, ids[1])["label"] == taken and sidecar(root, ids[1])["revision"] == 1


def test_the_model_view_retrains_shows_the_report_and_installs(browser: Any, tmp_path: Path) -> None:
    """Labels given (through the page's API), then in the browser: m, Retrain (real training), the
    gate report with its confusion matrix, Install; the model directory then serves the candidate."""
    from fieldlens_core.model_package import current_package
    from fieldlens_labelling.client import PageClient
    from fieldlens_retrain.gate import GateRules

    field, model = tmp_path / "field", tmp_path / "model"
    truth = keep_fashion(field, per_class=12)
    few = GateRules(min_val_per_class=1, min_val_images=3)  # a dozen photos a class: judged on what they hold
    options = PageOptions(field_data=field, model_dir=model, cache_dir=tmp_path / "cache", port=0, rules=few)
    with LabelServer(options) as server:
        client = PageClient(server.base_url, server.token)
        for item in client.items():
            client.label([item], truth[item["id"]])
        open_page(browser, server, "newest")
        press(browser, "m")
        until(browser, lambda: browser.find_element("id", "models").is_displayed(), "the model view")
        until(browser, lambda: browser.find_element("id", "current-model").text == "no model", "models loaded")
        browser.find_element("id", "retrain").click()
        until(browser, lambda: browser.find_element("id", "retrain-status").text.startswith("running"), "running")
        screenshot(browser, "09-retraining")
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(browser, 600, poll_frequency=0.5).until(
            lambda _: browser.find_elements("css selector", "#reports .report h3"), message="a gate report"
        )
        title = browser.find_element("css selector", "#reports .report h3").text
        assert title.startswith("1.0.0: ") and " vs current model n/a on " in title and "images (set " in title
        classes = [cell.text for cell in browser.find_elements("css selector", "#reports .report tr td:first-child")]
        assert sorted(classes) == ["bag", "sandal", "trouser"]
        picture = browser.find_element("css selector", "#reports .report img")
        until(browser, lambda: browser.execute_script("return arguments[0].naturalWidth", picture) > 0, "matrix drawn")
        screenshot(browser, "10-gate-report")
        browser.find_element("xpath", "//div[@class='report']//button[text()='Install 1.0.0']").click()
        until(browser, lambda: browser.find_element("id", "current-model").text.endswith(" 1.0.0"), "installed")
        assert browser.find_element("id", "model").text.endswith(" 1.0.0")  # the header says so too
        assert browser.find_element("id", "retrain-status").text.startswith("done (")
        assert not browser.find_elements("xpath", "//div[@class='report']//button")  # nothing left to install
        screenshot(browser, "11-installed")
    package = current_package(model)
    assert package is not None and package.card.version == "1.0.0"


# -- where people hold it: a phone, a tablet, a desktop -----------------------------------------

LAYOUT = """
const box = (id) => { const r = document.getElementById(id).getBoundingClientRect();
  return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width, height: r.height}; };
const photo = document.getElementById("photo"), shown = photo.getBoundingClientRect();
const scale = Math.min(shown.width / photo.naturalWidth, shown.height / photo.naturalHeight);  // object-fit: contain
const filter = document.getElementById("filter"), style = getComputedStyle(filter);
const context = document.createElement("canvas").getContext("2d");
context.font = `${style.fontStyle} ${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
return {
  innerWidth, innerHeight, scrollWidth: document.documentElement.scrollWidth,
  drawnWidth: photo.naturalWidth * scale, frame: box("photo-frame"), progress: box("progress"),
  panel: document.querySelector("aside").getBoundingClientRect().toJSON(),
  placeholder: context.measureText(filter.placeholder).width,
  room: filter.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight),
};
"""


THUMBS_DRAWN = "return [...document.querySelectorAll('.thumb img')].every((i) => i.complete && i.naturalWidth > 0)"
FAILED_IMAGES = (
    "return [...document.images].filter((i) => i.getClientRects().length && (!i.complete || !i.naturalWidth))"
    ".map((i) => i.src || '(no source)')"
)


def fits(browser: Any) -> None:
    """Nothing reaches past the window's right edge: the page never scrolls sideways."""
    width = browser.execute_script("return [document.documentElement.scrollWidth, innerWidth]")
    assert width[0] <= width[1], f"the page is {width[0]} px wide in a {width[1]} px window"
    outside = browser.execute_script(
        "return [...document.querySelectorAll('body *')].filter((e) => e.getClientRects().length"
        " && getComputedStyle(e).position !== 'fixed' && e.getBoundingClientRect().right > innerWidth + 0.5)"
        ".map((e) => e.id || e.className || e.tagName)"
    )
    assert outside == []


@pytest.mark.parametrize(("width", "height", "share"), [(400, 800, 0.6), (800, 1100, 0.6), (1280, 800, 0.45)])
def test_the_page_fits_a_phone_a_tablet_and_a_desktop(
    browser: Any, page: tuple[LabelServer, Path, list[str]], width: int, height: int, share: float
) -> None:
    server, _, _ = page
    browser.set_window_size(width, height)
    open_page(browser, server)
    photo = browser.find_element("id", "photo")
    until(browser, lambda: browser.execute_script("return arguments[0].naturalWidth", photo) > 0, "photo drawn")
    screenshot(browser, f"12-layout-{width}px")
    seen = browser.execute_script(LAYOUT)
    assert seen["innerWidth"] == width
    fits(browser)
    assert seen["drawnWidth"] >= share * width, f"the photo is drawn {seen['drawnWidth']:.0f} px wide"
    panel, frame, progress = seen["panel"], seen["frame"], seen["progress"]
    assert browser.find_element("css selector", "aside").is_displayed() and panel["width"] >= 200
    assert panel["top"] < seen["innerHeight"], "the choices are below the fold"  # reachable without scrolling
    assert browser.find_element("css selector", "#choices li").is_displayed()
    if width < 720:  # stacked: the choices under the photo, the progress under them, all as wide as the page
        assert panel["top"] >= frame["bottom"] and progress["top"] >= panel["bottom"]
    else:  # beside the photo
        assert panel["left"] >= frame["right"] and panel["right"] <= width
        assert progress["left"] >= frame["right"] and progress["top"] < seen["innerHeight"]
    assert browser.find_element("id", "progress").is_displayed()
    assert seen["placeholder"] <= seen["room"], "the filter's placeholder is cut off"

    press(browser, "g")
    until(browser, lambda: len(browser.find_elements("css selector", ".thumb img")) == 5, "grid")
    until(browser, lambda: browser.execute_script(THUMBS_DRAWN), "thumbnails drawn")
    screenshot(browser, f"13-grid-{width}px")
    fits(browser)
    assert browser.find_element("id", "legend").is_displayed()


def test_nothing_left_to_label_says_so_instead_of_a_broken_image(
    browser: Any, page: tuple[LabelServer, Path, list[str]]
) -> None:
    from fieldlens_labelling.client import PageClient

    server, _, _ = page
    client = PageClient(server.base_url, server.token)
    for item in client.items():
        client.label([item], "hen")
    open_page(browser, server)
    empty = browser.find_element("id", "empty")
    assert empty.is_displayed() and "Nothing left to label: all 5 images are labelled" in empty.text
    assert not browser.find_element("id", "photo").is_displayed()
    assert browser.execute_script(FAILED_IMAGES) == []
    screenshot(browser, "14-nothing-left")
    press(browser, "g")
    until(browser, lambda: browser.find_element("css selector", "#thumbs .empty").is_displayed(), "the grid says so")
    assert "Nothing left to label" in browser.find_element("css selector", "#thumbs .empty").text
    assert browser.execute_script(FAILED_IMAGES) == [] and not browser.find_elements("css selector", "#thumbs img")
    screenshot(browser, "15-nothing-left-grid")
    browser.find_element("id", "show-all").click()  # the labelled ones are still there to go over
    until(browser, lambda: len(browser.find_elements("css selector", ".thumb img")) == 5, "labelled ones shown")


def test_a_directory_without_images_says_so(browser: Any, tmp_path: Path) -> None:
    options = PageOptions(field_data=tmp_path / "none", model_dir=None, cache_dir=tmp_path / "cache", port=0)
    with LabelServer(options) as server:
        open_page(browser, server)
        assert "No field images here yet" in browser.find_element("id", "empty").text
        assert browser.execute_script(FAILED_IMAGES) == []
        assert browser.find_element("id", "weakest").text == "No labels yet."


def test_the_grid_has_a_legend_in_its_own_colours(browser: Any, page: tuple[LabelServer, Path, list[str]]) -> None:
    from selenium.webdriver.common.keys import Keys

    server, root, ids = page
    open_page(browser, server)
    press(browser, Keys.ENTER)
    until(browser, lambda: sidecar(root, ids[1]).get("label") == "egg", "labelled")
    browser.find_element("id", "show-all").click()
    press(browser, "g")
    until(browser, lambda: len(browser.find_elements("css selector", ".thumb img")) == 5, "grid")
    until(browser, lambda: browser.execute_script(THUMBS_DRAWN), "thumbnails drawn")
    legend = browser.find_element("id", "legend")
    assert legend.is_displayed() and "labelled by a person" in legend.text and "model's prediction" in legend.text

    def colour(selector: str, what: str = "color") -> str:
        return str(browser.find_element("css selector", selector).value_of_css_property(what))

    assert colour(".thumb.done span") == colour("#legend .swatch.done", "background-color")
    assert colour(".thumb:not(.done) span") == colour("#legend .swatch.model", "background-color")
    assert colour(".thumb.done span") != colour(".thumb:not(.done) span")
    screenshot(browser, "16-grid-legend")


def test_no_weakest_class_is_named_when_every_class_has_enough(
    browser: Any, page: tuple[LabelServer, Path, list[str]]
) -> None:
    from fieldlens_labelling.client import PageClient

    server, _, ids = page
    client = PageClient(server.base_url, server.token)
    items = {item["id"]: item for item in client.items()}
    client.label([items[ids[0]]], "hen")
    open_page(browser, server)
    assert browser.find_element("id", "weakest").text == "weakest class: egg, 1 more to reach 1"
    client.label([items[ids[1]]], "egg")
    client.label([items[ids[2]]], "fox")  # one of each: no class needs more to match the largest
    browser.refresh()
    until(browser, lambda: browser.find_element("tag name", "body").get_attribute("data-ready") == "true", "reloaded")
    weakest = browser.find_element("id", "weakest").text
    assert "weakest" not in weakest and "more to reach" not in weakest
    assert weakest == "classes balanced: each has 1 label or more"
    screenshot(browser, "17-classes-balanced")


def test_counts_follow_label_import_under_a_running_page(
    browser: Any, page: tuple[LabelServer, Path, list[str]]
) -> None:
    server, root, ids = page
    open_page(browser, server)
    assert browser.find_element("id", "progress-text").text.startswith("0 of 5 labelled")
    import_csv(root, {ids[0]: "hen", ids[2]: "fox", ids[3]: "fox"})  # `fieldlens label import` meanwhile
    browser.execute_script("window.dispatchEvent(new Event('focus'))")  # the person comes back to the page
    until(browser, lambda: browser.find_element("id", "progress-text").text.startswith("3 of 5 labelled"), "counts")
    rows = [row.text.split() for row in browser.find_elements("css selector", "#classes tr")]
    assert rows == [["fox", "2"], ["hen", "1"], ["egg", "0"]]
    assert browser.find_element("id", "weakest").text == "weakest class: egg, 2 more to reach 2"
    screenshot(browser, "18-after-import")
    browser.refresh()  # and a page opened afresh (the server looks at the directory on each request)
    until(browser, lambda: browser.find_element("tag name", "body").get_attribute("data-ready") == "true", "reloaded")
    assert browser.find_element("id", "progress-text").text.startswith("3 of 5 labelled")


def test_the_buttons_stay_put_while_a_photo_loads(browser: Any, page: tuple[LabelServer, Path, list[str]]) -> None:
    """On a phone the buttons sit under the photo: a photo that sized its own box would move them when it
    loaded, and a tap already on its way would land on the wrong one (or none)."""
    server, _, _ = page
    browser.set_window_size(400, 800)
    open_page(browser, server)
    where = "return document.querySelector(\"#actions [data-action='blank']\").getBoundingClientRect().toJSON()"
    before = browser.execute_script(where)
    for width, height in ((400, 60), (60, 400)):  # a panorama, then a tall strip: neither moves the buttons
        browser.execute_async_script(
            "const [w, h, done] = arguments; const canvas = document.createElement('canvas');"
            "canvas.width = w; canvas.height = h; const photo = document.getElementById('photo');"
            "photo.onload = () => done(true); photo.src = canvas.toDataURL();",
            width,
            height,
        )
        assert browser.execute_script(where) == before, f"a {width}x{height} photo moved the buttons"


def test_a_finger_labels_with_the_buttons_and_types_into_the_filter(
    browser: Any, page: tuple[LabelServer, Path, list[str]]
) -> None:
    """A phone has no b, x or u key, and its soft keyboard's b is the start of a label."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions import interaction
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput

    def tap(element: Any) -> None:
        finger = PointerInput(interaction.POINTER_TOUCH, "finger")  # type: ignore[no-untyped-call]
        actions = ActionBuilder(browser, mouse=finger)
        actions.pointer_action.move_to(element).pointer_down().pointer_up()  # type: ignore[no-untyped-call]
        actions.perform()

    server, root, ids = page
    browser.set_window_size(400, 800)
    open_page(browser, server)
    tap(browser.find_element("css selector", "#actions [data-action='blank']"))
    until(browser, lambda: sidecar(root, ids[1]).get("label") == "blank", "the blank button")
    until(browser, lambda: shown_id(browser) == ids[3], "then the next")
    tap(browser.find_element("css selector", "#actions [data-action='undo']"))
    until(browser, lambda: "label" not in sidecar(root, ids[1]), "the undo button")
    until(browser, lambda: shown_id(browser) == ids[1], "back on it")
    tap(browser.find_element("id", "filter"))
    ActionChains(browser).send_keys("b").perform()  # typed: not "blank"
    until(browser, lambda: browser.find_element("id", "filter").get_attribute("value") == "b", "typed into the filter")
    assert "label" not in sidecar(root, ids[1])
    tap(browser.find_element("css selector", "#actions [data-action='unusable']"))
    until(browser, lambda: sidecar(root, ids[1]).get("excluded") is True, "the unusable button")
    until(browser, lambda: shown_id(browser) == ids[3], "then the next")
    settled(browser)
    assert browser.find_element("id", "filter").get_attribute("value") == ""
    assert "0 of 5 labelled · 1 unusable" in browser.find_element("id", "progress-text").text
    screenshot(browser, "19-phone-buttons")


class OtherLocalServer:
    """Another web server on this host (a dev server, a notebook): it keeps the Cookie headers it is sent."""

    def __init__(self) -> None:
        received: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                received.append(self.headers.get("Cookie", ""))
                body = b"<!doctype html><title>another local server</title>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test reads what it received, not a log."""

        self.received = received
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> OtherLocalServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def replayed(url: str, cookies: str) -> int:
    """What the other server gets by sending the page what the browser sent it."""
    request = urllib.request.Request(url, headers={"Cookie": cookies})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def labels_again(browser: Any, server: LabelServer, root: Path, image_id: str) -> None:
    """The page opened at its address alone (no token), its photo drawn, and Enter labels ``image_id``."""
    from selenium.webdriver.common.keys import Keys

    browser.get(f"{server.base_url}/#order=uncertain")
    until(browser, lambda: browser.find_element("tag name", "body").get_attribute("data-ready") == "true", "ready")
    photo = browser.find_element("id", "photo")
    until(browser, lambda: browser.execute_script("return arguments[0].naturalWidth", photo) > 0, "photo drawn")
    press(browser, Keys.ENTER)
    until(browser, lambda: sidecar(root, image_id).get("label") == "egg", f"labelled through {server.base_url}")


def test_two_pages_on_two_ports_stay_signed_in_and_another_local_server_gets_nothing_usable(
    browser: Any, tmp_path: Path
) -> None:
    """Browsers send every cookie of 127.0.0.1 to every port there: one page's sign-in used to sign
    the other out (one cookie name), and any local server received a token good for everything."""
    roots = [tmp_path / name / "field" for name in ("a", "b")]
    ids = [keep_predicted(root, [("hen", 0.95), ("egg", 0.40)]) for root in roots]
    options = [
        PageOptions(field_data=root, model_dir=None, cache_dir=root.parent / "cache", port=0, labeller="tester")
        for root in roots
    ]
    with LabelServer(options[0]) as first, LabelServer(options[1]) as second, OtherLocalServer() as other:
        pages = list(zip((first, second), roots, ids, strict=True))
        for server, _, _ in pages:
            open_page(browser, server)
        for server, root, image_ids in pages:  # each again, without its token: both are still signed in
            labels_again(browser, server, root, image_ids[1])

        browser.get(other.url)
        (cookies, *_) = other.received
        for server, _, image_ids in pages:
            assert f"fieldlens_{server.port}_" in cookies  # it does receive each page's own cookie
            assert server.token not in cookies
            for path in ("/api/state", "/api/items", f"/api/images/{image_ids[0]}", f"/api/thumbnails/{image_ids[0]}"):
                assert replayed(server.base_url + path, cookies) == 401, path

        browser.get(f"{first.base_url}/")  # the cookie without the key: the page says how to sign in
        browser.execute_script("localStorage.clear()")
        browser.refresh()
        body = browser.find_element("tag name", "body")
        until(browser, lambda: body.text.startswith("not signed in: open the URL"), "told to sign in")
