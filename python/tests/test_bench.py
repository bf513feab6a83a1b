"""python -m nrt_sendrecv.bench: the table, over shared memory (--local) and TCP (two roles)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import next_port_base, run_pair
from nrt_sendrecv import bench

ROW = re.compile(r"^\s+(\d+(?:\.\d)? (?:B|KiB|MiB|GiB))\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s+(\d+)$")


BENCH = [sys.executable, "-m", "nrt_sendrecv.bench"]


def run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BENCH, *args], capture_output=True, text=True, timeout=timeout)


def check_table(out: str, sizes: list[str], transport: str, memory: str) -> None:
    lines = out.splitlines()
    assert lines[0].startswith(f'# nrt_sendrecv.bench: label "python {transport}", transport {transport}, comms 1')
    assert f"memory {memory}" in lines[0]
    assert lines[1].split() == ["size", "GB/s", "Gbit/s", "p50", "us", "p99", "us", "msgs/s", "iters", "window"]
    rows = [ROW.match(x) for x in lines[2 : 2 + len(sizes)]]
    assert all(rows), lines
    assert [m.group(1) for m in rows if m] == sizes
    for m in rows:
        assert m and float(m.group(2)) > 0 and float(m.group(4)) > 0 and float(m.group(5)) >= float(m.group(4))
    assert re.search(r"^# verified: every byte of \d+ warm-up messages", out, re.M)


def test_local_over_shm_with_json(tmp_path: Path) -> None:
    j = tmp_path / "r.json"
    p = run(["--local", "--transport", "shm", "--sizes", "8,64K,1M", "--iters", "30", "--warmup", "4", "--window", "4",
             "--port-base", str(next_port_base()), "--json", str(j)])
    assert p.returncode == 0, p.stderr
    check_table(p.stdout, ["8 B", "64 KiB", "1 MiB"], "shm", "library")
    d = json.loads(j.read_text())
    assert d["verified"] is True and d["verified_messages"] == 12 and d["transport"] == "shm"
    assert [r["size"] for r in d["results"]] == [8, 65536, 1 << 20]
    assert all(r["gbytes_per_s"] > 0 and r["lat_p50_us"] > 0 and r["iters"] == 30 for r in d["results"])
    perf = Path(__file__).resolve().parents[2] / "build" / "bin" / "nrt-sr-perf"
    if perf.exists():  # make test builds it first: its `plot` reads our JSON
        png = tmp_path / "r.png"
        q = subprocess.run([str(perf), "plot", "--out", str(png), str(j)], capture_output=True, text=True, timeout=60)
        assert q.returncode == 0 and png.stat().st_size > 0, q.stderr


def test_two_roles_over_tcp_numpy_arrays() -> None:
    base = str(next_port_base())
    common = ["--peer", "127.0.0.1", "--transport", "tcp", "--sizes", "4K,1M", "--iters", "20", "--warmup", "3",
              "--window", "4", "--memory", "numpy", "--port-base", base]
    p, r = run_pair(BENCH + ["--role", "recv", *common], BENCH + ["--role", "send", *common], timeout=120)
    assert p.returncode == 0, p.stderr
    assert r.returncode == 0, r.stderr
    check_table(p.stdout, ["4 KiB", "1 MiB"], "tcp", "numpy")
    assert r.stdout.strip() == "# receiver: verified every byte of 8 warm-up messages"


def test_bytearrays_bandwidth_only() -> None:
    p = run(["--local", "--transport", "tcp", "--sizes", "100000", "--iters", "10", "--warmup", "2", "--window", "2",
             "--memory", "bytearray", "--mode", "bw", "--port-base", str(next_port_base())])
    assert p.returncode == 0, p.stderr
    row = p.stdout.splitlines()[2].split()
    assert row[:2] == ["97.7", "KiB"] and float(row[2]) > 0 and row[4:6] == ["-", "-"]


def test_mismatched_plans_fail_both_sides() -> None:
    base = str(next_port_base())
    p, r = run_pair(BENCH + ["--role", "recv", "--sizes", "8", "--port-base", base, "--transport", "tcp"],
                    BENCH + ["--role", "send", "--sizes", "16", "--port-base", base, "--transport", "tcp"], timeout=120)
    assert p.returncode == 1 and "different plan" in p.stderr
    assert r.returncode == 1 and "different plan" in r.stderr


def test_bad_arguments_exit_2() -> None:
    p = run(["--local", "--sizes", "12Q"])
    assert p.returncode == 2 and "unknown suffix" in p.stderr


@pytest.mark.parametrize("text,want", [("8", [8]), ("1K,4k", [1024, 4096]), ("1K:4K", [1024, 2048, 4096]), ("64M", [64 << 20])])
def test_size_lists(text: str, want: list[int]) -> None:
    assert bench.parse_sizes(text) == want


def test_human_sizes() -> None:
    assert [bench.human_size(n) for n in (8, 1024, 1536, 64 << 20, 1 << 30)] == ["8 B", "1 KiB", "1.5 KiB", "64 MiB", "1 GiB"]


def test_child_arguments() -> None:
    assert bench.child_args(["--local", "--json", "x.json", "--sizes", "8", "--label=a", "--quiet"]) == ["--sizes", "8", "--role", "recv", "--quiet"]
