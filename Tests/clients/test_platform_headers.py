"""fal's platform headers (PROTOCOL.md §11.1) through an edge relay in front of an origin relay, both real processes:
what the edge does with each, and what the origin received (its access log)."""
import re
import ssl
import tempfile
import time

import httpx
import pytest

from conftest import Relay, started_relay


@pytest.fixture(scope="module")
def tiers():
    with tempfile.TemporaryDirectory() as origin_dir, tempfile.TemporaryDirectory() as edge_dir:
        origin = Relay(origin_dir, extra_args=("--log-level", "info"))
        try:
            edge = Relay(edge_dir, extra_args=(
                "--origin", f"https://127.0.0.1:{origin.https_port}", "--origin-key", origin.key,
                "--origin-ca", origin.ca, "--log-level", "info",
            ))
            try:
                yield edge, origin
            finally:
                edge.stop()
        finally:
            origin.stop()


def client(relay):
    return httpx.Client(verify=ssl.create_default_context(cafile=relay.ca), timeout=30)


def wait_completed(http, relay, request_id, timeout=60):
    base = f"https://{relay.queue_host}/fal-ai/flux/requests/{request_id}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = http.get(f"{base}/status", headers={"Authorization": f"Key {relay.key}"}).json()
        if status["status"] == "COMPLETED":
            return status
        time.sleep(0.05)
    raise AssertionError("request did not complete")


def submit_lines(relay):
    """The access lines of submissions (`route=submit`), as the relay printed them."""
    return [line for line in relay.output if "route=submit" in line]


def test_a_bad_timeout_or_priority_is_a_422_naming_the_header(tiers):
    edge, _ = tiers
    with client(edge) as http:
        for name, value in (("X-Fal-Request-Timeout", "0.05"), ("X-Fal-Request-Timeout", "soon"),
                            ("X-Fal-Queue-Priority", "urgent")):
            answer = http.post(f"https://{edge.queue_host}/fal-ai/flux/dev", json={"prompt": "p"},
                               headers={"Authorization": f"Key {edge.key}", name: value})
            assert answer.status_code == 422, answer.text
            issue = answer.json()["detail"][0]
            assert issue["loc"] == ["header", name] and name in issue["msg"], issue


def test_tags_are_kept_logged_and_forwarded_invalid_ones_dropped(tiers):
    edge, origin = tiers
    tags = "team=ml,fal.reserved=1,Bad=x,env=prod"
    body = {"prompt": f"tagged {time.time_ns()}", "image_size": "square", "seed": 5}
    with client(edge) as http:
        answer = http.post(f"https://{edge.queue_host}/fal-ai/flux/dev", json=body,
                           headers={"Authorization": f"Key {edge.key}", "X-Fal-Tags": tags, "X-Fal-Runner-Hint": "lora-1"})
        assert answer.status_code == 200, answer.text
        wait_completed(http, edge, answer.json()["request_id"])
    # The edge logs the valid ones; the origin got them with the submission it was forwarded.
    assert any('tags="team=ml,env=prod"' in line for line in submit_lines(edge)), submit_lines(edge)[-3:]
    deadline = time.time() + 5
    while time.time() < deadline and not any('tags="team=ml,env=prod"' in line for line in submit_lines(origin)):
        time.sleep(0.05)
    assert any('tags="team=ml,env=prod"' in line for line in submit_lines(origin)), submit_lines(origin)[-3:]


def test_store_io_0_keeps_nothing_at_the_edge_or_the_origin(tiers):
    edge, origin = tiers
    body = {"prompt": f"not stored {time.time_ns()}", "image_size": "square", "seed": 6}
    headers = {"Authorization": f"Key {edge.key}"}
    with client(edge) as http:
        first = http.post(f"https://{edge.queue_host}/fal-ai/flux/dev", json=body,
                          headers={**headers, "X-Fal-Store-IO": "0"})
        assert first.status_code == 200, first.text
        wait_completed(http, edge, first.json()["request_id"])
        before = len(submit_lines(origin))
        # Nothing was kept at the edge: the same input again is a miss there, and the origin (told the same) has
        # nothing either: it generates again.
        again = http.post(f"https://{edge.queue_host}/fal-ai/flux/dev", json=body, headers=headers)
        assert again.headers["x-relay-cache"] == "miss", again.headers
        wait_completed(http, edge, again.json()["request_id"])
    deadline = time.time() + 5
    while time.time() < deadline and len(submit_lines(origin)) <= before:
        time.sleep(0.05)
    assert re.search(r"cache=miss", submit_lines(origin)[before]), submit_lines(origin)[before:]


def test_a_lifecycle_preference_deletes_the_media_at_the_edge_and_the_origin(tiers):
    edge, origin = tiers
    body = {"prompt": f"short-lived {time.time_ns()}", "image_size": "square", "seed": 8}
    lifecycle = '{"expiration_duration_seconds": 2}'
    with client(edge) as http:
        for bad in ('{"expiration_duration_seconds": 1.5}', "soon",
                    '{"initial_acl": {"default": "hide"}}', '{"initial_acl": {"rules": [{"user": "u", "decision": "allow"}]}}'):
            refused = http.post(f"https://{edge.queue_host}/fal-ai/flux/dev", json=body,
                                headers={"Authorization": f"Key {edge.key}", "X-Fal-Object-Lifecycle-Preference": bad})
            assert refused.status_code == 422, (bad, refused.text)
            assert refused.json()["detail"][0]["loc"] == ["header", "X-Fal-Object-Lifecycle-Preference"]
        answer = http.post(f"https://{edge.queue_host}/fal-ai/flux/dev", json=body,
                           headers={"Authorization": f"Key {edge.key}", "X-Fal-Object-Lifecycle-Preference": lifecycle})
        assert answer.status_code == 200, answer.text
        wait_completed(http, edge, answer.json()["request_id"])
        edge_media = http.get(answer.json()["response_url"], headers={"Authorization": f"Key {edge.key}"}).json()
        edge_url = edge_media["images"][0]["url"]
        # The origin made it under the same preference (forwarded by name): its own history names its file.
        with client(origin) as origin_http:
            made = origin_http.get(f"https://{origin.queue_host}/v1/models/requests/by-endpoint",
                                   params={"expand": "payloads", "q": body["prompt"]},
                                   headers={"Authorization": f"Key {origin.admin_key}"}).json()["items"]
            origin_url = made[0]["json_output"]["images"][0]["url"]
            # A hit names the result's lifetime: never longer than its media's.
            hit = http.post(f"https://{edge.queue_host}/fal-ai/flux/dev", json=body,
                            headers={"Authorization": f"Key {edge.key}"})
            assert hit.headers["x-relay-cache"] == "hit"
            assert int(re.search(r"ttl=(-?\d+)", hit.headers["cache-status"]).group(1)) <= 2
            assert http.get(edge_url).status_code == 200 and origin_http.get(origin_url).status_code == 200
            # The store's sweep (every 30 s) deletes them once their time has come.
            deadline = time.time() + 45
            while time.time() < deadline and (http.get(edge_url).status_code != 404
                                              or origin_http.get(origin_url).status_code != 404):
                time.sleep(0.5)
            assert http.get(edge_url).status_code == 404 and origin_http.get(origin_url).status_code == 404


def test_max_queue_length_refuses_new_work_behind_a_long_queue_but_never_a_hit():
    # Slow generations (2 slots) so that a queue forms and stays while the test looks at it.
    with started_relay("media-relay-headers-", extra_args=("--synthetic-time-scale", "3")) as relay:
        headers = {"Authorization": f"Key {relay.key}"}
        base = f"https://{relay.queue_host}/fal-ai/flux/dev"
        with client(relay) as http:
            first = {"prompt": f"queue head {time.time_ns()}", "seed": 1}
            ids = [http.post(base, json=first, headers=headers).json()["request_id"]]
            for n in range(5):
                answer = http.post(base, json={"prompt": f"queued {n} {time.time_ns()}", "seed": n}, headers=headers)
                assert answer.status_code == 200, answer.text
                ids.append(answer.json()["request_id"])
            # Two run, four wait: a new generation that would wait behind more than one is refused.
            refused = http.post(f"{base}?fal_max_queue_length=1", json={"prompt": "one more", "seed": 9},
                                headers=headers)
            assert refused.status_code == 429, refused.text
            assert "fal_max_queue_length" in refused.json()["detail"] and refused.headers.get("retry-after")
            # Behind at most ten it goes in; and the same input as one in flight is coalesced, never refused.
            taken = http.post(f"{base}?fal_max_queue_length=10", json={"prompt": "one more", "seed": 9},
                              headers=headers)
            assert taken.status_code == 200, taken.text
            shared = http.post(f"{base}?fal_max_queue_length=0", json=first, headers=headers)
            assert shared.status_code == 200 and shared.headers["x-relay-cache"] == "coalesced", shared.headers
            bad = http.post(f"{base}?fal_max_queue_length=lots", json=first, headers=headers)
            assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "fal_max_queue_length"]
            for request_id in ids:
                http.put(f"https://{relay.queue_host}/fal-ai/flux/requests/{request_id}/cancel", headers=headers)


def test_queue_priority_serves_normal_before_low_and_a_shared_job_takes_the_highest():
    # One slot and slow generations: the order in which queued jobs start is what the test watches.
    with started_relay("media-relay-headers-", extra_args=("--synthetic-time-scale", "0.5", "--synthetic-slots", "1")) as relay:
        headers = {"Authorization": f"Key {relay.key}"}
        base = f"https://{relay.queue_host}/fal-ai/flux/schnell"
        tag = time.time_ns()

        def post(name, priority=None):
            extra = {"X-Fal-Queue-Priority": priority} if priority else {}
            answer = http.post(base, json={"prompt": f"{name} {tag}", "seed": 1}, headers={**headers, **extra})
            assert answer.status_code == 200, answer.text
            return answer.json()["request_id"]

        def started_order(ids):
            """Request ids in the order their jobs started (IN_PROGRESS first seen), polling all of them."""
            seen, deadline = [], time.time() + 60
            while len(seen) < len(ids) and time.time() < deadline:
                for request_id in ids:
                    if request_id in seen:
                        continue
                    status = http.get(f"https://{relay.queue_host}/fal-ai/flux/requests/{request_id}/status",
                                      headers=headers).json()
                    if status["status"] != "IN_QUEUE":
                        seen.append(request_id)
                time.sleep(0.01)
            return seen

        with client(relay) as http:
            running = post("running")
            low_a = post("low a", "low")
            low_b = post("low b", "low")
            normal = post("normal")
            # A normal request for low b's input shares its job, which then waits as a normal one.
            raised = post("low b")
            order = started_order([running, low_a, low_b, normal])
            assert order == [running, normal, low_b, low_a], order
            status = http.get(f"https://{relay.queue_host}/fal-ai/flux/requests/{raised}/status",
                              headers=headers).json()
            assert status["status"] in ("IN_PROGRESS", "COMPLETED"), status


def test_a_request_not_started_within_its_timeout_ends_with_504_and_the_shared_job_goes_on():
    with started_relay("media-relay-headers-", extra_args=("--synthetic-time-scale", "2", "--synthetic-slots", "1")) as relay:
        headers = {"Authorization": f"Key {relay.key}"}
        base = f"https://{relay.queue_host}/fal-ai/flux/schnell"
        requests = f"https://{relay.queue_host}/fal-ai/flux/requests"
        tag = time.time_ns()
        with client(relay) as http:
            running = http.post(base, json={"prompt": f"runs {tag}", "seed": 1}, headers=headers).json()
            waiting = {"prompt": f"waits {tag}", "seed": 2}
            # As fal_client sends `start_timeout=0.5` (the header); a second request shares the job, with none.
            impatient = http.post(base, json=waiting, headers={**headers, "X-Fal-Request-Timeout": "0.5"}).json()
            patient = http.post(base, json=waiting, headers=headers)
            assert patient.headers["x-relay-cache"] == "coalesced"
            time.sleep(1.0)
            status = http.get(f"{requests}/{impatient['request_id']}/status", headers=headers).json()
            assert status["status"] == "COMPLETED" and status.get("error"), status
            result = http.get(f"{requests}/{impatient['request_id']}", headers=headers)
            assert result.status_code == 504, result.text
            assert result.headers["x-fal-request-timeout-type"] == "user"
            assert "X-Fal-Request-Timeout" in result.json()["detail"]
            # The request without a deadline still waits for the shared job, which runs and completes.
            other = http.get(f"{requests}/{patient.json()['request_id']}/status", headers=headers).json()
            assert other["status"] in ("IN_QUEUE", "IN_PROGRESS"), other
            other = wait_completed(http, relay, patient.json()["request_id"])
            assert not other.get("error"), other
            # A request that started in time is not touched by its deadline.
            done = http.get(f"{requests}/{running['request_id']}", headers=headers)
            assert done.status_code == 200, done.text
