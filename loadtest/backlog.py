"""A backlog on the synthetic upstream: N distinct small requests submitted as fast as one client can.

Starts `media-relay serve` on loopback (synthetic upstream, its default 2 slots, time scale 0, rate limits off so
that one client may submit N requests), submits N distinct small images over plain HTTP with a bounded number of
requests in flight, and prints once a second: submitted, completed (upstream jobs started minus in flight, from
`/relay/stats`), the completion rate of that second, the queue depth and the relay's RSS. Ends when all N are done
or after --max-seconds; prints the completion rate while the backlog was short (< 1,000 waiting) and long
(>= 5,000 waiting), the peak and final RSS, and the memory each finished request holds (final RSS less the idle
relay's, over the requests). With --restart the relay is then stopped and started again on the same data: the time to
READY, its RSS then, and after reading the results of a sample of the requests (every 100th) by id.
"""

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import httpx


def rss_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def start_relay(binary, data_dir, extra):
    args = [
        binary, "serve",
        "--data-dir", data_dir,
        "--http", "127.0.0.1:0",
        "--https", "off",
        "--synthetic-time-scale", "0",
        "--rate-limits", "off",
        *extra,
    ]
    log = open(os.path.join(data_dir, "relay.log"), "w")
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        match = re.search(r"READY .*http=127\.0\.0\.1:(\d+)", line)
        if match:
            # Keep draining stdout so the relay never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
            return process, int(match.group(1))
    process.kill()
    raise SystemExit("relay did not start; see " + os.path.join(data_dir, "relay.log"))


async def submit_all(port, model, count, concurrency, max_outstanding, progress):
    """Raw HTTP/1.1 keep-alive connections: an HTTP library would make the client, not the relay, the limit."""
    next_index = 0

    async def connection():
        nonlocal next_index
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while next_index < count:
            # The run without a backlog: never more than max_outstanding submitted and not yet completed.
            while max_outstanding and next_index - progress["completed"] >= max_outstanding:
                await asyncio.sleep(0.02)
            if next_index >= count:
                break
            index = next_index
            next_index += 1
            body = json.dumps({"prompt": f"backlog {index}", "seed": index,
                               "image_size": {"width": 64, "height": 64}, "num_inference_steps": 1}).encode()
            head = (f"POST /{model} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
            writer.write(head + body)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            answer = await reader.readexactly(length)
            if b" 200 " in status_line:
                progress["submitted"] += 1
                if index % 100 == 0:
                    progress["sample"].append(json.loads(answer)["request_id"])
            else:
                progress["refused"] += 1
        writer.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release",
                                                         "media-relay"))
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-seconds", type=float, default=600)
    parser.add_argument("--model", default="fal-ai/flux/schnell")
    parser.add_argument("--max-outstanding", type=int, default=0,
                        help="at most this many requests submitted and not completed (0: no bound, a backlog)")
    parser.add_argument("--restart", action="store_true",
                        help="then restart the relay on the same data and measure it holding the finished requests")
    parser.add_argument("relay_args", nargs="*", help="extra flags for media-relay serve (after --)")
    options = parser.parse_args()
    options.count = min(options.count, 200_000)
    options.max_seconds = min(options.max_seconds, 3600)

    data_dir = tempfile.mkdtemp(prefix="relay-backlog-")
    process, port = start_relay(os.path.abspath(options.binary), data_dir, options.relay_args)
    time.sleep(1)
    idle = rss_kib(process.pid, "VmRSS") // 1024
    progress = {"submitted": 0, "refused": 0, "completed": 0, "sample": []}
    samples = []
    try:
        limits = httpx.Limits(max_connections=options.concurrency + 2)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60) as client:
            started = time.time()
            submitter = asyncio.create_task(submit_all(port, options.model, options.count, options.concurrency,
                                                       options.max_outstanding, progress))
            previous = 0
            next_report = started + 1
            print("   t  submitted  completed  rate/s  queue   rss_MB", flush=True)
            while time.time() - started < options.max_seconds:
                await asyncio.sleep(0.05)
                try:
                    stats = (await client.get("/relay/stats")).json()
                except httpx.HTTPError:
                    continue
                upstream = stats["upstream"]
                progress["completed"] = completed = int(upstream["jobs_started"] - upstream["jobs_in_flight"])
                if time.time() < next_report and completed < options.count:
                    continue
                next_report += 1
                queue = int(stats.get("queue_depth", 0))
                rss = rss_kib(process.pid, "VmRSS") // 1024
                elapsed = time.time() - started
                samples.append((elapsed, completed - previous, queue, rss, progress["submitted"]))
                print(f"{elapsed:4.0f}  {progress['submitted']:9d}  {completed:9d}  {completed - previous:6d}  "
                      f"{queue:5d}  {rss:7d}", flush=True)
                previous = completed
                if completed >= options.count:
                    break
            submitter.cancel()
            elapsed = time.time() - started
    finally:
        peak = rss_kib(process.pid, "VmHWM") // 1024
        final = rss_kib(process.pid, "VmRSS") // 1024
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
        if not options.restart:
            shutil.rmtree(data_dir, ignore_errors=True)

    def mean(values):
        return sum(values) / len(values) if values else float("nan")

    drained_from = next((index for index, sample in enumerate(samples) if sample[4] >= options.count), len(samples))
    drain = [rate for _, rate, _, _, _ in samples[drained_from + 1:]]
    short = [rate for _, rate, queue, _, _ in samples if queue < 1_000]
    long = [rate for _, rate, queue, _, _ in samples if queue >= 5_000]
    print(f"completed {previous} of {options.count} in {elapsed:.0f} s ({previous / elapsed:.0f}/s overall); "
          f"refused {progress['refused']}")
    print(f"completion rate: {mean(short):.0f}/s with < 1,000 waiting ({len(short)} s), "
          f"{mean(long):.0f}/s with >= 5,000 waiting ({len(long)} s)")
    print(f"after the last submission: {mean(drain):.0f}/s ({len(drain)} s)")
    print(f"RSS: peak {peak} MB, at the end {final} MB (idle at start {idle} MB: "
          f"{(final - idle) * 1024 * 1024 / max(1, previous):.0f} bytes per finished request)")
    if options.restart:
        try:
            await restarted(options, data_dir, progress["sample"])
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)


async def restarted(options, data_dir, sample):
    """The relay started again on the data the run left: what it costs to hold every finished request."""
    started = time.time()
    process, port = start_relay(os.path.abspath(options.binary), data_dir, options.relay_args)
    ready = time.time() - started
    at_ready = rss_kib(process.pid, "VmRSS") // 1024
    app = "/".join(options.model.split("/")[:2])
    found = 0
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            first = time.time()
            for index, request_id in enumerate(sample):
                answer = await client.get(f"/{app}/requests/{request_id}")
                found += answer.status_code == 200
                if index == 0:
                    first = time.time() - first
        after = rss_kib(process.pid, "VmRSS") // 1024
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
    print(f"restart: READY after {ready:.1f} s at {at_ready} MB; {found} of {len(sample)} sampled results served "
          f"(the first {first * 1000:.0f} ms after asking); RSS then {after} MB")


if __name__ == "__main__":
    asyncio.run(main())
