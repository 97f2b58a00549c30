"""Each environment's network: a namespace of its own, with a routed link to the outside world and none to the host.

What a function can reach (the README explains why)::

    environment netns                                   host (this server's slot)
    ┌──────────────────────────────────────┐
    │ lo  127.0.0.1:9001  Runtime API ─────┼── listening sockets made *inside* the namespace and
    │     127.0.0.1:9400  selfless's API ──┼── served by the server (no route to the host needed)
    │ eth0 10.200.x.(2k+1)/31 ─────────────┼── veth ── slfNxK 10.200.x.(2k)/31 ── forward ── NAT ── internet
    │   default via 10.200.x.(2k)          │            input: everything from slf* refused
    │   prohibit 169.254/16, (private)     │            forward: link-local, loopback, multicast,
    └──────────────────────────────────────┘            (private ranges), other environments refused

- The Runtime API and selfless's own API are listening sockets the server creates inside the namespace
  (a socket belongs to the namespace it was made in, whoever serves it), so a function reaches them on
  its own loopback, exactly where AWS puts the Runtime API (127.0.0.1:9001), and no process of another
  environment can: the namespace is the environment's alone.
- Outbound traffic leaves through a veth pair routed (not bridged) to the host, forwarded and masqueraded
  by an nftables table of this server's slot. Nothing arriving from an environment's link is delivered to
  the host itself (the input hook refuses it: no loopback services, no host addresses), nor forwarded to
  link-local (169.254/16, the metadata-service range), loopback, multicast or, unless egress is
  ``private``, RFC 1918 / shared-address ranges, nor to another environment. The DNS resolvers of the host
  are the one exception (port 53 only). Routes inside the namespace say the same (``prohibit`` routes),
  and the function cannot change them (it holds no capability in the namespace).
- IPv6 is off on the environment's link (loopback keeps ::1): outbound traffic is IPv4, as on Lambda
  outside a VPC.

A namespace costs ~1.5-2 ms to make (the kernel's part of ``unshare(CLONE_NEWNET)`` alone is ~0.5 ms) and
~290 KB of kernel memory. They are made ahead, in a worker thread of their own (``NetnsMaker``), and kept
in a stock (``NetnsStock``) that grows to the largest burst seen, as cgroups are: a cold start takes a
made one and only ``setns`` into it (microseconds) in the child. A namespace dies by itself once its last
process and socket are gone (its veth with it); nothing is reused between environments.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import dataclasses
import ipaddress
import logging
import os
import shutil
import socket
import struct
import subprocess
import threading
from collections import deque
from pathlib import Path

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
# Where a function finds the platform, on its own loopback (AWS puts the Runtime API at 127.0.0.1:9001).
RUNTIME_API = ("127.0.0.1", 9001)
API = ("127.0.0.1", 9400)
ENV_IFNAME = "eth0"
# Host-side interface names: "slf<slot>x<index>" (IFNAMSIZ allows 15 characters).
IF_PREFIX = "slf"

LINK_LOCAL = "169.254.0.0/16"
# Never reachable from an environment: "this network", loopback, link-local, multicast and reserved.
ALWAYS_BLOCKED = ("0.0.0.0/8", "127.0.0.0/8", LINK_LOCAL, "224.0.0.0/4", "240.0.0.0/4")
# Blocked unless egress is "private": RFC 1918 and the shared address space (RFC 6598).
PRIVATE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
EGRESS_MODES = ("public", "private", "none")
# The environments' links take their addresses here: one /31 per link, each server slot an equal share
# (64 slots: a /20, 2,048 links, each).
DEFAULT_NETWORK = "10.200.0.0/14"

_LISTEN_BACKLOG = 128


class NetworkUnavailable(RuntimeError):
    """Environments cannot get a network namespace here; the message says why."""


# -- rtnetlink: the five requests a namespace needs ----------------------------------------------------

_NLM_F_REQUEST = 0x1
_NLM_F_ACK = 0x4
_NLM_F_EXCL = 0x200
_NLM_F_CREATE = 0x400
_NLMSG_ERROR = 2
_RTM_NEWLINK = 16
_RTM_NEWADDR = 20
_RTM_NEWROUTE = 24
_IFLA_IFNAME = 3
_IFLA_LINKINFO = 18
_IFLA_NET_NS_FD = 28
_IFLA_INFO_KIND = 1
_IFLA_INFO_DATA = 2
_VETH_INFO_PEER = 1
_IFA_ADDRESS = 1
_IFA_LOCAL = 2
_RTA_DST = 1
_RTA_OIF = 4
_RTA_GATEWAY = 5
_IFF_UP = 0x1
_RT_TABLE_MAIN = 254
_RTPROT_STATIC = 4
_RT_SCOPE_UNIVERSE = 0
_RTN_UNICAST = 1
_RTN_PROHIBIT = 8
_SOCK_DIAG = 4  # NETLINK_SOCK_DIAG
_HEADER = struct.Struct("=IHHII")
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")


def _attr(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return struct.pack("=HH", length, kind) + data + b"\0" * (-length % 4)


def _ifinfo(index: int = 0, up: bool = False) -> bytes:
    flags = _IFF_UP if up else 0
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, flags)


class Rtnetlink:
    """A NETLINK_ROUTE socket of the network namespace the calling thread is in when it is made."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def _request(self, kind: int, flags: int, payload: bytes) -> None:
        self._seq += 1
        self._sock.send(
            _HEADER.pack(_HEADER.size + len(payload), kind, flags | _NLM_F_REQUEST | _NLM_F_ACK, self._seq, 0) + payload
        )
        while True:
            data = self._sock.recv(65536)
            _length, answer, _flags, seq, _pid = _HEADER.unpack_from(data)
            if answer == _NLMSG_ERROR and seq == self._seq:
                (error,) = struct.unpack_from("=i", data, _HEADER.size)
                if error:
                    raise OSError(-error, f"rtnetlink: {os.strerror(-error)}")
                return

    def veth(self, name: str, peer: str, peer_netns_fd: int) -> None:
        """A veth pair: ``name`` here (up), ``peer`` in the namespace ``peer_netns_fd`` (down)."""
        peer_info = _ifinfo() + _attr(_IFLA_IFNAME, peer.encode() + b"\0")
        peer_info += _attr(_IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd))
        info = _attr(_IFLA_INFO_KIND, b"veth") + _attr(_IFLA_INFO_DATA, _attr(_VETH_INFO_PEER, peer_info))
        payload = _ifinfo(up=True) + _attr(_IFLA_IFNAME, name.encode() + b"\0") + _attr(_IFLA_LINKINFO, info)
        self._request(_RTM_NEWLINK, _NLM_F_CREATE | _NLM_F_EXCL, payload)

    def up(self, index: int) -> None:
        self._request(_RTM_NEWLINK, 0, _ifinfo(index, up=True))

    def address(self, index: int, address: str, prefix: int) -> None:
        raw = socket.inet_aton(address)
        payload = _IFADDR.pack(socket.AF_INET, prefix, 0, _RT_SCOPE_UNIVERSE, index)
        payload += _attr(_IFA_LOCAL, raw) + _attr(_IFA_ADDRESS, raw)
        self._request(_RTM_NEWADDR, _NLM_F_CREATE | _NLM_F_EXCL, payload)

    def route(self, network: str, *, via: str | None = None, index: int | None = None, prohibit: bool = False) -> None:
        """A route in the main table: through a gateway, or (``prohibit``) refused with EACCES."""
        net = ipaddress.IPv4Network(network)
        kind = _RTN_PROHIBIT if prohibit else _RTN_UNICAST
        payload = _RTMSG.pack(
            socket.AF_INET, net.prefixlen, 0, 0, _RT_TABLE_MAIN, _RTPROT_STATIC, _RT_SCOPE_UNIVERSE, kind, 0
        )
        if net.prefixlen:
            payload += _attr(_RTA_DST, net.network_address.packed)
        if via is not None:
            payload += _attr(_RTA_GATEWAY, socket.inet_aton(via))
        if index is not None:
            payload += _attr(_RTA_OIF, struct.pack("=I", index))
        self._request(_RTM_NEWROUTE, _NLM_F_CREATE | _NLM_F_EXCL, payload)


# -- namespaces ----------------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _unshare_net() -> None:
    if _libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(CLONE_NEWNET): {os.strerror(err)}")


def _listener(address: tuple[str, int]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        # A namespace made again for another environment may still hold the last one's closed connections.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(_LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclasses.dataclass(frozen=True)
class Kind:
    """What a namespace holds: a link to the outside world, and selfless's API (NetworkMode none: neither)."""

    link: bool
    api: bool


OPEN = Kind(link=True, api=True)
CLOSED = Kind(link=False, api=False)


@dataclasses.dataclass
class Netns:
    """A network namespace made for one environment (or one fork-after-init template).

    ``fd`` holds the namespace (made again for another environment of the same function, ``NetnsStock.
    recycle``, its listeners are new); the listening sockets hold it as long as they are open: whoever
    serves them closes them. ``link`` is the index of its host-side address pair (None: no link, no
    outbound network)."""

    kind: Kind
    fd: int
    runtime: socket.socket
    api: socket.socket | None
    link: int | None
    diag: socket.socket | None = None  # NETLINK_SOCK_DIAG of the namespace: who owns a connection there

    def close_fd(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        """Everything not handed on yet: once its processes are gone too, the kernel removes the namespace."""
        self.close_fd()
        for sock in (self.runtime, self.api, self.diag):
            if sock is not None:
                sock.close()


@dataclasses.dataclass(frozen=True)
class EgressPlan:
    """How environments of this server reach the outside world (None links: no outbound network)."""

    mode: str  # one of EGRESS_MODES
    subnet: ipaddress.IPv4Network  # this slot's share of the sandbox network: one /31 per link
    interface_prefix: str  # "slf<slot>x"
    resolvers: tuple[str, ...]  # the host's DNS servers (the only private addresses always reachable)

    @property
    def blocked(self) -> tuple[str, ...]:
        return ALWAYS_BLOCKED + (PRIVATE if self.mode == "public" else ())

    @property
    def links(self) -> int:
        return self.subnet.num_addresses // 2

    def pair(self, link: int) -> tuple[str, str]:
        """(host side, environment side) addresses of link ``link``."""
        base = int(self.subnet.network_address) + 2 * link
        return str(ipaddress.IPv4Address(base)), str(ipaddress.IPv4Address(base + 1))


def slot_subnet(network: ipaddress.IPv4Network, slot: int, slots: int) -> ipaddress.IPv4Network:
    """Slot ``slot``'s equal share of ``network`` (``slots`` shares)."""
    bits = max(0, (slots - 1).bit_length())
    if network.prefixlen + bits > 30:
        raise NetworkUnavailable(f"the sandbox network {network} is too small for {slots} servers")
    return list(network.subnets(prefixlen_diff=bits))[slot]


def host_resolvers(resolv_conf: str) -> tuple[str, ...]:
    """The IPv4 name servers of a resolv.conf text."""
    found = []
    for line in resolv_conf.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            with contextlib.suppress(ValueError):
                found.append(str(ipaddress.IPv4Address(parts[1])))
    return tuple(found)


def resolv_conf_for_environments() -> str:
    """What an environment's /etc/resolv.conf holds: the host's, unless its name server is a local stub
    (systemd-resolved's 127.0.0.53), unreachable from a namespace: then the stub's own upstream servers."""
    try:
        text = Path("/etc/resolv.conf").read_text()
    except OSError:
        return ""
    if any(ipaddress.IPv4Address(r).is_loopback for r in host_resolvers(text)):
        with contextlib.suppress(OSError):
            upstream = Path("/run/systemd/resolve/resolv.conf").read_text()
            if host_resolvers(upstream):
                return upstream
        return "\n".join(line for line in text.splitlines() if not line.startswith("nameserver")) + "\n"
    return text


class NetnsMaker:
    """Makes namespaces in a thread of its own, which enters each new namespace (``unshare`` moves only the
    calling thread) to set it up from inside and comes back to the server's namespace after each."""

    def __init__(self, plan: EgressPlan | None) -> None:
        """``plan`` None: namespaces without a link (no outbound network for anyone)."""
        self.plan = plan
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="netns")
        self._home = -1
        self._host_link: Rtnetlink | None = None
        # Link indexes free for use, oldest-freed first: an address is reused as late as possible (the host's
        # connection tracking may still hold entries for the last environment that had it).
        self._free: deque[int] = deque(range(plan.links)) if plan is not None else deque()
        self._lock = threading.Lock()

    def start(self) -> None:
        self._executor.submit(self._open).result()

    def _open(self) -> None:
        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        if self.plan is not None:
            self._host_link = Rtnetlink()

    def submit(self, with_link: bool, with_api: bool, with_diag: bool = False) -> concurrent.futures.Future[Netns]:
        return self._executor.submit(self.make, with_link, with_api, with_diag)

    def make(self, with_link: bool, with_api: bool, with_diag: bool = False) -> Netns:
        """A new namespace (run on the maker's thread only). ``with_link``: routed to the outside world (when
        the plan allows any); ``with_api``: selfless's API is served inside too; ``with_diag``: a sock_diag
        socket of the namespace comes with it (``peers.PeerLookup``)."""
        link = self._take_link() if with_link and self.plan is not None else None
        runtime: socket.socket | None = None
        api: socket.socket | None = None
        diag: socket.socket | None = None
        fd = -1
        inside: Rtnetlink | None = None
        try:
            _unshare_net()
            try:
                fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
                inside = Rtnetlink()
                inside.up(socket.if_nametoindex("lo"))
                runtime = _listener(RUNTIME_API)
                if with_api:
                    api = _listener(API)
                if with_diag:
                    diag = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, _SOCK_DIAG)
                if link is not None:
                    # The environment's end of the link gets no IPv6 (set before the link exists).
                    with contextlib.suppress(FileNotFoundError):  # a kernel without IPv6
                        Path("/proc/sys/net/ipv6/conf/default/disable_ipv6").write_text("1")
                    host_if = self._link_name(link)
                    assert self._host_link is not None and self.plan is not None
                    self._host_link.veth(host_if, ENV_IFNAME, fd)
                    gateway, address = self.plan.pair(link)
                    index = socket.if_nametoindex(ENV_IFNAME)
                    inside.up(index)
                    inside.address(index, address, 31)
                    inside.route("0.0.0.0/0", via=gateway, index=index)
                    for resolver in self.plan.resolvers:
                        if any(ipaddress.IPv4Address(resolver) in ipaddress.IPv4Network(b) for b in self.plan.blocked):
                            inside.route(f"{resolver}/32", via=gateway, index=index)
                    for blocked in self.plan.blocked:
                        if not ipaddress.IPv4Network(blocked).is_loopback:
                            inside.route(blocked, prohibit=True)
            finally:
                if inside is not None:
                    inside.close()
                _setns(self._home)  # back home, whatever happened: this thread makes every namespace
            if link is not None:
                assert self._host_link is not None and self.plan is not None
                gateway, _address = self.plan.pair(link)
                self._host_link.address(socket.if_nametoindex(self._link_name(link)), gateway, 31)
                return Netns(Kind(True, with_api), fd, runtime, api, link, diag)
            return Netns(Kind(False, with_api), fd, runtime, api, None, diag)
        except BaseException:
            for sock in (runtime, api, diag):
                if sock is not None:
                    sock.close()
            if fd >= 0:
                os.close(fd)
            if link is not None:
                self.give_back(link)  # the veth, if made, goes with the namespace
            raise

    def submit_rearm(self, netns: Netns) -> concurrent.futures.Future[Netns]:
        return self._executor.submit(self.rearm, netns)

    def rearm(self, netns: Netns) -> Netns:
        """New listening sockets in a namespace whose environment is gone (its own were closed with it)."""
        _setns(netns.fd)
        try:
            netns.runtime = _listener(RUNTIME_API)
            netns.api = _listener(API) if netns.kind.api else None
        finally:
            _setns(self._home)
        return netns

    def _link_name(self, link: int) -> str:
        assert self.plan is not None
        return f"{self.plan.interface_prefix}{link}"

    def _take_link(self) -> int:
        """The link free the longest whose interface is gone (a namespace dies a moment after its last
        socket and process, and its veth with it)."""
        with self._lock:
            for _ in range(len(self._free)):
                link = self._free.popleft()
                if not os.path.exists(f"/sys/class/net/{self._link_name(link)}"):
                    return link
                self._free.append(link)
            raise OSError("no sandbox network address left (SELFLESS_SANDBOX_NETWORK is too small)")

    def give_back(self, link: int) -> None:
        with self._lock:
            self._free.append(link)

    def close(self) -> None:
        def shut() -> None:
            if self._host_link is not None:
                self._host_link.close()
                self._host_link = None
            if self._home >= 0:
                os.close(self._home)
                self._home = -1

        with contextlib.suppress(RuntimeError):  # already shut down
            self._executor.submit(shut).result()
        self._executor.shutdown(wait=True)


# -- the slot's firewall ---------------------------------------------------------------------------------


def nft_available() -> str | None:
    return shutil.which("nft")


def ruleset(slot: int, plan: EgressPlan) -> str:
    """The nftables table of one server slot (``nft -f`` input)."""
    ours = f'"{plan.interface_prefix}*"'
    every_environment = f'"{IF_PREFIX}*"'
    blocked = ", ".join(plan.blocked)
    resolvers = ", ".join(plan.resolvers)
    lines = [
        f"table inet selfless-{slot} {{",
        "  chain input {",
        "    type filter hook input priority filter - 1; policy accept;",
        # Nothing from an environment reaches the host itself: no loopback service, no host address.
        f"    iifname {ours} reject with icmpx type admin-prohibited",
        "  }",
        "  chain output {",
        "    type filter hook output priority filter - 1; policy accept;",
        # Nor does anything of the host's reach into an environment (its listeners are its own); the host
        # only tells it what it refused.
        f"    oifname {ours} meta l4proto icmp accept",
        f"    oifname {ours} drop",
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter - 1; policy accept;",
        f"    iifname {ours} oifname {every_environment} reject with icmpx type admin-prohibited",
        f"    iifname {ours} meta nfproto ipv6 drop",
    ]
    if resolvers:
        lines.append(f"    iifname {ours} ip daddr {{ {resolvers} }} meta l4proto {{ tcp, udp }} th dport 53 accept")
    lines += [
        f"    iifname {ours} ip daddr {{ {blocked} }} reject with icmpx type admin-prohibited",
        f"    iifname {ours} accept",
        # Into an environment: only the answers to what it opened (it accepts no connection from outside).
        f"    oifname {ours} ct state established,related accept",
        f"    oifname {ours} drop",
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f"    ip saddr {plan.subnet} oifname != {every_environment} masquerade",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def _nft(script: str) -> None:
    nft = nft_available()
    if nft is None:
        raise NetworkUnavailable("nft (the nftables package) is not installed")
    done = subprocess.run([nft, "-f", "-"], input=script.encode(), capture_output=True, timeout=30, check=False)
    if done.returncode != 0:
        raise NetworkUnavailable(f"nft refused the ruleset: {done.stderr.decode(errors='replace').strip()}")


def remove_table(slot: int) -> None:
    """Drop the slot's table (left by this server, or by an earlier one that died in this slot)."""
    nft = nft_available()
    if nft is not None:
        subprocess.run(
            [nft, "delete", "table", "inet", f"selfless-{slot}"], capture_output=True, timeout=30, check=False
        )


_IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


class Firewall:
    """The slot's nftables table and IPv4 forwarding, on while the server runs."""

    def __init__(self, slot: int, plan: EgressPlan) -> None:
        self._slot = slot
        self._plan = plan
        self._applied = False

    def apply(self) -> None:
        remove_table(self._slot)
        _nft(ruleset(self._slot, self._plan))
        self._applied = True
        try:
            if _IP_FORWARD.read_text().strip() != "1":
                # Host-wide, as every container engine does: the kernel forwards nothing our table does not let
                # through from environments' links; other interfaces are as the host's own rules say.
                _IP_FORWARD.write_text("1")
                log.info("IPv4 forwarding turned on (environments' outbound traffic is routed through the host)")
        except OSError as exc:
            self.remove()
            raise NetworkUnavailable(f"cannot turn on IPv4 forwarding: {exc.strerror}") from exc

    def remove(self) -> None:
        if self._applied:
            remove_table(self._slot)
            self._applied = False


# -- the stock ---------------------------------------------------------------------------------------------


class NetnsStock:
    """Namespaces made ahead, per kind: at first ``FIRST``, then as many as the largest burst of starts
    between two quiet moments (at most ``MAX``, ~290 KB of kernel memory each); a stock no start took from
    for ``IDLE_S`` goes. Event-loop only; the making happens on the maker's thread."""

    FIRST = 16
    MAX = 256
    QUIET_S = 0.05
    IDLE_S = 600.0

    def __init__(self, maker: NetnsMaker) -> None:
        self._maker = maker
        self._stock: dict[Kind, list[Netns]] = {}
        self._wanted: dict[Kind, int] = {}
        self._burst: dict[Kind, int] = {}
        self._used: dict[Kind, float] = {}
        self._filling: set[Kind] = set()
        self._refill: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        # Namespaces of environments that are gone, ready for the same function's next ones (never another's:
        # the host's connection tracking may still know the last environment's flows), and when each
        # function last took one.
        self._recycled: dict[tuple[str, Kind], list[Netns]] = {}
        self._recycled_used: dict[tuple[str, Kind], float] = {}
        self._recycled_count = 0

    async def get(self, kind: Kind, tenant: str | None = None) -> Netns:
        """One of this kind: the function ``tenant``'s own from an environment that is gone if there is one,
        else one made ahead, else one made now."""
        loop = asyncio.get_running_loop()
        if tenant is not None:
            self._recycled_used[(tenant, kind)] = loop.time()
            mine = self._recycled.get((tenant, kind))
            if mine:
                self._recycled_count -= 1
                return mine.pop()
        self._used[kind] = loop.time()
        self._burst[kind] = self._burst.get(kind, 0) + 1
        self._refill_soon()
        stock = self._stock.get(kind)
        if stock:
            return stock.pop()
        return await asyncio.wrap_future(self._maker.submit(kind.link, kind.api))

    async def fresh(self, kind: Kind, with_diag: bool) -> Netns:
        """One of this kind made now, not counted as a start (a fork-after-init template's)."""
        return await asyncio.wrap_future(self._maker.submit(kind.link, kind.api, with_diag))

    def prime(self, kind: Kind) -> None:
        """Start stocking ``kind`` now (FIRST of them)."""
        self._wanted[kind] = max(self._wanted.get(kind, 0), self.FIRST)
        self._used.setdefault(kind, asyncio.get_running_loop().time())
        self._fill(kind)

    def _refill_soon(self) -> None:
        if self._refill is not None:
            self._refill.cancel()
        self._refill = asyncio.get_running_loop().call_later(self.QUIET_S, self._quiet)

    def _quiet(self) -> None:
        """No start for QUIET_S: grow each stock to its last burst, make what is missing, drop idle stocks."""
        self._refill = None
        now = asyncio.get_running_loop().time()
        for kind, burst in self._burst.items():
            self._wanted[kind] = min(self.MAX, max(self._wanted.get(kind, 0), self.FIRST, burst))
        self._burst.clear()
        for kind, used in list(self._used.items()):
            if now - used >= self.IDLE_S:
                del self._used[kind]
                self._wanted.pop(kind, None)
                for netns in self._stock.pop(kind, []):
                    self._release(netns)
            else:
                self._fill(kind)
        for key, used in list(self._recycled_used.items()):
            if now - used >= self.IDLE_S:
                del self._recycled_used[key]
                for netns in self._recycled.pop(key, []):
                    self._recycled_count -= 1
                    self._release(netns)
        if self._used or self._recycled_used:
            self._refill = asyncio.get_running_loop().call_later(self.IDLE_S, self._quiet)

    def _fill(self, kind: Kind) -> None:
        if kind in self._filling or self._closed:
            return
        self._filling.add(kind)

        async def fill() -> None:
            try:
                while not self._closed and len(self._stock.get(kind, ())) < self._wanted.get(kind, 0):
                    netns = await asyncio.wrap_future(self._maker.submit(kind.link, kind.api))
                    if self._closed:
                        self._release(netns)
                        return
                    self._stock.setdefault(kind, []).append(netns)
            except (OSError, RuntimeError) as exc:
                log.warning("could not make network namespaces ahead: %s", exc)
            finally:
                self._filling.discard(kind)

        task = asyncio.get_running_loop().create_task(fill())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _release(self, netns: Netns) -> None:
        netns.close()
        if netns.link is not None:
            self._maker.give_back(netns.link)

    def counts(self) -> dict[str, int]:
        """How many are made ahead ("stocked") and kept for their function ("recycled")."""
        return {"stocked": sum(len(s) for s in self._stock.values()), "recycled": self._recycled_count}

    def give_back(self, netns: Netns) -> None:
        """A namespace taken with ``get`` is done with (its environment is gone): close what is left of it
        and free its link's addresses."""
        self._release(netns)

    def recycle(self, netns: Netns, tenant: str) -> None:
        """A namespace of function ``tenant`` whose environment is gone with every process of it (and whose
        listeners are closed): made ready for the function's next environment, or released when the
        recycled ones are ``MAX`` already. Making a namespace and its link again costs ~2 ms of CPU and the
        kernel's teardown of the old one; this costs two sockets."""
        if self._closed or netns.fd < 0 or self._recycled_count >= self.MAX:
            self._release(netns)
            return
        self._recycled_count += 1
        key = (tenant, netns.kind)

        async def rearm() -> None:
            try:
                await asyncio.wrap_future(self._maker.submit_rearm(netns))
            except (OSError, RuntimeError) as exc:
                log.warning("a network namespace could not be made ready again: %s", exc)
                self._recycled_count -= 1
                self._release(netns)
                return
            if self._closed:
                self._recycled_count -= 1
                self._release(netns)
                return
            self._recycled.setdefault(key, []).append(netns)
            self._recycled_used.setdefault(key, asyncio.get_running_loop().time())
            if self._refill is None:
                self._refill = asyncio.get_running_loop().call_later(self.IDLE_S, self._quiet)

        task = asyncio.get_running_loop().create_task(rearm())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._closed = True
        if self._refill is not None:
            self._refill.cancel()
            self._refill = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for stock in [*self._stock.values(), *self._recycled.values()]:
            for netns in stock:
                self._release(netns)
        self._stock.clear()
        self._recycled.clear()
        self._recycled_count = 0
