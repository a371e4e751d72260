#!/usr/bin/env bash
# Watchers of one job: fan-out (SSE and WS mixed, over several processes) and idle memory per connection, for the
# relay and, when libnginx-mod-nchan is installed, nginx + nchan in the same run. Loopback only.
#
#   loadtest/watchers.sh                          # everything: fan-out 10,000 mixed, idle memory 2,000 per kind
#   PHASES=memory IDLE_KINDS="sse ws" loadtest/watchers.sh
#   BUILD=1 loadtest/watchers.sh                  # build relay-load (and the relay if missing) first
#
# Settings (environment):
#   PHASES="fanout memory"                        which parts to run
#   FANOUT_WATCHERS=10000 FANOUT_PROCESSES=4      watchers in all, and processes of relay-load to spread them over
#   FANOUT_TRANSPORT=mixed                        sse, ws or mixed (watchers alternate SSE and WS)
#   FANOUT_STEP_SECONDS=0.2 FANOUT_STEPS=100      the watched job: a log line every 0.2 s for 100 steps (~20 s),
#                                                 then the terminal event (synthetic LTX-Video: 0.1 s per step per
#                                                 16 frames at time scale 1, so num_frames = 160 × step seconds)
#   FANOUT_MODEL=fal-ai/ltx-video FANOUT_BODY='{…}'
#   FANOUT_HOLD_BODY='{…}'                        two LTX jobs of ~15 s submitted first hold both synthetic slots,
#                                                 so the watched job is queued while the watchers attach
#   IDLE_WATCHERS=2000                            idle watchers per memory measurement (one relay-load process)
#   IDLE_KINDS="sse sse-tls ws ws-tls"            what the idle watchers use (plain/TLS, SSE/WS)
#   SETTLE=5                                      seconds between "all attached" and the settled RSS reading
#   SOURCE_ADDRESSES=32                           loopback source addresses the watchers spread over (127.0.1.x):
#                                                 the relay allows 1024 connections per client address
#   NCHAN=auto                                    auto (if installed), 1 (required), 0 (skip nginx + nchan)
#   NGINX_WORKERS=2 RELAY_THREADS=2               like compare.sh: both servers get the 2 cores' worth of loops
#   RELAY_BIN=… LOAD_BIN=… RESULTS_DIR=… KEEP_WORK=1 BUILD=1 NICE=0
#
# Each server starts fresh for each measurement (its own data directory), so an RSS baseline never includes the
# allocator's leftovers of an earlier run. Idle means: the watched job is queued behind two long jobs that hold
# both synthetic GPU slots, so after the first event (the queue snapshot) nothing but keep-alive pings flows.
# nchan gets the same shape: one message published before the subscribers connect, then nothing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOADTEST=$ROOT/loadtest
RELAY_BIN=${RELAY_BIN:-$ROOT/.build/release/media-relay}
LOAD_BIN=${LOAD_BIN:-$LOADTEST/.build/release/relay-load}
PHASES=${PHASES:-"fanout memory"}
FANOUT_WATCHERS=${FANOUT_WATCHERS:-10000}
FANOUT_PROCESSES=${FANOUT_PROCESSES:-4}
FANOUT_TRANSPORT=${FANOUT_TRANSPORT:-mixed}
FANOUT_MODEL=${FANOUT_MODEL:-fal-ai/ltx-video}
FANOUT_STEP_SECONDS=${FANOUT_STEP_SECONDS:-0.2}
FANOUT_STEPS=${FANOUT_STEPS:-100}
FANOUT_FRAMES=$(python3 -c "print(round(160 * $FANOUT_STEP_SECONDS))")
FANOUT_BODY=${FANOUT_BODY:-'{"prompt":"relay-load watchers","seed":'$RANDOM',"num_frames":'$FANOUT_FRAMES',"num_inference_steps":'$FANOUT_STEPS',"image_size":{"width":64,"height":64}}'}
FANOUT_HOLD_BODY=${FANOUT_HOLD_BODY:-'{"prompt":"slot holder {n}","seed":{n},"num_frames":24,"num_inference_steps":100,"image_size":{"width":64,"height":64}}'}
IDLE_WATCHERS=${IDLE_WATCHERS:-2000}
IDLE_KINDS=${IDLE_KINDS:-"sse sse-tls ws ws-tls"}
SETTLE=${SETTLE:-5}
SOURCE_ADDRESSES=${SOURCE_ADDRESSES:-32}
NCHAN=${NCHAN:-auto}
NGINX_WORKERS=${NGINX_WORKERS:-2}
RELAY_THREADS=${RELAY_THREADS:-2}
RESULTS_DIR=${RESULTS_DIR:-$LOADTEST/results}
source "$LOADTEST/nice.sh"  # NICE=-10: the servers and relay-load at that nice level, in a session of their own

say() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }
die() { printf 'watchers.sh: %s\n' "$*" >&2; exit 1; }
load_average() { cut -d' ' -f1-3 /proc/loadavg; }

if [[ ${BUILD:-0} == 1 ]]; then
    swift build -c release --package-path "$LOADTEST"
    [[ -x $RELAY_BIN ]] || (cd "$ROOT" && swift build -c release --product media-relay)
fi
[[ -x $RELAY_BIN ]] || die "no relay at $RELAY_BIN (swift build -c release --product media-relay, or BUILD=1)"
[[ -x $LOAD_BIN ]] || die "no relay-load at $LOAD_BIN (swift build -c release --package-path loadtest, or BUILD=1)"
NGINX=$(command -v nginx || true)
NCHAN_MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so
case $NCHAN in
    auto) [[ -n $NGINX && -f $NCHAN_MODULE ]] && NCHAN=1 || NCHAN=0 ;;
    1) [[ -n $NGINX && -f $NCHAN_MODULE ]] || die "nginx + nchan not installed (apt-get install libnginx-mod-nchan)" ;;
esac
(( $(ulimit -n) >= 12000 )) || ulimit -n 20000 2>/dev/null || die "ulimit -n is $(ulimit -n); the relay needs > 10000"

WORK=$(mktemp -d /tmp/relay-watchers.XXXXXX)
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
RAW=$RESULTS_DIR/$STAMP-$(hostname)-watchers.raw
mkdir -p "$RAW"
SERVER_PID=""
cleanup() {
    [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    [[ ${KEEP_WORK:-0} == 1 ]] && say "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
stop_server() {
    [[ -n $SERVER_PID ]] || return 0
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

# A fresh relay: sets SERVER_PID, HTTP, HTTPS, KEY, AUTH, DATA.
start_relay() {
    local name=$1
    DATA=$WORK/$name/data
    mkdir -p "$DATA"
    HTTP=$(free_port); HTTPS=$(free_port)
    (cd "$ROOT" && exec $NICE_CMD "$RELAY_BIN" serve --data-dir "$DATA" --catalog Config/models.json \
        --http "127.0.0.1:$HTTP" --https "127.0.0.1:$HTTPS" --synthetic-time-scale 1 \
        --event-loop-threads "$RELAY_THREADS") >"$WORK/$name/relay.out" 2>"$WORK/$name/relay.err" &
    SERVER_PID=$!
    for _ in $(seq 1 300); do
        grep -q '^READY' "$WORK/$name/relay.out" 2>/dev/null && break
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/$name/relay.err" >&2; die "the relay exited"; }
        sleep 0.1
    done
    grep -q '^READY' "$WORK/$name/relay.out" || die "the relay did not print READY in 30 s"
    [[ -d $WORK/tls ]] || cp -r "$DATA/tls" "$WORK/tls"
    KEY=$("$RELAY_BIN" keys create --tier admin --data-dir "$DATA" | tail -1)  # admin: no rate limits
    AUTH="Authorization: Key $KEY"
}

submit() {  # model body → status stream path (with ?logs=1)
    curl -sf "http://127.0.0.1:$HTTP/$1" -H "$AUTH" -H 'content-type: application/json' -d "$2" \
        | python3 -c 'import json,sys,urllib.parse; u=urllib.parse.urlparse(json.load(sys.stdin)["status_url"]); print(u.path + "/stream?logs=1")'
}

# nginx + nchan: eventsource subscribers on /<a>/<b>/requests/<channel>/status/stream, publisher on /pub/<channel>.
start_nchan() {
    local name=$1
    mkdir -p "$WORK/$name/temp"
    # The relay's development certificate (saved by start_relay), so TLS costs the same handshake on both servers.
    [[ -f $WORK/tls/server.pem ]] || { start_relay tls-source; stop_server; }
    HTTP=$(free_port); HTTPS=$(free_port)
    cat >"$WORK/$name/nginx.conf" <<EOF
load_module $NCHAN_MODULE;
worker_processes $NGINX_WORKERS;
worker_rlimit_nofile 20000;
pid $WORK/$name/nginx.pid;
error_log $WORK/$name/nginx-error.log warn;
daemon off;
events { worker_connections 20000; use epoll; }
http {
    access_log off;
    client_body_temp_path $WORK/$name/temp/body;
    proxy_temp_path $WORK/$name/temp/proxy;
    fastcgi_temp_path $WORK/$name/temp/fastcgi;
    uwsgi_temp_path $WORK/$name/temp/uwsgi;
    scgi_temp_path $WORK/$name/temp/scgi;
    server {
        listen 127.0.0.1:$HTTP;
        listen 127.0.0.1:$HTTPS ssl;
        ssl_certificate $WORK/tls/server.pem;
        ssl_certificate_key $WORK/tls/server-key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location ~ ^/[^/]+/[^/]+/requests/([^/]+)/status/stream\$ {
            nchan_subscriber eventsource;
            nchan_channel_id \$1;
            nchan_subscriber_first_message oldest;
        }
        location ~ ^/pub/([^/]+)\$ {
            nchan_publisher;
            nchan_channel_id \$1;
            nchan_message_buffer_length 200;
        }
    }
}
EOF
    $NICE_CMD "$NGINX" -c "$WORK/$name/nginx.conf" -p "$WORK/$name" -e "$WORK/$name/nginx-error.log" \
        2>>"$WORK/$name/nginx-error.log" &
    SERVER_PID=$!
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "http://127.0.0.1:$HTTP/pub/probe" && break
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/$name/nginx-error.log" >&2; die "nginx exited"; }
        sleep 0.1
    done
}
nginx_pids() {  # the master and its workers, as --memory-pid options
    local pids=$SERVER_PID
    pids+=" $(cat "/proc/$SERVER_PID/task/$SERVER_PID/children")"
    for pid in $pids; do printf -- '--memory-pid %s ' "$pid"; done
}
publish() {  # channel body
    curl -sf -o /dev/null "http://127.0.0.1:$HTTP/pub/$1" -H 'content-type: application/json' -d "$2"
}

# The publisher that plays "upstream" for nchan: after the same wait as the relay's queued job, a step every 0.2 s
# for 100 steps, each message a status with one log line stamped like the relay's (so relay-load measures lag the
# same way), then the terminal status. Each message has the relay's fields at the relay's lengths (a request id
# shaped like a UUID, the three queue URLs, the log line's labels: about 560 bytes), so both servers copy, and
# relay-load parses, the same bytes per event (with nchan's first messages of 150 bytes, relay-load spent 14.5 s of
# CPU on nchan's stream against 22.6 s on the relay's, on the cores both servers share).
nchan_publisher() {  # port channel steps interval delay
    python3 - "$@" <<'EOF'
import datetime, http.client, json, sys, time
port, channel, steps, interval, delay = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
time.sleep(delay)
conn = http.client.HTTPConnection("127.0.0.1", port)
request_id = "00000000-0000-4000-8000-" + channel.encode().hex().ljust(12, "0")[:12]
base = f"http://127.0.0.1:{port}/fal-ai/ltx-video/requests/{request_id}"
shape = {"request_id": request_id, "response_url": base, "status_url": base + "/status", "cancel_url": base + "/cancel"}
def post(body):
    conn.request("POST", f"/pub/{channel}", json.dumps(body, separators=(",", ":")), {"Content-Type": "application/json"})
    conn.getresponse().read()
for step in range(1, steps + 1):
    time.sleep(interval)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
    post({**shape, "status": "IN_PROGRESS",
          "logs": [{"message": f"step {step}/{steps}", "level": "INFO", "labels": {"level": "INFO"}, "source": "USER",
                    "timestamp": now}]})
post({**shape, "status": "COMPLETED", "logs": [], "metrics": {}})
EOF
}

server_cpu() {  # CPU seconds of the server, "user,system": the relay, or nginx's master and workers
    local pids="$SERVER_PID $(cat "/proc/$SERVER_PID/task/$SERVER_PID/children" 2>/dev/null)" user=0 system=0 pid
    for pid in $pids; do
        user=$((user + $(cut -d')' -f2 "/proc/$pid/stat" | awk '{print $12}')))
        system=$((system + $(cut -d')' -f2 "/proc/$pid/stat" | awk '{print $13}')))
    done
    python3 -c "print(f'{$user / $(getconf CLK_TCK)},{$system / $(getconf CLK_TCK)}')"
}
busy_cpu() { awk '/^cpu / { print ($2 + $3 + $4 + $7 + $8) / 100 }' /proc/stat; }  # all CPUs, seconds

run_load() {  # output-name relay-load arguments…
    local out=$1; shift
    say "$* (load average $(load_average))"
    local load_before server_before busy_before
    load_before=$(load_average); server_before=$(server_cpu); busy_before=$(busy_cpu)
    # relay-load's own CPU (and its child processes'): GNU time's user + system of the whole tree.
    /usr/bin/time -f '%U %S %e' -o "$WORK/time.txt" $NICE_CMD "$LOAD_BIN" "$@" --source-addresses "$SOURCE_ADDRESSES" \
        --json --output "$RAW/$out.json" >/dev/null
    python3 - "$RAW/$out.json" "$load_before" "$(load_average)" "$server_before" "$(server_cpu)" \
        "$busy_before" "$(busy_cpu)" "$(cat "$WORK/time.txt")" <<'EOF'
import json, sys
path, before, after, server0, server1, busy0, busy1, times = sys.argv[1:]
user, system, wall = map(float, times.split()[-3:])
report = json.load(open(path))
report["load_average_before"], report["load_average_after"] = before, after
(user0, system0), (user1, system1) = (map(float, server0.split(",")), map(float, server1.split(",")))
report["server_user_s"], report["server_system_s"] = round(user1 - user0, 2), round(system1 - system0, 2)
report["server_cpu_s"] = round(report["server_user_s"] + report["server_system_s"], 2)
report["client_cpu_s"] = round(user + system, 2)
report["other_cpu_s"] = round(max(0, float(busy1) - float(busy0) - report["server_cpu_s"] - report["client_cpu_s"]), 2)
report["run_wall_s"] = wall
json.dump(report, open(path, "w"), indent=1, sort_keys=True)
EOF
}

# --- fan-out: FANOUT_WATCHERS watchers of one job over FANOUT_PROCESSES processes --------------------------------
if [[ " $PHASES " == *" fanout "* ]]; then
    start_relay fanout-relay
    for n in 1 2; do submit "$FANOUT_MODEL" "${FANOUT_HOLD_BODY//\{n\}/$n}" >/dev/null; done
    STREAM=$(submit "$FANOUT_MODEL" "$FANOUT_BODY")
    run_load fanout-relay sse-fanout "http://127.0.0.1:$HTTP$STREAM" --key "$KEY" \
        --transport "$FANOUT_TRANSPORT" --watchers "$FANOUT_WATCHERS" --processes "$FANOUT_PROCESSES" -d 58
    stop_server
    if [[ $NCHAN == 1 ]]; then
        start_nchan fanout-nchan
        publish job1 '{"request_id":"job1","status":"IN_QUEUE","queue_position":0,"logs":[]}'
        nchan_publisher "$HTTP" job1 "$FANOUT_STEPS" "$FANOUT_STEP_SECONDS" 15 &
        PUBLISHER=$!
        run_load fanout-nchan sse-fanout "http://127.0.0.1:$HTTP/nchan/app/requests/job1/status/stream" \
            --transport sse --watchers "$FANOUT_WATCHERS" --processes "$FANOUT_PROCESSES" -d 58
        wait "$PUBLISHER" || true
        stop_server
    fi
fi

# --- idle memory: IDLE_WATCHERS watchers per kind, a fresh server each ---------------------------------------------
if [[ " $PHASES " == *" memory "* ]]; then
    for kind in $IDLE_KINDS; do
        start_relay "memory-relay-$kind"
        # Two long jobs hold both synthetic slots (Veo 3 at 240 frames: 100 steps of 4.5 s), so the watched job stays
        # queued: the watchers get the queue snapshot, then only pings.
        for n in 1 2; do
            submit fal-ai/veo3 '{"prompt":"slot holder '$n'","seed":'$n',"num_frames":240,"num_inference_steps":100}' >/dev/null
        done
        STREAM=$(submit fal-ai/flux/dev '{"prompt":"idle watchers","seed":1}')
        sleep 2
        scheme=http; port=$HTTP; [[ $kind == *-tls ]] && { scheme=https; port=$HTTPS; }
        run_load "memory-relay-$kind" sse-fanout "$scheme://127.0.0.1:$port$STREAM" --key "$KEY" \
            --ca-file "$DATA/tls/ca.pem" --transport "${kind%-tls}" --watchers "$IDLE_WATCHERS" \
            --memory-pid "$SERVER_PID" --settle "$SETTLE" -d 55
        stop_server
    done
    if [[ $NCHAN == 1 ]]; then
        for kind in $IDLE_KINDS; do
            [[ $kind == sse* ]] || continue  # the relay's /ws protocol is its own; nchan's WebSocket is not comparable
            start_nchan "memory-nchan-$kind"
            publish idle '{"request_id":"idle","status":"IN_QUEUE","queue_position":0,"logs":[]}'
            sleep 1
            scheme=http; port=$HTTP; [[ $kind == *-tls ]] && { scheme=https; port=$HTTPS; }
            # shellcheck disable=SC2046
            run_load "memory-nchan-$kind" sse-fanout "$scheme://127.0.0.1:$port/nchan/app/requests/idle/status/stream" \
                --ca-file "$WORK/tls/ca.pem" --transport sse --watchers "$IDLE_WATCHERS" $(nginx_pids) \
                --settle "$SETTLE" -d 55
            stop_server
        done
    fi
fi

# --- the table --------------------------------------------------------------------------------------------------
python3 - "$RAW" "$RESULTS_DIR/$STAMP-$(hostname)-watchers.md" <<'EOF'
import glob, json, os, sys
raw, out = sys.argv[1:]
rows = []
def ms(d, k): return f"{d.get(k, 0):.1f}" if d else "-"
lines = ["| run | watchers | got terminal | first event p50 / p99 ms | attach s | lag p50 / p99 / max ms | lag after attach p50 / p99 / max ms | terminal spread ms | errors | CPU s server (user + kernel) / relay-load / others | load avg before → after |",
         "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |"]
mem = ["| run | idle watchers attached | RSS before → attached → settled → closed (KiB) | bytes per connection | load avg before → after |",
       "| --- | ---: | --- | ---: | --- |"]
for path in sorted(glob.glob(os.path.join(raw, "*.json"))):
    r = json.load(open(path)); name = os.path.basename(path)[:-5]
    watchers = sum(r["watchers"].values()); done = sum(r["completed"].values())
    errors = ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items())) or "0"
    load = f'{r["load_average_before"]} → {r["load_average_after"]}'
    split = f' ({r["server_user_s"]} + {r["server_system_s"]})' if "server_user_s" in r else ""
    cpu = f'{r["server_cpu_s"]}{split} / {r["client_cpu_s"]} / {r["other_cpu_s"]} in {r["run_wall_s"]:.0f} s'
    if r.get("memory"):
        m = r["memory"]
        mem.append(f'| {name} | {m["attached"]} | {m["rss_before_kib"]} → {m["rss_attached_kib"]} → {m["rss_settled_kib"]} → {m["rss_after_close_kib"]} | **{m["bytes_per_connection"]:.0f}** | {load} |')
    else:
        steady = r["lag_after_attach_ms"]
        single = next(iter(r["lag_ms"])) if len(r["lag_ms"]) == 1 else "all"
        for key, lag in sorted(r["lag_ms"].items()):
            lines.append(f'| {name} ({key}) | {r["watchers"].get(key, watchers)} | {r["completed"].get(key, done)} | '
                         f'{ms(r["first_event_ms"], "p50")} / {ms(r["first_event_ms"], "p99")} | '
                         f'{r["attach_s"]:.2f} | {ms(lag, "p50")} / **{ms(lag, "p99")}** / {ms(lag, "max")} | '
                         + (f'{ms(steady, "p50")} / **{ms(steady, "p99")}** / {ms(steady, "max")}' if key in ("all", single) else "") +
                         f' | {r["end_spread_ms"]:.1f} | {errors} | {cpu} | {load} |')
text = "\n".join(lines) + "\n\n" + "\n".join(mem) + "\n"
open(out, "w").write(text)
print(text)
EOF
say "saved $RESULTS_DIR/$STAMP-$(hostname)-watchers.md and $RAW/"
