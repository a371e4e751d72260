"""A synchronous run or a `/stream` whose client goes away takes its request with it, as fal does: the job stops when
that was its last waiter, and goes on for any other (a queue request stays until it is cancelled)."""
import json
import socket
import time

import httpx
import pytest

from conftest import started_relay
from fleet import wait_for

MODEL = "fal-ai/flux/dev"


@pytest.fixture(scope="module")
def slow_relay():
    """Realistic step times: 0.08 s a step per megapixel (100 steps of 1440 × 1440: about 16 s)."""
    with started_relay("media-relay-leave-", ("--synthetic-time-scale", "1")) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}", timeout=30) as client:
            server.client = client
            yield server


def body(name, long=False):
    size = {"width": 1440, "height": 1440} if long else "square_hd"
    return {"prompt": f"leave {name} {time.time_ns()}", "image_size": size, "num_inference_steps": 100 if long else 40}


def in_flight(relay):
    return relay.client.get("/relay/stats").json()["upstream"]["jobs_in_flight"]


def open_run(relay, path, payload):
    """Sends a run-host POST on a raw socket and returns it unread, as a client that will hang up."""
    data = json.dumps(payload).encode()
    sock = socket.create_connection(("127.0.0.1", relay.http_port), timeout=10)
    sock.sendall((f"POST {path} HTTP/1.1\r\nHost: localhost:{relay.http_port}\r\nAuthorization: Key {relay.key}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data)
    return sock


@pytest.mark.parametrize("path", [f"/{MODEL}", f"/{MODEL}/stream"])
def test_a_client_that_leaves_its_run_stops_the_job_it_alone_waited_on(slow_relay, path):
    wait_for(lambda: in_flight(slow_relay) == 0, 10, "an earlier job never ended")
    sock = open_run(slow_relay, path, body(path, long=True))
    wait_for(lambda: in_flight(slow_relay) == 1, 10, "the run never started a job")
    if path.endswith("/stream"):
        assert sock.recv(65536).startswith(b"HTTP/1.1 200"), "the stream did not begin"
    started = time.monotonic()
    sock.close()
    # Stopped, long before its 16 s would be up (5 s: room for a loaded machine).
    wait_for(lambda: in_flight(slow_relay) == 0, 5, "the job went on after its only client left")
    assert time.monotonic() - started < 5


def test_a_run_client_that_leaves_does_not_stop_a_job_others_wait_on(slow_relay):
    wait_for(lambda: in_flight(slow_relay) == 0, 30, "an earlier job never ended")
    payload = body("shared")
    headers = {"Authorization": f"Key {slow_relay.key}"}
    queued = slow_relay.client.post(f"/{MODEL}", json=payload, headers=headers)
    assert queued.status_code == 200, queued.text
    coalesced = slow_relay.client.get("/relay/stats").json()["submissions"]["coalesced"]
    sock = open_run(slow_relay, f"/{MODEL}", payload)
    wait_for(lambda: slow_relay.client.get("/relay/stats").json()["submissions"]["coalesced"] == coalesced + 1, 10,
             "the run never joined the queued request's job")
    sock.close()
    request_id = queued.json()["request_id"]
    status = f"/fal-ai/flux/requests/{request_id}/status"
    wait_for(lambda: slow_relay.client.get(status, headers=headers).json()["status"] == "COMPLETED", 20,
             "the queue request never completed")
    result = slow_relay.client.get(f"/fal-ai/flux/requests/{request_id}", headers=headers)
    assert result.status_code == 200 and result.json()["images"], result.text
