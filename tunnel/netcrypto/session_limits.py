"""A net_crypto session's payload limits beyond toxcore's 1373 bytes, for two of our own
peers only: large lossy packets (the VPN, issue 9) and large lossless packets (issue 8,
:mod:`tunnel.netcrypto.large`), and the receive side's fragment reassembly.

Part of :class:`tunnel.netcrypto.session.Session` (a mixin: it keeps the session module to
its one job, the packet exchange; the state lives on the session).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from tunnel.crypto.databox import DataBox, data_packet_bytes
from tunnel.errors import BadPacket
from tunnel.netcrypto.large import LargeSend, Reassembly
from tunnel.netcrypto.session_types import (
    PACKET_BUFFER_SIZE,
    Established,
    NotConfirmed,
    State,
)
from tunnel.netcrypto.session_types import PACKET_NUMBER_MASK as _U32
from tunnel.wire.large_lossless import MAX_LARGE_LOSSLESS_BYTES, LargeFragment
from tunnel.wire.netcrypto import (
    MAX_CRYPTO_DATA_SIZE_BYTES,
    PACKET_ID_LOSSLESS_END,
    PACKET_ID_LOSSLESS_START,
)


class SessionLimits:
    """Payload limits and large packets of a :class:`~tunnel.netcrypto.session.Session`."""

    # the session's own state, used here
    state: State
    counters: Counter[str]
    recv_start: int
    _recv: dict[int, bytes]
    _box: DataBox | None

    if TYPE_CHECKING:

        def _handle_lossless(self, wire_number: int, payload: bytes, now: float) -> None: ...

    def _init_limits(self) -> None:
        self._receive_max = MAX_CRYPTO_DATA_SIZE_BYTES
        self._receive_packet_max = data_packet_bytes(MAX_CRYPTO_DATA_SIZE_BYTES)
        self._lossy_receive = 0  # set_lossy_limits
        self._large_receive = 0  # enable_large_receive
        self.max_lossy_payload = MAX_CRYPTO_DATA_SIZE_BYTES
        """Largest lossy ``[id][data]`` :meth:`send_lossy` takes (see :meth:`set_lossy_limits`)."""
        self.max_lossless_payload = MAX_CRYPTO_DATA_SIZE_BYTES
        """Largest lossless ``[id][data]`` :meth:`send_lossless` takes (the agreed limit, see
        :meth:`set_large_lossless`); :attr:`lossless_payload_now` is the size to build."""
        self.large: LargeSend | None = None
        self._reassembly: Reassembly | None = None

    def set_lossy_limits(self, *, receive_bytes: int, send_bytes: int) -> None:
        """Payload limits beyond toxcore's 1373 bytes, for two of our own peers only.

        ``receive_bytes``: the largest data packet payload we accept from the peer (announce it
        only after setting it); ``send_bytes``: the largest lossy payload :meth:`send_lossy`
        takes (only what the peer announced it accepts). Lossless packets, requests and
        everything toxcore peers see keep the 1373-byte limit.
        """
        self._lossy_receive = receive_bytes
        self.max_lossy_payload = max(MAX_CRYPTO_DATA_SIZE_BYTES, send_bytes)
        self._limits_changed()

    def enable_large_receive(self, payload_bytes: int) -> None:
        """Accept lossless packets up to ``payload_bytes`` from the peer, whole or in
        fragments (:mod:`tunnel.netcrypto.large`); set it before announcing it."""
        if not MAX_CRYPTO_DATA_SIZE_BYTES < payload_bytes <= MAX_LARGE_LOSSLESS_BYTES:
            raise ValueError(f"large lossless limit {payload_bytes} out of range")
        self._large_receive = payload_bytes
        if self._reassembly is None:
            self._reassembly = Reassembly()
        self._limits_changed()

    def set_large_lossless(self, payload_bytes: int) -> None:
        """Send lossless packets up to ``payload_bytes`` (what the peer announced it accepts,
        capped by ours): whole over a proven direct path, else as fragments. Nothing changes
        if the limit is the one already agreed."""
        if not MAX_CRYPTO_DATA_SIZE_BYTES < payload_bytes <= MAX_LARGE_LOSSLESS_BYTES:
            raise ValueError(f"large lossless limit {payload_bytes} out of range")
        if self.large is not None and self.large.limit == payload_bytes:
            return
        direct = self.large.direct if self.large is not None else False
        self.large = LargeSend(payload_bytes)
        self.large.direct = direct
        self.max_lossless_payload = max(self.max_lossless_payload, payload_bytes)
        self._limits_changed()

    @property
    def lossless_payload_now(self) -> int:
        """The size to build lossless packets up to now: the agreed large limit while the
        direct path is proven to carry it, else toxcore's 1373 bytes."""
        large = self.large
        return MAX_CRYPTO_DATA_SIZE_BYTES if large is None else large.payload_now

    def _limits_changed(self) -> None:
        self._receive_max = max(
            MAX_CRYPTO_DATA_SIZE_BYTES, self._lossy_receive, self._large_receive
        )
        self._receive_packet_max = data_packet_bytes(self._receive_max)
        state = self.state
        if isinstance(state, NotConfirmed | Established):
            self._box = self._make_box(state.data_key)

    def _make_box(self, key: bytes) -> DataBox:
        wanted = max(self._receive_max, self.max_lossy_payload, self.max_lossless_payload)
        box = self._box
        if box is not None and box.max_payload_bytes == wanted and box.key == key:
            return box
        return DataBox(key, wanted)

    def _handle_fragment(self, payload: bytes, now: float) -> None:
        reassembly = self._reassembly
        assert reassembly is not None
        try:
            fragment = LargeFragment.decode_untrusted(payload)
        except BadPacket:
            self.counters["large_fragment_malformed"] += 1
            return
        if fragment.total > self._receive_max:
            self.counters["large_fragment_too_large"] += 1
            return
        offset = (fragment.number - self.recv_start) & _U32
        number = self.recv_start + offset
        if offset >= PACKET_BUFFER_SIZE or number in self._recv:
            self.counters["large_fragment_stale"] += 1
            return
        whole = reassembly.add(
            number, fragment.total, fragment.offset, fragment.data, self.recv_start
        )
        if whole is None:
            return
        if not PACKET_ID_LOSSLESS_START <= whole[0] <= PACKET_ID_LOSSLESS_END:
            self.counters["large_fragment_invalid_id"] += 1
            return
        self.counters["large_reassembled"] += 1
        self._handle_lossless(fragment.number, whole, now)
