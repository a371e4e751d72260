"""A fleet relaying to a fal-compatible origin (another relay here): a node killed while the origin runs its job is
taken over by a live node that follows the origin's job by its id (kept with the key's claim), never submitting it
again (issue #17, failure without loss)."""
import tempfile
import time
import uuid

import httpx
import pytest

from conftest import Relay
from fleet import result, started_fleet, status, submit, wait_completed, wait_for

LEASE_SECONDS = 3


def origin_stats(origin):
    return httpx.get(f"http://127.0.0.1:{origin.http_port}/relay/stats", timeout=5).json()


@pytest.fixture(scope="module")
def origin():
    with tempfile.TemporaryDirectory(prefix="media-relay-fleet-origin-") as data_dir:
        server = Relay(data_dir, extra_args=("--synthetic-time-scale", "1"))
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def fleet(origin):
    relay_to_origin = ("--origin", f"http://127.0.0.1:{origin.http_port}", "--origin-key", origin.key,
                       "--origin-ca", origin.ca, "--cluster-lease-seconds", str(LEASE_SECONDS),
                       # The test polls one request on two nodes as fast as it can: not the read budget's business.
                       "--rate-limits", "off")
    with started_fleet(nodes=3, extra_args=relay_to_origin) as running:
        yield running


def test_an_origin_job_of_a_killed_node_is_followed_by_its_id_not_submitted_again(fleet, origin):
    body = {"prompt": f"an origin job that outlives its node {uuid.uuid4()}", "image_size": "square", "seed": 3,
            "num_inference_steps": 100}
    before = origin_stats(origin)["submissions"]["total"]
    answer = submit(fleet, 0, body)
    assert answer.status_code == 200, answer.text
    request_id = answer.json()["request_id"]
    # Running at the origin (its logs come through node 0) before node 0 dies.
    wait_for(lambda: len(status(fleet, 0, request_id).json().get("logs") or []) >= 3, 30, "the job never started")
    assert origin_stats(origin)["submissions"]["total"] == before + 1
    fleet.kill(0)
    try:
        done = wait_completed(fleet, 1, request_id, timeout=LEASE_SECONDS + 40)
        assert not done.get("error"), done
        output = result(fleet, 2, request_id)
        assert output.status_code == 200 and output.json()["images"][0]["url"].startswith(fleet.lb_https), output.text
        time.sleep(1)
        # One job at the origin for the whole story: the node that took over followed it by its id.
        assert origin_stats(origin)["submissions"]["total"] == before + 1, origin_stats(origin)["submissions"]
    finally:
        fleet.start(0)
        fleet.wait_alive()
