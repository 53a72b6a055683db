"""The WebSocket client: an async iterator of a channel set's events that survives
disconnects, server restarts, gaps, silent connections and token expiry.

Each channel's updates come once and in order: after a reconnect the channels are
subscribed again with ``since`` (their last seq), and the server either replays what was
missed (:class:`Recovered`) or sends a snapshot (:class:`Resynced`, then
:class:`Snapshot`). A skipped seq is resynced the same way on the open socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from coinlink_client.errors import RateLimited, ServerError, StreamError
from coinlink_client.events import (
    Data,
    Event,
    Recovered,
    Resynced,
    Snapshot,
    Update,
    channel_data,
)
from coinlink_client.rest import AsyncClient

# Closes that reconnecting would only repeat: the client's frames broke the protocol.
_FATAL_CLOSES = frozenset({1002, 1003, 1007, 1009, 1010})
_HEARTBEATS_MISSED = 2.5  # silence, in heartbeat intervals, after which a socket is dead


@dataclass(slots=True)
class _Op:
    """An op sent and not yet answered. Its ``future`` is a caller's that waits for the
    ack; the stream's own ops (auth, resubscribing) have none and are handled here."""

    op: str
    fields: dict[str, Any]
    future: asyncio.Future[dict[str, Any]] | None = None
    reason: str = "reconnect"  # a subscribe with ``since``: why, for Resynced


class _Reconnect(Exception):
    """The session ended; connect again after ``delay_s`` (None: the backoff's)."""

    def __init__(self, why: str, delay_s: float | None = None) -> None:
        super().__init__(why)
        self.delay_s = delay_s


class Stream:
    """Follow ``channels`` on ``url`` (``ws://host:8000/ws``)::

        async with Stream(url, ["ticker:BTC-USD"]) as stream:
            async for event in stream:
                ...

    Entering waits for the first subscription's ack (raising :class:`StreamError` for an
    unknown channel). ``client``: an :class:`AsyncClient` signed in, for ``notifications``:
    the socket is authenticated with its token, and again with each refreshed one before
    the previous expires. ``heartbeat_s`` is the server's ``COINLINK_WS_HEARTBEAT_S``: a
    socket silent for 2.5 times that is taken for dead and replaced. Reconnects wait a
    random time up to ``backoff_base_s`` x 2^attempt, at most ``backoff_max_s``.
    """

    def __init__(
        self,
        url: str,
        channels: Iterable[str],
        *,
        client: AsyncClient | None = None,
        heartbeat_s: float = 10.0,
        open_timeout_s: float = 10.0,
        backoff_base_s: float = 0.25,
        backoff_max_s: float = 10.0,
        queue_size: int = 1000,
    ) -> None:
        self.url = url
        self.client = client
        self.channels: list[str] = list(dict.fromkeys(channels))
        self.heartbeat_s = heartbeat_s
        self.open_timeout_s = open_timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._connections = 0
        self._acked = False  # the current connection's subscription was acknowledged
        # Bounded: a consumer that falls behind stops the reading, so the server sees a
        # slow socket (and conflates or closes it) instead of this process's memory growing.
        self._queue: asyncio.Queue[Event | BaseException] = asyncio.Queue(queue_size)
        self._failed: BaseException | None = None
        self._last: dict[str, int] = {}  # channel -> seq of the last frame yielded
        self._resyncing: set[str] = set()  # resubscribed after a gap: frames wait for the ack
        self._awaiting_snapshot: set[str] = set()
        self._pending: dict[int, _Op] = {}
        self._ids = itertools.count(1)
        self._ws: ClientConnection | None = None
        self._ready: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    # -- the consumer's side -----------------------------------------------------------

    async def __aenter__(self) -> Stream:
        self._ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name=f"coinlink-stream {self.url}")
        try:
            await self._ready
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        task = self._task
        if task is None:
            return
        while not task.done():
            task.cancel()
            # Repeated: a library may swallow a cancellation that races with its own work.
            await asyncio.wait([task], timeout=1)
        if not task.cancelled():
            task.exception()  # retrieved: the consumer was told through the queue

    @property
    def reconnects(self) -> int:
        """Connections opened after the first (for monitoring)."""
        return max(0, self._connections - 1)

    @property
    def connection(self) -> ClientConnection | None:
        """The WebSocket connection in use (None while reconnecting): its addresses."""
        return self._ws

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> Event:
        if self._task is None:
            raise RuntimeError("enter the stream first: async with Stream(...) as stream")
        if self._failed is not None and self._queue.empty():
            raise self._failed  # every read after the end raises why it ended
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def subscribe(self, *channels: str) -> None:
        """Add channels; waits for the server's ack when connected."""
        new = [c for c in channels if c not in self.channels]
        self.channels += new
        if new and self._ws is not None:
            await self._call(self._ws, "subscribe", channels=new)

    async def unsubscribe(self, *channels: str) -> None:
        """Drop channels once the server has acknowledged it (events of them already
        waiting to be read still come)."""
        self.channels = [c for c in self.channels if c not in channels]
        for channel in channels:
            self._last.pop(channel, None)
        if self._ws is not None:
            await self._call(self._ws, "unsubscribe", channels=list(channels))

    # -- the connection's side ---------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while True:
            self._acked = False
            try:
                await self._session()
            except _Reconnect as reconnect:
                delay = reconnect.delay_s
            except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake, httpx.HTTPError):
                delay = None
            except (ServerError, RateLimited) as busy:  # refreshing the token, for one
                delay = busy.retry_after
            except Exception as fatal:  # StreamError, AuthenticationError, or a bug
                self._fail(fatal)
                return
            finally:
                self._ws = None
                for pending in self._pending.values():
                    if pending.future is not None and not pending.future.done():
                        # A caller's op: the next connection subscribes self.channels.
                        pending.future.set_result({})
                self._pending.clear()
            # A connection that got as far as its subscription's ack starts the backoff over.
            attempt = 1 if self._acked else attempt + 1
            if delay is None:
                # Full jitter, so clients dropped together do not come back together.
                delay = random.uniform(  # noqa: S311 (timing, not a secret)
                    0, min(self.backoff_max_s, self.backoff_base_s * 2**attempt)
                )
            await asyncio.sleep(delay)

    def _fail(self, error: BaseException) -> None:
        self._failed = error
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)
        # Wakes a consumer waiting on an empty queue; a full one finds _failed once drained.
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(error)

    async def _open(self) -> ClientConnection:
        try:
            return await connect(
                self.url,
                compression=None,  # the server offers none
                open_timeout=self.open_timeout_s,
                ping_interval=None,  # the heartbeat watchdog notices a dead server sooner
                close_timeout=1,
                max_size=1 << 22,
            )
        except InvalidStatus as refused:
            status = refused.response.status_code
            if status in (408, 429) or status >= 500:  # busy or stopping: try again later
                retry_after = _seconds(refused.response.headers.get("Retry-After"))
                raise _Reconnect(f"handshake {status}", retry_after) from refused
            body = refused.response.body or b""
            raise StreamError(f"http_{status}", body.decode(errors="replace")) from refused

    async def _session(self) -> None:
        ws = self._ws = await self._open()
        self._connections += 1
        # What the last connection had asked for is asked again below, with since.
        self._resyncing.clear()
        self._awaiting_snapshot.clear()
        keeper = None
        try:
            client = self.client
            if client is not None and client.tokens is not None:
                token = await client.access_token()
                expires_at = client.tokens.expires_at
                await self._send(ws, "auth", token=token)
                keeper = asyncio.create_task(
                    self._keep_authenticated(ws, client, token, expires_at)
                )
                keeper.add_done_callback(_retrieve)
            fields: dict[str, Any] = {"channels": self.channels}
            since = {c: self._last[c] for c in self.channels if c in self._last}
            if since:
                fields["since"] = since
            await self._send(ws, "subscribe", **fields)
            silence_s = self.heartbeat_s * _HEARTBEATS_MISSED
            while True:
                try:
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
                    # cancellation (close()) that comes as a frame arrives.
                    async with asyncio.timeout(silence_s):
                        raw = await ws.recv()
                except TimeoutError:
                    ws.transport.abort()  # a dead server would not answer a close
                    raise _Reconnect(f"silent for {silence_s} s") from None
                except ConnectionClosed as closed:
                    raise await self._closed(closed) from closed
                await self._frame(ws, json.loads(raw))
        finally:
            try:
                if keeper is not None:
                    keeper.cancel()
                    # wait() neither raises the keeper's end nor swallows our own cancellation.
                    await asyncio.wait([keeper])
            finally:
                await ws.close()  # at once when the connection is already gone

    async def _closed(self, closed: ConnectionClosed) -> BaseException:
        """What a close by the server means: reconnect (when) or give up."""
        code = closed.rcvd.code if closed.rcvd else 1006
        reason = closed.rcvd.reason if closed.rcvd else ""
        if code == 1008 and "expired" in reason and self.client is not None:
            await self.client.refresh()  # late (a suspended process): reconnect with a new one
            return _Reconnect(reason, 0)
        if code == 1008 and "revoked" in reason:
            return StreamError("session_revoked", reason, code)
        if code in _FATAL_CLOSES or 4000 <= code < 5000:
            return StreamError("closed", reason or f"closed with {code}", code)
        # 1001 (a restart: another worker or instance answers at once), 1006, 1011, 1013...
        return _Reconnect(f"closed {code} {reason}", 0 if code == 1001 else None)

    async def _keep_authenticated(
        self, ws: ClientConnection, client: AsyncClient, token: str, expires_at: float
    ) -> None:
        """Send a refreshed token before the one on the socket (``token``, expiring at
        ``expires_at``) expires: the server closes a socket whose token expired."""
        while True:
            await asyncio.sleep(max(0.05, expires_at - client.refresh_margin_s - time.time()))
            fresh = await client.access_token()  # refreshes when due (or joins a refresh)
            tokens = client.tokens
            if fresh != token and tokens is not None and tokens.access_token == fresh:
                await self._send(ws, "auth", token=fresh)
                token, expires_at = fresh, tokens.expires_at

    async def _send(
        self,
        ws: ClientConnection,
        op: str,
        future: asyncio.Future[dict[str, Any]] | None = None,
        reason: str = "reconnect",
        **fields: Any,
    ) -> None:
        msg_id = next(self._ids)
        self._pending[msg_id] = _Op(op, fields, future, reason)
        await ws.send(json.dumps({"op": op, "id": msg_id, **fields}))

    async def _call(self, ws: ClientConnection, op: str, **fields: Any) -> None:
        """A caller's op: returns once acknowledged; an error reply raises StreamError."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        await self._send(ws, op, future, **fields)
        await future

    async def _frame(self, ws: ClientConnection, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "ack":
            await self._ack(frame)
        elif kind == "error":
            await self._refused(frame)
        elif kind in ("update", "snapshot"):
            await self._data(ws, frame)
        # pong and heartbeat: receiving them proved the socket alive, all they are for

    async def _ack(self, frame: dict[str, Any]) -> None:
        pending = self._pending.pop(frame["id"], None)
        if pending is None:
            return
        if pending.op == "subscribe":
            # The marks go out before any frame that follows the ack.
            since: dict[str, int] = pending.fields.get("since") or {}
            for entry in frame["channels"]:
                channel = entry["channel"]
                self._resyncing.discard(channel)
                if channel not in since:
                    continue
                if entry["recovered"]:
                    self._awaiting_snapshot.discard(channel)
                    await self._queue.put(Recovered(channel, since[channel]))
                else:
                    self._awaiting_snapshot.add(channel)
                    await self._queue.put(Resynced(channel, since[channel], pending.reason))
            if not self._acked:
                self._acked = True
                if self._ready is not None and not self._ready.done():
                    self._ready.set_result(None)
        if pending.future is not None and not pending.future.done():
            pending.future.set_result(frame)

    async def _refused(self, frame: dict[str, Any]) -> None:
        pending = self._pending.pop(frame.get("id"), None)  # type: ignore[arg-type]
        error = StreamError(frame["code"], frame["message"])
        if pending is None or error.code == "rate_limited":
            return  # not an answer to one op, or the close 1008 follows (and a reconnect)
        if pending.future is not None:
            if pending.op == "subscribe":
                self.channels = [c for c in self.channels if c not in pending.fields["channels"]]
            pending.future.set_exception(error)
        elif pending.op == "auth" and error.code == "invalid_token" and self.client is not None:
            # Revoked or expired before it arrived: a new token, a new connection.
            await self.client.refresh()
            raise _Reconnect("token refused", 0)
        else:
            raise error

    async def _data(self, ws: ClientConnection, frame: dict[str, Any]) -> None:
        channel, seq = frame["channel"], frame["seq"]
        if channel not in self.channels or channel in self._resyncing:
            return
        last = self._last.get(channel)
        if frame["type"] == "snapshot":
            if channel in self._awaiting_snapshot:
                self._awaiting_snapshot.discard(channel)
            elif last is not None:
                # Unasked for: the server's numbering started again (its Redis was emptied).
                await self._queue.put(Resynced(channel, last, "reset"))
            self._last[channel] = seq
            await self._queue.put(Snapshot(channel, seq, channel_data(channel, frame["data"])))
        elif last is None or channel in self._awaiting_snapshot or seq <= last:
            return  # before its snapshot, or a repeat
        elif seq == last + 1:
            self._last[channel] = seq
            await self._queue.put(
                Update(channel, seq, _present(channel_data(channel, frame["data"])))
            )
        else:
            # Missed: subscribe again from the last seq; the frames until its ack are stale.
            self._resyncing.add(channel)
            since = {channel: last}
            await self._send(ws, "subscribe", None, "gap", channels=[channel], since=since)


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark a background task's failure as seen: its socket's end is what is reported."""
    if not task.cancelled():
        task.exception()


def _present(data: Data | None) -> Data:
    if data is None:
        raise StreamError("invalid_frame", "an update without data")
    return data


def _seconds(value: str | None) -> float | None:
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None
