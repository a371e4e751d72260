"""An origin pool of three (issue "Spend control", upstream pools): one account healthy, one that answers every
submit with 429, one stopped. Every request still completes, on the healthy account; the refusing and the stopped
accounts are cooled down and skipped; the stopped one, once started, takes work again after its cool-down. Each
result says which account and model made it (`x-relay-upstream`)."""
import concurrent.futures
import http.server
import os
import socket
import subprocess
import ssl
import tempfile
import threading
import time

import httpx

from conftest import BINARY, Relay


class Refusing(http.server.BaseHTTPRequestHandler):
    """fal's queue answering every call with 429 (an account over its concurrency or rate)."""
    calls = 0

    def handle_one(self):
        Refusing.calls += 1
        body = b'{"detail": "Too many requests"}'
        self.send_response(429)
        self.send_header("content-type", "application/json")
        self.send_header("retry-after", "1")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = handle_one

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_many(client, edge, prompts):
    headers = {"Authorization": f"Key {edge.key}"}

    def one(prompt):
        submitted = client.post(f"https://{edge.queue_host}/fal-ai/flux/dev", json={"prompt": prompt, "seed": 1},
                              headers=headers)
        assert submitted.status_code == 200, submitted.text
        deadline = time.time() + 90
        while client.get(submitted.json()["status_url"], headers=headers).json()["status"] != "COMPLETED":
            assert time.time() < deadline, "request did not complete"
            time.sleep(0.05)
        result = client.get(submitted.json()["response_url"], headers=headers)
        assert result.status_code == 200, result.text
        return result.headers["x-relay-upstream"]

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        return list(pool.map(one, prompts))


def test_a_pool_skips_a_refusing_and_a_stopped_account_and_retries_them_after_their_cool_down():
    refusing = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=refusing.serve_forever, daemon=True).start()
    stopped_port = free_port()
    with tempfile.TemporaryDirectory() as a_dir, tempfile.TemporaryDirectory() as c_dir, \
            tempfile.TemporaryDirectory() as edge_dir:
        a = Relay(a_dir, extra_args=("--rate-limits", "off"))
        c = edge = None
        try:
            pool = ",".join([
                f"a=http://127.0.0.1:{a.http_port};key={a.key};cap=8",
                f"b=http://127.0.0.1:{refusing.server_address[1]};key=nobody:secret;cap=8",
                f"c=http://127.0.0.1:{stopped_port};key_env=POOL_KEY_C;cap=8",
            ])
            # C's key exists before C does: made in its data directory now, read from the environment by the edge.
            c_key = subprocess.run([BINARY, "keys", "create", "--tier", "pro", "--data-dir", c_dir], check=True,
                                   capture_output=True, text=True, timeout=60).stdout.strip().splitlines()[-1]
            os.environ["POOL_KEY_C"] = c_key
            edge = Relay(edge_dir, extra_args=("--origin", pool, "--origin-cool-down-seconds", "2", "--origin-ca", a.ca,
                                               "--rate-limits", "off", "--log-level", "info"))
            with httpx.Client(verify=ssl.create_default_context(cafile=edge.ca), timeout=30) as client:
                served = run_many(client, edge, [f"pool first {n} {time.time_ns()}" for n in range(6)])
                assert served == ["a; model=fal-ai/flux/dev"] * 6, served
                assert Refusing.calls >= 1, "the 429 account was tried"
                tried = Refusing.calls

                # While cooling down, the refusing account is skipped.
                served = run_many(client, edge, [f"pool cooling {n} {time.time_ns()}" for n in range(3)])
                assert set(served) == {"a; model=fal-ai/flux/dev"} and Refusing.calls == tried

                # The stopped account comes up; after its cool-down it takes its share again.
                # (Its media URLs on plain HTTP: the edge does not know C's development CA.)
                c = Relay(c_dir, extra_args=("--http", f"127.0.0.1:{stopped_port}", "--rate-limits", "off",
                                              "--public-url", f"http://127.0.0.1:{stopped_port}", "--log-level", "info"))
                time.sleep(2.5)
                served = run_many(client, edge, [f"pool later {n} {time.time_ns()}" for n in range(8)])
                assert "c; model=fal-ai/flux/dev" in served, served
                assert any("route=submit" in line for line in c.output)
                metrics = client.get(f"https://{edge.queue_host}/metrics").text
                assert 'relay_origin_pool_failovers_total{account="b"}' in metrics
                assert 'relay_origin_pool_failovers_total{account="c"}' in metrics
        finally:
            for relay in (edge, c, a):
                if relay:
                    relay.stop()
            refusing.shutdown()
