"""An edge relay in front of an origin relay, both real processes, driven by the official fal Python client
(fal-client 1.0.3, unmodified); and an edge killed with SIGKILL mid-generation that, restarted, follows the origin's
job again by its id instead of resubmitting it (issue #7).

The origin's own counters (`/relay/stats`) say what reached it. fal_client reads its hosts at import, so each step runs
in a fresh interpreter configured by environment before the import (PROTOCOL.md §10), leaving the session's `fal`
fixture alone.
"""
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time

import httpx
import pytest

from conftest import Relay

# Slow enough to act mid-generation: ~0.14 s per step at 512x512 and scale 1.
ORIGIN_TIME_SCALE = "3"
APP = "fal-ai/flux"
MODEL = "fal-ai/flux/dev"

DRIVER = r'''
import json, sys, time
import fal_client

step, app, model, arguments = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
report = {}
if step == "subscribe":
    updates = []
    report["result"] = fal_client.subscribe(model, arguments=arguments, with_logs=True, on_queue_update=updates.append)
    report["kinds"] = [type(update).__name__ for update in updates]
    report["logs"] = [log["message"] for update in updates if type(update).__name__ != "Queued" for log in (update.logs or [])]
elif step == "submit":
    handle = fal_client.submit(model, arguments=arguments)
    report["request_id"] = handle.request_id
    report["first_status"] = type(handle.status(with_logs=True)).__name__
    report["by_handle"] = handle.get()
    status = fal_client.status(app, handle.request_id, with_logs=True)
    report["status"] = type(status).__name__
    report["logs"] = [log["message"] for log in status.logs]
    report["by_id"] = fal_client.result(app, handle.request_id)
elif step == "run":
    report["result"] = fal_client.run(model, arguments=arguments)
elif step == "stream":
    report["events"] = list(fal_client.stream(model, arguments=arguments))
elif step == "cancel":
    handle = fal_client.submit(model, arguments=arguments)
    deadline = time.time() + 30
    while type(handle.status(with_logs=True)).__name__ != "InProgress" and time.time() < deadline:
        time.sleep(0.05)
    fal_client.cancel(app, handle.request_id)
    status = fal_client.status(app, handle.request_id)
    report["request_id"] = handle.request_id
    report["status"] = type(status).__name__
    report["error_type"] = getattr(status, "error_type", None)
    try:
        fal_client.result(app, handle.request_id)
        report["result_error"] = None
    except fal_client.client.FalClientHTTPError as error:
        report["result_error"] = [error.status_code, error.error_type]
print("REPORT " + json.dumps(report))
'''


def fal_step(edge, step, arguments, model=MODEL, timeout=90):
    """Runs one step of DRIVER with the unmodified fal client pointed at `edge`; returns its report."""
    env = {
        **os.environ,
        "FAL_KEY": edge.key,
        "FAL_RUN_HOST": edge.run_host,
        "FAL_QUEUE_RUN_HOST": edge.queue_host,
        "SSL_CERT_FILE": edge.ca,
    }
    for name in ("FAL_KEY_ID", "FAL_KEY_SECRET"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, step, APP, model, json.dumps(arguments)],
        env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert done.returncode == 0, f"fal client step {step} failed:\n{done.stdout}\n{done.stderr}"
    line = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")][-1]
    return json.loads(line[len("REPORT "):])


def stats(relay):
    response = httpx.get(f"http://127.0.0.1:{relay.http_port}/relay/stats", timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(condition, timeout, message):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(message)


def edge_args(origin):
    # The origin relay names its media by its HTTPS address: the edge trusts its development CA to pull them.
    return (
        "--origin", f"http://127.0.0.1:{origin.http_port}",
        "--origin-key", origin.key,
        "--origin-ca", origin.ca,
    )


@pytest.fixture(scope="module")
def origin():
    with tempfile.TemporaryDirectory(prefix="media-relay-origin-") as data_dir:
        server = Relay(data_dir, extra_args=("--synthetic-time-scale", ORIGIN_TIME_SCALE))
        try:
            yield server
        finally:
            server.stop()


def test_fal_client_through_an_edge_in_front_of_an_origin(origin):
    with tempfile.TemporaryDirectory(prefix="media-relay-edge-") as edge_dir:
        edge = Relay(edge_dir, extra_args=edge_args(origin))
        try:
            started = stats(origin)["upstream"]["jobs_started"]
            arguments = {"prompt": "a lighthouse through two relays", "image_size": "square", "seed": 71}

            # subscribe with logs and queue updates: the origin's progress arrives through the edge.
            subscribed = fal_step(edge, "subscribe", arguments)
            assert "InProgress" in subscribed["kinds"] and subscribed["kinds"][-1] == "Completed", subscribed["kinds"]
            assert "step 28/28" in subscribed["logs"], subscribed["logs"]
            image = subscribed["result"]["images"][0]
            assert image["url"].startswith(f"https://127.0.0.1:{edge.https_port}/files/"), image["url"]
            with httpx.Client(verify=ssl.create_default_context(cafile=edge.ca), timeout=30) as client:
                assert client.get(image["url"]).content[:8] == b"\x89PNG\r\n\x1a\n"
            assert stats(origin)["upstream"]["jobs_started"] == started + 1

            # The same request again is served by the edge's cache: the origin is not asked.
            hits = stats(edge)["submissions"]["hit"]
            again = fal_step(edge, "subscribe", arguments)
            assert again["result"] == subscribed["result"]
            assert stats(edge)["submissions"]["hit"] == hits + 1
            assert stats(origin)["upstream"]["jobs_started"] == started + 1

            # submit, status and result, by handle and by id.
            submitted = fal_step(edge, "submit", {**arguments, "seed": 72})
            assert submitted["first_status"] in ("Queued", "InProgress", "Completed")
            assert submitted["status"] == "Completed" and submitted["logs"][-1] == "step 28/28", submitted["logs"]
            assert submitted["by_id"] == submitted["by_handle"]
            assert submitted["by_id"]["seed"] == 72
            assert stats(origin)["upstream"]["jobs_started"] == started + 2

            # run and stream on the run host end with the origin's output, media on the edge.
            ran = fal_step(edge, "run", {**arguments, "seed": 73})
            assert ran["result"]["images"][0]["url"].startswith(f"https://127.0.0.1:{edge.https_port}/files/")
            streamed = fal_step(edge, "stream", {**arguments, "seed": 74})
            assert streamed["events"], "no stream events"
            final = streamed["events"][-1]
            assert final["images"][0]["url"].startswith(f"https://127.0.0.1:{edge.https_port}/files/"), final
            assert stats(origin)["upstream"]["jobs_started"] == started + 4

            # Cancel at the edge reaches the origin: its job stops long before its ~9 s would be up.
            assert stats(origin)["upstream"]["jobs_in_flight"] == 0
            begun = time.time()
            cancelled = fal_step(edge, "cancel", {**arguments, "seed": 75, "num_inference_steps": 80})
            assert cancelled["status"] == "Completed", cancelled
            assert cancelled["result_error"] is not None and cancelled["result_error"][0] == 400, cancelled
            assert stats(origin)["upstream"]["jobs_started"] == started + 5
            wait_for(lambda: stats(origin)["upstream"]["jobs_in_flight"] == 0, 5, "the origin's job was not cancelled")
            assert time.time() - begun < 8, "the origin's job ran to its end instead of being cancelled"
        finally:
            edge.stop()


def test_an_edge_killed_mid_generation_follows_the_origin_job_again(origin):
    with tempfile.TemporaryDirectory(prefix="media-relay-edge-") as edge_dir:
        first = Relay(edge_dir, extra_args=edge_args(origin))
        headers = {"Authorization": f"Key {first.key}"}
        before = stats(origin)
        body = {"prompt": "survives a crash of the edge", "image_size": "square", "seed": 99, "num_inference_steps": 60}
        try:
            with httpx.Client(timeout=30) as client:
                base = f"http://127.0.0.1:{first.http_port}"
                submitted = client.post(f"{base}/{MODEL}", json=body, headers=headers)
                assert submitted.status_code == 200, submitted.text
                request_id = submitted.json()["request_id"]

                def running():
                    status = client.get(f"{base}/{APP}/requests/{request_id}/status?logs=1", headers=headers).json()
                    return status["status"] == "IN_PROGRESS" and len(status["logs"]) >= 3

                wait_for(running, 30, "the job never showed progress at the edge")
        finally:
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(10)
        assert stats(origin)["upstream"]["jobs_in_flight"] == 1, "the origin's job should still be running"

        second = Relay(edge_dir, extra_args=edge_args(origin))
        try:
            with httpx.Client(verify=ssl.create_default_context(cafile=second.ca), timeout=30) as client:
                base = f"https://{second.queue_host}"

                def completed():
                    status = client.get(f"{base}/{APP}/requests/{request_id}/status?logs=1", headers=headers).json()
                    return status if status["status"] == "COMPLETED" else None

                status = wait_for(completed, 60, "the request did not complete after the restart")
                assert status.get("error") is None, status
                assert status["logs"][-1]["message"] == "step 60/60", status["logs"][-3:]
                result = client.get(f"{base}/{APP}/requests/{request_id}", headers=headers)
                assert result.status_code == 200, result.text
                url = result.json()["images"][0]["url"]
                assert url.startswith(f"https://127.0.0.1:{second.https_port}/files/"), url
                assert client.get(url).content[:8] == b"\x89PNG\r\n\x1a\n"
            after = stats(origin)
            # Run exactly once at the origin: followed again by its id, never resubmitted (a resubmission would also
            # show as a second submission, even if the origin coalesced it).
            assert after["upstream"]["jobs_started"] == before["upstream"]["jobs_started"] + 1
            assert after["submissions"]["total"] == before["submissions"]["total"] + 1
        finally:
            second.stop()
