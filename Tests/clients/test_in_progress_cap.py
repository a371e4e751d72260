"""A caller's cap on upstream work in progress, as fal caps each account: jobs beyond it are accepted and wait
IN_QUEUE with their place until one of the caller's jobs ends; nobody is refused for it, other callers are not held
up, and work that starts nothing upstream (a coalesced copy) does not wait."""
import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from conftest import BINARY, started_relay
from fleet import wait_for

MODEL = "fal-ai/flux/dev"


@pytest.fixture(scope="module")
def capped():
    """Eight GPU slots, so that only the caller's cap (signed-in: 2) holds its jobs back; realistic step times."""
    args = ("--synthetic-slots", "8", "--synthetic-time-scale", "1", "--max-in-progress", "signed-in=2")
    with started_relay("media-relay-cap-", args) as server:
        server.keys = []
        for _ in range(2):
            created = subprocess.run(
                [BINARY, "keys", "create", "--tier", "signed-in", "--data-dir", server.data_dir],
                check=True, capture_output=True, text=True, timeout=60,
            )
            server.keys.append(created.stdout.strip().splitlines()[-1])
        with httpx.Client(base_url=f"http://127.0.0.1:{server.http_port}", timeout=30) as client:
            server.client = client
            yield server


def body(name, steps=40):
    # About 3 s at 1 megapixel and 0.08 s a step.
    return {"prompt": f"cap {name} {time.time_ns()}", "image_size": "square_hd", "num_inference_steps": steps}


def submit(relay, key, payload):
    answer = relay.client.post(f"/{MODEL}", json=payload, headers={"Authorization": f"Key {key}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def status(relay, key, submitted):
    answer = relay.client.get(f"/fal-ai/flux/requests/{submitted['request_id']}/status",
                              headers={"Authorization": f"Key {key}"})
    assert answer.status_code in (200, 202), answer.text
    return answer.json()


def test_jobs_beyond_the_cap_wait_in_line_and_start_as_earlier_ones_end(capped):
    key, other_key = capped.keys
    jobs = [submit(capped, key, body(f"job {index}")) for index in range(4)]
    wait_for(lambda: [status(capped, key, job)["status"] for job in jobs[:2]] == ["IN_PROGRESS"] * 2, 20,
             "the first two never ran")
    # The other two are accepted and wait, each told its place in the caller's line.
    waiting = [status(capped, key, job) for job in jobs[2:]]
    assert [w["status"] for w in waiting] == ["IN_QUEUE", "IN_QUEUE"], waiting
    assert [w["queue_position"] for w in waiting] == [0, 1], waiting
    # The caller's line is counted in the queue the relay reports.
    metrics = capped.client.get("/metrics").text
    depth = [line for line in metrics.splitlines() if line.startswith("relay_queue_depth ")]
    assert depth and float(depth[0].split()[1]) >= 2, depth
    # Another caller's work starts at once: eight slots are free enough.
    theirs = submit(capped, other_key, body("other caller"))
    wait_for(lambda: status(capped, other_key, theirs)["status"] == "IN_PROGRESS", 10,
             "another caller's job waited behind this caller's line")
    # Cancelling a running job lets the first waiting one start before any job ends on its own.
    cancelled = capped.client.put(f"/fal-ai/flux/requests/{jobs[0]['request_id']}/cancel",
                                  headers={"Authorization": f"Key {key}"})
    assert cancelled.status_code == 202, cancelled.text
    wait_for(lambda: status(capped, key, jobs[2])["status"] == "IN_PROGRESS", 5, "the first waiting job never started")
    assert status(capped, key, jobs[1])["status"] == "IN_PROGRESS", "a job ended before the check"
    assert status(capped, key, jobs[3])["queue_position"] == 0
    for job in jobs[1:] + [theirs]:
        owner = other_key if job is theirs else key
        wait_for(lambda: status(capped, owner, job)["status"] == "COMPLETED", 30, "a job never completed")
        result = capped.client.get(f"/fal-ai/flux/requests/{job['request_id']}",
                                   headers={"Authorization": f"Key {owner}"})
        assert result.status_code == 200 and result.json()["images"], result.text


def test_a_coalesced_copy_does_not_wait_in_the_line(capped):
    key = capped.keys[0]
    payloads = [body(f"shared {index}") for index in range(3)]
    first, second, _third = [submit(capped, key, payload) for payload in payloads]
    wait_for(lambda: status(capped, key, second)["status"] == "IN_PROGRESS", 20, "the second job never ran")
    # The same input as the first (running) job: attached to it, so it runs now although the line holds the third.
    copy = capped.client.post(f"/{MODEL}", json=payloads[0], headers={"Authorization": f"Key {key}"})
    assert copy.status_code == 200 and "collapsed" in copy.headers["cache-status"], copy.headers
    assert status(capped, key, copy.json())["status"] == "IN_PROGRESS"
    for job in (first, second, _third):
        capped.client.put(f"/fal-ai/flux/requests/{job['request_id']}/cancel", headers={"Authorization": f"Key {key}"})


SUBSCRIBER = """
import json, sys, fal_client
updates = []
result = fal_client.subscribe(sys.argv[1], arguments=json.loads(sys.argv[2]), with_logs=False,
                              on_queue_update=lambda u: updates.append([type(u).__name__, getattr(u, "position", None)]))
print(json.dumps({"updates": updates, "images": len(result["images"])}))
"""


def test_the_official_client_sees_its_place_then_its_result(capped):
    """fal_client.subscribe for a caller whose two places are taken: its queue updates name its place, and its result
    arrives once a place frees."""
    key = capped.keys[1]
    holders = [submit(capped, key, body(f"holder {index}", steps=25)) for index in range(2)]
    wait_for(lambda: all(status(capped, key, job)["status"] == "IN_PROGRESS" for job in holders), 20,
             "the holders never ran")
    environment = {**os.environ, "FAL_KEY": key, "FAL_QUEUE_RUN_HOST": capped.queue_host,
                   "FAL_RUN_HOST": capped.run_host, "SSL_CERT_FILE": capped.ca}
    ran = subprocess.run([sys.executable, "-c", SUBSCRIBER, MODEL, json.dumps(body("subscriber", steps=5))],
                         env=environment, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout.strip().splitlines()[-1])
    assert ["Queued", 0] in report["updates"] and report["images"] == 1, report
    kinds = [kind for kind, _ in report["updates"]]
    assert kinds.index("Queued") < kinds.index("InProgress"), kinds


def test_a_poll_reads_the_exact_place_in_the_upstreams_queue(capped):
    """The synthetic queue's eight slots taken by an admin key (never capped): the two jobs behind them are told
    places 0 and 1, and once the first of them is cancelled the other's next poll reads 0, with no pass in between."""
    admin = capped.admin_key
    jobs = [submit(capped, admin, body(f"slot {index}", steps=60)) for index in range(10)]
    wait_for(lambda: sum(status(capped, admin, job)["status"] == "IN_PROGRESS" for job in jobs) == 8, 20,
             "the slots never filled")
    assert [status(capped, admin, job).get("queue_position") for job in jobs[8:]] == [0, 1]
    cancelled = capped.client.put(f"/fal-ai/flux/requests/{jobs[8]['request_id']}/cancel",
                                  headers={"Authorization": f"Key {admin}"})
    assert cancelled.status_code == 202, cancelled.text
    assert status(capped, admin, jobs[9])["queue_position"] == 0
    for job in jobs:
        capped.client.put(f"/fal-ai/flux/requests/{job['request_id']}/cancel", headers={"Authorization": f"Key {admin}"})
