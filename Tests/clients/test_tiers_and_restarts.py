"""An edge relay in front of an origin relay (both real processes), and results that survive kill -9."""
import json
import os
import signal
import ssl
import tempfile
import time

import httpx
from websockets.sync.client import connect

from conftest import Relay


def wait_completed(client, base, app, request_id, headers, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.get(f"{base}/{app}/requests/{request_id}/status?logs=1", headers=headers).json()
        if status["status"] == "COMPLETED":
            return status
        time.sleep(0.05)
    raise AssertionError("request did not complete")


def test_edge_relay_in_front_of_origin_relay():
    with tempfile.TemporaryDirectory() as origin_dir, tempfile.TemporaryDirectory() as edge_dir:
        origin = Relay(origin_dir)
        try:
            edge = Relay(edge_dir, extra_args=(
                "--origin", f"https://127.0.0.1:{origin.https_port}",
                "--origin-key", origin.key,
                "--origin-ca", origin.ca,
            ))
            try:
                headers = {"Authorization": f"Key {edge.key}"}
                with httpx.Client(verify=ssl.create_default_context(cafile=edge.ca), timeout=30) as client:
                    base = f"https://{edge.queue_host}"
                    body = {"prompt": "through two relays", "image_size": "square", "seed": 21}
                    submitted = client.post(f"{base}/fal-ai/flux/dev", json=body, headers=headers).json()
                    status = wait_completed(client, base, "fal-ai/flux", submitted["request_id"], headers)
                    assert status.get("error") is None, status
                    assert [log["message"] for log in status["logs"]][-1] == "step 28/28"
                    result = client.get(f"{base}/fal-ai/flux/requests/{submitted['request_id']}", headers=headers).json()
                    url = result["images"][0]["url"]
                    assert url.startswith(f"https://127.0.0.1:{edge.https_port}/files/"), url
                    edge_bytes = client.get(url).content
                    assert edge_bytes[:8] == b"\x89PNG\r\n\x1a\n"
                    # The same request again is an edge cache hit: the origin is not asked.
                    again = client.post(f"{base}/fal-ai/flux/dev", json=body, headers=headers)
                    assert again.headers["x-relay-cache"] == "hit"
                    # Validation errors stop at the edge.
                    assert client.post(f"{base}/fal-ai/flux/dev", json={}, headers=headers).status_code == 422
            finally:
                edge.stop()
        finally:
            origin.stop()


def test_completed_results_survive_kill_9():
    with tempfile.TemporaryDirectory() as data_dir:
        first = Relay(data_dir)
        headers = {"Authorization": f"Key {first.key}"}
        body = {"prompt": "durable", "image_size": "square", "seed": 4321}
        try:
            with httpx.Client(verify=ssl.create_default_context(cafile=first.ca), timeout=30) as client:
                base = f"https://{first.queue_host}"
                request_id = client.post(f"{base}/fal-ai/flux/dev", json=body, headers=headers).json()["request_id"]
                # The stream shows the end the moment it is published: the relay is killed right then, with no
                # time to finish a write. A job's end is published only after its result manifest and its end
                # record are fsynced, so what a client saw complete must be served again after the crash.
                url = f"{base}/fal-ai/flux/requests/{request_id}/status/stream"
                with client.stream("GET", url, headers=headers) as stream:
                    for line in stream.iter_lines():
                        if '"COMPLETED"' in line.replace(" ", ""):
                            first.process.send_signal(signal.SIGKILL)
                            break
        finally:
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(10)
        second = Relay(data_dir)
        try:
            with httpx.Client(verify=ssl.create_default_context(cafile=second.ca), timeout=30) as client:
                base = f"https://{second.queue_host}"
                # The keys file survived too: the first key still reads its request, ended as it was seen.
                restored = client.get(f"{base}/fal-ai/flux/requests/{request_id}", headers=headers)
                assert restored.status_code == 200, restored.text
                # The result's manifest is on disk, not yet in memory: a submission over /ws reads it (off the event
                # loop, as one over HTTP does) and is a hit, not a second generation.
                with connect(f"wss://{second.queue_host}/ws", ssl=ssl.create_default_context(cafile=second.ca),
                             additional_headers={"Authorization": f"Key {second.key}"}) as ws:
                    ws.send(json.dumps({"type": "submit", "model": "fal-ai/flux/dev", "input": body}))
                    submitted = json.loads(ws.recv(timeout=30))
                    assert submitted["type"] == "submitted" and submitted["cache"] == "hit", submitted
                again = client.post(f"{base}/fal-ai/flux/dev", json=body, headers={"Authorization": f"Key {second.key}"})
                assert again.headers["x-relay-cache"] == "hit"
                hit = client.get(f"{base}/fal-ai/flux/requests/{again.json()['request_id']}",
                                 headers={"Authorization": f"Key {second.key}"}).json()
                assert hit["images"] == restored.json()["images"]
                url = hit["images"][0]["url"]
                served = client.get(f"{base}/files/{url.split('/files/')[1]}")
                assert served.status_code == 200 and served.content.startswith(b"\x89PNG")
        finally:
            second.stop()
