"""Pipe: the driver's inbox of one tunnel, and its direct write to an idle local socket."""

from __future__ import annotations

from tunnel.io.forward_common import Pipe


class Socket:
    """A local socket that takes ``room`` more bytes, then reports full (BlockingIOError)."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        if self.room <= 0:
            raise BlockingIOError
        taken = data[: self.room]
        self.room -= len(taken)
        self.data += taken
        return len(taken)


def _drain(pipe: Pipe) -> bytes:
    return b"".join(item for item in pipe.inbox if isinstance(item, bytes))


def test_direct_write_only_while_the_writer_waits_and_never_past_queued_bytes() -> None:
    sock = Socket(room=10)
    pipe = Pipe(1, direct=sock.write)
    pipe.put(b"queued-while-busy")  # the writer is busy (not idle): queued
    assert sock.data == b""
    pipe.inbox.clear()
    pipe.writer_idle = True
    pipe.put(b"0123456789abcdef")  # 10 bytes go out directly, the rest is queued
    assert sock.data == b"0123456789"
    assert pipe.direct_written == 10
    sock.room = 1000  # room again, but the writer has not run: later data must queue
    pipe.put(b"ghij")
    pipe.put(b"klmn")
    assert sock.data == b"0123456789"
    assert bytes(sock.data) + _drain(pipe) == b"0123456789abcdefghijklmn"


def test_direct_write_takes_everything_when_the_socket_has_room() -> None:
    sock = Socket(room=1000)
    pipe = Pipe(1, direct=sock.write)
    pipe.writer_idle = True
    for part in (b"one ", b"two ", b"three"):
        pipe.put(part)
    assert sock.data == b"one two three"
    assert not pipe.inbox
    assert pipe.direct_written == 13  # the writer reports them as consumed when it runs
    assert pipe.wake.is_set()


def test_a_full_socket_queues_the_whole_item() -> None:
    sock = Socket(room=0)
    pipe = Pipe(1, direct=sock.write)
    pipe.writer_idle = True
    pipe.put(b"abc")
    assert sock.data == b""
    assert list(pipe.inbox) == [b"abc"]
    assert pipe.direct_written == 0
