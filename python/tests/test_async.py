"""asyncio: awaiting requests polls between turns of the event loop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest

import nrt_sendrecv as nrt
from _common import first_difference, pattern

IP, PEER, W = "127.0.0.1", 1, 30.0


def test_await_does_not_block_the_loop(rt: nrt.Runtime, transport: str, port_base: int, peer: Any) -> None:
    """The peer sends 0.5 s after connecting; while we await the receive another task ticks."""
    p = peer("send_sizes", lengths=[3 << 20], seed=70, delay=0.5)

    async def main(lnc: nrt.Lnc) -> tuple[int, int]:
        rx = await lnc.accept(IP, PEER).wait_ready_async(W)
        out = np.zeros(3 << 20, np.uint8)
        ticks = 0
        stop = False

        async def ticker() -> None:
            nonlocal ticks
            while not stop:
                await asyncio.sleep(0.005)
                ticks += 1

        t = asyncio.create_task(ticker())
        n = await asyncio.wait_for(rx.recv(out), W)
        stop = True
        await t
        assert first_difference(out, pattern(3 << 20, 70)) == ""
        return n, ticks

    with rt.lnc(0) as lnc:
        n, ticks = asyncio.run(main(lnc))
    assert n == 3 << 20
    assert ticks >= 20  # ~0.5 s of 5 ms ticks; a blocked loop would give 0 or 1
    assert p.result()["results"] == [{"size": 3 << 20}]


def test_gather_and_async_timeout(rt: nrt.Runtime, transport: str, port_base: int, peer: Any) -> None:
    """Four receives gathered; a fifth awaited with a timeout that runs out (WaitTimeout, still
    pending), then awaited again once the peer's last send comes, 1 s after the others."""
    lengths = [1000, 200_000, 7, 65_536, 12345]
    p = peer("send_sizes", lengths=lengths, seed=80, batch=True, late=1.0)

    async def main(lnc: nrt.Lnc) -> None:
        rx = await lnc.accept(IP, PEER).wait_ready_async(W)
        outs = [bytearray(n) for n in lengths[:4]]
        sizes = await asyncio.wait_for(asyncio.gather(*(rx.recv(o) for o in outs)), W)
        assert sizes == lengths[:4]
        for i, (o, n) in enumerate(zip(outs, lengths)):
            assert o == pattern(n, 80 + i).tobytes()
        out = bytearray(20000)
        r = rx.recv(out)
        t0 = time.monotonic()
        with pytest.raises(nrt.WaitTimeout):
            await r.wait_async(timeout=0.1)
        assert time.monotonic() - t0 < 0.7 and not r.done()
        assert await r.wait_async(W) == 12345
        assert out[:12345] == pattern(12345, 84).tobytes() and out[12345:] == bytes(20000 - 12345)

    with rt.lnc(0) as lnc:
        asyncio.run(main(lnc))
    assert p.result()["results"] == [{"size": n} for n in lengths]
