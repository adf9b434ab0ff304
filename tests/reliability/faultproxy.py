"""A fault-injecting TCP proxy for HTTP/1.1 on loopback: edgecache -> proxy -> upstream.

Each request the proxy sees (a chunk from the client that starts with a request line) is shown
to a plan, which may answer with a `Fault` for that request's response:

- `status`: answer this status itself and close, without asking the upstream (5xx bursts);
- `reset_at`: abort both connections with a TCP RST after this many body bytes;
- `close_at`: close cleanly (FIN) after this many body bytes (a truncated body);
- `shorten_to`: rewrite Content-Length to this and end the body there, so the response looks
  complete but is short (a clean short stream), then close;
- `stall_at`: stop forwarding after this many body bytes until `release_stalls()` or until
  the client gives up;
- `flip_at`: flip one bit in the byte at each of these body offsets (wrong bytes);
- `rate`: forward the body at this many bytes per second (a slow trickle).

Offsets count body bytes (after the response headers); `BEFORE_RESPONSE` means before the
first byte of the response, headers included. HTTP/1.1 without pipelining (what aiohttp's
client does) is assumed: a response is over before the next request starts on a connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

BEFORE_RESPONSE = -1

_REQUEST_LINE = re.compile(rb"^([A-Z]+) (\S+) HTTP/1\.[01]\r\n")
_HEADER_END = b"\r\n\r\n"
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*\d+[ \t]*$")
_CONNECTION = re.compile(rb"(?im)^connection:[^\r\n]*\r\n")
_READ = 1 << 16
_DOWNLOAD_CHECK = re.compile(rb"(?im)^range:[ \t]*bytes=0-0[ \t]*\r?$")


@dataclass(frozen=True)
class RequestHead:
    method: str
    target: str
    download_check: bool = False  # edgecache's one-byte GET asking Glance's download decision

    @property
    def path(self) -> str:
        return self.target.split("?")[0]

    @property
    def image_id(self) -> str | None:
        parts = self.path.split("/")
        return parts[3] if len(parts) > 3 and parts[1:3] == ["v2", "images"] else None

    @property
    def is_data(self) -> bool:
        """A transfer of image data (not edgecache's one-byte download check)."""
        return self.image_id is not None and self.path.endswith("/file") and not self.download_check


@dataclass(frozen=True)
class Fault:
    status: int | None = None
    reset_at: int | None = None
    close_at: int | None = None
    shorten_to: int | None = None
    stall_at: int | None = None
    flip_at: tuple[int, ...] = ()
    rate: float | None = None

    def describe(self) -> str:
        parts = [
            f"{name}={value}"
            for name, value in vars(self).items()
            if value is not None and value != ()
        ]
        return "Fault(" + ", ".join(parts) + ")"


Plan = Callable[[RequestHead], Fault | None]


def always(fault: Fault) -> Callable[[RequestHead], Fault]:
    """For Script.repeat: the same fault for every request."""
    return lambda _head: fault


class Script:
    """A plan: faults queued per image for its data requests, or one fault for everything."""

    def __init__(self) -> None:
        self.everything: Fault | None = None
        self.metadata: dict[str, list[Fault]] = {}
        self._queued: dict[str, list[Fault]] = {}
        self._repeat: dict[str, Callable[[RequestHead], Fault | None]] = {}

    def queue(self, image_id: str, *faults: Fault) -> None:
        """The next data requests for `image_id` meet these faults, one each, in order."""
        self._queued.setdefault(image_id, []).extend(faults)

    def repeat(self, image_id: str, fault: Callable[[RequestHead], Fault | None]) -> None:
        """Every data request for `image_id` (once the queue is used up) meets `fault(head)`."""
        self._repeat[image_id] = fault

    def clear(self, image_id: str | None = None) -> None:
        if image_id is None:
            self._queued.clear()
            self._repeat.clear()
            self.metadata.clear()
            self.everything = None
        else:
            self._queued.pop(image_id, None)
            self._repeat.pop(image_id, None)

    def __call__(self, head: RequestHead) -> Fault | None:
        if self.everything is not None:
            return self.everything
        if head.image_id is None:
            return None
        if not head.is_data:
            queued = self.metadata.get(head.image_id)
            return queued.pop(0) if queued else None
        queued = self._queued.get(head.image_id)
        if queued:
            return queued.pop(0)
        repeat = self._repeat.get(head.image_id)
        return repeat(head) if repeat is not None else None


@dataclass
class _Response:
    """Where one faulted response stands."""

    fault: Fault
    head: bytearray = field(default_factory=bytearray)
    head_done: bool = False
    body_pos: int = 0
    fired: set[str] = field(default_factory=set)

    def next_event(self) -> tuple[int, str] | None:
        events = [
            (offset, kind)
            for kind, offset in (
                ("reset", self.fault.reset_at),
                ("close", self.fault.close_at),
                ("shorten", self.fault.shorten_to),
                ("stall", self.fault.stall_at),
            )
            if offset is not None and offset >= self.body_pos and kind not in self.fired
        ]
        return min(events) if events else None


class _Stop(Exception):
    """End this connection now; `reset` says whether with an RST."""

    def __init__(self, reset: bool) -> None:
        super().__init__("reset" if reset else "close")
        self.reset = reset


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.plan: Plan = Script()
        self.stats: Counter[str] = Counter()
        self.heads: list[RequestHead] = []
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._released = asyncio.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def script(self) -> Script:
        assert isinstance(self.plan, Script)
        return self.plan

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def release_stalls(self) -> None:
        """Let every stalled response go on (later stalls stall again)."""
        released, self._released = self._released, asyncio.Event()
        released.set()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self.stats["connections"] += 1
        reset = False
        upstream_w: asyncio.StreamWriter | None = None
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*self.target)
            state: list[_Response | None] = [None]
            pumps = [
                asyncio.create_task(self._requests(client_r, client_w, upstream_w, state)),
                asyncio.create_task(self._responses(upstream_r, client_w, state)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                outcomes = await asyncio.gather(*pumps, return_exceptions=True)
            reset = any(isinstance(o, _Stop) and o.reset for o in outcomes)
        except OSError:
            self.stats["upstream_connect_failed"] += 1
        finally:
            if reset:
                _abort_with_rst(client_w)
            else:
                client_w.close()
            if upstream_w is not None:
                upstream_w.transport.abort()
            self._connections.discard(task)

    async def _requests(
        self,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        upstream_w: asyncio.StreamWriter,
        state: list[_Response | None],
    ) -> None:
        while data := await client_r.read(_READ):
            match = _REQUEST_LINE.match(data)
            if match:
                head = RequestHead(
                    match.group(1).decode(),
                    match.group(2).decode("latin-1"),
                    download_check=_DOWNLOAD_CHECK.search(data) is not None,
                )
                self.heads.append(head)
                self.stats["requests"] += 1
                fault = self.plan(head)
                state[0] = _Response(fault) if fault is not None else None
                if fault is not None and fault.status is not None:
                    self.stats["status"] += 1
                    body = b'{"message": "injected by the fault proxy"}'
                    client_w.write(
                        b"HTTP/1.1 %d Injected\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                        % (fault.status, len(body), body)
                    )
                    await client_w.drain()
                    return
            upstream_w.write(data)
            await upstream_w.drain()

    async def _responses(
        self,
        upstream_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        state: list[_Response | None],
    ) -> None:
        while data := await upstream_r.read(_READ):
            response = state[0]
            if response is None:
                client_w.write(data)
                await client_w.drain()
            else:
                await self._faulty(response, data, client_w)

    async def _faulty(
        self, response: _Response, data: bytes, client_w: asyncio.StreamWriter
    ) -> None:
        fault = response.fault
        if not response.head_done:
            if not response.head:  # the first byte of the response is about to go
                for kind, offset in (
                    ("reset", fault.reset_at),
                    ("close", fault.close_at),
                    ("stall", fault.stall_at),
                ):
                    if offset == BEFORE_RESPONSE and kind not in response.fired:
                        response.fired.add(kind)
                        await self._fire(kind, client_w)
            response.head += data
            end = response.head.find(_HEADER_END)
            if end < 0:
                return
            head, data = bytes(response.head[: end + 4]), bytes(response.head[end + 4 :])
            response.head_done = True
            if fault.shorten_to is not None:
                head = _CONNECTION.sub(b"", head)
                head = _CONTENT_LENGTH.sub(b"Content-Length: %d" % fault.shorten_to, head)
                head = head[:-2] + b"Connection: close\r\n\r\n"
            client_w.write(head)
            await client_w.drain()
        while True:
            event = response.next_event()
            if event is not None and event[0] == response.body_pos:
                response.fired.add(event[1])
                await self._fire(event[1], client_w)
                continue
            if not data:
                return
            take = len(data) if event is None else min(len(data), event[0] - response.body_pos)
            piece, data = data[:take], data[take:]
            await self._send_body(response, piece, client_w)
            response.body_pos += len(piece)

    async def _fire(self, kind: str, client_w: asyncio.StreamWriter) -> None:
        self.stats[kind] += 1
        if kind == "stall":
            await self._released.wait()
            return
        await client_w.drain()
        raise _Stop(reset=kind == "reset")

    async def _send_body(
        self, response: _Response, piece: bytes, client_w: asyncio.StreamWriter
    ) -> None:
        fault = response.fault
        start = response.body_pos
        flips = [o for o in fault.flip_at if start <= o < start + len(piece)]
        if flips:
            mutable = bytearray(piece)
            for offset in flips:
                mutable[offset - start] ^= 1 << (offset % 8)
            piece = bytes(mutable)
            self.stats["flip"] += len(flips)
        if fault.rate is None:
            client_w.write(piece)
            await client_w.drain()
            return
        step = max(1, min(1 << 16, int(fault.rate / 8)))
        for position in range(0, len(piece), step):
            part = piece[position : position + step]
            client_w.write(part)
            await client_w.drain()
            self.stats["trickled_bytes"] += len(part)
            await asyncio.sleep(len(part) / fault.rate)  # the trickle itself, not a wait for X


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0, so the peer gets a TCP RST rather than an orderly FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
