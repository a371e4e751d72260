"""Deviations from fal that official clients other than Python's trip over (issue 16), checked over the wire."""
import time
import uuid

import httpx


def test_status_log_entries_carry_labels_level_beside_the_flat_level(relay):
    # fal-swift decodes logs[i].labels.level and fails on a status without it; the Python client reads the flat level.
    headers = {"Authorization": f"Key {relay.key}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{relay.http_port}", headers=headers, timeout=30) as client:
        submitted = client.post(
            "/fal-ai/flux/schnell",
            json={"prompt": f"labels {uuid.uuid4()}", "seed": 7, "num_inference_steps": 4},
        )
        assert submitted.status_code == 200, submitted.text
        status_url = submitted.json()["status_url"]
        entries = []
        deadline = time.time() + 60
        while time.time() < deadline:
            status = client.get(status_url, params={"logs": "1"}).json()
            for entry in status.get("logs") or []:
                entries.append(entry)
            if status["status"] == "COMPLETED":
                break
            time.sleep(0.05)
        assert status["status"] == "COMPLETED"
        assert status["logs"], "a finished synthetic job has step logs"
        for entry in entries:
            assert entry["labels"] == {"level": entry["level"]}, entry
            assert entry["level"] == "INFO"
