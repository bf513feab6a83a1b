"""The other process of a two-process test: lnc 1 on 127.0.0.1, the test itself is lnc 0.

Usage: python peer.py SCENARIO JSON-ARGS. Prints one JSON line (what it saw: sizes, status codes,
byte checks) and exits 0; any unexpected event exits 1 with a message on stderr. Every wait is
bounded (WAIT seconds)."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nrt_sendrecv as nrt  # noqa: E402
from _common import first_difference, nbytes_of, pattern, raw_bytes  # noqa: E402

WAIT = 30.0
ME, TEST = 1, 0
IP = "127.0.0.1"


def status_of(fn: Any) -> dict[str, Any]:
    """Runs fn(); {"size": n} or {"status": code, "error": class name}."""
    try:
        return {"size": fn()}
    except nrt.NrtError as e:
        return {"status": e.status, "error": type(e).__name__}


def idle_until_stdin_closes() -> None:
    # The test closes our stdin when it is done with us (bounded by WAIT).
    import select

    select.select([sys.stdin], [], [], WAIT)


def echo(lnc: nrt.Lnc, args: dict[str, Any]) -> dict[str, Any]:
    """Receives one array per spec (checking every byte against pattern(seed)) and sends it back."""
    rx = lnc.accept(IP, TEST).wait_ready(WAIT)
    tx = lnc.connect(IP, TEST).wait_ready(WAIT)
    sizes = []
    for i, spec in enumerate(args["specs"]):
        dtype, shape, order = spec
        a = np.zeros(shape, dtype=dtype, order=order)
        n = rx.recv(a).wait(WAIT)
        want = nbytes_of(spec)
        if n != want:
            raise SystemExit(f"message {i}: {n} bytes, expected {want}")
        diff = first_difference(raw_bytes(a), pattern(want, args["seed"] + i))
        if diff:
            raise SystemExit(f"message {i} ({spec}): {diff}")
        sizes.append(n)
        back = tx.send(a).wait(WAIT)
        if back != want:
            raise SystemExit(f"echo {i}: sent {back} bytes, expected {want}")
    return {"sizes": sizes, "checked": len(sizes)}


def recv_sizes(lnc: nrt.Lnc, args: dict[str, Any]) -> dict[str, Any]:
    """Posts receives of the given lengths (sentinel-filled) one by one; reports each outcome and
    checks the received bytes (pattern(seed + i)) and that bytes past them were not written."""
    rx = lnc.accept(IP, TEST).wait_ready(WAIT)
    if args.get("delay"):
        time.sleep(args["delay"])
    out = []
    for i, length in enumerate(args["lengths"]):
        buf = np.full(length, 0xEE, np.uint8)
        r = status_of(lambda: rx.recv(buf).wait(WAIT))
        if "size" in r:
            n = r["size"]
            r["bytes_ok"] = not first_difference(buf[:n], pattern(n, args["seed"] + i)) and bool(np.all(buf[n:] == 0xEE))
        else:
            r["untouched"] = bool(np.all(buf == 0xEE))
        out.append(r)
    return {"results": out}


def send_sizes(lnc: nrt.Lnc, args: dict[str, Any]) -> dict[str, Any]:
    """Connects, waits `delay` seconds, sends pattern(seed + i) of each length in turn, or all
    posted at once with `batch`, and reports each outcome."""
    tx = lnc.connect(IP, TEST).wait_ready(WAIT)
    if args.get("delay"):
        time.sleep(args["delay"])
    bufs = [pattern(n, args["seed"] + i) for i, n in enumerate(args["lengths"])]
    if args.get("batch"):  # all posted at once; with `late`, the last one that many seconds later
        late = args.get("late")
        reqs = [tx.send(b) for b in (bufs[:-1] if late else bufs)]
        if late:
            time.sleep(late)
            reqs.append(tx.send(bufs[-1]))
        return {"results": [status_of(lambda r=r: r.wait(WAIT)) for r in reqs]}
    return {"results": [status_of(lambda b=b: tx.send(b).wait(WAIT)) for b in bufs]}


def idle(lnc: nrt.Lnc, args: dict[str, Any]) -> dict[str, Any]:
    """Connects or accepts (args["side"]) and does nothing until the test closes our stdin, or,
    with `close_after`, closes the lnc (and exits) after that many seconds."""
    c = lnc.connect(IP, TEST) if args["side"] == "connect" else lnc.accept(IP, TEST)
    c.wait_ready(WAIT)
    if args.get("close_after") is not None:
        time.sleep(args["close_after"])
        return {"closed": True}
    idle_until_stdin_closes()
    return {"idle": True}


SCENARIOS = {"echo": echo, "recv_sizes": recv_sizes, "send_sizes": send_sizes, "idle": idle}


def main() -> int:
    scenario, args = sys.argv[1], json.loads(sys.argv[2])
    with nrt.Runtime() as rt:
        lnc = rt.lnc(ME)
        result = SCENARIOS[scenario](lnc, args)
        result["clean_close"] = lnc.close()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
