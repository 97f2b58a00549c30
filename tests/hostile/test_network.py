"""Hostile functions against the network: an environment reaches the outside world and selfless's own API,
never the host (its loopback services, its addresses, /metrics), the link-local range, private ranges
(unless egress allows them) or another environment.

Traffic goes only to addresses of this machine: the "outside world" is a network namespace the test makes,
with a documentation-range address (198.51.100.0/24, TEST-NET-2) routed through the host; the link-local
range is checked in the environment's routes and the slot's nftables rules, never sent to.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, deploy, start_server, unique

# The host's own services, all on loopback (PostgreSQL, Redis, MariaDB, RabbitMQ, Mosquitto, NATS).
HOST_SERVICES = (5432, 6379, 3306, 5672, 1883, 4222)

PROBE = r"""
import json, os, socket, sys

def connect(host, port, timeout=2.0):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        s.settimeout(timeout)
        try:
            data = s.recv(200).decode("latin-1")
        except OSError:
            data = ""
        return {"ok": True, "said": data}
    except OSError as exc:
        return {"ok": False, "errno": exc.errno, "error": type(exc).__name__}
    finally:
        s.close()

LISTENERS = []

def handler(event, context):
    case = event["case"]
    if case == "connect":
        return {f"{h}:{p}": connect(h, p) for h, p in event["targets"]}
    if case == "get":
        import urllib.error, urllib.request
        out = {}
        for path in event["paths"]:
            try:
                with urllib.request.urlopen(os.environ["AWS_ENDPOINT_URL"] + path, timeout=5) as r:
                    out[path] = [r.status, r.read(300).decode("latin-1")]
            except urllib.error.HTTPError as exc:
                out[path] = [exc.code, exc.read(300).decode("latin-1")]
        return out
    if case == "abstract":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect("\0" + event["name"])
            return True
        except OSError as exc:
            return exc.errno
        finally:
            s.close()
    if case == "flood":
        import time as _time
        host, port = event["target"]
        held, refused = [], 0
        for _ in range(event["count"]):
            s = socket.socket()
            s.settimeout(2)
            try:
                s.connect((host, port))
                held.append(s)
            except OSError:
                refused += 1
                s.close()
        _time.sleep(0.5)  # a connection over the cap is reset right after its accept
        alive = 0
        for s in held:
            try:
                s.setblocking(False)
                alive += s.recv(1) != b""
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
            s.close()
        return {"alive": alive, "refused": refused}
    if case == "routes":
        return open("/proc/net/route").read()
    if case == "whoami":
        import boto3
        import botocore
        own = boto3.client("lambda").get_function(FunctionName=context.function_name)["Configuration"]
        return {
            "endpoint": os.environ["AWS_ENDPOINT_URL"],
            "runtime_api": os.environ["AWS_LAMBDA_RUNTIME_API"],
            "own": own["FunctionName"],
            "files": [boto3.__file__, botocore.__file__, __import__("json").__file__],
            "sys_path": sys.path,
            "environ": open("/proc/self/environ", "rb").read().decode("latin-1"),
            "interfaces": sorted(n for _, n in socket.if_nameindex()),
            "resolv": open("/etc/resolv.conf").read(),
            "address": address(),
        }
    if case == "listen":
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("0.0.0.0", event["port"]))
        server.listen(8)
        LISTENERS.append(server)
        me = socket.create_connection(("127.0.0.1", event["port"]), timeout=2)
        accepted, _ = server.accept()
        accepted.close()
        me.close()
        return {"address": address()}
    raise ValueError(case)

def address():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("198.51.100.2", 9))  # UDP connect: picks the source address, sends nothing
        return s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
"""

ECHO = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080))
s.listen(64)
print("ready", flush=True)
while True:
    conn, peer = s.accept()
    conn.sendall(("hello " + peer[0]).encode())
    conn.close()
"""


@dataclass
class Internet:
    """A stand-in for the internet: a namespace with a public-style (TEST-NET-2) and a private address, both
    routed through the host, with a server on port 8080 of each that says who connected."""

    public: str = "198.51.100.2"
    host_side: str = "198.51.100.1"
    private: str = "10.99.77.2"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def internet() -> Iterator[Internet]:
    ns = f"slt-inet-{uuid.uuid4().hex[:6]}"
    host_if, inner_if = f"sltin{uuid.uuid4().hex[:6]}", "eth0"
    _ip("netns", "add", ns)
    server: subprocess.Popen[bytes] | None = None
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", inner_if, "netns", ns)
        _ip("addr", "add", "198.51.100.1/24", "dev", host_if)
        _ip("addr", "add", "10.99.77.1/24", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "link", "set", inner_if, "up")
        _ip("-n", ns, "addr", "add", "198.51.100.2/24", "dev", inner_if)
        _ip("-n", ns, "addr", "add", "10.99.77.2/24", "dev", inner_if)
        _ip("-n", ns, "route", "add", "default", "via", "198.51.100.1")
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", ECHO], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert server.stdout is not None
        assert server.stdout.readline().strip() == b"ready"
        yield Internet()
    finally:
        if server is not None:
            server.kill()
            server.communicate(timeout=10)  # (and its pipes closed)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30, check=False)


@pytest.fixture(scope="module")
def linux(server: Server) -> Server:
    if server.sandbox != "linux":
        pytest.fail("the linux sandbox is not in use here (CI runs as root on Linux): nothing to test")
    return server


@pytest.fixture(scope="module")
def probe(lam: Any, linux: Server) -> Iterator[Callable[..., Any]]:
    name = deploy(lam, PROBE, name=unique("probe"), runtime="python3.12", Timeout=20)

    def run(event: dict[str, Any], function: str = name) -> Any:
        r = lam.invoke(FunctionName=function, Payload=json.dumps(event))
        body = json.loads(r["Payload"].read())
        assert "FunctionError" not in r, body
        return body

    run.name = name  # type: ignore[attr-defined]
    yield run
    lam.delete_function(FunctionName=name)


def host_addresses() -> list[str]:
    """Every address of this machine (IPv4 and IPv6, every interface: loopback, the uplink, environments'
    links), as ``ip`` lists them."""
    out = subprocess.run(["ip", "-o", "addr"], check=True, capture_output=True, text=True, timeout=30).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        address = fields[3].split("/")[0]
        if not address.startswith("fe80"):
            found.append(address)
    return found


@pytest.fixture
def host_service() -> Iterator[int]:
    """A service of the host's listening on every address (what a function must never reach)."""
    with socket.socket(socket.AF_INET6) as s:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", 0))
        s.listen(64)
        yield s.getsockname()[1]


def test_function_cannot_reach_the_hosts_services_or_addresses(
    probe: Callable[..., Any], linux: Server, host_service: int
) -> None:
    # The attack would work from the host: these services answer on its loopback.
    reachable = []
    for port in HOST_SERVICES:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            reachable.append(port)
    assert reachable, "none of the host's services runs here: nothing to attack"
    targets: list[tuple[str, int]] = [("127.0.0.1", port) for port in (*HOST_SERVICES, host_service, linux.port)]
    targets += [("::1", host_service), ("::1", linux.port)]
    addresses = host_addresses()
    assert any(not a.startswith("127.") and a != "::1" for a in addresses), addresses
    for address in addresses:
        targets += [(address, host_service), (address, linux.port), (address, 5432)]
    out = probe({"case": "connect", "targets": targets})
    reached = {target: result for target, result in out.items() if result["ok"]}
    assert reached == {}, f"a function reached the host: {reached}"
    # Refused at once, not left to time out (the host says no; loopback has nothing there).
    assert all(result["error"] != "TimeoutError" for result in out.values()), out


def test_function_cannot_reach_the_hosts_abstract_unix_sockets(probe: Callable[..., Any]) -> None:
    """Abstract unix sockets (D-Bus, X11, systemd's) belong to a network namespace: the host's are not the
    environment's."""
    name = f"selfless-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as host_side:
        host_side.bind("\0" + name)
        host_side.listen(1)
        assert probe({"case": "abstract", "name": name}) == 111  # ECONNREFUSED: nothing by that name there


def test_a_function_cannot_take_the_servers_connections(probe: Callable[..., Any], linux: Server, lam: Any) -> None:
    """A function opening as many connections as it can to selfless's API and to its Runtime API gets its
    environment's share (64 and 32), the rest reset at once; the operators' port never notices."""
    out = probe({"case": "flood", "target": ["127.0.0.1", 9400], "count": 900})
    assert 0 < out["alive"] <= 64, out
    out = probe({"case": "flood", "target": ["127.0.0.1", 9001], "count": 300})
    assert out["alive"] <= 32, out
    with urllib.request.urlopen(f"{linux.endpoint}/health", timeout=5) as r:
        assert r.status == 200
    assert probe({"case": "whoami"})["own"] == probe.name  # type: ignore[attr-defined]
    with urllib.request.urlopen(f"{linux.endpoint}/metrics", timeout=5) as r:
        text = r.read().decode().splitlines()
        refused = [x for x in text if x.startswith("selfless_connections_refused_total") and "environment" in x]
    assert refused and float(refused[0].rsplit(" ", 1)[1]) >= 900 - 64


def test_operator_endpoints_are_not_served_to_functions(probe: Callable[..., Any], linux: Server) -> None:
    """/health and /metrics answer operators on the host, unauthenticated; a function asking selfless's API
    for them gets what any unsigned request gets."""
    out = probe({"case": "get", "paths": ["/health", "/metrics"]})
    for path, (status, body) in out.items():
        assert status == 403 and "Missing Authentication Token" in body, (path, status, body)
    with urllib.request.urlopen(f"{linux.endpoint}/metrics", timeout=5) as r:
        assert r.status == 200 and b"selfless_" in r.read()


def test_no_route_to_link_local_and_private_ranges(probe: Callable[..., Any], linux: Server) -> None:
    """Checked in the environment's routes and the slot's rules: nothing is sent to 169.254.0.0/16."""
    rejected = set()
    default_via = None
    for line in probe({"case": "routes"}).splitlines()[1:]:
        iface, dest, gateway, flags, *_rest = line.split()
        mask = line.split()[7]
        network = socket.inet_ntoa(int(dest, 16).to_bytes(4, "little"))
        prefix = bin(int(mask, 16)).count("1")
        if int(flags, 16) & 0x0200:  # RTF_REJECT: prohibit
            rejected.add(f"{network}/{prefix}")
        elif network == "0.0.0.0" and prefix == 0:
            default_via = (iface, socket.inet_ntoa(int(gateway, 16).to_bytes(4, "little")))
    assert {"169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"} <= rejected
    assert default_via is not None and default_via[0] == "eth0"
    slot = linux.sandbox_cgroup.rsplit("-", 1)[1] if linux.sandbox_cgroup else ""
    rules = subprocess.run(
        ["nft", "list", "table", "inet", f"selfless-{slot}"], check=True, capture_output=True, text=True, timeout=30
    ).stdout
    forward = rules[rules.index("chain forward") :]
    blocked = next(line for line in forward.splitlines() if "169.254.0.0/16" in line)
    assert "reject" in blocked and f'iifname "slf{slot}x*"' in blocked
    assert f'iifname "slf{slot}x*" reject' in rules[rules.index("chain input") :]


def test_function_reaches_the_outside_world_through_nat(probe: Callable[..., Any], internet: Internet) -> None:
    out = probe({"case": "connect", "targets": [[internet.public, 8080]]})
    result = out[f"{internet.public}:8080"]
    assert result["ok"] is True
    # Masqueraded: the outside sees the host, never the environment's own address.
    assert result["said"] == f"hello {internet.host_side}"


def test_private_ranges_only_with_private_egress(
    probe: Callable[..., Any], internet: Internet, tmp_path: Path, lam: Any
) -> None:
    out = probe({"case": "connect", "targets": [[internet.private, 8080]]})
    assert out[f"{internet.private}:8080"] == {"ok": False, "errno": 13, "error": "PermissionError"}
    server = start_server(tmp_path, extra_env={"SELFLESS_EGRESS": "private", "SELFLESS_ZYGOTE_PREWARM": ""})
    try:
        other = server.client()
        name = deploy(other, PROBE, runtime="python3.12", Timeout=20)
        r = other.invoke(
            FunctionName=name, Payload=json.dumps({"case": "connect", "targets": [[internet.private, 8080]]})
        )
        assert json.loads(r["Payload"].read())[f"{internet.private}:8080"]["ok"] is True
    finally:
        assert server.stop() == 0


def test_function_reaches_selfless_with_its_own_credentials_at_a_neutral_path(
    probe: Callable[..., Any], linux: Server
) -> None:
    out = probe({"case": "whoami"})
    assert out["endpoint"] == "http://127.0.0.1:9400"
    assert out["runtime_api"] == "127.0.0.1:9001"
    assert out["own"] == probe.name  # type: ignore[attr-defined]
    assert out["files"][0] == "/var/runtime/boto3/__init__.py"
    assert out["files"][1] == "/var/runtime/botocore/__init__.py"
    data_dir = str(linux.data_dir)
    assert not any(data_dir in entry for entry in out["sys_path"]), out["sys_path"]
    assert data_dir not in out["environ"]
    assert out["interfaces"] == ["eth0", "lo"]
    host_servers = [line for line in Path("/etc/resolv.conf").read_text().splitlines() if line.startswith("nameserver")]
    inside = [line for line in out["resolv"].splitlines() if line.startswith("nameserver")]
    assert inside == [s for s in host_servers if not s.split()[1].startswith("127.")]


def test_listeners_inside_are_unreachable_from_outside(
    probe: Callable[..., Any], lam: Any, make_function: Callable[..., str]
) -> None:
    """A function may listen (only its own processes can reach it, as on Lambda): not another function, not
    the host, and no environment reaches another's Runtime API."""
    listening = probe({"case": "listen", "port": 8080})
    address = listening["address"]
    assert address is not None and address.startswith("10.200.")
    other = make_function(PROBE, runtime="python3.12", Timeout=20)
    targets = [[address, 8080], [address, 9001], [address, 9400]]
    r = lam.invoke(FunctionName=other, Payload=json.dumps({"case": "connect", "targets": targets}))
    out = json.loads(r["Payload"].read())
    assert not any(result["ok"] for result in out.values()), out
    with socket.socket() as s:
        s.settimeout(1)
        with pytest.raises(OSError):
            s.connect((address, 8080))


CUT = """import json, os, socket

def handler(event, context):
    out = {"interfaces": sorted(n for _, n in socket.if_nameindex())}
    for name, (host, port) in event["targets"].items():
        try:
            socket.create_connection((host, port), timeout=2).close()
            out[name] = True
        except OSError as exc:
            out[name] = exc.errno
    return out
"""


def test_network_mode_none_cuts_everything_but_the_runtime_api(
    lam: Any, linux: Server, make_function: Callable[..., str], internet: Internet
) -> None:
    cut = make_function(CUT, runtime="python3.12", Tags={"selfless:NetworkMode": "none"})
    open_ = make_function(CUT, runtime="python3.12")
    targets = {"outside": [internet.public, 8080], "api": ["127.0.0.1", 9400]}
    for _ in range(2):  # the environment's own Runtime API serves every call
        r = lam.invoke(FunctionName=cut, Payload=json.dumps({"targets": targets}))
        out = json.loads(r["Payload"].read())
        assert "FunctionError" not in r, out
        assert out == {"interfaces": ["lo"], "outside": 101, "api": 111}  # ENETUNREACH, ECONNREFUSED
    r = lam.invoke(FunctionName=open_, Payload=json.dumps({"targets": targets}))
    assert json.loads(r["Payload"].read()) == {"interfaces": ["eth0", "lo"], "outside": True, "api": True}


NODE_BOOTSTRAP = r"""#!/usr/bin/env node
// A custom runtime in Node.js speaking the Runtime API at AWS_LAMBDA_RUNTIME_API, as AWS's own do.
const http = require("http");
const api = process.env.AWS_LAMBDA_RUNTIME_API;
function call(method, path, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(`http://${api}/2018-06-01/runtime/${path}`, { method }, (res) => {
      let data = "";
      res.on("data", (c) => (data += c));
      res.on("end", () => resolve({ headers: res.headers, body: data }));
    });
    req.on("error", reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}
(async () => {
  for (;;) {
    const next = await call("GET", "invocation/next");
    const id = next.headers["lambda-runtime-aws-request-id"];
    const event = JSON.parse(next.body);
    await call("POST", `invocation/${id}/response`, JSON.stringify({ node: process.version, got: event, api }));
  }
})();
"""


def test_node_custom_runtime_reaches_its_runtime_api(lam: Any, make_function: Callable[..., str]) -> None:
    name = make_function(
        files={"bootstrap": NODE_BOOTSTRAP}, modes={"bootstrap": 0o755}, runtime="provided.al2023", handler="x"
    )
    for i in range(2):
        r = lam.invoke(FunctionName=name, Payload=json.dumps({"i": i}))
        out = json.loads(r["Payload"].read())
        assert "FunctionError" not in r, out
        assert out["got"] == {"i": i} and out["api"] == "127.0.0.1:9001" and out["node"].startswith("v")


def namespaces(server: Server) -> dict[str, float]:
    with urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=5) as r:
        text = r.read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith("selfless_network_namespaces{"):
            state = line.split('state="', 1)[1].split('"', 1)[0]
            found[state] = float(line.rsplit(" ", 1)[1])
    return found


def test_a_namespace_is_reused_only_by_its_own_functions_next_environment(
    lam: Any, linux: Server, make_function: Callable[..., str], internet: Internet
) -> None:
    """An environment's namespace outlives it only for its own function: the next environment of that function
    gets it (its address, new listeners, nothing the last one left: its listener is gone); another function
    never does."""
    mine = make_function(PROBE, runtime="python3.12", Timeout=20)
    theirs = make_function(PROBE, runtime="python3.12", Timeout=20)

    def call(name: str, event: dict[str, Any]) -> Any:
        r = lam.invoke(FunctionName=name, Payload=json.dumps(event))
        body = json.loads(r["Payload"].read())
        assert "FunctionError" not in r, body
        return body

    first = call(mine, {"case": "listen", "port": 8080})["address"]
    recycled_before = namespaces(linux).get("recycled", 0)
    lam.update_function_configuration(FunctionName=mine, Description="retire its environment")
    lam.get_waiter("function_updated_v2").wait(FunctionName=mine, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    deadline = time.monotonic() + 15
    while namespaces(linux).get("recycled", 0) <= recycled_before:
        assert time.monotonic() < deadline, "the retired environment's namespace was not kept for its function"
        time.sleep(0.05)
    assert call(theirs, {"case": "whoami"})["address"] != first
    # The same namespace, with nothing of the last environment's left in it: port 8080 is free again.
    assert call(mine, {"case": "listen", "port": 8080})["address"] == first
    outside = call(mine, {"case": "connect", "targets": [[internet.public, 8080]]})
    assert outside[f"{internet.public}:8080"]["ok"] is True


def test_namespaces_and_links_go_with_their_environments(tmp_path: Path, internet: Internet) -> None:
    """Every environment's namespace and host-side link, and the slot's table, are gone after the server."""
    server = start_server(tmp_path, extra_env={"SELFLESS_ZYGOTE_PREWARM": ""})
    try:
        lam = server.client()
        name = deploy(lam, PROBE, runtime="python3.12", Timeout=20)
        r = lam.invoke(FunctionName=name, Payload=json.dumps({"case": "connect", "targets": [[internet.public, 8080]]}))
        assert json.loads(r["Payload"].read())[f"{internet.public}:8080"]["ok"] is True
        slot = (server.sandbox_cgroup or "").rsplit("-", 1)[1]
        links = [n for n in os.listdir("/sys/class/net") if n.startswith(f"slf{slot}x")]
        assert links, "no link for the environment"
    finally:
        assert server.stop() == 0
    deadline = time.monotonic() + 10
    while [n for n in os.listdir("/sys/class/net") if n.startswith(f"slf{slot}x")]:
        assert time.monotonic() < deadline, "links outlived the server"
        time.sleep(0.05)
    tables = subprocess.run(["nft", "list", "tables"], check=True, capture_output=True, text=True, timeout=30).stdout
    assert f"selfless-{slot}" not in tables
