"""A faithful, sans-IO model of c-toxcore 0.2.18's net_crypto sending policy, for fairness tests.

Not a protocol implementation: the packets are unencrypted stand-ins of the same size as real
data packets, so a modelled toxcore flow can share a simulated bottleneck
(:class:`tunnel.testing.sim.SimNetwork`) with a real :class:`tunnel.netcrypto.core.NetCrypto`
flow. What is modelled is everything that decides *when* toxcore sends (net_crypto.c
``send_crypto_packets``, ``handle_request_packet``, ``send_requested_packets``,
``generate_request_packet``, ``write_cryptpacket``; tox-protocol.md 6.7-6.8):

* time is toxcore's integer milliseconds; received packets are processed only when the peer
  iterates (``tox_iterate`` polls the socket first), and a peer iterates every
  ``tox_iteration_interval`` ms: ``min(50, peak request interval, 1000 / total_send_rate + 1)``
  where only rates above 6 pkt/s count;
* every 50 ms: receive rate; a ring of 12 send-queue sizes (the queue is every packet from
  ``buffer_start`` to ``buffer_end``, acknowledged or not) and rings of 24 sent / resent counts;
  ``min_speed`` from 12 sent-counts lagged by ``round(rtt / 50)`` steps minus the queue growth;
  rate ``1.2 * min_speed``, or ``0.9 * min_speed`` within 1000 ms of a congestion event, or
  ``min_speed * 2 / (queue / min_speed)`` when the queue holds over 2 s of it (and 64 packets);
  ``rate_requested = max(rate, 1.2 * (sent + resent) / 0.6 s)``, never below 4 pkt/s;
* token refills (``packets_left`` capped at ``4 * new + 64``, ``packets_left_requested`` set, not
  accumulated, and never below ``packets_left``) when ``1000 / rate`` ms have passed;
* ``send_requested_packets(packets_left_requested)``; a congestion event whenever the packets it
  resent are not fewer than ``packets_left`` (so, for a bulk sender that spent its tokens, on
  every iteration that has requested tokens left over);
* the request packet marks a listed packet for resend when ``sent_time + rtt < now`` (``rtt`` is
  the minimum ever measured, starting at 1000 ms) and frees the packets it skips; the receiver
  sends one at least every 1000 ms and, above 4 pkt/s received, every
  ``clamp(min(12.5 / ((queue + 1) / (rate + 1)), 4 / rate * 1000 + 50), 50, 1000)`` ms;
* the application is a bulk sender: after each iteration it writes congestion-controlled
  lossless packets until ``packets_left`` is 0 (the SENDQ error), each sent at once.

Wire stand-ins: ``b"D" + buffer_start:4 + number:4`` padded to ``packet_bytes`` for data,
``b"R" + buffer_start:4 + number:4 + request body`` for request packets.
"""

from __future__ import annotations

from tunnel.wire.ip_port import Addr

PACKET_COUNTER_AVERAGE_INTERVAL_MS = 50
CONGESTION_QUEUE_ARRAY_SIZE = 12
CONGESTION_LAST_SENT_ARRAY_SIZE = 24
CONGESTION_EVENT_TIMEOUT_MS = 1000
SEND_QUEUE_RATIO = 2.0
CRYPTO_PACKET_MIN_RATE = 4.0
CRYPTO_MIN_QUEUE_LENGTH = 64
CRYPTO_SEND_PACKET_INTERVAL_MS = 1000
DEFAULT_PING_CONNECTION_MS = 1000
REQUEST_PACKETS_COMPARE_CONSTANT = 0.125 * 100.0
MIN_RUN_INTERVAL_MS = 50
CRYPTO_PACKET_BUFFER_SIZE = 32768
DATA_PACKET_BYTES = 1400
_U32 = 0xFFFFFFFF


def _ms(now: float) -> int:
    return int(now * 1000.0)


def generate_request(recv: dict[int, bool], start: int, end: int) -> bytes:
    """toxcore's request body for holes in ``[start, end)`` (``recv`` holds received numbers)."""
    out = bytearray()
    n = 1
    for i in range(start, end):
        if i not in recv:
            out.append(n)
            n = 0
        elif n == 255:
            out.append(0)
            n = 0
        n += 1
        if len(out) >= 1372:
            break
    return bytes(out)


class ToxcoreModelSender:
    """The sending side of one toxcore connection with a bulk application (a DatagramCore)."""

    def __init__(self, peer: Addr, now: float, *, packet_bytes: int = DATA_PACKET_BYTES) -> None:
        self.peer = peer
        self.packet_bytes = packet_bytes
        self.buffer_start = 0
        self.buffer_end = 0
        self.send_array: dict[int, int] = {}  # number -> sent_time ms (0: to resend)
        self.rtt_time = DEFAULT_PING_CONNECTION_MS
        self.packet_send_rate = CRYPTO_PACKET_MIN_RATE
        self.packet_send_rate_requested = CRYPTO_PACKET_MIN_RATE
        self.packets_left = CRYPTO_MIN_QUEUE_LENGTH
        self.packets_left_requested = 0
        self.last_packets_left_set = 0
        self.last_packets_left_rem = 0.0
        self.last_packets_left_requested_set = 0
        self.last_packets_left_requested_rem = 0.0
        self.last_sendqueue_size = [0] * CONGESTION_QUEUE_ARRAY_SIZE
        self.last_num_packets_sent = [0] * CONGESTION_LAST_SENT_ARRAY_SIZE
        self.last_num_packets_resent = [0] * CONGESTION_LAST_SENT_ARRAY_SIZE
        self.last_sendqueue_counter = 0
        self.packet_counter_set = _ms(now)
        self.packets_sent = 0
        self.packets_resent = 0
        self.last_congestion_event = 0
        self.congestion_events = 0
        self.total_sent = 0
        self.total_resent = 0
        self._inbox: list[bytes] = []
        self._out: list[tuple[Addr, bytes]] = []
        self._next_iter = now
        self.running = True

    # ------------------------------------------------------------------ DatagramCore

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        """Queued until the next iteration (toxcore polls its socket in ``tox_iterate``)."""
        self._inbox.append(data)

    def datagrams_to_send(self) -> list[tuple[Addr, bytes]]:
        out, self._out = self._out, []
        return out

    def next_deadline(self) -> float | None:
        return self._next_iter if self.running else None

    def handle_timer(self, now: float) -> None:
        t = _ms(now)
        for data in self._inbox:
            self._handle_packet(data, t)
        self._inbox.clear()
        self._send_crypto_packets(t)
        if self.running:
            self._app_write(t)
        interval = MIN_RUN_INTERVAL_MS
        if self.packet_send_rate > CRYPTO_PACKET_MIN_RATE * 1.5:
            interval = min(interval, int(1000.0 / self.packet_send_rate) + 1)
        self._next_iter = now + interval / 1000.0

    # ------------------------------------------------------------------ model

    def _emit(self, number: int) -> None:
        head = b"D" + bytes(4) + (number & _U32).to_bytes(4, "big")
        self._out.append((self.peer, head + bytes(self.packet_bytes - len(head))))

    def _app_write(self, t: int) -> None:
        while self.packets_left > 0 and self.buffer_end - self.buffer_start < (
            CRYPTO_PACKET_BUFFER_SIZE - 1
        ):
            number = self.buffer_end
            self.buffer_end += 1
            self.send_array[number] = t
            self._emit(number)
            self.packets_left -= 1
            self.packets_left_requested -= 1
            self.packets_sent += 1
            self.total_sent += 1

    def _handle_packet(self, data: bytes, t: int) -> None:
        if len(data) < 9 or data[:1] != b"R":
            return
        wire_start = int.from_bytes(data[1:5], "big")
        rtt_calc_time = 0
        start = self.buffer_start + ((wire_start - self.buffer_start) & _U32)
        if start != self.buffer_start:
            if start > self.buffer_end:
                return
            rtt_calc_time = self.send_array.get(self.buffer_start, 0)
            for n in range(self.buffer_start, start):
                self.send_array.pop(n, None)
            self.buffer_start = start
        body = data[9:]
        n = 1
        pos = 0
        latest = 0
        for i in range(self.buffer_start, self.buffer_end):
            if pos >= len(body):
                break
            if n == body[pos]:
                sent = self.send_array.get(i)
                if sent is not None and sent + self.rtt_time < t:
                    self.send_array[i] = 0
                pos += 1
                n = 0
            else:
                sent = self.send_array.pop(i, None)
                if sent is not None:
                    latest = max(latest, sent)
            if n == 255:
                n = 1
                if body[pos] != 0:
                    return
                pos += 1
            else:
                n += 1
        rtt_calc_time = max(rtt_calc_time, latest)
        if rtt_calc_time != 0:
            self.rtt_time = min(self.rtt_time, t - rtt_calc_time)

    def _send_requested(self, max_num: int, t: int) -> int:
        if max_num == 0:
            return -1
        sent = 0
        for i in range(self.buffer_start, self.buffer_end):
            if self.send_array.get(i) != 0:
                continue
            self.send_array[i] = t
            self._emit(i)
            sent += 1
            self.total_resent += 1
            if sent >= max_num:
                break
        return sent

    def _send_crypto_packets(self, t: int) -> None:
        if PACKET_COUNTER_AVERAGE_INTERVAL_MS + self.packet_counter_set < t:
            self.packet_counter_set = t
            packets_sent, self.packets_sent = self.packets_sent, 0
            packets_resent, self.packets_resent = self.packets_resent, 0
            pos = self.last_sendqueue_counter % CONGESTION_QUEUE_ARRAY_SIZE
            npackets = self.buffer_end - self.buffer_start
            self.last_sendqueue_size[pos] = npackets
            queue_sum = npackets - self.last_sendqueue_size[(pos + 1) % CONGESTION_QUEUE_ARRAY_SIZE]
            n_p_pos = self.last_sendqueue_counter % CONGESTION_LAST_SENT_ARRAY_SIZE
            self.last_num_packets_sent[n_p_pos] = packets_sent
            self.last_num_packets_resent[n_p_pos] = packets_resent
            self.last_sendqueue_counter = (self.last_sendqueue_counter + 1) % (
                CONGESTION_QUEUE_ARRAY_SIZE * CONGESTION_LAST_SENT_ARRAY_SIZE
            )
            delay = int(self.rtt_time / PACKET_COUNTER_AVERAGE_INTERVAL_MS + 0.5)
            rem_array = CONGESTION_LAST_SENT_ARRAY_SIZE - CONGESTION_QUEUE_ARRAY_SIZE
            delay = min(delay, rem_array)
            total_sent = 0
            total_resent = 0
            for j in range(CONGESTION_QUEUE_ARRAY_SIZE):
                ind = (j + (rem_array - delay) + n_p_pos) % CONGESTION_LAST_SENT_ARRAY_SIZE
                total_sent += self.last_num_packets_sent[ind]
                total_resent += self.last_num_packets_resent[ind]
            if queue_sum > 0:
                total_sent -= queue_sum
            elif total_resent > -queue_sum:
                total_resent = -queue_sum
            window_s = CONGESTION_QUEUE_ARRAY_SIZE * PACKET_COUNTER_AVERAGE_INTERVAL_MS / 1000.0
            min_speed = max(total_sent / window_s, CRYPTO_PACKET_MIN_RATE)
            min_speed_request = (total_sent + total_resent) / window_s
            ratio = npackets / min_speed
            if ratio > SEND_QUEUE_RATIO and npackets > CRYPTO_MIN_QUEUE_LENGTH:
                self.packet_send_rate = min_speed / (ratio / SEND_QUEUE_RATIO)
            elif self.last_congestion_event + CONGESTION_EVENT_TIMEOUT_MS < t:
                self.packet_send_rate = min_speed * 1.2
            else:
                self.packet_send_rate = min_speed * 0.9
            self.packet_send_rate_requested = min_speed_request * 1.2
            self.packet_send_rate = max(self.packet_send_rate, CRYPTO_PACKET_MIN_RATE)
            self.packet_send_rate_requested = max(
                self.packet_send_rate_requested, self.packet_send_rate
            )
        if self.last_packets_left_set == 0 or self.last_packets_left_requested_set == 0:
            self.last_packets_left_set = self.last_packets_left_requested_set = t
            self.packets_left = self.packets_left_requested = CRYPTO_MIN_QUEUE_LENGTH
        else:
            if int(1000.0 / self.packet_send_rate + 0.5) + self.last_packets_left_set <= t:
                n_packets = self.packet_send_rate * (t - self.last_packets_left_set) / 1000.0
                n_packets += self.last_packets_left_rem
                num = int(n_packets)
                self.last_packets_left_rem = n_packets - num
                if self.packets_left > num * 4 + CRYPTO_MIN_QUEUE_LENGTH:
                    self.packets_left = num * 4 + CRYPTO_MIN_QUEUE_LENGTH
                else:
                    self.packets_left += num
                self.last_packets_left_set = t
            rate_req = self.packet_send_rate_requested
            if int(1000.0 / rate_req + 0.5) + self.last_packets_left_requested_set <= t:
                n_packets = rate_req * (t - self.last_packets_left_requested_set) / 1000.0
                n_packets += self.last_packets_left_requested_rem
                num = int(n_packets)
                self.last_packets_left_requested_rem = n_packets - num
                self.packets_left_requested = num
                self.last_packets_left_requested_set = t
            self.packets_left_requested = max(self.packets_left_requested, self.packets_left)
        ret = self._send_requested(self.packets_left_requested, t)
        if ret != -1:
            self.packets_left_requested -= ret
            self.packets_resent += ret
            if ret < self.packets_left:
                self.packets_left -= ret
            else:
                self.last_congestion_event = t
                self.congestion_events += 1
                self.packets_left = 0


class ToxcoreModelReceiver:
    """The receiving side: in-order delivery count and toxcore's request-packet timing."""

    def __init__(self, peer: Addr, now: float) -> None:
        self.peer = peer
        self.recv_start = 0
        self.recv_end = 0
        self._recv: dict[int, bool] = {}
        self.delivered = 0
        self.packet_counter = 0
        self.packet_counter_set = _ms(now)
        self.packet_recv_rate = 0.0
        self.last_request_sent = 0
        self._inbox: list[bytes] = []
        self._out: list[tuple[Addr, bytes]] = []
        self._next_iter = now
        self._interval_ms = MIN_RUN_INTERVAL_MS

    def receive(self, data: bytes, addr: Addr, now: float) -> None:
        self._inbox.append(data)

    def datagrams_to_send(self) -> list[tuple[Addr, bytes]]:
        out, self._out = self._out, []
        return out

    def next_deadline(self) -> float | None:
        return self._next_iter

    def handle_timer(self, now: float) -> None:
        t = _ms(now)
        for data in self._inbox:
            self._handle_packet(data)
        self._inbox.clear()
        interval = float(MIN_RUN_INTERVAL_MS)
        if CRYPTO_SEND_PACKET_INTERVAL_MS + self.last_request_sent < t:
            self._send_request(t)
        if self.packet_recv_rate > CRYPTO_PACKET_MIN_RATE:
            queue = self.recv_end - self.recv_start
            req = REQUEST_PACKETS_COMPARE_CONSTANT / ((queue + 1.0) / (self.packet_recv_rate + 1.0))
            req2 = (
                CRYPTO_PACKET_MIN_RATE / self.packet_recv_rate
            ) * CRYPTO_SEND_PACKET_INTERVAL_MS + PACKET_COUNTER_AVERAGE_INTERVAL_MS
            req = min(max(min(req, req2), PACKET_COUNTER_AVERAGE_INTERVAL_MS), 1000.0)
            if t - self.last_request_sent > int(req):
                self._send_request(t)
            interval = min(interval, req)
        if PACKET_COUNTER_AVERAGE_INTERVAL_MS + self.packet_counter_set < t:
            dt = t - self.packet_counter_set
            self.packet_recv_rate = self.packet_counter / (dt / 1000.0)
            self.packet_counter = 0
            self.packet_counter_set = t
        self._next_iter = now + int(interval) / 1000.0

    def _send_request(self, t: int) -> None:
        body = generate_request(self._recv, self.recv_start, self.recv_end)
        head = b"R" + (self.recv_start & _U32).to_bytes(4, "big") + bytes(4)
        self._out.append((self.peer, head + body))
        self.last_request_sent = t

    def _handle_packet(self, data: bytes) -> None:
        if len(data) < 9 or data[:1] != b"D":
            return
        wire = int.from_bytes(data[5:9], "big")
        offset = (wire - self.recv_start) & _U32
        if offset >= CRYPTO_PACKET_BUFFER_SIZE:
            return
        number = self.recv_start + offset
        if number in self._recv:
            return
        self._recv[number] = True
        self.recv_end = max(self.recv_end, number + 1)
        while self.recv_start in self._recv:
            del self._recv[self.recv_start]
            self.recv_start += 1
            self.delivered += 1
        self.packet_counter += 1
