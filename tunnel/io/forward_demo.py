"""``tunnel demo`` stage 2: a forwarded TCP connection across a local Tox network.

Given a running local bootstrap node (with onion relay + announce store), start a server
node (``tunnel serve`` logic, shared secret, one rule) and a client node (``tunnel connect -L``
logic), let the client befriend the server through the onion, then carry one TCP connection
from the client's local port to a small service next to the server, printing each step.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import trio

from tunnel.config import BootstrapNode
from tunnel.forward.auth import AuthPolicy
from tunnel.forward.client_mux import ClientMux
from tunnel.forward.rules import RuleSet
from tunnel.forward.server_mux import ServerMux
from tunnel.forward.specs import LocalForward
from tunnel.io.forward_client import ForwardClient
from tunnel.io.forward_node import NodeTransport
from tunnel.io.forward_server import ForwardServer
from tunnel.io.node_runner import load_or_create_profile
from tunnel.node import Node
from tunnel.node_types import NodeOptions

LOCALHOST = "127.0.0.1"
DEMO_SECRET = b"tunnel demo secret"
GREETING = b"hello from the service behind the server\n"
MESSAGE = b"hello through the tunnel\n"


async def _service(stream: trio.SocketStream) -> None:
    """Greets, then echoes until EOF."""
    try:
        await stream.send_all(GREETING)
        while data := await stream.receive_some(65536):
            await stream.send_all(data)
        await stream.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()


async def run_forward_demo(
    workdir: Path,
    bootstrap: BootstrapNode,
    timeout_s: float,
    say: Callable[[str], None] = print,
) -> bool:
    """Run stage 2; True if the forwarded connection carried the data both ways."""
    start = trio.current_time()

    def stamp() -> str:
        return f"[{trio.current_time() - start:5.1f} s]"

    options = NodeOptions(
        udp_host=LOCALHOST,
        ipv6=False,
        port_start=0,
        port_end=0,
        hole_punching=False,
        bootstrap=(bootstrap,),
    )
    with trio.move_on_after(timeout_s):
        async with trio.open_nursery() as nursery:
            listeners = await trio.open_tcp_listeners(0, host=LOCALHOST)
            service_port = listeners[0].socket.getsockname()[1]
            nursery.start_soon(trio.serve_listeners, _service, listeners)
            say(f"{stamp()} local service (greets, then echoes) on {LOCALHOST}:{service_port}")

            server_node = Node(load_or_create_profile(workdir / "server.tox"), options)
            await nursery.start(server_node.run)
            rules = RuleSet.parse([f"{LOCALHOST}:{service_port}"])
            server = ForwardServer(
                ServerMux(os.urandom, rules=rules, auth=AuthPolicy.build(DEMO_SECRET, None)),
                NodeTransport(server_node),
            )
            await nursery.start(server.run)
            say(f"{stamp()} server node up: {server_node.tox_id}")
            say(f"          (tunnel serve: shared secret, only {LOCALHOST}:{service_port} allowed)")

            client_node = Node(load_or_create_profile(workdir / "client.tox"), options)
            await nursery.start(client_node.run)
            client = ForwardClient(
                ClientMux(os.urandom, open_timeout_s=timeout_s),
                NodeTransport(client_node),
                server_node.tox_id.to_bytes(),
                secret=DEMO_SECRET,
            )
            await nursery.start(client.run)
            forward = LocalForward(LOCALHOST, 0, LOCALHOST, service_port)
            local_port = await nursery.start(client.serve_tcp, forward)
            say(f"{stamp()} client node up: {client_node.tox_id}")
            say(
                f"          (tunnel connect -L {LOCALHOST}:{local_port}:"
                f"{LOCALHOST}:{service_port}; friend request sent with the secret)"
            )
            await client.wait_online(server_node.public_key)
            path = client_node.friend_path(server_node.public_key) or "?"
            say(f"{stamp()} server accepted the client; friend connection up over {path}")

            stream = await trio.open_tcp_stream(LOCALHOST, local_port)
            async with stream:
                greeting = await _read_exactly(stream, len(GREETING))
                await stream.send_all(MESSAGE)
                await stream.send_eof()
                echoed = bytearray()
                while data := await stream.receive_some(65536):
                    echoed += data
            ok = greeting == GREETING and bytes(echoed) == MESSAGE
            say(
                f"{stamp()} TCP connection to {LOCALHOST}:{local_port} got "
                f"{greeting.decode().strip()!r}, sent {MESSAGE.decode().strip()!r}, "
                f"got it back: {'yes' if ok else 'NO'}"
            )
            stats = server.mux.statistics()
            say(
                f"          server: {stats.get('tunnels_opened', 0)} tunnel opened, "
                f"{stats.get('bytes_sent', 0)} bytes sent, "
                f"{stats.get('bytes_received', 0)} received"
            )
            for node in (client_node, server_node):
                with trio.move_on_after(2):
                    await node.aclose()
            nursery.cancel_scope.cancel()
            return ok
    say(f"{stamp()} demo: no forwarded connection within {timeout_s:.0f} s")
    return False


async def _read_exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)
