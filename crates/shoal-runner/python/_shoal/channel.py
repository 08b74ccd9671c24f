"""The controller's Unix socket: length-prefixed JSON frames (``docs/protocol.md``)."""

from __future__ import annotations

import collections
import json
import os
import queue
import select
import socket
import struct
import threading
import typing

PROTOCOL_VERSION = 9
MAX_FRAME_LEN = 64 << 20
HEADER = struct.Struct(">I")


# One encoder for every frame: json.dumps would build one per call for these separators.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def frame(msg: dict) -> bytes:
    """``msg`` as one frame."""
    data = _ENCODER.encode(msg).encode()
    return HEADER.pack(len(data)) + data


def hello(role: str, worker: dict | None) -> dict:
    """The first message on every connection."""
    return {
        "type": "hello",
        "protocol": PROTOCOL_VERSION,
        "role": role,
        "worker": worker["workerid"] if worker else None,
        "pid": os.getpid(),
    }


class Channel:
    """Length-prefixed JSON frames over the controller's Unix socket."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self._buf = bytearray()
        # Messages that arrived while waiting for a particular reply, for the test loop.
        self._deferred: collections.deque = collections.deque()
        # Once a thread reads the socket (see read_in_thread): what it left for recv_reply.
        self._replies: queue.SimpleQueue | None = None
        self._send_lock = threading.Lock()

    def send(self, msg: dict) -> None:
        data = frame(msg)
        with self._send_lock:
            self.sock.sendall(data)

    def _frame(self):
        if len(self._buf) < 4:
            return None
        (size,) = HEADER.unpack_from(self._buf)
        if size > MAX_FRAME_LEN:
            raise RuntimeError(f"shoal: frame of {size} bytes from the controller is too large")
        if len(self._buf) < 4 + size:
            return None
        data = bytes(self._buf[4 : 4 + size])
        del self._buf[: 4 + size]
        return json.loads(data)

    def ready(self) -> bool:
        """Whether a message can be read without blocking."""
        if self._deferred or self.frame_ready():
            return True
        return bool(select.select([self.sock], [], [], 0)[0])

    def frame_ready(self) -> bool:
        """Whether a whole frame is already buffered."""
        return len(self._buf) >= 4 and len(self._buf) >= 4 + HEADER.unpack_from(self._buf)[0]

    def recv(self) -> dict:
        if self._deferred:
            return self._deferred.popleft()
        return self._recv_frame()

    def recv_reply(self, *kinds: str) -> dict:
        """The next message of one of ``kinds``; others wait for :meth:`recv`."""
        while True:
            msg = self._recv_frame() if self._replies is None else self._replies.get()
            if isinstance(msg, BaseException):
                read_failed(msg)
            if msg["type"] in kinds:
                return msg
            self._deferred.append(msg)

    def read_in_thread(self, take) -> None:
        """From now on a thread reads every message and gives it to ``take``; what ``take``
        declines (returns False for) waits for :meth:`recv_reply`. A failure to read, the
        controller's end included, reaches whoever waits next, through ``take(exc)`` and
        :meth:`recv_reply`, rather than ending the process mid-test."""
        self._replies = queue.SimpleQueue()
        while self._deferred:
            msg = self._deferred.popleft()
            if not take(msg):
                self._replies.put(msg)

        def read() -> None:
            try:
                while True:
                    msg = self._read_frame()
                    if not take(msg):
                        self._replies.put(msg)
            except BaseException as exc:
                take(exc)
                self._replies.put(exc)

        threading.Thread(target=read, name="shoal-channel", daemon=True).start()

    def _recv_frame(self) -> dict:
        try:
            return self._read_frame()
        except EOFError as exc:
            read_failed(exc)

    def _read_frame(self) -> dict:
        """The next message; EOFError once the controller is gone."""
        while True:
            msg = self._frame()
            if msg is not None:
                return msg
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError
            self._buf += chunk


def read_failed(exc: BaseException) -> typing.NoReturn:
    """Reading from the controller failed: a controller that is gone ends the process, as there
    is nothing left to do for it; anything else is raised."""
    if isinstance(exc, EOFError):
        os._exit(3)
    raise exc
