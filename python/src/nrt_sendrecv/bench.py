"""Bandwidth and latency through nrt_sendrecv, in the table format of ``nrt-sr-perf``.

Run one side per host (or both here with ``--local``)::

    python -m nrt_sendrecv.bench --role recv --peer 10.0.0.1     # host B (lnc 1)
    python -m nrt_sendrecv.bench --role send --peer 10.0.0.2     # host A (lnc 0): prints the table
    python -m nrt_sendrecv.bench --local --transport shm --sizes 64M

The same phases and counts as ``nrt-sr-perf`` (tools/nrt-sr-perf), so the two tables compare
the package's overhead with the C API's: per size a verified warm-up, a bandwidth phase with
``window`` requests in flight, and a ping-pong latency phase. The buffers are numpy arrays
(``--memory library``: ``nrt_sendrecv.empty``, the library's memory; ``numpy``: ``numpy.empty``,
attached; ``bytearray``: attached) given to ``Communicator.send``/``recv`` as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any, Optional, Sequence

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
MEM_CAP_PER_SIDE = GIB
LAT_MAX_ITERS = 20_000
CTL = 8
GOODBYE = 0x6F6F_6462_7965_2121


def parse_size(text: str) -> int:
    t = text.strip()
    i = 0
    while i < len(t) and t[i].isdigit():
        i += 1
    if i == 0:
        raise argparse.ArgumentTypeError(f"invalid size '{text}': expected a number with an optional K/M/G suffix")
    mult = {"": 1, "b": 1, "k": KIB, "kb": KIB, "kib": KIB, "m": MIB, "mb": MIB, "mib": MIB, "g": GIB, "gb": GIB, "gib": GIB}
    suffix = t[i:].strip().lower()
    if suffix not in mult:
        raise argparse.ArgumentTypeError(f"invalid size '{text}': unknown suffix '{suffix}' (use K, M or G)")
    return int(t[:i]) * mult[suffix]


def parse_sizes(text: str) -> list[int]:
    """Comma list of sizes (K/M/G: powers of 1024) and/or A:B (every power of two from A to B)."""
    out: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise argparse.ArgumentTypeError(f"invalid size list '{text}': empty item")
        if ":" in item:
            a, b = (parse_size(x) for x in item.split(":", 1))
            if a > b:
                raise argparse.ArgumentTypeError(f"invalid size range '{item}': start is larger than end")
            got = [1 << k for k in range(0, 41) if a <= (1 << k) <= b]
            if not got:
                raise argparse.ArgumentTypeError(f"invalid size range '{item}': no power of two in it")
            out += got
        else:
            out.append(parse_size(item))
    for s in out:
        if s < 1 or s > GIB:
            raise argparse.ArgumentTypeError(f"invalid size {s}: sizes are 1 B to 1 GiB")
    return sorted(set(out))


def human_size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        u = 1 << shift
        if n >= u:
            return f"{n // u} {unit}" if n % u == 0 else f"{n / u:.1f} {unit}"
    return f"{n} B"


class Plan:
    """Per-size counts, derived on both sides from the same options (as nrt-sr-perf's)."""

    def __init__(self, size: int, a: argparse.Namespace, max_pending: int) -> None:
        self.size = size
        self.iters = max(1, min(a.iters, max(a.min_iters, a.bytes_per_size // size)))
        self.lat_iters = min(self.iters, LAT_MAX_ITERS)
        self.window = max(1, min(a.window, MEM_CAP_PER_SIDE // size, max_pending, self.iters))
        warm = 0 if a.warmup == 0 else min(a.warmup, max(1, a.bytes_per_size // size))
        self.warmup = 0 if a.warmup == 0 else max(warm, self.window)
        self.tensors = self.window

    def key(self) -> str:
        return f"{self.size}:{self.iters}:{self.lat_iters}:{self.warmup}:{self.window}:{self.tensors}"


def config_hash(plans: list[Plan], mode: str, memory: str) -> int:
    # memory is not part of it: the two sides may use different kinds.
    text = f"nrt_sendrecv.bench/1 mode={mode};" + ";".join(p.key() for p in plans)
    h = 0xCBF29CE484222325
    for b in text.encode():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def percentile(sorted_v: list[float], p: float) -> Optional[float]:
    if not sorted_v:
        return None
    pos = p / 100.0 * (len(sorted_v) - 1)
    lo, hi = int(pos), min(int(pos) + 1, len(sorted_v) - 1)
    return sorted_v[lo] + (sorted_v[hi] - sorted_v[lo]) * (pos - lo)


def _fmt(v: Optional[float], prec: int) -> str:
    return "-" if v is None else f"{v:.{prec}f}"


def _gbs(v: Optional[float]) -> str:
    if v is not None and 0 < v < 0.1:
        import math

        digits = max(3, min(9, 2 - math.floor(math.log10(v))))
        return f"{v:.{digits}f}"
    return _fmt(v, 3)


COLUMNS = ("size", "GB/s", "Gbit/s", "p50 us", "p99 us", "msgs/s", "iters", "window")


def column_header() -> str:
    c = COLUMNS
    return f"{c[0]:>10} {c[1]:>10} {c[2]:>10} {c[3]:>10} {c[4]:>10} {c[5]:>12} {c[6]:>7} {c[7]:>6}"


def row(r: dict[str, Any]) -> str:
    return (
        f"{human_size(r['size']):>10} {_gbs(r['gbytes_per_s']):>10} {_fmt(r['gbits_per_s'], 2):>10} "
        f"{_fmt(r['lat_p50_us'], 2):>10} {_fmt(r['lat_p99_us'], 2):>10} {_fmt(r['msgs_per_s'], 0):>12} "
        f"{r['iters']:>7} {r['window']:>6}"
    )


class BenchError(Exception):
    pass


class Pattern:
    """Message patterns: message (size, m) is a window of one byte ramp, shifted by m % 251."""

    def __init__(self) -> None:
        self._ramp = b""

    def window(self, size: int, msg: int) -> memoryview:
        need = size + 256
        if len(self._ramp) < need:
            unit = bytes((i * 7 + 3) & 0xFF for i in range(251))  # 251: prime, so the shifts differ
            self._ramp = unit * (need // 251 + 1)
        k = (msg * 37 + size) % 251
        return memoryview(self._ramp)[k : k + size]


def _np() -> Any:
    try:
        import numpy

        return numpy
    except ImportError:
        return None


def make_buffer(memory: str, size: int) -> Any:
    import nrt_sendrecv as nrt

    np = _np()
    if memory == "library":
        buf: Any = nrt.empty(size, "uint8") if np is not None else nrt.alloc(size)
    elif memory == "numpy":
        buf = np.empty(size, np.uint8)
    else:
        buf = bytearray(size)
    v = bytes_view(buf)  # touch every page now, so that page faults stay out of the measurement
    if np is not None:
        np.frombuffer(v, np.uint8)[:] = 0xA5
    else:
        v[:] = b"\xa5" * size
    return buf


def bytes_view(buf: Any) -> memoryview:
    return memoryview(buf).cast("B") if not isinstance(buf, memoryview) or buf.format != "B" else buf


class Side:
    def __init__(self, a: argparse.Namespace, sender: bool) -> None:
        self.a = a
        self.sender = sender
        self.pattern = Pattern()
        self.ctl_out = bytearray(CTL)
        self.ctl_in = bytearray(CTL)
        self.timeout = a.op_timeout
        self.comm: Any = None
        self.echo: Any = None

    @property
    def role(self) -> str:
        return "sender" if self.sender else "receiver"

    def wait(self, req: Any, what: str) -> int:
        import nrt_sendrecv as nrt

        try:
            return int(req.wait(self.timeout))
        except nrt.WaitTimeout:
            raise BenchError(f"{self.role}: no progress for {self.timeout} s (--op-timeout) ({what})") from None

    def expect(self, n: int, want: int, what: str) -> None:
        if n != want:
            raise BenchError(f"{self.role}: a request completed with {n} bytes, expected {want} ({what})")

    def ping_pong(self, value: int, answer: Any, what: str) -> tuple[int, int]:
        if self.sender:
            self.ctl_out[:] = value.to_bytes(8, "little")
            r = self.echo.recv(self.ctl_in)
            self.expect(self.wait(self.comm.send(self.ctl_out), what), CTL, what)
            self.expect(self.wait(r, what), CTL, what)
            return value, int.from_bytes(self.ctl_in, "little")
        self.expect(self.wait(self.comm.recv(self.ctl_in), what), CTL, what)
        got = int.from_bytes(self.ctl_in, "little")
        ans = answer(got)
        self.ctl_out[:] = ans.to_bytes(8, "little")
        self.expect(self.wait(self.echo.send(self.ctl_out), what), CTL, what)
        return got, ans

    def pump(self, bufs: list[Any], size: int, window: int, count: int, phase: str, before: Any = None, after: Any = None) -> None:
        """`count` messages with up to `window` in flight; message m uses bufs[m % len(bufs)]."""
        post = self.comm.send if self.sender else self.comm.recv
        what = f"{phase} phase, size {human_size(size)}"
        ring: list[tuple[Any, int]] = []
        n = len(bufs)
        posted = 0
        first = min(window, count)
        while posted < first:
            if before is not None:
                before(bufs[posted % n], posted)
            ring.append((post(bufs[posted % n]), posted))
            posted += 1
        head = 0
        while head < len(ring):
            req, m = ring[head]
            ring[head] = (None, m)
            head += 1
            self.expect(self.wait(req, what), size, what)
            if after is not None:
                after(bufs[m % n], m)
            if posted < count:
                if before is not None:
                    before(bufs[posted % n], posted)
                ring.append((post(bufs[posted % n]), posted))
                posted += 1

    def warmup(self, bufs: list[Any], p: Plan) -> int:
        window = max(1, min(p.window, p.warmup))
        verified = 0

        def fill(buf: Any, m: int) -> None:
            bytes_view(buf)[:] = self.pattern.window(p.size, m)

        def check(buf: Any, m: int) -> None:
            nonlocal verified
            got, want = bytes_view(buf), self.pattern.window(p.size, m)
            np = _np()
            same = bool(np.array_equal(np.frombuffer(got, np.uint8), np.frombuffer(want, np.uint8))) if np is not None else got == want
            if not same:
                off = next(i for i in range(p.size) if got[i] != want[i])
                raise BenchError(
                    f"receiver: data verification FAILED: size {human_size(p.size)}, warm-up message {m}: first mismatch at "
                    f"byte offset {off}: got 0x{got[off]:02x}, expected 0x{want[off]:02x}"
                )
            verified += 1

        if self.sender:
            self.pump(bufs, p.size, window, p.warmup, "warm-up", before=fill)
            return p.warmup
        self.pump(bufs, p.size, window, p.warmup, "warm-up", after=check)
        return verified

    def bandwidth(self, bufs: list[Any], p: Plan) -> float:
        self.ping_pong(p.size, lambda v: v, "barrier before the bandwidth phase")
        t0 = time.perf_counter()
        self.pump(bufs, p.size, p.window, p.iters, "bandwidth")
        return time.perf_counter() - t0

    def latency(self, bufs: list[Any], lat: list[Any], p: Plan) -> list[float]:
        warm = min(p.warmup, p.lat_iters)
        total = warm + p.lat_iters
        what = f"latency phase, size {human_size(p.size)}"
        samples: list[float] = []
        data = bufs[0]
        if self.sender:
            for i in range(total):
                r = self.echo.recv(lat[0])
                t0 = time.perf_counter()
                s = self.comm.send(data)
                self.expect(self.wait(r, what), p.size, what)
                dt = time.perf_counter() - t0
                self.expect(self.wait(s, what), p.size, what)
                if i >= warm:
                    samples.append(dt * 1e6 / 2)
            return samples
        rot = [data, lat[0], lat[1]]
        nxt = self.comm.recv(rot[0])
        prev = None
        for i in range(total):
            self.expect(self.wait(nxt, what), p.size, what)
            s = self.echo.send(rot[i % 3])
            if i + 1 < total:
                nxt = self.comm.recv(rot[(i + 1) % 3])
            if prev is not None:
                self.expect(self.wait(prev, what), p.size, what)
            prev = s
        if prev is not None:
            self.expect(self.wait(prev, what), p.size, what)
        return samples


def run_side(a: argparse.Namespace, sender: bool, out: Any) -> dict[str, Any]:
    import nrt_sendrecv as nrt
    from nrt_sendrecv import runtime

    if a.poll == "spin":
        runtime.SPIN_S = float("inf")
    elif a.poll == "yield":
        runtime.SPIN_S = 0.0
    if a.transport:
        os.environ["NEURON_RT_ASYNC_SENDRECV_TRANSPORT"] = a.transport
    if a.port_base is not None:
        os.environ["NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT"] = str(a.port_base)
    os.environ.setdefault("NEURON_RT_ASYNC_SENDRECV_CONNECT_TIMEOUT_MS", str(int(a.connect_timeout * 1000)))
    lnc_id = a.lnc if a.lnc is not None else (0 if sender else 1)
    peer_lnc = a.peer_lnc if a.peer_lnc is not None else (1 if sender else 0)
    plans = [Plan(s, a, nrt.max_pending_requests()) for s in a.sizes]
    h = config_hash(plans, a.mode, a.memory)
    side = Side(a, sender)
    results: list[dict[str, Any]] = []
    verified = expected = 0
    cpu_s = 0.0
    bw_bytes = 0
    with nrt.Runtime() as rt, rt.lnc(lnc_id) as lnc:
        # The echo pair (receiver -> sender) first, then the data pair.
        side.echo = lnc.accept(a.peer, peer_lnc) if sender else lnc.connect(a.peer, peer_lnc)
        side.comm = lnc.connect(a.peer, peer_lnc) if sender else lnc.accept(a.peer, peer_lnc)
        for c in (side.echo, side.comm):
            try:
                c.wait_ready(a.connect_timeout)
            except (nrt.WaitTimeout, nrt.NrtTimeout):
                raise BenchError(
                    f"timed out after {a.connect_timeout} s (--connect-timeout): not connected with peer {a.peer} lnc {peer_lnc} "
                    "(is the other side running, with the same options?)"
                ) from None
        _, ans = side.ping_pong(h, lambda got: h if got == h else h ^ 0xFFFFFFFFFFFFFFFF, "plan check")
        if ans != h:
            raise BenchError(f"{side.role}: the other side runs a different plan (sizes, iterations, window or mode differ)")
        if sender and not a.quiet:
            print(
                f'# nrt_sendrecv.bench: label "{a.label or "python " + (a.transport or "auto")}", transport {a.transport or "auto"}, '
                f"comms 1, window {a.window}, poll {a.poll}, memory {a.memory}, mode {a.mode}, role {'local' if a.local else 'send'}",
                file=out,
            )
            print(column_header(), file=out, flush=True)
        bufs: list[Any] = []
        lat: list[Any] = []
        for p in plans:
            bufs = []  # the previous size's buffers go first
            lat = []
            bufs = [make_buffer(a.memory, p.size) for _ in range(p.tensors)]
            r: dict[str, Any] = {
                "size": p.size,
                "iters": p.iters,
                "window": p.window,
                "gbytes_per_s": None,
                "gbits_per_s": None,
                "msgs_per_s": None,
                "lat_p50_us": None,
                "lat_p99_us": None,
                "lat_iters": None,
                "warmup": p.warmup,
            }
            if p.warmup:
                verified += side.warmup(bufs, p)
                expected += p.warmup
            if a.mode in ("bw", "both"):
                c0 = time.process_time()
                dt = side.bandwidth(bufs, p)
                cpu_s += time.process_time() - c0
                bw_bytes += p.iters * p.size
                if sender:
                    gb = p.iters * p.size / max(dt, 1e-9) / 1e9
                    r.update(gbytes_per_s=gb, gbits_per_s=gb * 8, msgs_per_s=p.iters / max(dt, 1e-9))
            if a.mode in ("lat", "both"):
                lat = [make_buffer(a.memory, p.size) for _ in range(2)]
                s = sorted(side.latency(bufs, lat, p))
                r["lat_iters"] = p.lat_iters
                if sender:
                    r["lat_p50_us"], r["lat_p99_us"] = percentile(s, 50), percentile(s, 99)
            if sender and not a.quiet:
                print(row(r), file=out, flush=True)
            results.append(r)
        # The receiver reports what it verified; the sender's goodbye; nothing left in flight.
        what = "final report on the echo communicator"
        if sender:
            rq = side.echo.recv(side.ctl_in)
            side.expect(side.wait(rq, what), CTL, what)
            verified = int.from_bytes(side.ctl_in, "little")
            side.ctl_out[:] = GOODBYE.to_bytes(8, "little")
            side.expect(side.wait(side.comm.send(side.ctl_out), "goodbye"), CTL, "goodbye")
        else:
            side.ctl_out[:] = verified.to_bytes(8, "little")
            side.expect(side.wait(side.echo.send(side.ctl_out), what), CTL, what)
            side.expect(side.wait(side.comm.recv(side.ctl_in), "goodbye"), CTL, "goodbye")
            if int.from_bytes(side.ctl_in, "little") != GOODBYE:
                raise BenchError("receiver: expected the sender's goodbye")
        del bufs, lat
    if verified != expected:
        raise BenchError(f"the receiver verified {verified} warm-up messages, expected {expected}")
    return {
        "results": results,
        "verified_messages": verified,
        "verified": expected > 0 and verified == expected,
        "cpu_s_per_gb": cpu_s / (bw_bytes / 1e9) if bw_bytes else None,
    }


def _host() -> dict[str, Any]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpus": os.cpu_count() or 1, "cpu_model": model, "kernel": platform.release(), "hostname": platform.node()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nrt_sendrecv.bench",
        description="Bandwidth and latency through the nrt_sendrecv package (numpy arrays given to Communicator.send/recv), "
        "in the table format of nrt-sr-perf, to compare the package's overhead with the C tool's.",
    )
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--local", action="store_true", help="both roles on this host: the receiver is a child process")
    g.add_argument("--role", choices=("send", "recv"), help="one side of a two-host run (start both with the same options)")
    p.add_argument("--peer", default="127.0.0.1", help="the other side's IP address (default 127.0.0.1)")
    p.add_argument("--lnc", type=int, help="this side's logical core (default 0 for send, 1 for recv)")
    p.add_argument("--peer-lnc", type=int, help="the other side's logical core (default 1 for send, 0 for recv)")
    p.add_argument("--sizes", type=parse_sizes, default=parse_sizes("8:256M"), help="comma list with K/M/G suffixes and/or A:B powers of two (default 8:256M)")
    p.add_argument("--iters", type=int, default=1000, help="measured messages per size (lowered for big sizes by --bytes-per-size; default 1000)")
    p.add_argument("--warmup", type=int, default=10, help="verified warm-up messages per size (default 10; 0: none)")
    p.add_argument("--window", type=int, default=16, help="requests in flight in the bandwidth phase (default 16; window x size <= 1 GiB)")
    p.add_argument("--bytes-per-size", type=parse_size, default=2 * GIB, help="byte budget per size: iters is lowered so size x iters fits (default 2G)")
    p.add_argument("--min-iters", type=int, default=8, help="the budget never lowers iters below this (default 8)")
    p.add_argument("--memory", choices=("library", "numpy", "bytearray"), default="library",
                   help="buffers: numpy arrays in library memory (nrt_sendrecv.empty, the default), numpy.empty arrays or bytearrays (attached)")
    p.add_argument("--mode", choices=("bw", "lat", "both"), default="both", help="phases to run (default both)")
    p.add_argument("--poll", choices=("spin", "yield", "default"), default="spin",
                   help="how waits poll: spin on test_request (as nrt-sr-perf), yield the CPU between polls, or the package's default "
                   "(spin 2 ms, then yield)")
    p.add_argument("--transport", choices=("auto", "tcp", "shm", "verbs", "ofi"), help="sets NEURON_RT_ASYNC_SENDRECV_TRANSPORT")
    p.add_argument("--port-base", type=int, help="sets NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT (lnc n listens on P + n)")
    p.add_argument("--connect-timeout", type=float, default=60.0, help="seconds to connect (default 60)")
    p.add_argument("--op-timeout", type=float, default=120.0, help="seconds any wait may take (default 120)")
    p.add_argument("--label", help='name of this run (default "python <transport>")')
    p.add_argument("--json", help="write the results as JSON (nrt-sr-perf's fields; `nrt-sr-perf plot` draws it)")
    p.add_argument("--quiet", action="store_true", help="no table")
    return p


def child_args(argv: Sequence[str]) -> list[str]:
    """The --local receiver's arguments: ours without --local/--json/--label/--quiet, plus --role recv."""
    out: list[str] = []
    skip = False
    for i, x in enumerate(argv):
        if skip:
            skip = False
            continue
        name = x.split("=", 1)[0]
        if name in ("--local", "--quiet"):
            continue
        if name in ("--json", "--label"):
            skip = "=" not in x
            continue
        out.append(x)
    return out + ["--role", "recv", "--quiet"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = build_parser().parse_args(argv)
    sender = a.local or a.role == "send"
    child: Optional[subprocess.Popen[bytes]] = None
    if a.memory == "numpy" and _np() is None:
        print("nrt_sendrecv.bench: error: --memory numpy needs numpy (pip install numpy)", file=sys.stderr)
        return 2
    try:
        if a.local:
            child = subprocess.Popen([sys.executable, "-m", "nrt_sendrecv.bench", *child_args(argv)])
        out = run_side(a, sender, sys.stdout)
        if child is not None:
            rc = child.wait(timeout=a.op_timeout)
            child = None
            if rc != 0:
                raise BenchError(f"the receiver process exited with status {rc}")
    except BenchError as e:
        print(f"nrt_sendrecv.bench: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - an API error: name it, exit 1
        print(f"nrt_sendrecv.bench: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        if child is not None:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    if not sender:
        if not a.quiet:
            print(f"# receiver: verified every byte of {out['verified_messages']} warm-up messages")
        return 0
    if not a.quiet:
        if out["verified"]:
            print(f"# verified: every byte of {out['verified_messages']} warm-up messages (measured messages are not checked)")
        else:
            print("# verified: no (no warm-up messages were checked)")
        cpu = out["cpu_s_per_gb"]
        print(f"# CPU seconds per GB (bandwidth phases, this side): {'-' if cpu is None else f'{cpu:.3f}'}")
        import nrt_sendrecv as nrt

        print(f"# library: {nrt.library_path()}")
    if a.json:
        import nrt_sendrecv as nrt

        report = {
            "tool": "nrt_sendrecv.bench",
            "version": nrt.__version__,
            "label": a.label or f"python {a.transport or 'auto'}",
            "transport": a.transport or "auto",
            "role": "local" if a.local else "send",
            "mode": a.mode,
            "comms": 1,
            "window": a.window,
            "footprint": 0,
            "poll": a.poll,
            "memory": a.memory,
            "recv_offset": 0,
            "host": _host(),
            "verified": out["verified"],
            "verified_messages": out["verified_messages"],
            "rss_bytes_per_comm": None,
            "cpu_s_per_gb": out["cpu_s_per_gb"],
            "results": out["results"],
        }
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
