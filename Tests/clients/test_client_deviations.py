"""Deviations from fal that official clients other than Python's trip over (issue 16), checked over the wire."""
import json
import os
import re
import subprocess
import tempfile
import threading
import time
import uuid

import httpx
import pytest
from conftest import BINARY, ROOT


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


def start_elsewhere(cwd, *flags):
    """The binary started from a directory that is not the checkout, with no --config (nothing to find there)."""
    data_dir = os.path.join(cwd, "data")
    args = [BINARY, "serve", "--data-dir", data_dir, "--http", "127.0.0.1:0", "--https", "off",
            "--synthetic-time-scale", "0", "--log-level", "warning", *flags]
    process = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    for line in process.stdout:
        output.append(line)
        match = re.match(r"READY .*http=127\.0\.0\.1:(\d+)", line)
        if match:
            threading.Thread(target=lambda: output.extend(process.stdout), daemon=True).start()
            return process, int(match.group(1)), output
    process.wait(10)
    raise RuntimeError("relay did not start:\n" + "".join(output))


def stop(process):
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def catalog_ids():
    with open(os.path.join(ROOT, "Config", "models.json")) as file:
        return [model["id"] for model in json.load(file)["models"]]


def test_the_binary_serves_its_built_in_catalog_from_any_directory():
    with tempfile.TemporaryDirectory(prefix="media-relay-elsewhere-") as cwd:
        process, port, output = start_elsewhere(cwd)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                listed = client.get("/relay/models")
                assert listed.status_code == 200, listed.text
                assert sorted(model["id"] for model in listed.json()["models"]) == sorted(catalog_ids())
                submitted = client.post("/fal-ai/flux/schnell", json={"prompt": "elsewhere", "seed": 3})
                assert submitted.status_code == 200, submitted.text
                result_url = submitted.json()["response_url"]
                deadline = time.time() + 60
                while client.get(submitted.json()["status_url"]).json()["status"] != "COMPLETED":
                    assert time.time() < deadline, "".join(output)
                    time.sleep(0.05)
                result = client.get(result_url)
                assert result.status_code == 200, result.text
                assert result.json()["images"][0]["width"] == 1024
        finally:
            stop(process)


def test_a_catalog_flag_overrides_the_built_in_catalog():
    with tempfile.TemporaryDirectory(prefix="media-relay-elsewhere-") as cwd:
        catalog = os.path.join(cwd, "one-model.json")
        with open(catalog, "w") as file:
            json.dump({"models": [{"id": "acme/only", "kind": "image", "dedup": "seeded", "seconds_per_step": 0.1}]},
                      file)
        process, port, _ = start_elsewhere(cwd, "--catalog", catalog)
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                listed = client.get("/relay/models")
                assert listed.status_code == 200, listed.text
                assert [model["id"] for model in listed.json()["models"]] == ["acme/only"]
        finally:
            stop(process)
