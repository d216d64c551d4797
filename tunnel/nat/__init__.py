"""Issue 11: direct UDP paths between friends behind NATs (sans-IO).

:mod:`tunnel.nat.wire` has the extension's messages (lossless custom packet ``0xB8`` over the
friend connection, ``0xB8`` UDP probes); :mod:`tunnel.nat.probe` the per-friend direct-path
state machine (candidate exchange, simultaneous probing, port prediction, keepalive, path
death, rebinding, retries) and :func:`~tunnel.nat.probe.classify_nat`;
:mod:`tunnel.nat.manager` one core per negotiated friend of a Node (Hello on lossless id
``0x9E``, which toxcore drops silently) and our candidates. The Node wiring is in
:mod:`tunnel.io.node_glue`.
"""
