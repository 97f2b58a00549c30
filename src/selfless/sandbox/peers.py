"""Who owns the other end of a loopback TCP connection: the kernel's sock_diag netlink interface.

The Runtime API of an environment accepts only its own environment's uid. TCP has no SO_PEERCRED, so the
owner is looked up by the connection's addresses. Reading /proc/net/tcp does that in O(sockets on the
host), with the kernel formatting every line (~5 ms with a thousand sockets, on the event loop, for every
new connection during a burst of cold starts). An exact-match SOCK_DIAG_BY_FAMILY request (no dump flag)
is a hash lookup of one socket in the kernel: ~10 us whatever the number of sockets.
"""

from __future__ import annotations

import itertools
import socket
import struct

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_REQUEST = struct.Struct("=BBBBI")  # family, protocol, extensions, pad, states
_NO_COOKIE = struct.pack("=III", 0, 0xFFFFFFFF, 0xFFFFFFFF)  # interface, cookie (none)
_ALL_STATES = 0xFFFFFFFF
# In the reply (struct inet_diag_msg), after family/state/timer/retrans (4), the socket id (48) and
# expires/rqueue/wqueue (12).
_UID_OFFSET = _NLMSG_HEADER.size + 4 + 48 + 12


class PeerLookup:
    """One netlink socket, used synchronously from the event loop (each answer is ready when ``send``
    returns: the kernel builds it in the sending call)."""

    def __init__(self, sock: socket.socket | None = None) -> None:
        """``sock``: a NETLINK_SOCK_DIAG socket made inside another network namespace (it answers for
        that namespace's sockets; the lookup never makes another). None: one of the caller's namespace."""
        self._sock: socket.socket | None = sock
        self._given = sock is not None
        if sock is not None:
            sock.settimeout(1.0)
        self._seq = itertools.count(1)

    def _socket(self) -> socket.socket:
        if self._sock is None:
            if self._given:
                raise OSError("the namespace's sock_diag socket is closed")
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)
            sock.settimeout(1.0)
            self._sock = sock
        return self._sock

    def tcp_owner(self, peer: tuple[str, int], local: tuple[str, int]) -> int | None:
        """The uid owning the IPv4 TCP socket at ``peer`` connected to ``local``; None when there is none."""
        sock_id = (
            struct.pack(">HH", peer[1], local[1])
            + socket.inet_aton(peer[0])
            + bytes(12)
            + socket.inet_aton(local[0])
            + bytes(12)
            + _NO_COOKIE
        )
        body = _REQUEST.pack(socket.AF_INET, socket.IPPROTO_TCP, 0, 0, _ALL_STATES) + sock_id
        seq = next(self._seq) & 0xFFFFFFFF
        header = _NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, seq, 0)
        try:
            sock = self._socket()
            sock.send(header + body)
            while True:
                data = sock.recv(65536)
                if len(data) < _NLMSG_HEADER.size:
                    return None
                _length, kind, _flags, got_seq, _pid = _NLMSG_HEADER.unpack_from(data)
                if got_seq != seq:
                    continue  # a late answer to an earlier request that timed out
                if kind == _NLMSG_ERROR or kind != _SOCK_DIAG_BY_FAMILY or len(data) < _UID_OFFSET + 4:
                    return None
                uid: int = struct.unpack_from("=I", data, _UID_OFFSET)[0]
                return uid
        except OSError:
            self.close()
            return None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
