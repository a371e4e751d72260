#!/usr/bin/env bash
# compare.sh: MediaRelay and Debian's nginx side by side, in the same run, on loopback, serving the same bytes.
#
#   loadtest/compare.sh                     # all four scenarios, 10 s each (+2 s warm-up)
#   DURATION=5 SCENARIOS="small media" loadtest/compare.sh
#
# Scenarios (each measured on the relay, then on nginx, back to back):
#   small     a cached result (GET /fal-ai/flux/requests/<id>, ~0.3 KB JSON) over HTTP keep-alive
#   media     a ~2 MB animated PNG from /files over plain HTTP keep-alive (sendfile on both sides where the relay has it)
#   tls       the small response over HTTPS keep-alive (same certificate on both)
#   new-tls   the small response on a new TLS connection per request (full handshake each time)
#   healthz   (reference, not in the default set) GET /healthz: the relay's HTTP stack with no auth, routing or job
#             lookup, against nginx serving the same 15 bytes
#
# nginx runs with worker_processes 2 and the relay with --event-loop-threads 2. The machine has 2 cores and the
# load generator (relay-load) runs on the same 2 cores, unpinned: every figure is "server + client on 2 cores".
# Ratios (relay / nginx) are what to compare; absolute numbers depend on the machine and on what else runs.
#
# Environment (all optional):
#   DURATION=10 WARMUP=2            seconds measured / warmed up per scenario and server
#   CONNECTIONS=64                  connections for small and tls
#   MEDIA_CONNECTIONS=16            connections for media
#   NEWTLS_CONNECTIONS=32           connections for new-tls
#   LOAD_THREADS=1                  relay-load event loops
#   SCENARIOS="small media tls new-tls"
#   RELAY_BIN=…/media-relay         default: .build/release/media-relay of this repository
#   RELAY_THREADS=2 NGINX_WORKERS=2
#   RESULTS_DIR=loadtest/results    where the Markdown table and the raw JSON go
#   KEEP_WORK=1                     keep the temporary directory (data, logs, nginx config)
#   REPEAT=1                        rounds per scenario (alternating which server goes first); cells are medians
#   QUIET_WAIT=0 QUIET_MAX=10       wait up to QUIET_WAIT s before each round until others use <= QUIET_MAX % CPU
#   NICE=0                          nice level of both servers and relay-load (e.g. -10 on a machine shared with builds)
#   BUILD=1                         build relay-load (and the relay, if missing) before running
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-64}
MEDIA_CONNECTIONS=${MEDIA_CONNECTIONS:-16}
NEWTLS_CONNECTIONS=${NEWTLS_CONNECTIONS:-32}
LOAD_THREADS=${LOAD_THREADS:-1}
SCENARIOS=${SCENARIOS:-"small media tls new-tls h2"}
RELAY_BIN=${RELAY_BIN:-$ROOT/.build/release/media-relay}
LOAD_BIN=${LOAD_BIN:-$HERE/.build/release/relay-load}
RELAY_THREADS=${RELAY_THREADS:-2}
NGINX_WORKERS=${NGINX_WORKERS:-2}
RESULTS_DIR=${RESULTS_DIR:-$HERE/results}
source "$HERE/nice.sh"  # NICE: the servers and relay-load at that nice level, in a session of their own

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'compare.sh: %s\n' "$*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------------------------------------------
if [[ ${BUILD:-0} == 1 ]]; then
    [[ -x $RELAY_BIN ]] || (cd "$ROOT" && swift build -c release --product media-relay)
    swift build -c release --package-path "$HERE"
fi
[[ -x $RELAY_BIN ]] || die "no relay at $RELAY_BIN: run 'swift build -c release --product media-relay' (or BUILD=1)"
[[ -x $LOAD_BIN ]] || die "no relay-load at $LOAD_BIN: run 'swift build -c release --package-path loadtest' (or BUILD=1)"
if ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
    say "installing nginx-light (apt)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light) >/dev/null \
        || die "could not install nginx-light"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [[ " $SCENARIOS " == *" h2 "* ]] && ! command -v h2load >/dev/null; then
    say "installing nghttp2-client for h2load (apt)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client) >/dev/null \
        || die "could not install nghttp2-client"
fi
for tool in curl python3; do command -v $tool >/dev/null || die "$tool is needed"; done

# --- processes and cleanup ---------------------------------------------------------------------------------------
WORK=$(mktemp -d /tmp/relay-compare.XXXXXX)
chmod 755 "$WORK"  # nginx workers run as nobody and read www/ from here
RELAY_PID=""
NGINX_PID=""
cleanup() {
    local status=$?
    [[ -n $RELAY_PID ]] && kill "$RELAY_PID" 2>/dev/null && wait "$RELAY_PID" 2>/dev/null
    [[ -n $NGINX_PID ]] && kill -QUIT "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
    if [[ ${KEEP_WORK:-0} == 1 ]]; then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
RELAY_HTTP=$(free_port); RELAY_HTTPS=$(free_port); NGINX_HTTP=$(free_port); NGINX_HTTPS=$(free_port)

# --- the relay ---------------------------------------------------------------------------------------------------
DATA=$WORK/data
say "starting the relay ($RELAY_BIN, $RELAY_THREADS event loops)"
(cd "$ROOT" && exec $NICE_CMD "$RELAY_BIN" serve --data-dir "$DATA" --catalog Config/models.json \
    --http "127.0.0.1:$RELAY_HTTP" --https "127.0.0.1:$RELAY_HTTPS" \
    --synthetic-time-scale 0 --event-loop-threads "$RELAY_THREADS" --access-log off) >"$WORK/relay.out" 2>"$WORK/relay.err" &
RELAY_PID=$!
for _ in $(seq 1 300); do
    grep -q '^READY' "$WORK/relay.out" 2>/dev/null && break
    kill -0 "$RELAY_PID" 2>/dev/null || { cat "$WORK/relay.err" >&2; die "the relay exited"; }
    sleep 0.1
done
grep -q '^READY' "$WORK/relay.out" || die "the relay did not print READY in 30 s"
# admin for the cached-result rows: 64 connections reading one request far faster than any client polls would be
# limited per request otherwise (the policy), and these rows measure serving, not the limiter. Media needs no key.
KEY=$("$RELAY_BIN" keys create --tier admin --data-dir "$DATA" | tail -1)
AUTH="Authorization: Key $KEY"
RELAY=http://127.0.0.1:$RELAY_HTTP

# One job whose output is ~2 MB: the synthetic Veo 3 "video" (an animated PNG) at 40 frames is 2.06 MB (a still
# 2048x2048 PNG compresses to ~0.4 MB). Its result JSON (~0.25 KB) is the small cached response.
say "generating the media file and the cached result"
MODEL=${MODEL:-fal-ai/veo3}
JOB=${JOB:-'{"prompt":"relay-load: waves under a lighthouse","seed":20261124,"num_frames":40}'}
REQUEST_ID=$(curl -sf "$RELAY/$MODEL" -H "$AUTH" -H 'content-type: application/json' -d "$JOB" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["request_id"])') || die "submit failed"
APP=$(echo "$MODEL" | cut -d/ -f1-2)
for _ in $(seq 1 600); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$RELAY/$APP/requests/$REQUEST_ID/status" -H "$AUTH")
    [[ $code == 200 ]] && break
    sleep 0.1
done
[[ $code == 200 ]] || die "request $REQUEST_ID did not complete"
RESULT_PATH=/$APP/requests/$REQUEST_ID
curl -sf "$RELAY$RESULT_PATH" -H "$AUTH" -o "$WORK/result.json" || die "could not fetch the result"
MEDIA_URL=$(python3 - "$WORK/result.json" <<'PY'
import json, sys
def urls(value):
    if isinstance(value, dict):
        if isinstance(value.get("url"), str):
            yield value["url"]
        for item in value.values():
            yield from urls(item)
    elif isinstance(value, list):
        for item in value:
            yield from urls(item)
print(next(urls(json.load(open(sys.argv[1])))))
PY
)
MEDIA_PATH=/files/${MEDIA_URL##*/files/}
curl -sf "$RELAY$MEDIA_PATH" -H "$AUTH" -o "$WORK/media.bin" || die "could not fetch $MEDIA_PATH"
SMALL_BYTES=$(stat -c %s "$WORK/result.json")
MEDIA_BYTES=$(stat -c %s "$WORK/media.bin")
say "small response: $SMALL_BYTES bytes; media: $MEDIA_PATH, $MEDIA_BYTES bytes"

# --- nginx: the same bytes at the same paths ---------------------------------------------------------------------
WWW=$WORK/www
mkdir -p "$WWW$(dirname "$RESULT_PATH")" "$WWW/files"
cp "$WORK/result.json" "$WWW$RESULT_PATH"
cp "$WORK/media.bin" "$WWW$MEDIA_PATH"
curl -sf "$RELAY/healthz" -o "$WWW/healthz" || die "no /healthz"
mkdir -p "$WORK/nginx-temp"
cat >"$WORK/nginx.conf" <<EOF
worker_processes $NGINX_WORKERS;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
daemon off;
events { worker_connections 8192; use epoll; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx-temp/body;
    proxy_temp_path $WORK/nginx-temp/proxy;
    fastcgi_temp_path $WORK/nginx-temp/fastcgi;
    uwsgi_temp_path $WORK/nginx-temp/uwsgi;
    scgi_temp_path $WORK/nginx-temp/scgi;
    types { image/png png; image/apng apng; application/json json; }
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 100000000;
    open_file_cache max=1000 inactive=60s;
    etag on;
    server {
        listen 127.0.0.1:$NGINX_HTTP;
        listen 127.0.0.1:$NGINX_HTTPS ssl http2;
        ssl_certificate $DATA/tls/server.pem;
        ssl_certificate_key $DATA/tls/server-key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        root $WWW;
        location ~ ^/[^/]+/[^/]+/requests/ { default_type application/json; }
        location = /healthz { default_type application/json; }
        location /files/ { add_header Cache-Control "public, max-age=31536000, immutable"; }
    }
}
EOF
say "starting nginx ($NGINX_WORKERS workers)"
$NICE_CMD "$NGINX" -c "$WORK/nginx.conf" -p "$WORK" -e "$WORK/nginx-error.log" 2>>"$WORK/nginx-error.log" &
NGINX_PID=$!
for _ in $(seq 1 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$NGINX_HTTP$RESULT_PATH" && break
    kill -0 "$NGINX_PID" 2>/dev/null || { cat "$WORK/nginx-error.log" >&2; die "nginx exited"; }
    sleep 0.1
done
cmp -s <(curl -sf "http://127.0.0.1:$NGINX_HTTP$MEDIA_PATH") "$WORK/media.bin" || die "nginx does not serve the same media bytes"
cmp -s <(curl -sf --cacert "$DATA/tls/ca.pem" "https://127.0.0.1:$NGINX_HTTPS$RESULT_PATH") "$WORK/result.json" \
    || die "nginx (TLS) does not serve the same result bytes"

# --- measuring ---------------------------------------------------------------------------------------------------
# Each run goes through this Python wrapper, which also measures CPU: the server's (the relay process, or nginx's
# master and workers), relay-load's own, and everyone else's on the machine (from /proc/stat), so a noisy row shows.
cat >"$WORK/run_one.py" <<'PY'
import json, os, subprocess, sys, time
out, server_pid, load_avg, *command = sys.argv[1:]
tick = os.sysconf("SC_CLK_TCK")

def server_cpu():
    pids = [server_pid]
    try:
        pids += open(f"/proc/{server_pid}/task/{server_pid}/children").read().split()
    except OSError:
        pass
    user = system = 0.0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            user, system = user + int(fields[11]) / tick, system + int(fields[12]) / tick
        except OSError:
            pass
    return user, system

def busy_cpu():
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / tick

(user0, system0), busy0, wall0 = server_cpu(), busy_cpu(), time.monotonic()
h2load = os.path.basename(command[0]) == "h2load" or "h2load" in command
child = subprocess.Popen(command, stdout=subprocess.PIPE if h2load else subprocess.DEVNULL, text=True)
h2_output = child.stdout.read() if h2load else ""
_, status, usage = os.wait4(child.pid, 0)
(user1, system1), busy1, wall1 = server_cpu(), busy_cpu(), time.monotonic()
server0, server1 = user0 + system0, user1 + system1
if status != 0:
    sys.exit(f"load generator failed: {command}")
client = usage.ru_utime + usage.ru_stime
if h2load:
    # h2load prints totals, not percentiles: the latency cells of its rows are mean / max.
    import re
    rate = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s, ([\d.]+)(\w+)/s", h2_output)
    done = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", h2_output)
    timing = re.search(r"time for request:\s+([\d.]+)(\w+)\s+([\d.]+)(\w+)\s+([\d.]+)(\w+)", h2_output)
    if not rate or not done:
        sys.exit("could not read h2load's output:\n" + h2_output)
    unit = {"B": 1, "KB": 1024, "MB": 1048576, "GB": 1073741824}
    ms = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    duration = float(command[command.index("-D") + 1]) if "-D" in command else 0.0
    warmup = float(command[command.index("--warm-up-time") + 1].rstrip("s")) if "--warm-up-time" in command else 0.0
    report = {
        "requests_per_sec": float(rate.group(1)),
        "bytes_per_sec": float(rate.group(2)) * unit.get(rate.group(3), 1),
        "latency_ms": {
            "p50": float(timing.group(5)) * ms.get(timing.group(6), 1) if timing else 0.0,
            "p99": float(timing.group(3)) * ms.get(timing.group(4), 1) if timing else 0.0,
        },
        "error_total": int(done.group(3)) + int(done.group(4)),
        "duration_s": duration,
        "warmup_s": warmup,
    }
else:
    report = json.load(open(out))
wall = wall1 - wall0
report["run_wall_s"] = round(wall, 2)
report["server_cpu_s_run"] = round(server1 - server0, 2)
report["server_user_s_run"], report["server_system_s_run"] = round(user1 - user0, 2), round(system1 - system0, 2)
report["client_cpu_s_run"] = round(client, 2)
report["other_cpu_s_run"] = round(max(0.0, (busy1 - busy0) - (server1 - server0) - client), 2)
report["load_average_before"] = float(load_avg)
json.dump(report, open(out, "w"), indent=1, sort_keys=True)
lat = report["latency_ms"]
cores = os.cpu_count() or 1
print(f"    {report['requests_per_sec']:.0f} req/s, {report['bytes_per_sec']/1048576:.1f} MiB/s, "
      f"p50 {lat['p50']:.3f} ms, p99 {lat['p99']:.3f} ms, errors {report['error_total']}; CPU over {wall:.1f} s: "
      f"server {report['server_cpu_s_run']} s, relay-load {report['client_cpu_s_run']} s, "
      f"others {report['other_cpu_s_run']} s ({report['other_cpu_s_run'] / (wall * cores) * 100:.0f}% of the machine)",
      file=sys.stderr)
PY

RAW=$WORK/raw
mkdir -p "$RAW"
# Share of the machine that other processes keep busy, over 2 s (the load average lags by a minute).
busy_share() {
    python3 - <<'PY'
import time
def read():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(f[:8]), f[3] + f[4]
t0, i0 = read(); time.sleep(2); t1, i1 = read()
print(f"{(1 - (i1 - i0) / max(1, t1 - t0)) * 100:.0f}")
PY
}
# With QUIET_WAIT=seconds, wait (up to that long) before each pair of runs until other processes use at most
# QUIET_MAX percent of the machine.
wait_for_quiet() {
    local waited=0 busy
    [[ ${QUIET_WAIT:-0} -gt 0 ]] || return 0
    while busy=$(busy_share); [[ $busy -gt ${QUIET_MAX:-10} ]]; do
        ((waited += 2))
        if ((waited >= QUIET_WAIT)); then say "still ${busy}% busy after ${QUIET_WAIT} s: measuring anyway"; return 0; fi
        sleep 1
    done
}

QUIET_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
run_one() {  # scenario server pid subcommand url connections [repeat]
    local scenario=$1 server=$2 pid=$3 subcommand=$4 url=$5 connections=$6 round=$7 load
    load=$(cut -d' ' -f1 /proc/loadavg)
    say "$scenario on $server (round $round): $subcommand $url ($connections connections; load average $load)"
    if [[ $scenario == h2 ]]; then
        # HTTP/2 over TLS (what browsers use): h2load, $connections connections x H2_STREAMS streams each.
        python3 "$WORK/run_one.py" "$RAW/$scenario-$server-$round.json" "$pid" "$load" \
            $NICE_CMD h2load -c "$connections" -m "${H2_STREAMS:-16}" -t "$LOAD_THREADS" -D "$DURATION" \
            --warm-up-time "${WARMUP}s" -H "$AUTH" "$url"
        return
    fi
    # Media is fetched as browsers fetch it: no key, under the relay's default limits (media is not rate-limited).
    local auth=(-H "$AUTH")
    [[ $scenario == media ]] && auth=()
    python3 "$WORK/run_one.py" "$RAW/$scenario-$server-$round.json" "$pid" "$load" \
        $NICE_CMD "$LOAD_BIN" "$subcommand" "$url" -c "$connections" -t "$LOAD_THREADS" -d "$DURATION" -w "$WARMUP" \
        --ca-file "$DATA/tls/ca.pem" "${auth[@]}" --output "$RAW/$scenario-$server-$round.json" --json
}

# Each scenario runs REPEAT rounds; the order alternates (relay first, then nginx first) so that a slow drift in
# what else runs does not always fall on the same server.
REPEAT=${REPEAT:-1}
for scenario in $SCENARIOS; do
    case $scenario in
        healthz) subcommand=get; relay_url=$RELAY/healthz; nginx_url=http://127.0.0.1:$NGINX_HTTP/healthz; conns=$CONNECTIONS ;;
        small) subcommand=get; relay_url=$RELAY$RESULT_PATH; nginx_url=http://127.0.0.1:$NGINX_HTTP$RESULT_PATH; conns=$CONNECTIONS ;;
        media) subcommand=get; relay_url=$RELAY$MEDIA_PATH; nginx_url=http://127.0.0.1:$NGINX_HTTP$MEDIA_PATH; conns=$MEDIA_CONNECTIONS ;;
        tls) subcommand=get; relay_url=https://127.0.0.1:$RELAY_HTTPS$RESULT_PATH
             nginx_url=https://127.0.0.1:$NGINX_HTTPS$RESULT_PATH; conns=$CONNECTIONS ;;
        new-tls) subcommand=new-tls; relay_url=https://127.0.0.1:$RELAY_HTTPS$RESULT_PATH
                 nginx_url=https://127.0.0.1:$NGINX_HTTPS$RESULT_PATH; conns=$NEWTLS_CONNECTIONS ;;
        h2) subcommand=h2load; relay_url=https://127.0.0.1:$RELAY_HTTPS$RESULT_PATH
            nginx_url=https://127.0.0.1:$NGINX_HTTPS$RESULT_PATH; conns=${H2_CONNECTIONS:-16} ;;
        *) die "unknown scenario $scenario (small media tls new-tls h2 healthz)" ;;
    esac
    for round in $(seq 1 "$REPEAT"); do
        wait_for_quiet
        if ((round % 2 == 1)); then
            run_one "$scenario" relay "$RELAY_PID" $subcommand "$relay_url" "$conns" "$round"
            run_one "$scenario" nginx "$NGINX_PID" $subcommand "$nginx_url" "$conns" "$round"
        else
            run_one "$scenario" nginx "$NGINX_PID" $subcommand "$nginx_url" "$conns" "$round"
            run_one "$scenario" relay "$RELAY_PID" $subcommand "$relay_url" "$conns" "$round"
        fi
    done
done
QUIET_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- the table ---------------------------------------------------------------------------------------------------
mkdir -p "$RESULTS_DIR"
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
MACHINE="$(hostname) ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'))"
NAME=$RESULTS_DIR/$STAMP-$(hostname)
cp -r "$RAW" "$NAME.raw"
python3 - "$RAW" "$SCENARIOS" "$NAME.md" <<PY
import json, os, sys
raw, scenarios, out = sys.argv[1], sys.argv[2].split(), sys.argv[3]
targets = {"small": 1.0, "media": 1.0, "tls": 1.0, "new-tls": 0.8, "h2": 1.0, "healthz": None}
titles = {
    "small": "small cached result ($SMALL_BYTES B), HTTP keep-alive, $CONNECTIONS conns",
    "media": "media $MEDIA_BYTES B, plain HTTP keep-alive, $MEDIA_CONNECTIONS conns",
    "tls": "small cached result, TLS keep-alive, $CONNECTIONS conns",
    "new-tls": "small cached result, new TLS connection per request, $NEWTLS_CONNECTIONS conns",
    "h2": "small cached result, HTTP/2 over TLS (h2load), ${H2_CONNECTIONS:-16} conns x ${H2_STREAMS:-16} streams; latency mean / max",
    "healthz": "reference: GET /healthz (no auth, no job lookup), $CONNECTIONS conns",
}
rows, cpu_rows = [], []
for s in scenarios:
    def median_run(server):
        runs = []
        for name in sorted(os.listdir(raw)):
            if name.startswith(f"{s}-{server}-") and name.endswith(".json"):
                runs.append(json.load(open(f"{raw}/{name}")))
        runs.sort(key=lambda x: x["requests_per_sec"])
        return runs[(len(runs) - 1) // 2] if runs else None, len(runs)
    r, rounds = median_run("relay")
    n, _ = median_run("nginx")
    if not r or not n:
        continue
    ratio = r["requests_per_sec"] / n["requests_per_sec"] if n["requests_per_sec"] else float("nan")
    target = targets.get(s)
    verdict = "—" if target is None else f"≥ {target:.1f}× ({'met' if ratio >= target else 'missed'})"
    def per_cpu(x):
        cpu = x.get("server_cpu_s_run")
        # the server's CPU covers warm-up and measurement; scale the responses to the same window
        window = x["duration_s"] + x["warmup_s"]
        return f"{x['requests_per_sec'] * window / cpu:.0f}" if cpu else "-"
    def per_cpu_value(x):
        cpu = x.get("server_cpu_s_run")
        return x["requests_per_sec"] * (x["duration_s"] + x["warmup_s"]) / cpu if cpu else 0
    cpu_ratio = per_cpu_value(r) / per_cpu_value(n) if per_cpu_value(n) else float("nan")
    rows.append(
        f"| {titles[s]} | {r['requests_per_sec']:.0f} | {n['requests_per_sec']:.0f} | **{ratio:.2f}×** | {verdict} | "
        f"{r['latency_ms']['p50']:.2f} / {r['latency_ms']['p99']:.2f} | {n['latency_ms']['p50']:.2f} / {n['latency_ms']['p99']:.2f} | "
        f"{per_cpu(r)} / {per_cpu(n)} ({cpu_ratio:.2f}×) | {r['error_total']} / {n['error_total']} |"
    )
    def cpu(x):
        wall = x.get("run_wall_s") or 1
        split = (f" ({x['server_user_s_run']:.1f} user + {x['server_system_s_run']:.1f} kernel)"
                 if "server_user_s_run" in x else "")
        return (f"{x['bytes_per_sec'] / 1048576:.1f} MiB/s, server {x.get('server_cpu_s_run', 0):.1f} s{split}, "
                f"relay-load {x.get('client_cpu_s_run', 0):.1f} s, others {x.get('other_cpu_s_run', 0):.1f} s "
                f"({x.get('other_cpu_s_run', 0) / (wall * (os.cpu_count() or 1)) * 100:.0f}%)")
    cpu_rows.append(f"| {s} | {cpu(r)} | {cpu(n)} |")
lines = [
    f"## relay vs nginx, {os.path.basename(out)[:-3]}",
    "",
    "Machine: $MACHINE. Relay: $RELAY_THREADS event loops; nginx 1.22: $NGINX_WORKERS workers, sendfile on, "
    "access_log off; relay-load: $LOAD_THREADS thread(s). All three share the same cores: the load generator is not pinned "
    "apart (there are only 2); nice level $NICE. Loopback; $DURATION s measured after $WARMUP s warm-up per run; $REPEAT round(s) per "
    "scenario in alternating order, each cell the median round (the lower middle one for an even count). "
    "Load average before: $QUIET_BEFORE; after: $QUIET_AFTER.",
    "",
    "| scenario | relay req/s | nginx req/s | relay / nginx | target | relay p50 / p99 ms | nginx p50 / p99 ms | "
    "req per server CPU-second, relay / nginx | errors relay / nginx |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    *rows,
    "",
    "CPU during each row (warm-up + measurement): the server's, relay-load's, and every other process's "
    "(share of the whole machine in parentheses; anything but a few % means other work competed).",
    "",
    "| scenario | relay row | nginx row |",
    "| --- | --- | --- |",
    *cpu_rows,
]
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
PY
say "saved $NAME.md and $NAME.raw/"
