"""The browser UI in headless Chromium (Debian `chromium` + `chromium-driver`, Selenium): a shared playground URL
runs to a loaded image with live progress on the way, the cache outcome shows, and the dashboard counts traffic.

Screenshots go to Tests/clients/artifacts/ (or $MEDIA_RELAY_ARTIFACTS). Every wait is bounded; only loopback is used.
"""
import os
import shutil
import tempfile
import time
import urllib.parse

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from conftest import Relay

ARTIFACTS = os.environ.get("MEDIA_RELAY_ARTIFACTS", os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifacts"))
WAIT = 60
PROMPT = "a lighthouse on a cliff at dusk"
SEED = 1234


@pytest.fixture(scope="module")
def ui_relay():
    """A relay of its own, with synthetic timings slow enough (~3 s a FLUX image) to watch progress happen."""
    with tempfile.TemporaryDirectory(prefix="media-relay-ui-") as data_dir:
        server = Relay(data_dir, extra_args=("--synthetic-time-scale", "2"))
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    options = webdriver.ChromeOptions()
    if chromium:
        options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1360,1000", "--no-proxy-server", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    os.makedirs(ARTIFACTS, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def base(relay):
    return f"http://127.0.0.1:{relay.http_port}"


def share_url(relay, **fields):
    return f"{base(relay)}/?" + urllib.parse.urlencode({"model": "fal-ai/flux/dev", "prompt": PROMPT, "seed": SEED, **fields, "run": 1})


def shot(driver, name):
    driver.save_screenshot(os.path.join(ARTIFACTS, name))


def text(driver, element_id):
    return driver.find_element(By.ID, element_id).text


def attribute(driver, element_id, name):
    return driver.find_element(By.ID, element_id).get_attribute(name)


def use_key(driver, relay, key):
    driver.get(base(relay) + "/")
    driver.find_element(By.ID, "api-key").send_keys(key)
    driver.find_element(By.ID, "key-save").click()
    WebDriverWait(driver, WAIT).until(lambda d: text(d, "tier").startswith("Key"))


def wait_for_end(driver):
    WebDriverWait(driver, WAIT).until(lambda d: attribute(d, "run-status", "data-state") in ("COMPLETED", "FAILED"))
    return attribute(driver, "run-status", "data-state")


def loaded_images(driver):
    return driver.execute_script(
        "return [...document.querySelectorAll('#result img')].map(i => ({src: i.getAttribute('src'), w: i.naturalWidth, done: i.complete}))"
    )


def severe_console_errors(driver):
    # CSP violations, script errors and failed loads are logged at SEVERE.
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_share_url_runs_with_live_progress_and_shows_the_image(ui_relay, browser):
    use_key(browser, ui_relay, ui_relay.key)
    browser.get_log("browser")
    browser.get(share_url(ui_relay))

    # The form is filled from the URL before it runs.
    assert browser.find_element(By.ID, "field-prompt").get_attribute("value") == PROMPT
    assert browser.find_element(By.ID, "field-seed").get_attribute("value") == str(SEED)

    seen_states, seen_progress, progress_shot = set(), [], False
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        state = attribute(browser, "run-status", "data-state")
        seen_states.add(state)
        if state == "IN_PROGRESS":
            value = float(attribute(browser, "progress", "value"))
            seen_progress.append(value)
            if 0 < value < 1 and not progress_shot:
                shot(browser, "playground-progress.png")
                progress_shot = True
        if state in ("COMPLETED", "FAILED"):
            break
        time.sleep(0.05)
    assert state == "COMPLETED", f"run ended {state}: {text(browser, 'error')}"
    assert "IN_PROGRESS" in seen_states, seen_states
    assert any(0 < value < 1 for value in seen_progress), f"no partial progress shown: {seen_progress[:20]}"
    assert progress_shot

    WebDriverWait(browser, WAIT).until(lambda d: any(i["done"] and i["w"] > 0 for i in loaded_images(d)))
    images = loaded_images(browser)
    assert images[0]["w"] == 1024
    assert images[0]["src"].startswith("/files/") and images[0]["src"].endswith(".png")

    logs = browser.find_elements(By.CSS_SELECTOR, "#logs li")
    assert len(logs) == 28 and logs[0].text.endswith("step 1/28") and logs[-1].text.endswith("step 28/28")
    timeline = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#timeline li")]
    assert "IN_PROGRESS" in timeline and timeline[-1] == "COMPLETED", timeline
    assert text(browser, "cache-outcome") == "miss"
    assert float(attribute(browser, "progress", "data-peak")) > 0
    # The page now carries the form in its address (without run=1), and the share link runs it.
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(attribute(browser, "share-url", "value")).query)
    assert query["model"] == ["fal-ai/flux/dev"] and query["prompt"] == [PROMPT] and query["seed"] == [str(SEED)] and query["run"] == ["1"]
    assert "run=1" not in browser.current_url and f"seed={SEED}" in browser.current_url
    shot(browser, "playground-final.png")
    assert severe_console_errors(browser) == []


def test_same_share_url_again_is_a_cache_hit_also_anonymously(ui_relay, browser):
    browser.get(base(ui_relay) + "/")
    browser.find_element(By.ID, "key-clear").click()
    WebDriverWait(browser, WAIT).until(lambda d: text(d, "tier") == "Anonymous tier")
    browser.get(share_url(ui_relay))
    assert wait_for_end(browser) == "COMPLETED", text(browser, "error")
    assert text(browser, "cache-outcome") == "hit"
    WebDriverWait(browser, WAIT).until(lambda d: any(i["done"] and i["w"] > 0 for i in loaded_images(d)))
    shot(browser, "playground-hit.png")


def test_a_rejected_key_is_reported(ui_relay, browser):
    use_key(browser, ui_relay, "not-a-real-key")
    browser.get(share_url(ui_relay, seed=99))
    assert wait_for_end(browser) == "FAILED"
    assert "API key" in text(browser, "error")
    browser.find_element(By.ID, "key-clear").click()


def test_text_and_audio_models_render_their_output(ui_relay, browser):
    use_key(browser, ui_relay, ui_relay.key)
    browser.get(f"{base(ui_relay)}/?" + urllib.parse.urlencode({"model": "fal-ai/any-llm", "prompt": "Say hello", "seed": 5, "max_tokens": 12, "run": 1}))
    assert wait_for_end(browser) == "COMPLETED", text(browser, "error")
    assert len(text(browser, "text-output")) > 0
    # The page's `model` parameter names the endpoint, not the model's own `model` input.
    assert browser.find_element(By.ID, "field-model").get_attribute("value") == "google/gemini-flash-1.5"
    browser.get(f"{base(ui_relay)}/?" + urllib.parse.urlencode({"model": "fal-ai/elevenlabs/tts/multilingual-v2", "text": "Hello there", "seed": 5, "run": 1}))
    assert wait_for_end(browser) == "COMPLETED", text(browser, "error")
    WebDriverWait(browser, WAIT).until(lambda d: d.execute_script(
        "const a = document.querySelector('#result audio'); return a && a.readyState >= 1 && a.duration > 0"))


def test_dashboard_shows_traffic_live(ui_relay, browser):
    browser.get_log("browser")
    browser.get(base(ui_relay) + "/dashboard")
    WebDriverWait(browser, WAIT).until(lambda d: attribute(d, "live", "data-live") == "true")
    WebDriverWait(browser, WAIT).until(lambda d: int(attribute(d, "v-sps", "data-total") or 0) > 0)
    before = int(attribute(browser, "v-sps", "data-total"))

    # New traffic while the page is open: a miss and two requests that share its work.
    rates = []
    with httpx.Client(base_url=base(ui_relay), headers={"Authorization": f"Key {ui_relay.key}"}, timeout=30) as client:
        for _ in range(3):
            response = client.post("/fal-ai/flux/schnell", json={"prompt": "dashboard traffic", "seed": 77})
            assert response.status_code == 200, response.text
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        rates.append(float(attribute(browser, "v-sps", "data-value")))
        if int(attribute(browser, "v-sps", "data-total")) >= before + 3 and max(rates) > 0:
            break
        time.sleep(0.1)
    assert int(attribute(browser, "v-sps", "data-total")) >= before + 3
    assert max(rates) > 0, "the submissions rate never moved"

    outcome = {kind: int(attribute(browser, f"r-{kind}", "data-value")) for kind in ("hit", "coalesced", "miss")}
    assert outcome["miss"] > 0 and outcome["hit"] + outcome["coalesced"] > 0, outcome
    # Store bytes are measured by the store's sweep every 30 s, so a fresh relay may still show 0 here.
    assert int(attribute(browser, "v-avoided", "data-value")) > 0
    points = int(attribute(browser, "c-rate", "data-points") or 0)
    WebDriverWait(browser, WAIT).until(lambda d: int(attribute(d, "c-rate", "data-points") or 0) >= points + 2)
    shot(browser, "dashboard.png")
    assert severe_console_errors(browser) == []
