"""A fleet of relays as issue #17 runs one: a private PostgreSQL, N relay processes in cluster mode, and Debian's
nginx as a round-robin load balancer (no stickiness) in front of their plain HTTP listeners, with TLS of its own.

Used by test_cluster.py and test_cluster_failures.py (`started_fleet()`), and by loadtest/cluster.sh (`python3
fleet.py` serves a fleet until Ctrl-C; `--bench` there imports `Fleet`). Everything listens on loopback; every wait
has a deadline; a guardian process cleans up if the process that made the fleet is killed.
"""
import argparse
import collections
import contextlib
import glob
import importlib
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

import httpx

from conftest import BINARY, ROOT

READY_LINE = re.compile(r"READY https=127\.0\.0\.1:(\d+) http=127\.0\.0\.1:(\d+)")
AS_ROOT = os.geteuid() == 0


_handed_out = set()
_ports_lock = threading.Lock()


def free_port():
    """A loopback port nobody listens on now; the caller binds it soon after (node URLs must be known up front).

    Taken below the kernel's ephemeral range, so that no outgoing connection (a client's, or nginx's to a node) can
    hold it by the time its server binds it, and never the same one twice in this process."""
    ephemeral_low = 32768
    with contextlib.suppress(OSError, ValueError), open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
        ephemeral_low = int(ports.read().split()[0])
    low, high = (10000, ephemeral_low) if ephemeral_low > 12000 else (ephemeral_low // 2, ephemeral_low)
    for _ in range(1000):
        port = random.randrange(low, high)
        with _ports_lock:
            if port in _handed_out:
                continue
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free loopback port in {low}-{high}")


def wait_for(condition, timeout, message):
    """Polls `condition` until it returns something truthy, or fails with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except (httpx.HTTPError, OSError, ValueError) as error:
            last_error = error
        time.sleep(0.05)
    raise AssertionError(f"{message} (after {timeout} s; last error: {last_error!r})")


def accepts_connections(port):
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


# ---- cleanup when the test process dies -------------------------------------------------------------------------

GUARDIAN = r"""
import os, shutil, signal, subprocess, sys
root, stop_postgres = sys.argv[1], sys.argv[2:]
if "done" not in sys.stdin.read():  # end of input without "done": the process that made the fleet is gone
    if stop_postgres and os.path.exists(os.path.join(root, "pg", "data", "postmaster.pid")):
        subprocess.run(stop_postgres, capture_output=True, timeout=60)
    shutil.rmtree(root, ignore_errors=True)
    os.killpg(os.getpgrp(), signal.SIGKILL)  # the nodes and nginx share this process group (and so does this one)
"""


class Guardian:
    """A small process that outlives the test process if that one is killed (a CI timeout, a second Ctrl-C): it then
    stops PostgreSQL (a daemon of pg_ctl's), kills the nodes and nginx (its process group) and removes the folder.
    A fleet that stops itself tells it "done" first, and it exits doing nothing."""

    def __init__(self, root, cluster):
        stop = []
        if cluster:
            stop = [os.path.join(postgres_bin_dir(), "pg_ctl"), "stop", "-m", "immediate", "-D",
                    os.path.join(root, "pg", "data")]
            stop = (["runuser", "-u", "postgres", "--"] if AS_ROOT else []) + stop
        self.process = subprocess.Popen([sys.executable, "-c", GUARDIAN, root, *stop], stdin=subprocess.PIPE,
                                        process_group=0, text=True)
        self.group = self.process.pid

    def release(self):
        with contextlib.suppress(OSError, ValueError):
            self.process.stdin.write("done")
            self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)


# ---- PostgreSQL ---------------------------------------------------------------------------------------------------


def postgres_bin_dir():
    """The folder of initdb/pg_ctl/createdb of one PostgreSQL version: from PATH (Debian's /usr/bin holds only
    wrappers, so the link is followed), else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    if found:
        folder = os.path.dirname(os.path.realpath(found))
        if os.path.exists(os.path.join(folder, "pg_ctl")):
            return folder
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda path: int(path.split("/")[-3].split(".")[0])
    )
    if not candidates:
        raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    return os.path.dirname(candidates[-1])


class Postgres:
    """A private PostgreSQL: initdb into `root`/pg, served on a free loopback port, database `relay`, user `relay`.

    PostgreSQL refuses to run as root, so as root its programs run as the `postgres` user, owning the folder."""

    def __init__(self, root):
        self.bin = postgres_bin_dir()
        self.folder = os.path.join(root, "pg")
        self.data = os.path.join(self.folder, "data")
        self.log = os.path.join(self.folder, "server.log")
        self.port = free_port()
        os.mkdir(self.folder)
        if AS_ROOT:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "relay", "--no-sync", "-E", "UTF8")
        self.start()
        subprocess.run(
            [os.path.join(self.bin, "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "relay", "relay"],
            check=True, capture_output=True, text=True, timeout=60,
        )

    @property
    def url(self):
        return f"postgres://relay@127.0.0.1:{self.port}/relay"

    def _run(self, program, *args, timeout=90):
        command = [os.path.join(self.bin, program), *args]
        if AS_ROOT:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n{self.tail()}")
        return done

    def tail(self, lines=30):
        with contextlib.suppress(OSError), open(self.log, errors="replace") as log:
            return "".join(collections.deque(log, lines))
        return ""

    def start(self):
        # fsync off: the tests stop it cleanly (-m fast) and never test its durability; 2 cores are better spent.
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", self.data, "-l", self.log, "-o", options)

    def stop(self):
        self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", self.data)

    def running(self):
        return os.path.exists(os.path.join(self.data, "postmaster.pid"))


# ---- nginx, the load balancer -------------------------------------------------------------------------------------


def make_certificates(folder, names=("localhost", "rest.fal.ai", "v3.fal.media")):
    """A CA and a server certificate for 127.0.0.1 and `names`, with the extensions strict verifiers want.
    rest.fal.ai and v3.fal.media are there for fal_client's uploads, which go to those fixed names."""
    ca_key, ca = os.path.join(folder, "ca.key"), os.path.join(folder, "ca.pem")
    key, csr, cert = (os.path.join(folder, name) for name in ("server.key", "server.csr", "server.pem"))
    extensions = os.path.join(folder, "server.ext")
    with open(extensions, "w") as file:
        file.write(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid,issuer\n"
            "subjectAltName=IP:127.0.0.1," + ",".join(f"DNS:{name}" for name in names) + "\n"
        )
    steps = [
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=MediaRelay fleet test CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         "-addext", "subjectKeyIdentifier=hash"],
        ["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "2", "-extfile", extensions],
    ]
    for step in steps:
        subprocess.run(step, check=True, capture_output=True, timeout=60)
    return ca, cert, key


NGINX_CONF = """\
{user}worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    # WebSocket upgrades pass; every other request gets "Connection: " so upstream keep-alive works.
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      '';
    }}
    upstream relays {{
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{https_port} ssl;
        listen 127.0.0.1:{http_port};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        client_max_body_size 200m;
        location / {{
            proxy_pass http://relays;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_buffering off;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
            proxy_connect_timeout 2s;
            proxy_next_upstream error timeout http_502 non_idempotent;
        }}
    }}
}}
"""


class LoadBalancer:
    """nginx in front of `upstream_ports`, round robin: TLS on `https_port`, plain HTTP on `http_port`."""

    def __init__(self, root, upstream_ports, group=None):
        self.dir = os.path.join(root, "nginx")
        os.mkdir(self.dir)
        self.ca, cert, key = make_certificates(self.dir)
        self.https_port, self.http_port = free_port(), free_port()
        servers = "\n".join(f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;" for port in upstream_ports)
        with open(os.path.join(self.dir, "nginx.conf"), "w") as conf:
            conf.write(NGINX_CONF.format(
                user="user root;\n" if AS_ROOT else "", dir=self.dir, servers=servers, cert=cert, key=key,
                https_port=self.https_port, http_port=self.http_port,
            ))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.process = subprocess.Popen(
            [nginx, "-p", self.dir, "-c", "nginx.conf", "-e", os.path.join(self.dir, "error.log"), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, process_group=group,
        )
        try:
            wait_for(lambda: self.process.poll() is None and accepts_connections(self.https_port)
                     and accepts_connections(self.http_port) or self.process.poll() is not None, 20,
                     "nginx did not start")
        except AssertionError:
            self.stop()
            raise
        if self.process.poll() is not None:
            raise RuntimeError("nginx did not start:\n" + self.process.stderr.read() + self.error_log())

    def error_log(self):
        with contextlib.suppress(OSError), open(os.path.join(self.dir, "error.log"), errors="replace") as log:
            return "".join(collections.deque(log, 30))
        return ""

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: finish open requests
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


# ---- relay nodes --------------------------------------------------------------------------------------------------


class Node:
    """One relay process with a fixed plain HTTP port (its node URL) and a data directory that outlives restarts."""

    def __init__(self, index, data_dir, http_port, args, group=None):
        self.index, self.data_dir, self.http_port, self.args = index, data_dir, http_port, list(args)
        self.group = group
        self.process = None
        self.https_port = None
        self.output = collections.deque(maxlen=400)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.http_port}"

    def start(self):
        assert self.process is None or self.process.poll() is not None, f"node {self.index} is running"
        self.process = subprocess.Popen(
            [BINARY, "serve", *self.args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            process_group=self.group,
        )
        ready = threading.Event()

        def pump(process):
            for line in process.stdout:
                self.output.append(line)
                match = READY_LINE.match(line)
                if match:
                    self.https_port = int(match.group(1))
                    ready.set()

        threading.Thread(target=pump, args=(self.process,), daemon=True).start()
        if not ready.wait(60):
            self.kill()
            raise RuntimeError(f"node {self.index} did not start:\n" + "".join(self.output))

    def running(self):
        return self.process is not None and self.process.poll() is None

    def kill(self):
        if self.running():
            self.process.kill()
        if self.process is not None:
            self.process.wait(10)

    def stop(self, timeout=30):
        """SIGTERM: the node drains and exits; returns its exit code (0 expected)."""
        if not self.running():
            return self.process.returncode if self.process else None
        self.process.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise AssertionError(f"node {self.index} did not exit {timeout} s after SIGTERM:\n" + self.log())

    def log(self, lines=40):
        return "".join(list(self.output)[-lines:])


# ---- the fleet ----------------------------------------------------------------------------------------------------


class Fleet:
    """PostgreSQL, the nodes and the load balancer, with keys made in the database. `cluster=False` starts the same
    nodes as independent relays without the database (for a single-node baseline and for developing the harness)."""

    def __init__(self, root, nodes=3, extra_args=(), node_args=None, time_scale="0.1", cluster=True,
                 load_balancer=True):
        self.root = root
        self.cluster = cluster
        self.pg, self.lb, self.nodes = None, None, []
        self.guardian = Guardian(root, cluster)
        try:
            self._start(nodes, extra_args, node_args or {}, time_scale, load_balancer)
        except BaseException:
            self.close()
            raise

    def _start(self, nodes, extra_args, node_args, time_scale, load_balancer):
        if self.cluster:
            self.pg = Postgres(self.root)
        ports = [free_port() for _ in range(nodes)]
        # The load balancer's ports are chosen before the nodes start: they are the fleet's public URL.
        if load_balancer:
            self.lb = LoadBalancer(self.root, ports, group=self.guardian.group)
        for index, port in enumerate(ports):
            data_dir = os.path.join(self.root, f"node{index}")
            os.mkdir(data_dir)
            args = [
                "--data-dir", data_dir,
                "--catalog", os.path.join(ROOT, "Config", "models.json"),
                "--ui-dir", os.path.join(ROOT, "Public"),
                "--http", f"127.0.0.1:{port}",
                "--https", "127.0.0.1:0",
                "--synthetic-time-scale", str(node_args.get(index, {}).get("time_scale", time_scale)),
                "--log-level", "warning",
            ]
            if self.cluster:
                args += ["--cluster-database-url", self.database_url, "--node-url", f"http://127.0.0.1:{port}"]
            if self.lb:
                args += ["--public-url", f"https://127.0.0.1:{self.lb.https_port}"]
            args += [*extra_args, *node_args.get(index, {}).get("args", ())]
            self.nodes.append(Node(index, data_dir, port, args, group=self.guardian.group))
        threads = [threading.Thread(target=node.start) for node in self.nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        for node in self.nodes:
            if not node.running() or node.https_port is None:
                raise RuntimeError(f"node {node.index} did not start:\n" + node.log())
        if self.cluster:
            self.key = self.create_key("pro")
            self.admin_key = self.create_key("admin")
            # Keys reach the nodes by a notice, within a second: the fleet is ready once every node takes both.
            probe = f"/fal-ai/flux/requests/{os.urandom(8).hex()}/status"
            for node in self.nodes:
                for key in (self.key, self.admin_key):
                    wait_for(lambda: httpx.get(node.url + probe, headers=self.headers(key), timeout=5).status_code
                             == 404, 10, f"node {node.index} does not take the fleet's keys")
            self.wait_alive()
        else:
            self.key = self.create_key("pro", data_dir=self.nodes[0].data_dir)
            self.admin_key = self.create_key("admin", data_dir=self.nodes[0].data_dir)

    # -- addresses

    @property
    def database_url(self):
        return self.pg.url

    @property
    def ca(self):
        return self.lb.ca

    @property
    def lb_https(self):
        return f"https://127.0.0.1:{self.lb.https_port}"

    @property
    def lb_http(self):
        return f"http://127.0.0.1:{self.lb.http_port}"

    @property
    def queue_host(self):
        return f"127.0.0.1:{self.lb.https_port}"

    @property
    def run_host(self):
        return f"localhost:{self.lb.https_port}"

    def node_http(self, index):
        return self.nodes[index].url

    def headers(self, key=None, **extra):
        return {"Authorization": f"Key {key or self.key}", **extra}

    def client(self, **options):
        """An httpx client that trusts the load balancer's CA (the nodes' own HTTP needs no trust)."""
        options.setdefault("timeout", 30)
        return httpx.Client(verify=ssl.create_default_context(cafile=self.ca), **options)

    # -- nodes

    def kill(self, index):
        self.nodes[index].kill()

    def stop(self, index, timeout=30):
        return self.nodes[index].stop(timeout)

    def start(self, index):
        self.nodes[index].start()

    def logs(self):
        parts = [f"--- node {node.index} ---\n{node.log()}" for node in self.nodes]
        if self.pg:
            parts.append(f"--- postgresql ---\n{self.pg.tail()}")
        if self.lb:
            parts.append(f"--- nginx ---\n{self.lb.error_log()}")
        return "\n".join(parts)

    # -- PostgreSQL

    def pg_stop(self):
        self.pg.stop()

    def pg_start(self):
        self.pg.start()

    # -- cluster view

    def cluster_view(self, index, timeout=5):
        response = httpx.get(f"{self.node_http(index)}/admin/cluster", headers=self.headers(self.admin_key),
                             timeout=timeout)
        assert response.status_code == 200, f"/admin/cluster on node {index}: {response.status_code} {response.text}"
        return response.json()

    def generations_started(self, indexes=None):
        """Generations each node ran itself, summed over `indexes` (default: every running node)."""
        indexes = [i for i in range(len(self.nodes)) if self.nodes[i].running()] if indexes is None else indexes
        return sum(self.cluster_view(index)["generations_started"] for index in indexes)

    def wait_alive(self, timeout=30):
        """Until every running node sees every running node alive (and no stopped one alive)."""
        running = {node.url for node in self.nodes if node.running()}

        def agreed():
            for node in self.nodes:
                if not node.running():
                    continue
                view = self.cluster_view(node.index)
                alive = {peer["node_url"] for peer in view["nodes"] if peer["alive"]}
                if alive != running:
                    return False
            return True

        wait_for(agreed, timeout, f"nodes {sorted(running)} did not all see each other alive")

    # -- keys

    def keys_command(self, *args, data_dir=None):
        where = ["--data-dir", data_dir] if data_dir else ["--cluster-database-url", self.database_url]
        done = subprocess.run([BINARY, "keys", *args, *where], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"keys {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def create_key(self, tier="pro", data_dir=None):
        return self.keys_command("create", "--tier", tier, data_dir=data_dir).strip().splitlines()[-1]

    def revoke_key(self, key):
        self.keys_command("revoke", key.split(":")[0])

    # -- the official fal client

    @contextlib.contextmanager
    def fal(self, key=None):
        """The official fal client, unmodified, pointed at the load balancer.

        fal_client reads its hosts from the environment when fal_client.auth is first imported, so this imports a
        fresh copy under the fleet's environment and afterwards puts back the modules and environment it found
        (conftest's session `fal` fixture keeps working for the modules that run after this one)."""
        saved_modules = {name: module for name, module in sys.modules.items()
                         if name == "fal_client" or name.startswith("fal_client.")}
        names = ("FAL_KEY", "FAL_RUN_HOST", "FAL_QUEUE_RUN_HOST", "SSL_CERT_FILE", "FAL_KEY_ID", "FAL_KEY_SECRET")
        saved_env = {name: os.environ.get(name) for name in names}
        for name in saved_modules:
            del sys.modules[name]
        os.environ.update({
            "FAL_KEY": key or self.key, "FAL_RUN_HOST": self.run_host, "FAL_QUEUE_RUN_HOST": self.queue_host,
            "SSL_CERT_FILE": self.ca,
        })
        os.environ.pop("FAL_KEY_ID", None)
        os.environ.pop("FAL_KEY_SECRET", None)
        try:
            yield importlib.import_module("fal_client")
        finally:
            for name in [name for name in sys.modules if name == "fal_client" or name.startswith("fal_client.")]:
                del sys.modules[name]
            sys.modules.update(saved_modules)
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    # -- teardown

    def close(self):
        """Stops everything; returns the exit codes of the nodes that were still running (SIGTERM)."""
        codes = {}
        running = [node for node in self.nodes if node.running()]
        for node in running:
            node.process.terminate()
        for node in running:
            try:
                codes[node.index] = node.process.wait(30)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait(5)
                codes[node.index] = "no exit 30 s after SIGTERM"
        if self.lb:
            self.lb.stop()
        if self.pg and self.pg.running():
            with contextlib.suppress(Exception):
                self.pg.stop()
        self.guardian.release()
        return codes


@contextlib.contextmanager
def started_fleet(nodes=3, extra_args=(), node_args=None, time_scale="0.1", cluster=True, prefix="media-relay-fleet-"):
    """A fleet of its own in a temporary folder (made traversable for the `postgres` user), stopped at the end; every
    node still running then must exit cleanly on SIGTERM, as a single relay must (conftest's started_relay).
    `node_args` maps a node's index to {"time_scale": …, "args": (…)} for that node only."""
    root = tempfile.mkdtemp(prefix=prefix)
    os.chmod(root, 0o755)
    fleet, codes = None, {}
    try:
        fleet = Fleet(root, nodes=nodes, extra_args=extra_args, node_args=node_args, time_scale=time_scale,
                      cluster=cluster)
        yield fleet
    finally:
        if fleet is not None:
            logs = fleet.logs()
            codes = fleet.close()
        shutil.rmtree(root, ignore_errors=True)
    unclean = {index: code for index, code in codes.items() if code != 0}
    assert not unclean, f"nodes did not exit cleanly on SIGTERM: {unclean}\n{logs}"


# ---- requests to one chosen node (the load balancer would choose for itself) ---------------------------------------

APP = "fal-ai/flux"


def submit(fleet, node, body, model="fal-ai/flux/dev", key=None, params=None):
    """POST to one node's queue API (its plain HTTP port; Host 127.0.0.1 is the queue host)."""
    return httpx.post(f"{fleet.node_http(node)}/{model}", json=body, headers=fleet.headers(key), params=params,
                      timeout=30)


def status(fleet, node, request_id, logs=True, key=None):
    return httpx.get(f"{fleet.node_http(node)}/{APP}/requests/{request_id}/status", params={"logs": int(logs)},
                     headers=fleet.headers(key), timeout=30)


def result(fleet, node, request_id, key=None):
    return httpx.get(f"{fleet.node_http(node)}/{APP}/requests/{request_id}", headers=fleet.headers(key), timeout=30)


def wait_completed(fleet, node, request_id, timeout=60, key=None):
    """Polls the status on `node` until COMPLETED; returns that status. Any answer but 200/202 fails at once."""

    def completed():
        answer = status(fleet, node, request_id, key=key)
        assert answer.status_code in (200, 202), f"status on node {node}: {answer.status_code} {answer.text}"
        return answer.json() if answer.json()["status"] == "COMPLETED" else None

    return wait_for(completed, timeout, f"request {request_id} did not complete on node {node}")


# ---- loadtest/cluster.sh: a fleet until Ctrl-C --------------------------------------------------------------------


def main():
    """`python3 fleet.py [--nodes N] [--time-scale S] [-- relay flags]`: a fleet until Ctrl-C (loadtest/cluster.sh)."""
    parser = argparse.ArgumentParser(description="A local MediaRelay fleet: PostgreSQL, N relays, nginx in front.")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--time-scale", default="1")
    options, extra = parser.parse_known_args()
    extra = [argument for argument in extra if argument != "--"]
    root = tempfile.mkdtemp(prefix="media-relay-cluster-")
    os.chmod(root, 0o755)
    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, lambda *_: stop.set())
    fleet = None
    try:
        fleet = Fleet(root, nodes=options.nodes, extra_args=extra, time_scale=options.time_scale)
        print(f"MediaRelay fleet: {options.nodes} nodes ({BINARY}), PostgreSQL, nginx round robin", flush=True)
        print(f"  load balancer  {fleet.lb_https}  (TLS, CA {fleet.ca})")
        print(f"                 {fleet.lb_http}")
        for node in fleet.nodes:
            print(f"  node {node.index}         {node.url}  data {node.data_dir}")
        print(f"  database       {fleet.database_url}")
        print(f"  API key (pro)  {fleet.key}")
        print(f"  admin key      {fleet.admin_key}")
        print("Point the fal clients at it:")
        print(f"  export FAL_KEY={fleet.key}")
        print(f"  export FAL_QUEUE_RUN_HOST={fleet.queue_host} FAL_RUN_HOST={fleet.run_host}")
        print(f"  export SSL_CERT_FILE={fleet.ca}", flush=True)
        print("Ctrl-C stops the fleet.", flush=True)
        reported = set()
        while not stop.wait(1):  # a node that exits (say, killed to try a failure) is reported; the rest go on
            for node in fleet.nodes:
                if not node.running() and node.index not in reported:
                    reported.add(node.index)
                    print(f"node {node.index} exited ({node.process.returncode}):\n{node.log(10)}", flush=True)
    finally:
        if fleet is not None:
            codes = fleet.close()
            print(f"stopped: node exit codes {codes}", flush=True)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
