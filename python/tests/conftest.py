"""Fixtures: a port range of its own per test, the transport, and the peer process.

Every test that talks to a peer runs lnc 0 here and lnc 1 in a peer process (peer.py) on
127.0.0.1, on ports NRT_PY_TEST_PORT_START (30000) + 10k, k counting up per test and skipping
ports that are in use: below the ephemeral range (32768+) and above the C suite's 20000-30000."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
from typing import Any, Iterator, Optional

import pytest

os.environ["NEURON_RT_ASYNC_SENDRECV_LISTEN_ADDR"] = "127.0.0.1"  # loopback only
os.environ.setdefault("NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL", "off")
os.environ["NEURON_RT_ASYNC_SENDRECV_CONNECT_TIMEOUT_MS"] = "20000"

import nrt_sendrecv as nrt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PORT_START = int(os.environ.get("NRT_PY_TEST_PORT_START", "30000"))
_slots = itertools.count()
PEER_WAIT = 60.0


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def next_port_base() -> int:
    for _ in range(200):
        base = PORT_START + 10 * next(_slots)
        if base + 10 > 32768:
            break
        if all(_free(base + i) for i in range(3)):
            return base
    raise RuntimeError(f"no free port range from {PORT_START}")


def run_pair(recv_cmd: list[str], send_cmd: list[str], timeout: float = 60,
             env: Optional[dict[str, str]] = None) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    """Runs a receiver process and, beside it, a sender to its end; (sender, receiver), both
    finished (the receiver killed if it outlives the sender by `timeout`)."""
    recv = subprocess.Popen(recv_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        send = subprocess.run(send_cmd, capture_output=True, text=True, timeout=timeout, env=env)
        rout, rerr = recv.communicate(timeout=timeout)
    finally:
        if recv.poll() is None:
            recv.kill()
            recv.communicate()
    return send, subprocess.CompletedProcess(recv_cmd, recv.returncode, rout, rerr)


@pytest.fixture
def port_base(monkeypatch: pytest.MonkeyPatch) -> int:
    """This test's ports: lnc n listens on base + n, here and in its peer."""
    base = next_port_base()
    monkeypatch.setenv("NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT", str(base))
    return base


@pytest.fixture(params=["tcp", "shm"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Required on both sides: shm fails the set-up rather than falling back to TCP."""
    monkeypatch.setenv("NEURON_RT_ASYNC_SENDRECV_TRANSPORT", request.param)
    return str(request.param)


@pytest.fixture
def rt() -> Iterator[nrt.Runtime]:
    with nrt.Runtime() as r:
        yield r


class Peer:
    """peer.py SCENARIO ARGS in a process of its own, with this test's environment."""

    def __init__(self, scenario: str, **args: Any) -> None:
        self.scenario = scenario
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "peer.py"), scenario, json.dumps(args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(os.environ),
        )
        self._result: Optional[dict[str, Any]] = None

    def result(self, timeout: float = PEER_WAIT) -> dict[str, Any]:
        """Closes its stdin, waits for it (bounded), and returns its JSON line; fails the test
        if it exited with an error."""
        if self._result is None:
            try:
                out, err = self.proc.communicate(input=b"", timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                out, err = self.proc.communicate()
                pytest.fail(f"peer {self.scenario} did not finish within {timeout} s; stderr: {err.decode()[-2000:]}")
            if self.proc.returncode != 0:
                pytest.fail(f"peer {self.scenario} exited with {self.proc.returncode}; stderr: {err.decode()[-2000:]}")
            self._result = json.loads(out.decode().strip().splitlines()[-1])
        return self._result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


@pytest.fixture
def peer() -> Iterator[Any]:
    """peer(scenario, **args) starts a peer; every peer started is reaped at the end."""
    started: list[Peer] = []

    def start(scenario: str, **args: Any) -> Peer:
        p = Peer(scenario, **args)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()
