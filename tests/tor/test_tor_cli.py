"""``--tor`` / ``tor:`` in the commands (issue 10): ``tunnel run/serve/connect`` accept
``--tor [HOST:PORT]`` and ``--tor-control``, the ``tor:`` section is part of the node schema
(``check-config`` names the bad key), a bad value or an unusable Tor gives one clear line and
exit status 1 at once; on the lab, ``tunnel run``'s node starts in Tor mode."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio
import yaml

from tunnel.cli import main
from tunnel.commands import run as run_command
from tunnel.config import load_node_config
from tunnel.io.node_runner import tor_config
from tunnel.node import Node
from tunnel.node_types import NodeOptions
from tunnel.profile import Profile
from tunnel.testing.ports import PortPool
from tunnel.testing.rng import SeededRng
from tunnel.testing.tor_node_harness import lab_tor_config
from tunnel.testing.torlab import TorLab
from tunnel.tor.config import TorConfig
from tunnel.tor.onion_key import OnionKey

CLOSED_PORT_ERROR_BOUND_S = 5.0
"""A closed SOCKS port is reported at once (SOCKS_PROBE_TIMEOUT_S = 3 s is the worst case)."""
FRIEND_ID = "AA" * 31 + "11"


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, float]:
    t0 = time.monotonic()
    status = main(argv)
    elapsed = time.monotonic() - t0
    _out, err = capsys.readouterr()
    return status, err.strip(), elapsed


def _closed_port(tor_ports: PortPool) -> int:
    return tor_ports.allocate_one()  # free: nothing listens there


def test_serve_with_tor_closed_is_one_clear_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tor_ports: PortPool
) -> None:
    port = _closed_port(tor_ports)
    status, err, elapsed = _run(
        capsys,
        [
            "serve",
            "--tor",
            f"127.0.0.1:{port}",
            "--profile",
            str(tmp_path / "s.tox"),
            "--status-socket",
            str(tmp_path / "s.sock"),
            "-q",
        ],
    )
    assert status == 1
    assert err == f"tunnel serve: error: Tor: Tor SOCKS port 127.0.0.1:{port} closed"
    assert elapsed < CLOSED_PORT_ERROR_BOUND_S


def test_connect_bad_tor_values(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tor_ports: PortPool
) -> None:
    server = str(Profile.generate(SeededRng("tor-cli")).tox_id)
    base = ["connect", server, "-L", "48990:127.0.0.1:22", "--profile", str(tmp_path / "c.tox")]
    status, err, _ = _run(capsys, [*base, "--tor", "nonsense"])
    assert (status, err) == (1, "tunnel connect: error: --tor: 'nonsense' is not host:port")
    status, err, _ = _run(capsys, [*base, "--tor", "--tor-control", "127.0.0.1:99999"])
    assert status == 1
    assert err.startswith("tunnel connect: error: --tor-control: ")
    status, err, _ = _run(capsys, [*base, "--tor-control", "127.0.0.1:9051"])
    assert (status, err) == (
        1,
        "tunnel connect: error: --tor-control: needs --tor (or a tor: section in the config)",
    )
    # the usual ports: Tor's control port closed is named (nothing of ours listens on 9050)
    port = _closed_port(tor_ports)
    status, err, elapsed = _run(
        capsys, [*base, "--tor", f"127.0.0.1:{port}", "--tor-control", "127.0.0.1:48991"]
    )
    assert status == 1
    assert err.startswith("tunnel connect: error: Tor: ")
    assert elapsed < CLOSED_PORT_ERROR_BOUND_S


def _write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_run_config_tor_section_and_check_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tor_ports: PortPool
) -> None:
    port = _closed_port(tor_ports)
    onion = OnionKey.generate(SeededRng("tor-cli-onion")).address
    good = {
        "profile": str(tmp_path / "r.tox"),
        "tor": {
            "socks": f"127.0.0.1:{port}",
            "only": True,
            "friends": [{"id": FRIEND_ID, "onion": f"{onion}:8443"}],
        },
    }
    path = _write(tmp_path / "good.yaml", good)
    status = main(["check-config", str(path)])
    out, _ = capsys.readouterr()
    assert status == 0
    dumped = yaml.safe_load(out)["tor"]
    assert dumped["only"] is True
    assert dumped["friends"] == [{"id": FRIEND_ID, "onion": f"{onion}:8443"}]

    config = load_node_config(path)
    assert config.tor is not None
    assert config.tor.friends[0].port == 8443
    status, err, elapsed = _run(capsys, ["run", "-c", str(path)])
    assert (status, err) == (1, f"tunnel run: error: Tor: Tor SOCKS port 127.0.0.1:{port} closed")
    assert elapsed < CLOSED_PORT_ERROR_BOUND_S

    for tor, message in (
        ({"socks": "127.0.0.1"}, "tor.socks: "),
        ({"socks": "127.0.0.1:9050", "bootstrap_wait_s": -1}, "tor.bootstrap_wait_s: "),
        ({"socks": "127.0.0.1:9050", "onion_service": True}, "tor.onion_service: needs"),
        ({"socks": "127.0.0.1:9050", "friends": [{"id": FRIEND_ID}]}, "tor.friends[0].onion: "),
        (
            {"socks": "127.0.0.1:9050", "friends": [{"id": FRIEND_ID, "onion": "x.onion"}]},
            "tor.friends[0].onion: not a v3 onion address",
        ),
        ({"socks": "127.0.0.1:9050", "onlyy": True}, "tor.onlyy: unknown key"),
    ):
        bad = _write(tmp_path / "bad.yaml", {**good, "tor": tor})
        status = main(["check-config", str(bad)])
        _, err = capsys.readouterr()
        assert status == 1
        lines = err.strip().splitlines()
        assert len(lines) == 1
        assert message in lines[0]


def test_flag_on_top_of_config(tmp_path: Path) -> None:
    class Args:
        tor: str | None = None
        tor_control: str | None = None

    args = Args()
    assert tor_config(args, None) is None  # type: ignore[arg-type]
    args.tor = ""
    assert tor_config(args, None) == TorConfig(control="127.0.0.1:9051")  # type: ignore[arg-type]
    path = _write(tmp_path / "c.yaml", {"tor": {"socks": "127.0.0.1:9150", "check_interval_s": 7}})
    config = load_node_config(path)
    args.tor = "127.0.0.1:9250"
    merged = tor_config(args, config)  # type: ignore[arg-type]
    assert merged is not None
    assert (merged.socks, merged.check_interval_s, merged.control) == ("127.0.0.1:9250", 7.0, None)
    args.tor, args.tor_control = None, "off"
    assert tor_config(args, config) == config.tor  # type: ignore[arg-type]


@pytest.mark.slow
async def test_run_serve_starts_a_tor_mode_node_on_the_lab(tor_lab: TorLab, tmp_path: Path) -> None:
    profile = Profile.generate(SeededRng("tor-cli-run"))
    async with trio.open_nursery() as nursery:
        with trio.fail_after(30):
            node: Node = await nursery.start(
                lambda task_status: run_command.serve(
                    profile,
                    NodeOptions(ipv6=False),
                    tor=lab_tor_config(tor_lab, 0),
                    task_status=task_status,
                )
            )
        assert node.udp_port is None
        assert node.options.proxy is not None
        assert node.options.proxy.port == tor_lab.socks_port(0)
        assert node.relays.opener is not None
        nursery.cancel_scope.cancel()
