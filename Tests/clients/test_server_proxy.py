"""fal's server-proxy mode (`@fal-ai/server-proxy`'s contract, PROTOCOL.md §11.2): a browser app configured with fal-js
`proxyUrl` calls `/api/fal/proxy` with `x-fal-target-url` and no key; the relay serves the target itself as its
configured key. Driven here as fal-js drives a proxy: every call to fal goes to the proxy URL with the real fal URL
in `x-fal-target-url`."""
import os
import ssl
import subprocess
import tempfile
import time

import httpx
import pytest

from conftest import BINARY, Relay

ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def proxied():
    with tempfile.TemporaryDirectory(prefix="media-relay-proxy-") as data_dir:
        key = subprocess.run([BINARY, "keys", "create", "--tier", "pro", "--data-dir", data_dir],
                             check=True, capture_output=True, text=True, timeout=60).stdout.strip().splitlines()[-1]
        relay = Relay(data_dir, extra_args=("--proxy-key", key, "--proxy-allowed-origins", ORIGIN,
                                            "--proxy-allowed-endpoints", "fal-ai/flux/*,fal-ai/any-llm"))
        try:
            yield relay
        finally:
            relay.stop()


def proxy(http, relay, method, target, body=None, headers=None):
    """One call as fal-js makes it through `proxyUrl`: no key, the target in a header, the page's Origin."""
    sent = {"x-fal-target-url": target, "origin": ORIGIN, **(headers or {})}
    return http.request(method, f"https://{relay.queue_host}/api/fal/proxy", json=body, headers=sent)


def client(relay):
    return httpx.Client(verify=ssl.create_default_context(cafile=relay.ca), timeout=30)


def test_queue_submit_status_and_result_through_the_proxy_with_no_key_in_the_browser(proxied):
    body = {"prompt": f"proxied {time.time_ns()}", "image_size": "square", "seed": 3}
    with client(proxied) as http:
        submitted = proxy(http, proxied, "POST", "https://queue.fal.run/fal-ai/flux/dev", body)
        assert submitted.status_code == 200, submitted.text
        request_id = submitted.json()["request_id"]
        assert submitted.headers["x-relay-cache"] == "miss"
        status_url = f"https://queue.fal.run/fal-ai/flux/requests/{request_id}/status"
        deadline = time.time() + 60
        while time.time() < deadline:
            status = proxy(http, proxied, "GET", status_url + "?logs=1")
            assert status.status_code in (200, 202), status.text
            if status.json()["status"] == "COMPLETED":
                break
            time.sleep(0.05)
        # A same-origin GET may come without `Origin`: its `Referer` names the page.
        result = http.get(f"https://{proxied.queue_host}/api/fal/proxy",
                          headers={"x-fal-target-url": f"https://queue.fal.run/fal-ai/flux/requests/{request_id}",
                                   "referer": ORIGIN + "/gallery?page=2"})
        assert result.status_code == 200 and result.json()["images"][0]["url"], result.text
        # Served by the relay, cache and all: the same input again is a hit.
        again = proxy(http, proxied, "POST", "https://queue.fal.run/fal-ai/flux/dev", body)
        assert again.status_code == 200 and again.headers["x-relay-cache"] == "hit", again.headers
        # The request belongs to the proxy's key: the relay reads it with that key, not without one.
        direct = http.get(f"https://{proxied.queue_host}/fal-ai/flux/requests/{request_id}/status")
        assert direct.status_code in (401, 404), direct.text


def test_run_host_and_storage_targets(proxied):
    with client(proxied) as http:
        run = proxy(http, proxied, "POST", "https://fal.run/fal-ai/flux/schnell",
                    {"prompt": f"run through the proxy {time.time_ns()}", "seed": 4})
        assert run.status_code == 200 and run.json()["images"], run.text
        initiate = proxy(http, proxied, "POST", "https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3",
                         {"content_type": "text/plain", "file_name": "a.txt"})
        assert initiate.status_code == 200 and initiate.json()["upload_url"], initiate.text


def test_what_the_proxy_refuses(proxied):
    with client(proxied) as http:
        base = f"https://{proxied.queue_host}/api/fal/proxy"
        missing = http.post(base, json={}, headers={"origin": ORIGIN})
        assert missing.status_code == 400 and "x-fal-target-url" in missing.json()["detail"], missing.text
        for target in ("https://evil.example/fal-ai/flux/dev", "http://queue.fal.run/fal-ai/flux/dev",
                       "https://rest.fal.ai/admin/keys", "https://queue.fal.run/../admin/stats",
                       "https://queue.fal.run/admin/stats", "https://queue.fal.run/metrics",
                       "https://queue.fal.run/_cluster/v1/follow"):
            refused = proxy(http, proxied, "POST", target, {"prompt": "x"})
            assert refused.status_code == 400, (target, refused.text)
        # An endpoint outside the allow-list.
        other = proxy(http, proxied, "POST", "https://queue.fal.run/fal-ai/elevenlabs/tts/multilingual-v2", {"text": "x"})
        assert other.status_code == 400 and other.json()["error_type"] == "endpoint_not_allowed", other.text
        # A page from another origin, with no key of its own.
        stranger = proxy(http, proxied, "POST", "https://queue.fal.run/fal-ai/flux/dev", {"prompt": "x"},
                         headers={"origin": "https://evil.example"})
        assert stranger.status_code == 401, stranger.text
        # A caller with a key of its own (a server, a session) may use it from anywhere, as that key: the request is
        # its own, read back with its key.
        keyed = proxy(http, proxied, "POST", "https://queue.fal.run/fal-ai/flux/dev",
                      {"prompt": f"keyed {time.time_ns()}", "seed": 1},
                      headers={"origin": "https://elsewhere.example", "authorization": f"Key {proxied.key}"})
        assert keyed.status_code == 200, keyed.text
        own = http.get(f"https://{proxied.queue_host}/fal-ai/flux/requests/{keyed.json()['request_id']}/status",
                       headers={"authorization": f"Key {proxied.key}"})
        assert own.status_code in (200, 202), own.text
