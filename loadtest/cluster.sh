#!/usr/bin/env bash
# cluster.sh: a local MediaRelay fleet (issue #17) in a temporary folder: a private PostgreSQL, N relay nodes in
# cluster mode and Debian's nginx as a round-robin load balancer (no stickiness, TLS with a CA of its own) in front.
#
#   loadtest/cluster.sh                       # 3 nodes until Ctrl-C; prints the URLs, the database URL and keys
#   TIME_SCALE=0.1 loadtest/cluster.sh --nodes 5 -- --rate-limits off   # relay flags after --
#   loadtest/cluster.sh --bench               # submit latency: the fleet against one node, same machine, same run
#
# The fleet is Tests/clients/fleet.py's, the one the cluster tests use. Ctrl-C (or any exit) stops the nodes,
# nginx and PostgreSQL and removes the folder.
#
# --bench measures submission latency (POST /fal-ai/flux/schnell, one response = the queue's answer, not the job)
# in three setups, one after the other in the same run: one relay without a database (the baseline), one fleet node
# straight (what PostgreSQL adds: registry, claim), and the fleet through nginx (what the load balancer adds too).
# Two kinds of submission: misses (distinct seeds: each registers an id and claims a key) and hits (one seeded input,
# already done: each registers an id). The client is Python/httpx on the same cores, so absolute numbers include
# its own ~0.2-0.5 ms; compare the added milliseconds and the ratios. Rate limits are off for the run. Then the
# event lag: SSE watchers of one job on its owner and on a node that follows it, the same log lines' arrival compared.
#
# Environment (all optional):
#   MEDIA_RELAY_BIN=…/media-relay   default: .build/release/media-relay of this repository, else .build/debug/…
#   COUNT=500                       submissions per setup and kind (after 50 of warm-up)
#   ROUNDS=5                        COUNT is split into rounds that take the setups in turns (noise hits all alike)
#   CONCURRENCY=1                   submissions in flight at once
#   TIME_SCALE=1                    the nodes' --synthetic-time-scale (serve mode; --bench always uses 1)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CLIENTS=$ROOT/Tests/clients

die() { printf 'cluster.sh: %s\n' "$*" >&2; exit 1; }

NODES=3
BENCH=0
EXTRA=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --nodes) NODES=$2; shift 2 ;;
        --bench) BENCH=1; shift ;;
        --) shift; EXTRA=("$@"); break ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done

if [[ -z ${MEDIA_RELAY_BIN:-} ]]; then
    for candidate in "$ROOT/.build/release/media-relay" "$ROOT/.build/debug/media-relay"; do
        if [[ -x $candidate ]]; then MEDIA_RELAY_BIN=$candidate; break; fi
    done
fi
[[ -x ${MEDIA_RELAY_BIN:-} ]] || die "no relay binary: run 'swift build -c release --product media-relay' or set MEDIA_RELAY_BIN"
export MEDIA_RELAY_BIN
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || die "nginx is missing (Debian: apt-get install nginx-light)"
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null ||
    die "PostgreSQL is missing (Debian: apt-get install postgresql)"
python3 -c 'import httpx' 2>/dev/null || die "python3 with httpx is needed (pip install httpx)"
[[ $MEDIA_RELAY_BIN == */debug/* ]] && echo "cluster.sh: note: $MEDIA_RELAY_BIN is a debug build" >&2

cd "$CLIENTS"
if [[ $BENCH == 0 ]]; then
    # fleet.py stops everything on SIGINT/SIGTERM/SIGHUP; exec hands it the terminal's signals directly.
    exec python3 fleet.py --nodes "$NODES" --time-scale "${TIME_SCALE:-1}" -- "${EXTRA[@]}"
fi

exec python3 - "$NODES" "${COUNT:-500}" "${CONCURRENCY:-1}" "${ROUNDS:-5}" "${EXTRA[@]}" <<'PY'
import json, os, shutil, statistics, sys, tempfile, threading, time
import httpx
from fleet import Fleet

nodes, count, concurrency, rounds, extra = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), \
    sys.argv[5:]
flags = ("--rate-limits", "off", "--access-log", "off", *extra)


def latencies(url, key, bodies):
    """Milliseconds per submission, `concurrency` at a time, each client on keep-alive connections."""
    taken, errors, lock, queue = [], [], threading.Lock(), list(reversed(bodies))

    def worker():
        with httpx.Client(timeout=30, headers={"Authorization": f"Key {key}", "Host": "127.0.0.1"}) as client:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                started = time.perf_counter()
                answer = client.post(f"{url}/fal-ai/flux/schnell", json=body)
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    (taken if answer.status_code == 200 else errors).append(elapsed if answer.status_code == 200
                                                                            else answer.status_code)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    return taken, errors


class Setup:
    """One way to submit (a node alone, a fleet node, the fleet through nginx) and the latencies measured through it."""

    def __init__(self, name, url, key, baseline=None):
        # The setup this one's added latency is measured against: the single node reached the same way.
        self.name, self.url, self.key, self.baseline = name, url, key, baseline or name
        self.tag = f"{name} {time.time_ns()}"
        self.hit = {"prompt": f"bench hit {self.tag}", "image_size": {"width": 64, "height": 64}, "seed": 1}
        self.samples = {"miss": [], "hit": []}
        self.errors = []
        self.sent = 0
        latencies(url, key, [self.hit])  # made once; every later one is a hit
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            again = httpx.post(f"{url}/fal-ai/flux/schnell", json=self.hit, headers={"Authorization": f"Key {key}"},
                               timeout=30)
            if "hit" in again.headers.get("x-relay-cache", ""):
                break
            time.sleep(0.1)
        self.round(50, record=False)  # warm-up

    def round(self, n, record=True):
        for kind in ("miss", "hit"):
            if kind == "hit":
                bodies = [self.hit] * n
            else:  # distinct seeds: each one is a new generation (64x64, one step)
                bodies = [{"prompt": f"bench {self.tag}", "image_size": {"width": 64, "height": 64},
                           "seed": self.sent + i, "num_inference_steps": 1} for i in range(n)]
                self.sent += n
            taken, errors = latencies(self.url, self.key, bodies)
            if record:
                self.samples[kind] += taken
                self.errors += errors

    def rows(self):
        rows = []
        for kind, taken in self.samples.items():
            if not taken:
                raise SystemExit(f"{self.name}: every submission failed: {self.errors[:5]}")
            taken = sorted(taken)
            rows.append((self.name, kind, statistics.median(taken), taken[min(len(taken) - 1, int(0.99 * len(taken)))],
                         len(self.errors)))
        return rows


def event_lag(fleet, jobs=3, steps=60):
    """Milliseconds from a log line reaching a watcher on the owner (node 0) to it reaching a watcher on node 1,
    which follows node 0's job. Lines are matched by text (step k/N); the first 5 steps are left out, as a watcher
    that connects after the job started gets them all at once."""
    lags = []
    for job in range(jobs):
        body = {"prompt": f"bench lag {time.time_ns()}", "image_size": "square", "seed": job,
                "num_inference_steps": steps}
        made = httpx.post(f"{fleet.node_http(0)}/fal-ai/flux/dev", json=body, headers=fleet.headers(), timeout=30)
        path = f"/fal-ai/flux/requests/{made.json()['request_id']}/status/stream?logs=1"
        seen = {0: {}, 1: {}}

        def watch(node):
            with httpx.stream("GET", fleet.node_http(node) + path, headers=fleet.headers(), timeout=60) as answer:
                for line in answer.iter_lines():
                    if line.startswith("data:"):
                        for log in json.loads(line[5:]).get("logs") or []:
                            seen[node].setdefault(log["message"], time.perf_counter())

        threads = [threading.Thread(target=watch, args=(node,)) for node in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        for step in range(6, steps + 1):
            message = f"step {step}/{steps}"
            if message in seen[0] and message in seen[1]:
                lags.append((seen[1][message] - seen[0][message]) * 1000)
    return lags


root = tempfile.mkdtemp(prefix="media-relay-cluster-bench-")
os.chmod(root, 0o755)
fleet = single = None
try:
    for folder in ("fleet", "single"):
        os.mkdir(os.path.join(root, folder))
        os.chmod(os.path.join(root, folder), 0o755)
    # Realistic step timings (the event-lag jobs need them); the submissions' own jobs are 64x64, 1 step.
    fleet = Fleet(os.path.join(root, "fleet"), nodes=nodes, extra_args=flags, time_scale="1")
    print(f"fleet: {nodes} nodes ({os.environ['MEDIA_RELAY_BIN']}), nginx {fleet.lb_https} and {fleet.lb_http}")
    print(f"  database {fleet.database_url}\n  API key  {fleet.key}", flush=True)
    # The single node behind the same nginx too: the fleet through nginx is compared with it, so that the balancer's
    # own hop (which a single node behind one pays as well) is not counted as the fleet's.
    single = Fleet(os.path.join(root, "single"), nodes=1, extra_args=flags, time_scale="1", cluster=False)
    setups = [Setup("one node, no database", single.node_http(0), single.key),
              Setup("one node through nginx", single.lb_http, single.key),
              Setup("fleet node, direct", fleet.node_http(0), fleet.key, baseline="one node, no database"),
              Setup("fleet through nginx", fleet.lb_http, fleet.key, baseline="one node through nginx")]
    # Rounds take the setups in turns (and each round in another order), so a burst of other work on the machine
    # lands on all of them alike instead of on one.
    for number in range(rounds):
        turn = number % len(setups)
        for setup in setups[turn:] + setups[:turn]:
            setup.round(max(1, count // rounds))
    rows = [row for setup in setups for row in setup.rows()]
    lags = sorted(event_lag(fleet))
finally:
    for running in (single, fleet):
        if running is not None:
            running.close()
    shutil.rmtree(root, ignore_errors=True)

print(f"\nsubmit latency, ms ({count} each in {rounds} rounds after 50 of warm-up, {concurrency} in flight, client on "
      "the same cores)")
print(f"{'setup':24} {'kind':5} {'p50':>8} {'p99':>8} {'p50 +ms':>8} {'p99 +ms':>8} {'p50 x':>6} {'errors':>6}  against")
measured = {(name, kind): (p50, p99) for name, kind, p50, p99, _ in rows}
against = {setup.name: setup.baseline for setup in setups}
for name, kind, p50, p99, errors in rows:
    base50, base99 = measured[(against[name], kind)]
    print(f"{name:24} {kind:5} {p50:8.2f} {p99:8.2f} {p50 - base50:8.2f} {p99 - base99:8.2f} {p50 / base50:6.2f} "
          f"{errors:6}  {against[name]}")
print("target (issue #17): p50 added by the fleet <= 2 ms")
if lags:
    print(f"\nevent lag, watcher on a follower (node 1) minus watcher on the owner (node 0), {len(lags)} log lines: "
          f"p50 {statistics.median(lags):.2f} ms, p99 {lags[min(len(lags) - 1, int(0.99 * len(lags)))]:.2f} ms "
          f"(target: p99 added <= 20 ms)")
else:
    print("\nevent lag: no log line reached both watchers")
PY
