"""SSE status streams: ids, resume with Last-Event-ID / ?last_event_id without loss or duplicates."""

from peers import read_events


def test_status_stream_resumes_without_loss_or_duplicates(fal, http, relay):
    handle = fal.submit("fal-ai/flux/dev", arguments={"prompt": "resume me", "image_size": "square", "seed": 2024, "num_inference_steps": 40})
    url = f"https://{relay.queue_host}/fal-ai/flux/requests/{handle.request_id}/status/stream?logs=1"
    headers = {"Authorization": f"Key {relay.key}"}
    with http.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        first = read_events(response, limit=6)
    last_id = first[-1][0]
    with http.stream("GET", url, headers={**headers, "Last-Event-ID": str(last_id)}) as response:
        second = read_events(response)
    ids = [event_id for event_id, _ in first + second]
    assert all(isinstance(i, int) for i in ids) and ids == sorted(ids) and len(ids) == len(set(ids)), ids
    messages = [log["message"] for _, status in first + second for log in (status.get("logs") or [])]
    assert messages == [f"step {k}/40" for k in range(1, 41)], messages
    assert second[-1][1]["status"] == "COMPLETED"
    # A client that already saw the end gets 204; one that did not gets the end again.
    done = second[-1][0]
    assert http.get(url, headers={**headers, "Last-Event-ID": str(done)}).status_code == 204
    with http.stream("GET", url + f"&last_event_id={done - 1}", headers=headers) as response:
        again = read_events(response)
    assert [e[0] for e in again] == [done] and again[0][1]["status"] == "COMPLETED"


def test_late_joiner_gets_latest_snapshot_then_everything(fal, http, relay):
    handle = fal.submit("fal-ai/flux/schnell", arguments={"prompt": "late", "image_size": "square", "seed": 606})
    handle.get()
    url = f"https://{relay.queue_host}/fal-ai/flux/requests/{handle.request_id}/status/stream?logs=1"
    with http.stream("GET", url, headers={"Authorization": f"Key {relay.key}"}) as response:
        events = read_events(response)
    statuses = [status["status"] for _, status in events]
    assert statuses.count("IN_QUEUE") <= 1 and statuses[-1] == "COMPLETED"
    assert [log["message"] for _, s in events for log in (s.get("logs") or [])] == [f"step {k}/4" for k in range(1, 5)]


def test_run_host_stream_never_sends_ids(http, relay):
    url = f"https://{relay.run_host}/fal-ai/any-llm/stream"
    with http.stream("POST", url, json={"prompt": "no ids please", "max_tokens": 8}, headers={"Authorization": f"Key {relay.key}"}) as response:
        lines = list(response.iter_lines())
    assert not any(line.startswith("id:") for line in lines)
    assert any(line.startswith("data:") for line in lines)
