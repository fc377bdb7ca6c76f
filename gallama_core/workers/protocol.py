"""The front ⇄ engine-worker protocol (version 1): msgpack maps over one stream socket.

Transport: a connected ``AF_UNIX`` stream socket (a ``socketpair`` made by the front; the worker inherits one
end as a file descriptor), so no path and no TCP port exists that another local user could reach. Messages
are msgpack maps, written back to back (msgpack is self-delimiting); every map has a type ``t``.

Worker → front:

====================  ==========================================================================
``hello``             ``v`` (protocol version), ``pid``; first message, before loading
``progress``          ``message``, ``fraction`` (or nil) while loading
``ready``             ``meta``: what the front's :class:`~gallama_core.workers.client.RemoteBackend`
                      needs (``backend_name``, ``model_name``, ``max_seq_len``, ``kind``,
                      ``chat_template`` {source, bos_token, eos_token, engine_adds_bos} or nil,
                      ``info``, ``attributes`` (the backend's plain public attributes),
                      ``methods`` (remote-callable method names))
``load_failed``       ``error`` (the worker's own error text); the worker exits after it
``chunks``            ``jobs``: [[job id, [chunk, ...]], ...]: every chunk produced since the last
                      message, for every job (several tokens per message when the front falls behind)
``end``               ``id``: the job finished (its last chunk was sent before)
``error``             ``id``, ``error`` {status, type, message, param, code}: the job failed
``result``            ``id``, ``value``: a remote method call returned
``pong``              ``id``, ``value``: answer to ``ping``; ``value`` is the backend's
                      ``engine_stats()`` (a map of counters) or nil
====================  ==========================================================================

Front → worker:

====================  ==========================================================================
``load``              ``backend`` (name), ``settings`` (the model entry), ``log_level``
``generate``          ``id``, ``request`` (:class:`~gallama_core.models.backend.GenerationRequest` fields)
``cancel``            ``id``: stop a job and free its slot (the client went away)
``call``              ``id``, ``method``, ``args``: call a remote method (``embed``, ``rerank``...)
``ping``              ``id``: health check
``shutdown``          close the backend and exit 0
====================  ==========================================================================

A chunk is a map of the non-empty fields of a :class:`~gallama_core.models.backend.GenerationChunk`
(``text``, ``finish_reason``, ``prompt_tokens``, ``completion_tokens``, any field added later).
A worker that sees the socket close (the front died) exits at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
from typing import Any, AsyncIterator

import msgpack

from ..errors import GallamaError, InvalidRequestError, ServiceUnavailableError
from ..models.backend import GenerationChunk, GenerationRequest, SamplingParams

PROTOCOL_VERSION = 1
_NDARRAY = 1  # msgpack extension type: a numpy array (dtype, shape, raw bytes)


def _default(obj: Any) -> Any:
    if type(obj).__module__ == "numpy":
        if hasattr(obj, "tobytes") and hasattr(obj, "shape"):
            return msgpack.ExtType(_NDARRAY, msgpack.packb([obj.dtype.str, list(obj.shape), obj.tobytes()]))
        if hasattr(obj, "item"):  # numpy scalar
            return obj.item()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(f"cannot send a {type(obj).__name__} to or from an engine worker")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _NDARRAY:
        import numpy  # only when a worker sent an array (embeddings): numpy is in that plugin's environment

        dtype, shape, raw = msgpack.unpackb(data)
        return numpy.frombuffer(raw, dtype=dtype).reshape(shape)
    return msgpack.ExtType(code, data)


def pack(message: dict[str, Any]) -> bytes:
    return msgpack.packb(message, default=_default, use_bin_type=True)


def new_unpacker() -> msgpack.Unpacker:
    """A streaming decoder of packed messages (feed it bytes, iterate the messages): for any transport that
    carries the protocol's bytes, the socket here or another launcher's (e.g. Ray objects)."""
    return msgpack.Unpacker(ext_hook=_ext_hook, raw=False, max_buffer_size=256 << 20)


def sendable(value: Any) -> bool:
    """Whether ``value`` can cross the boundary as it is (used to pick a backend's plain attributes)."""
    try:
        msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


class SocketWriter:
    """Whole messages onto a stream socket, in order, from any thread: the engine thread writes a step's message
    itself (no event-loop wake-up). What the socket cannot take at once waits in a buffer that the event loop
    sends when the socket is writable. Writes go through a duplicate of the socket's descriptor, so the event
    loop may watch it while its transport reads the original."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop):
        self._sock = sock.dup()
        self._sock.setblocking(False)
        self._loop = loop
        self._lock = threading.Lock()
        self._pending = bytearray()
        self._watching = False
        self._closed = False
        self._drained: list[asyncio.Future] = []

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._closed:
                return
            if not self._pending:
                try:
                    sent = self._sock.send(data)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:  # the peer is gone: the reader side sees it and ends the channel
                    self._closed = True
                    return
                if sent == len(data):
                    return
                data = data[sent:]
            self._pending += data
            if not self._watching:
                self._watching = True
                try:
                    self._loop.call_soon_threadsafe(self._watch)
                except RuntimeError:  # the loop is closed: nothing will read this any more
                    self._closed = True

    def _watch(self) -> None:  # event loop
        if not self._closed:
            self._loop.add_writer(self._sock.fileno(), self._flush)

    def _flush(self) -> None:  # event loop, when the socket is writable
        with self._lock:
            try:
                sent = self._sock.send(self._pending)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._closed = True
                sent = len(self._pending)
            del self._pending[:sent]
            if self._pending:
                return
            self._watching = False
            self._loop.remove_writer(self._sock.fileno())
            waiters, self._drained = self._drained, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def drain(self) -> None:
        """Until everything written so far has reached the socket."""
        with self._lock:
            if not self._pending or self._closed:
                return
            waiter = self._loop.create_future()
            self._drained.append(waiter)
        await waiter

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._watching:
                self._loop.remove_writer(self._sock.fileno())
            self._sock.close()
            waiters, self._drained = self._drained, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class Channel:
    """Messages over a connected stream socket: ``send`` from any coroutine, ``send_packed`` from any thread
    (bytes of :func:`pack`), ``async for`` to receive."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, out: SocketWriter):
        self._reader = reader
        self._writer = writer  # reads only: every write goes through `out`
        self._out = out
        self._unpacker = new_unpacker()

    @classmethod
    async def open(cls, sock: socket.socket) -> "Channel":
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 20)
        return cls(reader, writer, SocketWriter(sock, asyncio.get_running_loop()))

    def send_nowait(self, message: dict[str, Any]) -> None:
        self._out.write(pack(message))

    def send_packed(self, data: bytes) -> None:
        """Any thread: messages already packed (one or several, back to back)."""
        self._out.write(data)

    async def send(self, message: dict[str, Any]) -> None:
        self.send_nowait(message)
        await self.drain()

    async def drain(self) -> None:
        await self._out.drain()

    @property
    def closed(self) -> bool:
        return self._out.closed or self._writer.is_closing()

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            try:
                data = await self._reader.read(1 << 16)
            except (ConnectionError, OSError):
                return
            if not data:
                return
            self._unpacker.feed(data)
            for message in self._unpacker:
                yield message

    def close(self) -> None:
        self._out.close()
        self._writer.close()


# ------------------------------------------------------------------------------------- wire <-> objects


def request_to_wire(request: GenerationRequest) -> dict[str, Any]:
    """Its fields as they are: the message is packed at once, so nothing needs ``dataclasses.asdict``'s deep
    copy (the front's profile showed it on every request)."""
    return {**vars(request), "sampling": dict(vars(request.sampling))}


def request_from_wire(data: dict[str, Any]) -> GenerationRequest:
    known = {f.name for f in dataclasses.fields(GenerationRequest)}
    fields = {k: v for k, v in data.items() if k in known}
    fields["sampling"] = SamplingParams(**{k: v for k, v in (fields.get("sampling") or {}).items()
                                           if k in {f.name for f in dataclasses.fields(SamplingParams)}})
    return GenerationRequest(**fields)


_CHUNK_DEFAULTS = {f.name: f.default for f in dataclasses.fields(GenerationChunk)}


def chunk_to_wire(chunk: GenerationChunk) -> dict[str, Any]:
    return {k: v for k, v in vars(chunk).items() if v is not None and v != "" and v != _CHUNK_DEFAULTS.get(k, ...)}


def chunk_from_wire(data: dict[str, Any]) -> GenerationChunk:
    return GenerationChunk(**{k: v for k, v in data.items() if k in _CHUNK_DEFAULTS})


def merge_wire_chunks(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive plain chunks of one job as one (text and list fields joined): the front then does the
    work of one chunk, not of every token, when it falls behind. A chunk carrying a finish reason or token
    counts stays last of its group."""
    out: list[dict[str, Any]] = []
    for chunk in chunks:
        last = out[-1] if out else None
        if last is not None and not ({"finish_reason", "prompt_tokens", "completion_tokens"} & last.keys()):
            merged = dict(last)
            for key, value in chunk.items():
                if key == "text":
                    merged["text"] = merged.get("text", "") + value
                elif isinstance(value, list) and isinstance(merged.get(key), list):
                    merged[key] = merged[key] + value
                else:
                    merged[key] = value
            out[-1] = merged
        else:
            out.append(dict(chunk))
    return out


def error_to_wire(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, GallamaError):
        return {"status": exc.status_code, "type": exc.error_type, "message": exc.message, "param": exc.param,
                "code": exc.code}
    return {"status": 500, "type": "server_error", "message": f"{type(exc).__name__}: {exc}", "param": None,
            "code": None}


def error_from_wire(data: dict[str, Any]) -> GallamaError:
    """The error as the worker raised it: same status, type, param and code (and class for 400 and 503, so that
    ``except InvalidRequestError`` in feature code works as it did in process)."""
    status = int(data.get("status") or 500)
    cls = {400: InvalidRequestError, 503: ServiceUnavailableError}.get(status, GallamaError)
    return cls(data.get("message") or "engine worker error", param=data.get("param"), code=data.get("code"),
               status_code=status, error_type=data.get("type") or "server_error")
