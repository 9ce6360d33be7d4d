"""The labelling page in a real browser: Debian's Chromium and chromium-driver, driven by Selenium.

Every key the page documents, the grid, undo, a reload, two tabs; screenshots go to
tests/artifacts/screenshots/. The page runs on 127.0.0.1 and the browser goes nowhere else.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fieldlens_labelling.serve import LabelServer, PageOptions
from tests.helpers.labelling import keep_fashion, keep_predicted

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
    root = tmp_path / "field"
    ids = keep_predicted(root, [("hen", 0.95), ("egg", 0.40), ("fox", 0.70), ("hen", 0.55), ("egg", 0.85)])
    options = PageOptions(field_data=root, model_dir=None, cache_dir=tmp_path / "cache", port=0, labeller="tester")
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


def shown_id(driver: Any) -> str:
    return str(driver.find_element("id", "photo").get_attribute("src")).rsplit("/", 1)[-1]


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

    server, root, ids = page
    open_page(browser, server)
    first = browser.current_window_handle
    browser.switch_to.new_window("tab")
    open_page(browser, server)
    press(browser, "3")  # the third suggestion of egg 0.40: not egg
    until(browser, lambda: sidecar(root, ids[1]).get("revision") == 1, "second tab labelled")
    taken = sidecar(root, ids[1])["label"]
    browser.switch_to.window(first)
    press(browser, Keys.ENTER)  # this tab still shows revision 0
    until(browser, lambda: "changed since you loaded it" in browser.find_element("id", "message").text, "conflict")
    screenshot(browser, "06-conflict")
    assert sidecar(root, ids[1])["label"] == taken and sidecar(root, ids[1])["revision"] == 1


def test_the_model_view_retrains_shows_the_report_and_installs(browser: Any, tmp_path: Path) -> None:
    """Labels given (through the page's API), then in the browser: m, Retrain (real training), the
    gate report with its confusion matrix, Install; the model directory then serves the candidate."""
    from fieldlens_core.model_package import current_package
    from fieldlens_labelling.client import PageClient

    field, model = tmp_path / "field", tmp_path / "model"
    truth = keep_fashion(field, per_class=12)
    options = PageOptions(field_data=field, model_dir=model, cache_dir=tmp_path / "cache", port=0)
    with LabelServer(options) as server:
        client = PageClient(server.base_url, server.token)
        for item in client.items():
            client.label([item], truth[item["id"]])
        open_page(browser, server, "newest")
        press(browser, "m")
        until(browser, lambda: browser.find_element("id", "models").is_displayed(), "the model view")
        assert browser.find_element("id", "current-model").text == "no model"
        browser.find_element("id", "retrain").click()
        until(browser, lambda: browser.find_element("id", "retrain-status").text.startswith("running"), "running")
        screenshot(browser, "09-retraining")
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(browser, 600, poll_frequency=0.5).until(
            lambda _: browser.find_elements("css selector", "#reports .report h3"), message="a gate report"
        )
        title = browser.find_element("css selector", "#reports .report h3").text
        assert title.startswith("1.0.0: ") and title.endswith("(current model n/a)")
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
