"""One websocket connection: the handshake (origin, connection caps, hello, join), then
receive -> room -> fan-out until either side ends it.

Websocket security: the Origin header is checked against the allow-list before the handshake
completes (refused: HTTP 403, i.e. close 4003 ``origin_forbidden`` before accept). The default
allow-list is the server's own host (Origin host:port equal to the Host header); ``origins`` in the
settings adds others, ``*`` allows any. Requests without an Origin header come from non-browser
clients, which could forge it anyway, and are allowed (the capability still decides). Inbound
messages are capped at the protocol's 32 KiB (an ``error`` then close 4009 ``too_large``; uvicorn
reads at most ``ws_max_size``, 4x that, and closes larger ones itself, also with 4009: see
``serve.WSProtocol``); every message is decoded
strictly and rate-limited per connection by the room core; connections per server and per address
are capped (close 4006 ``server_full``); a hello must arrive within ``hello_timeout_s`` (4008) and a
connection silent for ``idle_timeout_s`` is closed (4015). Per-message deflate is off (frames are
JPEG already). Capabilities for websockets travel only in the hello message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket

from server.core.members import JoinRefused
from server.core.outgoing import Disconnect, Outgoing
from server.core.protocol import ProtocolError, close_spec, decode_hello, error_message
from server.core.protocol_types import LIMITS
from server.core.room import Room
from server.edge.appstate import AppState, app_state, client_ip
from server.edge.fanout import Sender, SenderLimits, with_timeout

log = logging.getLogger(__name__)


class Connection:
    """One websocket: handshake, then receive -> room -> fan-out until either side ends it."""

    def __init__(self, state: AppState, ws: WebSocket, room_id: str) -> None:
        self.state = state
        self.ws = ws
        self.room_id = room_id
        self.ip = client_ip(ws)
        self.member_id: str | None = None
        self.sender: Sender | None = None
        self._deadline: asyncio.Timeout | None = None  # the receive loop's, while it waits
        self._hello_bytes = b""  # the hello as received (a relayed connection forwards it)

    async def run(self) -> None:
        state, ws = self.state, self.ws
        if not state.origin_allowed(ws.headers.get("origin"), ws.headers.get("host")):
            log.warning(
                "refused a websocket from %s: origin %r not allowed", self.ip, ws.headers.get("origin")
            )
            await ws.close(close_spec("origin_forbidden").code)  # before accept: HTTP 403
            return
        await ws.accept()
        if state.closing:
            await self._close_now("shutting_down")
            return
        s = state.settings
        if state.connections >= s.max_connections or state.per_ip.get(self.ip, 0) >= s.max_connections_per_ip:
            log.warning("refused a websocket from %s: connection cap reached", self.ip)
            await self._close_now("server_full")
            return
        state.connections += 1
        state.per_ip[self.ip] = state.per_ip.get(self.ip, 0) + 1
        try:
            await self._session()
        finally:
            state.connections -= 1
            left = state.per_ip.get(self.ip, 1) - 1
            if left > 0:
                state.per_ip[self.ip] = left
            else:
                state.per_ip.pop(self.ip, None)

    async def _close_now(self, close: str, messages: list[dict[str, Any]] | None = None) -> None:
        """Close before a sender exists (handshake failures), sending ``messages`` first."""
        spec = close_spec(close)
        with contextlib.suppress(Exception):
            for m in messages or []:
                await with_timeout(self.ws.send_bytes(Outgoing(m).data), 2.0)
            await with_timeout(self.ws.close(spec.code, spec.reason), 2.0)

    async def _hello(self) -> dict[str, Any] | None:
        try:
            msg = await with_timeout(self.ws.receive(), self.state.settings.hello_timeout_s)
        except TimeoutError:
            log.info("websocket from %s: no hello in time (room %s)", self.ip, self.room_id)
            await self._close_now("hello_timeout")
            return None
        if msg["type"] == "websocket.disconnect":
            return None
        data = msg.get("bytes")
        if data is None:
            err = ProtocolError("malformed", "binary msgpack messages only", close="bad_hello")
        elif len(data) > LIMITS["max_message_bytes"]:
            err = ProtocolError("too_large", f"hello of {len(data)} bytes", close="too_large")
        else:
            try:
                hello = decode_hello(data)
                self._hello_bytes = data
                return hello
            except ProtocolError as e:
                err = e
        log.info("websocket from %s: bad hello for room %s (%s)", self.ip, self.room_id, err)
        await self._close_now(err.close or "bad_hello", [err.to_message()])
        return None

    async def _session(self) -> None:
        state = self.state
        hello = await self._hello()
        if hello is None:
            return
        if state.cluster is not None:  # the room may live on another node: then relay to it
            from server.edge.cluster import place_for_join

            try:
                where = await place_for_join(state, self.room_id, hello["cap"])
            except JoinRefused as e:
                log.info("websocket from %s: join refused: room %s, %s", self.ip, self.room_id, e)
                await self._close_now(e.close)
                return
            if not where.local:
                await self._relay_session(where.owner)
                return
        try:
            joined = state.manager.join(self.room_id, hello)
        except JoinRefused as e:
            log.info("websocket from %s: join refused: room %s, %s", self.ip, self.room_id, e)
            await self._close_now(e.close)
            return
        room = state.manager.get(self.room_id)
        assert room is not None
        mid = self.member_id = joined.member_id
        s = state.settings
        sender = self.sender = Sender(
            self.ws,
            SenderLimits(s.frame_credits, s.control_queue, s.send_timeout_s),
            name=f"room {room.id} {mid}",
            on_closed=self._sender_closed,
        )
        old = state.hub.add(room.id, mid, sender)
        if old is not None:
            old.close("replaced")
        if state.cluster is not None:
            state.cluster.joined_locally(room.id, joined)
        sender.start()
        state.hub.dispatch(room, joined.messages)
        state.worker.wake()
        try:
            await self._receive_loop(
                sender,
                lambda data: self._local_message(room, mid, sender, data),
                lambda d: state.hub.dispatch(room, d.messages),
            )
        finally:
            state.hub.remove(room.id, mid, sender)
            out = state.manager.leave(room.id, mid, joined.session)
            if out:
                state.hub.dispatch(room, out)
            sender.stop()
            await sender.wait(timeout=5.0)

    def _sender_closed(self, sender: Sender) -> None:
        """The sender ended (too slow, replaced, shutting down, peer gone): stop receiving now."""
        if self._deadline is not None:
            self._deadline.reschedule(asyncio.get_running_loop().time())

    async def _relay_session(self, owner: str) -> None:
        """A room another node owns: join through it, then forward every message to it (the
        cluster relays its messages back to this connection's sender)."""
        state, s = self.state, self.state.settings
        sender = self.sender = Sender(
            self.ws,
            SenderLimits(s.frame_credits, s.control_queue, s.send_timeout_s),
            name=f"relay {self.room_id} via {owner}",
            on_closed=self._sender_closed,
        )
        try:
            link = await state.cluster.relay_join(self.room_id, owner, self._hello_bytes, sender)
        except JoinRefused as e:
            log.info(
                "websocket from %s: join refused by node %s: room %s, %s", self.ip, owner, self.room_id, e
            )
            await self._close_now(e.close)
            return
        key = f"relay:{link.conn}"
        state.hub.add(self.room_id, key, sender)
        sender.start()
        try:
            await self._receive_loop(
                sender,
                lambda data: self._relay_message(link, sender, data),
                lambda d: sender.put_many(d.messages),
            )
        finally:
            state.hub.remove(self.room_id, key, sender)
            state.cluster.relay_leave(link)
            sender.stop()
            await sender.wait(timeout=5.0)

    def _relay_message(self, link: Any, sender: Sender, data: bytes | None) -> None:
        """A relayed connection's message: refusals that need no room here, the rest to the owner."""
        max_bytes = LIMITS["max_message_bytes"]
        if data is None:
            err = Outgoing(error_message("malformed", "binary msgpack messages only"))
            if not link.limiter.strike():
                raise Disconnect("protocol_violation", [err])
            sender.put(err)
        elif len(data) > max_bytes:
            err = Outgoing(error_message("too_large", f"message of {len(data)} bytes exceeds {max_bytes}"))
            raise Disconnect("too_large", [err])
        else:
            self.state.cluster.relay_send(link, data)

    def _local_message(self, room: Room, mid: str, sender: Sender, data: bytes | None) -> None:
        """A message to a room of this node: the room answers, the fan-out sends (raises Disconnect)."""
        state = self.state
        max_bytes = LIMITS["max_message_bytes"]
        if data is None:
            out = self._refuse_text(room, mid)
        elif len(data) > max_bytes:
            err = error_message("too_large", f"message of {len(data)} bytes exceeds {max_bytes}")
            raise Disconnect("too_large", [Outgoing(err, to=mid)])
        else:
            out = state.manager.receive(room.id, mid, data)
        if out:
            state.hub.dispatch(room, out)
            self._log_refusals(room, mid, out)
            state.worker.wake()
        member = room.members.get(mid)
        if member is not None and member.acked_seq:
            sender.ack(member.acked_seq)

    async def _receive_loop(
        self,
        sender: Sender,
        handle: Callable[[bytes | None], None],
        on_disconnect: Callable[[Disconnect], None],
    ) -> None:
        """Receive until the peer or the sender ends it; ``handle`` each message (None: a text
        frame), ``on_disconnect`` sends what a Disconnect carries before the close."""
        idle = self.state.settings.idle_timeout_s
        while True:
            if sender.state.value != "open":
                return
            try:
                async with asyncio.timeout(idle) as self._deadline:
                    msg = await self.ws.receive()
            except TimeoutError:
                if sender.state.value == "open":
                    log.info("websocket %s: idle for %.0f s: closing", sender.name, idle)
                    sender.close("idle_timeout")
                return
            finally:
                self._deadline = None
            if msg["type"] == "websocket.disconnect":
                return
            try:
                handle(msg.get("bytes"))
            except Disconnect as d:
                on_disconnect(d)
                log.info("websocket %s: closing: %s", sender.name, d.close)
                sender.close(d.close)
                return

    def _refuse_text(self, room: Room, mid: str) -> list[Outgoing]:
        out = [Outgoing(error_message("malformed", "binary msgpack messages only"), to=mid)]
        member = room.members.get(mid)
        if member is not None and not member.limiter.strike():
            raise Disconnect("protocol_violation", out)
        return out

    @staticmethod
    def _log_refusals(room: Room, mid: str, out: list[Outgoing]) -> None:
        for o in out:
            if o.msg.get("t") == "error" and o.to == mid:
                field_ = o.msg.get("field")
                log.info(
                    "room %s: refused a message from %s: %s%s",
                    room.id,
                    mid,
                    o.msg["code"],
                    f" ({field_})" if field_ else "",
                )


async def websocket_room(ws: WebSocket) -> None:
    await Connection(app_state(ws), ws, ws.path_params["room"]).run()
