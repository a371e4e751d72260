"""`?fal_webhook=URL`: one signed delivery per request in fal's payload shape, retried with backoff, SSRF-checked."""
import json
import os
import re
import ssl
import tempfile
import time
import urllib.parse

import httpx
import pytest

from conftest import Relay
from peers import WebhookReceiver, verify_fal_webhook


@pytest.fixture(scope="module")
def receiver():
    server = WebhookReceiver()
    yield server
    server.server.shutdown()


@pytest.fixture(scope="module")
def webhook_relay():
    """A relay that may call loopback receivers, with a 200 ms retry base so retries take well under a second."""
    with tempfile.TemporaryDirectory(prefix="media-relay-webhooks-") as data_dir:
        server = Relay(data_dir, extra_args=["--webhook-allow-private", "on", "--webhook-retry-base-ms", "200"])
        try:
            yield server
        finally:
            server.stop()
            assert server.process.returncode == 0, "".join(server.output[-40:])


def client_for(relay):
    return httpx.Client(verify=ssl.create_default_context(cafile=relay.ca), timeout=30)


def submit(client, relay, arguments, webhook):
    query = urllib.parse.urlencode({"fal_webhook": webhook})
    return client.post(
        f"https://{relay.queue_host}/fal-ai/flux/dev?{query}", json=arguments, headers={"Authorization": f"Key {relay.key}"}
    )


def jwks(client, relay):
    """The relay's JWKS, fetched as a receiver written for fal fetches fal's (the relay's URL in place of fal's)."""
    response = client.get(f"https://{relay.queue_host}/.well-known/jwks.json")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    return response.json()


def delivered_count(client, relay):
    text = client.get(f"https://{relay.queue_host}/metrics").text
    match = re.search(r'relay_webhook_deliveries_total\{outcome="delivered"\} ([0-9.e+]+)', text)
    return float(match.group(1)) if match else 0.0


def test_completed_request_is_delivered_signed_after_two_503s(webhook_relay, receiver):
    path = "/hooks/retry"
    receiver.script(path, [503, 503, 200])
    with client_for(webhook_relay) as client:
        before = delivered_count(client, webhook_relay)
        response = submit(client, webhook_relay, {"prompt": "a lighthouse at dusk", "seed": 9001}, receiver.url(path))
        assert response.status_code == 200, response.text
        request_id = response.json()["request_id"]

        calls = receiver.wait_for(path, 3)
        time.sleep(0.5)
        assert len(receiver.calls_to(path)) == 3, "delivered once, then no more attempts"
        # Backoff: the retries are spaced, not fired back to back (full jitter can make one gap tiny, not both 0).
        assert calls[2]["at"] - calls[0]["at"] < 5
        keys = jwks(client, webhook_relay)
        ids = set()
        for call in calls:
            headers = call["headers"]
            assert headers["content-type"] == "application/json"
            assert headers["user-agent"].startswith("MediaRelay")
            assert headers["x-fal-webhook-request-id"] == request_id
            assert headers["x-fal-webhook-user-id"] == webhook_relay.key.split(":")[0], headers
            assert verify_fal_webhook(keys, headers, call["body"]), headers
            assert not verify_fal_webhook(keys, headers, call["body"] + b" "), "a changed body must not verify"
            assert not verify_fal_webhook(keys, {**headers, "x-fal-webhook-user-id": "someone-else"}, call["body"])
            assert not verify_fal_webhook(keys, headers, call["body"], max_age=-1), "an old timestamp must not verify"
            ids.add(headers["x-relay-webhook-id"])
        assert len(ids) == 1, "one webhook id across the retries of one delivery"
        # Each attempt is signed when it is sent (receivers refuse timestamps older than five minutes).
        assert all(int(call["headers"]["x-fal-webhook-timestamp"]) >= int(calls[0]["headers"]["x-fal-webhook-timestamp"])
                   for call in calls)

        payload = json.loads(calls[-1]["body"])
        assert payload["request_id"] == request_id
        assert payload["gateway_request_id"] == request_id
        assert payload["status"] == "OK"
        assert payload["error"] is None
        result = client.get(
            f"https://{webhook_relay.queue_host}/fal-ai/flux/requests/{request_id}",
            headers={"Authorization": f"Key {webhook_relay.key}"},
        )
        assert result.status_code == 200
        assert payload["payload"] == result.json()
        assert payload["payload"]["images"][0]["url"]

        deadline = time.time() + 5
        while delivered_count(client, webhook_relay) < before + 1 and time.time() < deadline:
            time.sleep(0.1)
        assert delivered_count(client, webhook_relay) == before + 1


def test_identical_submissions_each_get_their_own_delivery(webhook_relay, receiver):
    path = "/hooks/pair"
    arguments = {"prompt": "two of the same", "seed": 4711}
    with client_for(webhook_relay) as client:
        first = submit(client, webhook_relay, arguments, receiver.url(path))
        second = submit(client, webhook_relay, arguments, receiver.url(path))
        assert first.status_code == 200 and second.status_code == 200
        assert second.headers["x-relay-cache"] in ("coalesced", "hit")
        submitted = {first.json()["request_id"], second.json()["request_id"]}
        assert len(submitted) == 2

    calls = receiver.wait_for(path, 2)
    time.sleep(0.5)
    calls = receiver.calls_to(path)
    assert len(calls) == 2
    payloads = [json.loads(call["body"]) for call in calls]
    assert {payload["request_id"] for payload in payloads} == submitted
    assert payloads[0]["payload"] == payloads[1]["payload"]
    assert calls[0]["headers"]["x-relay-webhook-id"] != calls[1]["headers"]["x-relay-webhook-id"]


def test_receiver_refusal_is_not_retried(webhook_relay, receiver):
    path = "/hooks/gone"
    receiver.script(path, [410, 200])
    with client_for(webhook_relay) as client:
        response = submit(client, webhook_relay, {"prompt": "nobody listens", "seed": 12}, receiver.url(path))
        assert response.status_code == 200
    receiver.wait_for(path, 1)
    time.sleep(1.5)  # retries would come after at most 0.2 s + 0.4 s
    assert len(receiver.calls_to(path)) == 1


def test_loopback_webhook_is_refused_by_default(relay, http):
    response = submit(http, relay, {"prompt": "ssrf"}, "http://127.0.0.1:9/hook")
    assert response.status_code == 422
    (issue,) = response.json()["detail"]
    assert issue["loc"] == ["query", "fal_webhook"]
    assert issue["type"] == "value_error.url.host"
    assert "loopback" in issue["msg"]
    for url in ["http://169.254.169.254/latest/meta-data/", "http://[::ffff:10.0.0.1]/", "http://localhost:8080/", "http://2130706433/"]:
        response = submit(http, relay, {"prompt": "ssrf"}, url)
        assert response.status_code == 422, url
        assert response.json()["detail"][0]["loc"] == ["query", "fal_webhook"]


def test_non_http_webhook_is_refused(relay, http):
    for url in ["ftp://example.com/hook", "file:///etc/passwd", "not a url", "https://user:secret@example.com/hook"]:
        response = submit(http, relay, {"prompt": "wrong scheme"}, url)
        assert response.status_code == 422, url
        (issue,) = response.json()["detail"]
        assert issue["loc"] == ["query", "fal_webhook"]
        assert issue["type"].startswith("value_error.url")


def test_request_cancelled_on_its_own_gets_an_error_webhook(webhook_relay, receiver):
    path = "/hooks/cancel"
    arguments = {"prompt": "one stays, one leaves", "seed": 31337, "num_inference_steps": 50}
    with client_for(webhook_relay) as client:
        stays = submit(client, webhook_relay, arguments, receiver.url(path)).json()["request_id"]
        leaves = submit(client, webhook_relay, arguments, receiver.url(path)).json()["request_id"]
        cancel = client.put(
            f"https://{webhook_relay.queue_host}/fal-ai/flux/requests/{leaves}/cancel",
            headers={"Authorization": f"Key {webhook_relay.key}"},
        )
        assert cancel.status_code == 202, cancel.text
    calls = receiver.wait_for(path, 2)
    by_request = {payload["request_id"]: payload for payload in (json.loads(call["body"]) for call in calls)}
    assert by_request[stays]["status"] == "OK"
    assert by_request[leaves]["status"] == "ERROR"
    assert by_request[leaves]["payload"]["error_type"] == "request_cancelled"
    assert by_request[leaves]["error"]
