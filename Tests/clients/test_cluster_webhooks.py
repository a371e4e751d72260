"""A request's webhook is delivered once by the fleet, also when the node that took the request dies before the
job ends (issue #17): a live node takes the undelivered webhook over once that node's heartbeat has lapsed."""
import time
import uuid

import pytest

from fleet import started_fleet, status, submit, wait_for
from peers import WebhookReceiver

LEASE_SECONDS = 3


@pytest.fixture(scope="module")
def fleet():
    with started_fleet(nodes=3, time_scale="1", extra_args=("--cluster-lease-seconds", str(LEASE_SECONDS),
                                                          "--webhook-allow-private", "on")) as running:
        yield running


def test_a_webhook_of_a_node_killed_mid_job_is_delivered_once_by_another(fleet):
    receiver = WebhookReceiver()
    try:
        body = {"prompt": f"a webhook that outlives its node {uuid.uuid4()}", "image_size": "square", "seed": 5,
                "num_inference_steps": 100}
        answer = submit(fleet, 0, body, params={"fal_webhook": receiver.url("/orphan")})
        assert answer.status_code == 200, answer.text
        request_id = answer.json()["request_id"]
        wait_for(lambda: len(status(fleet, 0, request_id).json().get("logs") or []) >= 3, 20, "the job never started")
        fleet.kill(0)
        try:
            # The heartbeat lapses after the lease; a live node takes the webhook over, runs or finds the job, and
            # delivers: within the lease, a restarted job (about 2.4 s) and the retry pause.
            wait_for(lambda: receiver.calls_to("/orphan"), LEASE_SECONDS + 20, "the orphaned webhook was never delivered")
            time.sleep(LEASE_SECONDS)  # a second node's duplicate would show by now
            calls = receiver.calls_to("/orphan")
            assert len(calls) == 1, f"{len(calls)} deliveries"
            delivered = calls[0]["json"]
            assert delivered["request_id"] == request_id and delivered["status"] == "OK", delivered
            assert delivered["payload"]["images"][0]["url"].startswith(fleet.lb_https + "/files/"), delivered
        finally:
            fleet.start(0)
            fleet.wait_alive()
    finally:
        receiver.server.shutdown()
