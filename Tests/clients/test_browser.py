"""The browser UI in headless Chromium (Debian `chromium` + `chromium-driver`, Selenium): a shared playground URL
runs to a loaded image with live progress and partial previews on the way (followed over /ws), text streams in as it
is generated, the cache outcome shows, and the dashboard counts traffic.

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


# One round trip per sample: the run's state, its progress, and what partial output the page shows.
SAMPLE = """
const result = document.getElementById('result');
const preview = document.getElementById('preview-image');
const streamed = document.getElementById('text-output');
return {
  state: document.getElementById('run-status').dataset.state,
  progress: Number(document.getElementById('progress').value),
  partials: Number(result.dataset.partials || 0),
  preview: preview ? preview.getAttribute('src').slice(0, 22) : null,
  previewLoaded: !!(preview && preview.complete && preview.naturalWidth > 0),
  streamed: streamed && streamed.classList.contains('streaming') ? streamed.textContent : null,
  transport: document.getElementById('run-panel').dataset.transport || null,
};
"""


def sample_run(driver):
    """Samples the run until it ends; returns the samples (the last one has the final state)."""
    samples = []
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        samples.append(driver.execute_script(SAMPLE))
        if samples[-1]["state"] in ("COMPLETED", "FAILED"):
            break
        time.sleep(0.03)
    return samples


def severe_console_errors(driver):
    # CSP violations, script errors and failed loads are logged at SEVERE.
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_share_url_runs_with_live_progress_and_shows_the_image(ui_relay, browser):
    use_key(browser, ui_relay, ui_relay.key)
    browser.get_log("browser")
    browser.get(share_url(ui_relay))

    # The form is filled from the URL before it runs (it is built once the page has the model's schema).
    WebDriverWait(browser, WAIT).until(lambda d: d.find_elements(By.ID, "field-prompt"))
    assert browser.find_element(By.ID, "field-prompt").get_attribute("value") == PROMPT
    assert browser.find_element(By.ID, "field-seed").get_attribute("value") == str(SEED)

    samples, progress_shot, preview_shot = [], False, False
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        sample = browser.execute_script(SAMPLE)
        samples.append(sample)
        if sample["state"] == "IN_PROGRESS" and 0 < sample["progress"] < 1 and not progress_shot:
            shot(browser, "playground-progress.png")
            progress_shot = True
        if sample["state"] == "IN_PROGRESS" and sample["previewLoaded"] and not preview_shot:
            shot(browser, "playground-preview.png")
            preview_shot = True
        if sample["state"] in ("COMPLETED", "FAILED"):
            break
        time.sleep(0.05)
    state = samples[-1]["state"]
    assert state == "COMPLETED", f"run ended {state}: {text(browser, 'error')}"
    running = [sample for sample in samples if sample["state"] == "IN_PROGRESS"]
    assert running, {sample["state"] for sample in samples}
    assert any(0 < sample["progress"] < 1 for sample in running), f"no partial progress shown: {running[:20]}"
    assert progress_shot
    # The run was followed over /ws, and its partial previews replaced one another in the result area before the end.
    assert samples[-1]["transport"] == "ws", samples[-1]
    assert any(sample["preview"] == "data:image/png;base64," for sample in running), running[-5:]
    assert preview_shot, "no preview image was ever shown loaded"
    shown = [sample["partials"] for sample in running if sample["partials"]]
    assert shown and shown == sorted(shown), shown
    # flux/dev's 28 steps publish a preview every 7th step: three of them.
    assert samples[-1]["partials"] == 3, samples[-1]

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
    # /ws admits anonymous callers, so the page follows over the socket without a token.
    assert attribute(browser, "run-panel", "data-transport") == "ws"
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


def test_a_socket_lost_mid_run_falls_back_to_the_status_stream_where_it_left_off(ui_relay, browser):
    # Every WebSocket the page opens closes itself after its sixth message (a few steps into the run).
    script = browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
        const Real = window.WebSocket;
        window.WebSocket = class extends Real {
          constructor(...args) {
            super(...args);
            let count = 0;
            this.addEventListener('message', () => { if (++count === 6) this.close(); });
          }
        };
    """})
    try:
        use_key(browser, ui_relay, ui_relay.key)
        browser.get(share_url(ui_relay, seed=4321))
        samples = sample_run(browser)
    finally:
        browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]})
    assert samples[-1]["state"] == "COMPLETED", text(browser, "error")
    assert {"ws", "sse"} <= {sample["transport"] for sample in samples}, [sample["transport"] for sample in samples][::10]
    assert samples[-1]["transport"] == "sse"
    # The stream resumed after the socket's last sequence number: every step logged exactly once.
    logs = [li.text[li.text.find("step"):] for li in browser.find_elements(By.CSS_SELECTOR, "#logs li")]
    assert logs == [f"step {k}/28" for k in range(1, 29)], logs
    WebDriverWait(browser, WAIT).until(lambda d: any(i["done"] and i["w"] > 0 for i in loaded_images(d)))


def test_text_streams_in_before_the_run_completes(ui_relay, browser):
    use_key(browser, ui_relay, ui_relay.key)
    browser.get_log("browser")
    browser.get(f"{base(ui_relay)}/?" + urllib.parse.urlencode({"model": "fal-ai/any-llm", "prompt": "Tell a short story", "seed": 6, "max_tokens": 40, "run": 1}))
    samples = sample_run(browser)
    assert samples[-1]["state"] == "COMPLETED", text(browser, "error")
    assert samples[-1]["transport"] == "ws", samples[-1]
    streamed = [sample["streamed"] for sample in samples if sample["streamed"] and sample["state"] != "COMPLETED"]
    distinct = list(dict.fromkeys(streamed))
    # The text grew while the run went on: several snapshots, each extending the one before.
    assert len(distinct) >= 2, distinct
    assert all(later.startswith(earlier) and len(later) > len(earlier) for earlier, later in zip(distinct, distinct[1:])), distinct
    final = text(browser, "text-output")
    assert final.startswith(distinct[-1].strip()) and len(final) >= len(distinct[-1].strip())
    assert samples[-1]["partials"] >= len(distinct)
    assert severe_console_errors(browser) == []


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


def test_history_page_searches_prompts_and_shows_spend(ui_relay, browser):
    with httpx.Client(base_url=base(ui_relay), headers={"Authorization": f"Key {ui_relay.key}"}, timeout=30) as client:
        for prompt in ("a history heron over a lake", "a history tram in the rain"):
            response = client.post("/fal-ai/flux/schnell", json={"prompt": prompt, "seed": 5})
            assert response.status_code == 200, response.text
            status_url = response.json()["status_url"]
            deadline = time.monotonic() + WAIT
            while client.get(status_url).json()["status"] != "COMPLETED" and time.monotonic() < deadline:
                time.sleep(0.1)
    use_key(browser, ui_relay, ui_relay.key)
    browser.get_log("browser")
    browser.get(base(ui_relay) + "/history")
    WebDriverWait(browser, WAIT).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#rows tr")) >= 2)
    WebDriverWait(browser, WAIT).until(lambda d: text(d, "v-spent").startswith("$"))
    browser.find_element(By.ID, "q").send_keys("heron")
    browser.find_element(By.CSS_SELECTOR, "#search button[type=submit]").click()
    # The rows' texts in one round trip: the page replaces its rows when an answer arrives.
    rows_text = "return [...document.querySelectorAll('#rows tr')].map((row) => row.textContent)"
    WebDriverWait(browser, WAIT).until(
        lambda d: (rows := d.execute_script(rows_text)) != [] and all("heron" in row for row in rows)
    )
    time.sleep(0.5)  # an earlier, unfiltered page arriving late must not replace the search's rows
    rows = browser.execute_script(rows_text)
    assert len(rows) == 1 and "fal-ai/flux/schnell" in rows[0] and "$" in rows[0], rows
    shot(browser, "history.png")
    assert severe_console_errors(browser) == []


def test_dashboard_shows_spend_and_savings_per_hour_model_and_key(ui_relay, browser):
    use_key(browser, ui_relay, ui_relay.key)
    browser.get_log("browser")
    browser.get(base(ui_relay) + "/dashboard")
    WebDriverWait(browser, WAIT).until(lambda d: attribute(d, "spend", "data-state") == "ready")
    # The earlier tests' generations through this key: FLUX [schnell] at $0.003 a megapixel, some shared.
    assert float(attribute(browser, "v-spent", "data-value")) > 0
    assert float(attribute(browser, "v-saved", "data-value")) > 0
    models = browser.execute_script("return [...document.querySelectorAll('#top-models tr')].map((r) => r.textContent)")
    assert any(row.startswith("fal-ai/flux/schnell") for row in models), models
    keys = browser.execute_script("return [...document.querySelectorAll('#top-keys tr')].map((r) => r.textContent)")
    assert keys and keys[0].startswith(ui_relay.key.split(":")[0]), keys
    assert int(attribute(browser, "c-spend", "data-hours") or 0) >= 1
    shot(browser, "dashboard-spend.png")
    assert severe_console_errors(browser) == []
