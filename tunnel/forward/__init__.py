"""TCP/UDP port forwarding over Tox friend connections, wire-compatible with tuntox.

Modules (all sans-IO; the Trio glue that owns sockets belongs to the node / CLI commands):

* ``client_mux.ClientMux`` / ``server_mux.ServerMux``: the tunnel multiplexers (``mux`` holds
  the shared machinery and the theory of operation, ``state`` its records and tunables);
  ``events``: what they tell the driver;
* ``rules`` (what a server lets friends reach), ``auth`` (who may befriend a server),
  ``specs`` (``-L/-U/-W/-D`` strings), ``socks5`` (the ``-D`` handshake);
* ``loopback``: two muxes back to back with fake drivers, for tests and simulations.
* Wire format: ``tunnel.wire.tuntox`` (frames in custom lossless packet 0xA2, our UDP
  datagrams in custom lossy packet 0xE2).

Driver contract (one mux per role per node; ``now`` = ``trio.current_time()``)::

    friend connection up/down      -> mux.friend_online(pk, now) / mux.friend_offline(pk, now)
    custom packet 0xA2 or 0xE2     -> mux.receive_packet(pk, data, now)
    server: friend request         -> if mux.friend_request(pk, message): tox_friend_add_norequest
    client: new local connection   -> handle = mux.open_tunnel(pk, host, port, now[, udp=True])
    bytes read from local socket   -> mux.stream_data(handle, data, now)
                                      (read at most mux.send_capacity(handle) bytes; at 0 wait
                                      for SendSpaceAvailable(handle))
    local socket EOF               -> mux.stream_eof(handle, now)
    local socket error / closed    -> mux.close_tunnel(handle, error, now)
    delivered bytes written        -> mux.data_consumed(handle, n, now)   (grants credit)
    UDP datagram from local socket -> mux.send_datagram(handle, data, now)
    server: connect finished       -> mux.connect_result(handle, None | "error", now[, code])
    ping mode                      -> mux.ping(pk, now)
    timer                          -> sleep until mux.next_deadline(); mux.handle_timer(now)

After every call: drain ``mux.next_event()`` (ConnectRequest, TunnelOpened, TunnelOpenFailed,
TunnelData, PeerEof, TunnelClosed, DatagramReceived, SendSpaceAvailable, PongReceived,
PingTimedOut, PeerModeKnown), then for each friend in ``mux.friends_with_output()`` send
``mux.packets_to_send(pk, free_slots)`` with ``tox_friend_send_lossless_packet`` (all of them,
in order: the budget is how the transport's send queue applies back-pressure) and
``mux.lossy_packets_to_send(pk)`` with the lossy call (drops allowed).

Notes for drivers: ``-U`` keeps one UDP association (one ``open_tunnel(..., udp=True)``) per
local source address and ends it on ``TunnelClosed`` (idle timeout); ``-D`` runs
``socks5.Socks5Handshake`` before ``open_tunnel`` and answers with ``result()``. Opens made
while the server is offline wait (up to the open timeout) and are sent after it comes back;
re-adding the friend after a failed request is the friend layer's job. With plain tuntox
peers a local EOF must close the whole tunnel (TCP_FIN), so half-closed protocols only work
between our own peers. ``tunnel.testing.forward_driver.SyncDriver`` is a small synchronous
reference driver over a real toxcore ``ToxPeer`` (used by the interop tests).
"""
