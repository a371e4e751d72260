"""Identical work is done once: coalescing in flight, the result cache, Cache-Control, Cache-Status, metrics."""
import asyncio
import re
import ssl

import httpx


def metric(http, relay, name, labels=""):
    text = http.get(f"https://{relay.queue_host}/metrics").text
    pattern = re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" ([0-9.e+]+)"
    match = re.search(pattern, text)
    return float(match.group(1)) if match else 0.0


def submit(http, relay, body, headers=None):
    all_headers = {"Authorization": f"Key {relay.key}", "content-type": "application/json"}
    all_headers.update(headers or {})
    return http.post(f"https://{relay.queue_host}/fal-ai/flux/dev", json=body, headers=all_headers)


def test_second_identical_seeded_request_is_a_cache_hit(fal, http, relay):
    arguments = {"prompt": "cache me", "image_size": "square", "seed": 4242}
    first = fal.subscribe("fal-ai/flux/dev", arguments=arguments)
    started = metric(http, relay, "relay_upstream_jobs_started_total")
    # Same request spelled differently: defaults written out, preset expanded, a no-op field added.
    response = submit(http, relay, {
        "seed": 4242, "num_images": 1, "guidance_scale": 3.5, "prompt": "cache me",
        "image_size": {"height": 512, "width": 512}, "sync_mode": True, "num_inference_steps": 28,
    })
    assert response.status_code == 200
    assert response.headers["x-relay-cache"] == "hit"
    assert response.headers["cache-status"].startswith("MediaRelay; hit; ttl=")
    assert response.json()["status"] == "IN_QUEUE"  # the submit shape is the same for hits
    request_id = response.json()["request_id"]
    status = fal.status("fal-ai/flux/dev", request_id)
    assert type(status).__name__ == "Completed"
    assert fal.result("fal-ai/flux/dev", request_id) == first
    assert metric(http, relay, "relay_upstream_jobs_started_total") == started


def test_cache_control_no_cache_regenerates(fal, http, relay):
    arguments = {"prompt": "regenerate me", "image_size": "square", "seed": 5151}
    fal.subscribe("fal-ai/flux/dev", arguments=arguments)
    started = metric(http, relay, "relay_upstream_jobs_started_total")
    response = submit(http, relay, arguments, headers={"Cache-Control": "no-cache"})
    assert response.headers["x-relay-cache"] == "bypass"
    assert "fwd=request" in response.headers["cache-status"]
    assert metric(http, relay, "relay_upstream_jobs_started_total") == started + 1


def test_unseeded_requests_are_not_served_from_cache(fal, http, relay):
    arguments = {"prompt": "surprise me", "image_size": "square"}
    a = fal.subscribe("fal-ai/flux/schnell", arguments=arguments)
    b = fal.subscribe("fal-ai/flux/schnell", arguments=arguments)
    assert a["seed"] != b["seed"] or a["images"] != b["images"]


def test_thousand_concurrent_identical_submits_make_one_upstream_job(relay, http):
    started = metric(http, relay, "relay_upstream_jobs_started_total")
    body = {"prompt": "the thundering herd", "image_size": "square", "seed": 777, "num_inference_steps": 60}
    headers = {"Authorization": f"Key {relay.admin_key}"}  # admin: not rate limited

    async def herd():
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{relay.http_port}", limits=limits, timeout=60) as client:
            submits = await asyncio.gather(*[client.post("/fal-ai/flux/dev", json=body, headers=headers) for _ in range(1000)])
            ids = [response.json()["request_id"] for response in submits]
            outcomes = {response.headers["x-relay-cache"] for response in submits}
            while True:
                status = await client.get(f"/fal-ai/flux/requests/{ids[-1]}/status", headers=headers)
                if status.json()["status"] == "COMPLETED":
                    break
                await asyncio.sleep(0.05)
            results = await asyncio.gather(*[client.get(f"/fal-ai/flux/requests/{i}", headers=headers) for i in ids])
            return ids, outcomes, results

    ids, outcomes, results = asyncio.run(herd())
    assert len(set(ids)) == 1000
    assert outcomes <= {"miss", "coalesced", "hit"} and "miss" in outcomes
    urls = {response.json()["images"][0]["url"] for response in results}
    assert len(urls) == 1
    assert metric(http, relay, "relay_upstream_jobs_started_total") == started + 1


def test_cancelling_one_of_two_attached_requests_leaves_the_other_running(fal):
    arguments = {"prompt": "shared and cancelled", "image_size": "square", "seed": 31337, "num_inference_steps": 60}
    keep = fal.submit("fal-ai/flux/dev", arguments=arguments)
    drop = fal.submit("fal-ai/flux/dev", arguments=arguments)
    drop.cancel()
    assert type(drop.status()).__name__ == "Completed"
    assert keep.get()["images"]
    assert type(keep.status()).__name__ == "Completed" and keep.status().error is None


def test_metrics_are_prometheus_text(http, relay):
    response = http.get(f"https://{relay.queue_host}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in ["relay_upstream_jobs_started_total", "relay_requests_total", "relay_jobs_in_flight"]:
        assert name in text, name
    assert 'relay_requests_total{cache="miss"}' in text
