"""The audit explorer in a real browser: headless Debian Chromium driven by Selenium (fails when it is missing)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from support.ui import (  # noqa: F401 (the *_fixture imports are the module's fixtures)
    HOSTILE_NAME,
    Served,
    Trail,
    served_fixture,
    trail_fixture,
    trail_keystore_fixture,
)

from secureml.integrity import verify_proof
from secureml.integrity.keys import load_public_key, public_key_path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# The machine's network is closed: nothing in the browser may try to reach it.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1366,900")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    """Headless Chromium with a fresh profile, downloads into tmp_path/downloads, network events logged."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if shutil.which(p) is None]
    assert not missing, (f"{' and '.join(missing)} missing: the browser tests need Debian's chromium and "
                         "chromium-driver (apt-get install -y chromium chromium-driver; .ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: webdriver.Chrome, condition: object, timeout: float = 30) -> object:
    """Wait until condition(driver) is truthy; returns it."""
    # htmx replaces elements while we look: a stale one means "look again".
    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(
        condition)  # type: ignore[arg-type]


def requested_urls(driver: webdriver.Chrome) -> list[str]:
    """Every URL the browser requested since the last call (Chrome's performance log, CDP Network events)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] in ("Network.requestWillBeSent", "Network.webSocketCreated"):
            urls.append(message["params"].get("request", {}).get("url") or message["params"].get("url"))
    return urls


def leaving_localhost(urls: list[str]) -> list[str]:
    """The URLs that go anywhere but 127.0.0.1 (the browser's own chrome:// pages and data: URLs stay inside it)."""
    return [u for u in urls if urlparse(u).scheme not in ("data", "blob", "about", "chrome")
            and urlparse(u).hostname != "127.0.0.1"]


def operation_rows(driver: webdriver.Chrome) -> list[str]:
    """The operation names listed in the results table."""
    return [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#operations a.op")]


def test_browse_filter_open_an_operation_and_download_a_proof(browser: webdriver.Chrome, served: Served,
                                                              trail: Trail, tmp_path: Path) -> None:
    """Filter operations (htmx swaps the table), open one, page its timeline, download a proof that verifies."""
    shots = tmp_path / "screenshots"
    shots.mkdir()
    browser.get(served.url + "/operations")
    assert browser.title.startswith("Operations") and len(operation_rows(browser)) == 50
    browser.save_screenshot(str(shots / "operations.png"))

    name = browser.find_element(By.NAME, "name")
    name.send_keys("credit_risk_model_training")
    browser.find_element(By.ID, "apply").click()
    wait_for(browser, lambda d: operation_rows(d) == ["credit_risk_model_training"])
    assert "name=credit_risk_model_training" in browser.current_url  # htmx pushed the filtered URL
    assert browser.find_element(By.NAME, "name").get_attribute("value") == "credit_risk_model_training"
    browser.save_screenshot(str(shots / "filtered.png"))

    browser.find_element(By.CSS_SELECTOR, "#operations a.op").click()
    wait_for(browser, lambda d: d.find_elements(By.ID, "timeline"))
    seqs = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#timeline .seq")]
    assert seqs == [f"#{n}" for n in range(50)]
    assert {e.text for e in browser.find_elements(By.CSS_SELECTOR, "#timeline .chain")} == {"linked"}
    browser.save_screenshot(str(shots / "timeline.png"))
    browser.find_element(By.CSS_SELECTOR, "a[rel=next]").click()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#timeline .seq")[0].text == "#50")
    assert "page=2" in browser.current_url

    browser.find_element(By.CSS_SELECTOR, "#seq-52 a.proof").click()
    downloads = tmp_path / "downloads"
    deadline = time.monotonic() + 30
    while not list(downloads.glob("proof-*.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    (proof_file,) = downloads.glob("proof-*.json")
    proof = json.loads(proof_file.read_text())
    key = load_public_key(public_key_path(trail.log_dir.parent / "keys" / "signing_key.pem"))
    verify_proof(proof, key, event_id=f"{trail.inference_operation}:52")

    urls = requested_urls(browser)
    assert sum(u.startswith(served.url + "/") for u in urls) >= 8 and not leaving_localhost(urls), urls


def test_every_page_in_the_browser_stays_on_localhost(browser: webdriver.Chrome, served: Served,
                                                      tmp_path: Path) -> None:
    """Alerts, requests, integrity, charts (Plotly drawn) and reports load; every request goes to 127.0.0.1 only."""
    shots = tmp_path / "screenshots"
    shots.mkdir()
    browser.get(served.url + "/alerts")
    assert "failed_compliance_check" in browser.find_element(By.ID, "alerts").text
    browser.save_screenshot(str(shots / "alerts.png"))
    browser.get(served.url + "/requests")
    assert "overdue" in browser.find_element(By.ID, "requests").text
    browser.save_screenshot(str(shots / "requests.png"))
    browser.get(served.url + "/integrity")
    wait_for(browser, lambda d: d.find_elements(By.ID, "verdict"), timeout=120)  # htmx polls until verify ends
    assert browser.find_element(By.ID, "verdict").text == "Verdict: intact"
    assert browser.find_elements(By.CSS_SELECTOR, "#checkpoints tbody tr")
    browser.save_screenshot(str(shots / "integrity.png"))
    browser.get(served.url + "/charts")
    wait_for(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".chart.drawn .main-svg")) >= 3)
    bars = browser.find_elements(By.CSS_SELECTOR, "#chart-events .trace.bars")
    assert bars, "the events chart has no bars"
    browser.save_screenshot(str(shots / "charts.png"))
    browser.get(served.url + "/reports")
    assert browser.find_element(By.ID, "report-pdf").is_displayed()

    urls = requested_urls(browser)
    assert any(u.endswith("/static/plotly.min.js") for u in urls)
    assert not leaving_localhost(urls), leaving_localhost(urls)
    refused = [e["message"] for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
    assert not refused, refused  # the pages need nothing the strict policy forbids


def test_a_script_in_an_operation_name_stays_text(browser: webdriver.Chrome, served: Served, trail: Trail) -> None:
    """The hostile operation's <script> name is shown as text in the browser and never runs."""
    browser.get(served.url + "/operations/" + trail.operation_ids[HOSTILE_NAME])
    assert browser.find_element(By.CSS_SELECTOR, "h1.opname").text == HOSTILE_NAME
    assert "<script>steal()</script>" in browser.find_element(By.ID, "timeline").text
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - reading it is the check that no alert() ran
