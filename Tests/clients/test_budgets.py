"""Per-key budgets on a real relay (issue "Spend control"): 100 concurrent submissions against a budget of 10
generations start at most 10, the rest get fal's 403 `budget_exceeded` naming the budget and when it resets; hits
still pass; a budget raised with `media-relay keys budget` applies without a restart; spend survives a restart and
is exported as `relay_spend_total` / `relay_saved_total`."""
import concurrent.futures
import ssl
import subprocess
import tempfile
import time

import httpx

from conftest import BINARY, Relay


def keys(data_dir, *args):
    return subprocess.run([BINARY, "keys", *args, "--data-dir", data_dir],
                          check=True, capture_output=True, text=True, timeout=60).stdout.strip().splitlines()


def client(relay):
    return httpx.Client(base_url=f"https://{relay.queue_host}", timeout=30,
                        verify=ssl.create_default_context(cafile=relay.ca))


def wait_all(http, submitted, headers):
    deadline = time.time() + 120
    for body in submitted:
        while http.get(body["status_url"], headers=headers).json()["status"] != "COMPLETED":
            assert time.time() < deadline, "requests did not complete"
            time.sleep(0.05)


def test_a_budget_caps_concurrent_new_work_and_applies_changes_without_a_restart():
    with tempfile.TemporaryDirectory(prefix="media-relay-budget-") as data_dir:
        # FLUX [dev] at 1024×768 costs $0.025 (1 megapixel): $0.25 a day is 10 generations.
        created = keys(data_dir, "create", "--tier", "pro", "--budget-daily", "0.25", "--budget-monthly", "100")
        budgeted, key_id = created[-1], created[-1].split(":")[0]
        headers = {"Authorization": f"Key {budgeted}"}
        relay = Relay(data_dir, extra_args=("--synthetic-time-scale", "0", "--rate-limits", "off", "--log-level", "info"))
        try:
            with client(relay) as http:
                def submit(n):
                    return http.post("/fal-ai/flux/dev", json={"prompt": f"budget {n}", "seed": n}, headers=headers)

                with concurrent.futures.ThreadPoolExecutor(max_workers=25) as pool:
                    answers = list(pool.map(submit, range(100)))
                accepted = [a for a in answers if a.status_code == 200]
                refused = [a for a in answers if a.status_code == 403]
                assert len(accepted) + len(refused) == 100, {a.status_code for a in answers}
                assert 1 <= len(accepted) <= 10, len(accepted)
                error = refused[0]
                assert error.headers["x-fal-error-type"] == "budget_exceeded"
                detail = error.json()["detail"]
                assert "daily budget of 0.25 USD" in detail and "starts again at" in detail and key_id in detail
                wait_all(http, [a.json() for a in accepted], headers)

                # A hit costs nothing: still served.
                hit_body = accepted[0].request.read()
                hit = http.post("/fal-ai/flux/dev", content=hit_body, headers={**headers, "content-type": "application/json"})
                assert hit.status_code == 200 and hit.headers["x-relay-cache"] == "hit"
                # Spent up to the cap: new work is refused until the budget is raised, at once, without a restart.
                assert submit(1000).status_code == 403
                keys(data_dir, "budget", key_id, "--budget-daily", "1")
                # A cap not given stays.
                listed = next(line for line in keys(data_dir, "list") if line.startswith(key_id))
                assert listed.endswith("daily 1.0 monthly 100.0"), listed
                time.sleep(0.3)
                raised = submit(1001)
                assert raised.status_code == 200, raised.text
                wait_all(http, [raised.json()], headers)
                # The terminal report of the same: the key's own usage, most spent first, with a total.
                report = subprocess.run(
                    [BINARY, "usage", "--host", f"https://{relay.queue_host}", "--ca", relay.ca, "--admin-key", budgeted],
                    capture_output=True, text=True, timeout=60)
                assert report.returncode == 0, report.stderr
                lines = report.stdout.splitlines()
                assert lines[0].split()[:5] == ["model", "unit", "quantity", "spent", "saved"]
                flux = next(line.split() for line in lines if line.startswith("fal-ai/flux/dev"))
                assert flux[1] == "megapixels" and int(flux[2]) == len(accepted) + 1
                assert flux[3] == f"${0.025 * (len(accepted) + 1):.3f}" and flux[4] == "$0.025", lines
                assert lines[-1].split()[:2] == ["total", flux[3]]
                bad = subprocess.run([BINARY, "usage", "--host", f"https://{relay.queue_host}", "--ca", relay.ca,
                                      "--admin-key", budgeted, "--since", "yesterday"],
                                     capture_output=True, text=True, timeout=60)
                assert bad.returncode != 0 and "ISO 8601" in bad.stderr
                metrics = http.get("/metrics").text
                assert 'relay_spend_total{model="fal-ai/flux/dev"}' in metrics
                assert 'relay_saved_total{model="fal-ai/flux/dev"}' in metrics
            assert any("80 % of its budget" in line for line in relay.output), relay.output[-5:]
        finally:
            relay.stop()

        # The day's spend is kept across a restart: at the cap again after two more, however it restarted.
        keys(data_dir, "budget", key_id, "--budget-daily", f"{0.025 * (len(accepted) + 2):.3f}")
        relay = Relay(data_dir, extra_args=("--synthetic-time-scale", "0", "--rate-limits", "off"))
        try:
            with client(relay) as http:
                statuses = []
                for n in range(2000, 2004):
                    answer = http.post("/fal-ai/flux/dev", json={"prompt": f"after {n}", "seed": n}, headers=headers)
                    statuses.append(answer.status_code)
                    if answer.status_code == 200:
                        wait_all(http, [answer.json()], headers)
                assert statuses == [200, 403, 403, 403], statuses
        finally:
            relay.stop()
