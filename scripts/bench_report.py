#!/usr/bin/env python3
"""Helpers for scripts/bench.sh: free ports, parsing iperf3/ucx_perftest output, the final report.

  bench_report.py free-port [COUNT]          a base port P with P..P+COUNT-1 free on loopback
  bench_report.py wait-listen PORT SECONDS   exit 0 once something listens on TCP PORT
  bench_report.py cpu-busy [SECONDS]         percent of all CPU time busy over SECONDS (1)
  bench_report.py cpu-mark PID               a mark (system busy ticks, PID's own ticks, time)
  bench_report.py cpu-others PID MARK...     percent of all CPU time used by other processes since
  bench_report.py parse-iperf3 FILE          GB/s received (end.sum_received), or exit 1
  bench_report.py parse-ucx FILE             JSON of the "Final:" line, or exit 1
  bench_report.py round-summary TMP K N      one line: round K's figures, ours and the references
  bench_report.py refs TMP                   TMP/refs.json for `nrt-sr-perf plot --refs`
  bench_report.py report TMP OUTDIR [DOC]    OUTDIR/results.json, and the latest results in DOC
                                             (docs/performance.md) between its bench markers;
                                             prints the target lines and the final `bench:` line
  bench_report.py docs RESULTS [DOC]         rewrites DOC's bench markers from a results.json

DOC's text between the lines `<!-- bench:begin -->` and `<!-- bench:end -->` is replaced; the rest
of DOC is left as it is. Both markers must be there, each once, on lines of their own.

Units: GB/s = 1e9 bytes per second. ucx_perftest prints bandwidth in MiB/s (bytes / 2^20 / s) and,
for ping-pong tests (tag_lat), latency as the round trip divided by two (ucx_perf_calc_result
divides by 2 for UCX_PERF_TEST_TYPE_PINGPONG); its first latency column is the median of the
last samples ("50.0%ile", "typical" in older releases).
"""
import datetime
import glob
import json
import math
import os
import platform
import random
import re
import socket
import statistics
import sys
import time

MIB = 1 << 20

# name -> (comparison, target); every ratio is ours / theirs.
TARGETS = [
    ("tcp_vs_iperf3", ">=", 1.0),
    ("tcp_vs_ucx", ">=", 1.0),
    ("shm_vs_memcpy", ">=", 0.7),
    ("shm_vs_ucx_sm", ">=", 1.5),
    ("lat8_tcp_vs_ucx", "<=", 1.0),
    ("lat8_shm_vs_ucx", "<=", 2.0),
    ("many_comms_vs_one", ">=", 0.8),
]

DEFAULT_DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "performance.md")


def shown(ratios, name, target):
    """Two decimals, or three where two would read as the target itself (1.005 is not <= 1.0)."""
    v = ratios.get(name)
    if v is None:
        return "n/a"
    return "%.3f" % v if "%.2f" % v == "%.2f" % target and v != target else "%.2f" % v


def bench_line(ratios):
    """The final line of make bench (scripts parse it: keep its format)."""
    return "bench: " + " ".join("%s=%s" % (name, shown(ratios, name, target)) for name, _, target in TARGETS)


# ---------------------------------------------------------------- ports

def port_free(port):
    for fam, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "0.0.0.0"),
                      (socket.AF_INET6, "::")):
        s = socket.socket(fam, socket.SOCK_STREAM)
        try:
            s.bind((addr, port))
        except OSError as e:
            # No IPv6 on this host: only the IPv4 checks count.
            if fam == socket.AF_INET6 and e.errno in (97, 99):
                continue
            return False
        finally:
            s.close()
    return True


def listening_ports():
    ports = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if len(parts) > 3 and parts[3] == "0A":  # TCP_LISTEN
                        ports.add(int(parts[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return ports


def cmd_free_port(args):
    count = int(args[0]) if args else 1
    rng = random.Random(os.getpid() ^ int(time.time() * 1e6))
    for _ in range(2000):
        base = rng.randrange(20000, 30000 - count)  # below the ephemeral range (32768+)
        if all(port_free(base + i) for i in range(count)):
            print(base)
            return 0
    print("bench_report: no free port range found", file=sys.stderr)
    return 1


def cpu_times():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    return sum(v[:8]), idle


def cmd_cpu_busy(args):
    seconds = float(args[0]) if args else 1.0
    t0, i0 = cpu_times()
    time.sleep(seconds)
    t1, i1 = cpu_times()
    print("%.0f" % (100.0 * (1 - (i1 - i0) / max(1, t1 - t0))))
    return 0


def own_ticks(pid):
    """CPU ticks of process PID and of its waited-for descendants (utime stime cutime cstime)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15])


def cmd_cpu_mark(args):
    total, idle = cpu_times()
    print("%d %d %.3f" % (total - idle, own_ticks(int(args[0])), time.monotonic()))
    return 0


def cmd_cpu_others(args):
    """Percent of the machine's CPU time used by processes other than PID (and its children)
    since the mark printed by cpu-mark."""
    pid, busy0, own0, t0 = int(args[0]), int(args[1]), int(args[2]), float(args[3])
    total, idle = cpu_times()
    busy = (total - idle) - busy0
    own = own_ticks(pid) - own0
    hz = os.sysconf("SC_CLK_TCK")
    capacity = max(1e-9, (time.monotonic() - t0) * hz * (os.cpu_count() or 1))
    print("%.0f" % max(0.0, 100.0 * (busy - own) / capacity))
    return 0


def cmd_wait_listen(args):
    port, seconds = int(args[0]), float(args[1])
    deadline = time.time() + seconds
    while time.time() < deadline:
        if port in listening_ports():
            return 0
        time.sleep(0.05)
    return 1


# ---------------------------------------------------------------- parsers

def parse_iperf3(path):
    with open(path) as f:
        d = json.load(f)
    if d.get("error"):
        raise ValueError("iperf3: " + str(d["error"]))
    s = d["end"]["sum_received"]
    if not s.get("seconds"):
        raise ValueError("iperf3: no time in end.sum_received")
    return s["bytes"] / s["seconds"] / 1e9


def parse_ucx(path):
    """The last 'Final:' line of ucx_perftest (single thread): iterations, latency p50,
    latency average, latency overall (usec), bandwidth average, overall (MiB/s), msg rate
    average, overall."""
    final = None
    with open(path, errors="replace") as f:
        for line in f:
            if line.lstrip().startswith("Final:"):
                final = line
    if final is None:
        raise ValueError("ucx_perftest: no 'Final:' line in " + path)
    nums = [float(x.replace(",", "")) for x in
            re.findall(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|inf|nan",
                       final.split("Final:", 1)[1])]
    if len(nums) < 8:
        raise ValueError("ucx_perftest: cannot read the 'Final:' line: " + final.strip())
    return {
        "iters": int(nums[0]),
        "lat_p50_us": nums[1],
        "lat_avg_us": nums[3],
        "bw_mib_s": nums[5],
        "gbytes_per_s": nums[5] * MIB / 1e9,
        "msgs_per_s": nums[7],
    }


def cmd_parse_iperf3(args):
    try:
        print("%.4f" % parse_iperf3(args[0]))
        return 0
    except (OSError, ValueError, KeyError, TypeError) as e:
        print("bench_report: %s: %s" % (args[0], e), file=sys.stderr)
        return 1


def cmd_parse_ucx(args):
    try:
        print(json.dumps(parse_ucx(args[0])))
        return 0
    except (OSError, ValueError) as e:
        print("bench_report: %s" % e, file=sys.stderr)
        return 1


# ---------------------------------------------------------------- collection

def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def machine():
    m = {"cpus": os.cpu_count(), "cpu_model": None, "kernel": platform.release(),
         "hostname": socket.gethostname(), "mem_gib": None}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    m["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    m["mem_gib"] = round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    return m


def read_env(tmp):
    env = {}
    try:
        with open(os.path.join(tmp, "env.txt")) as f:
            for line in f:
                if "=" in line:
                    k, v = line.rstrip("\n").split("=", 1)
                    env[k] = v
    except OSError:
        pass
    return env


def collect(tmp):
    env = read_env(tmp)
    streams = int(env.get("streams", "4"))
    errors = []
    try:
        with open(os.path.join(tmp, "errors.txt")) as f:
            errors = [l.strip() for l in f if l.strip()]
    except OSError:
        pass

    memcpy = load_json(os.path.join(tmp, "memcpy.json"))

    iperf3 = []
    for n in sorted({1, streams}):
        for zc in (False, True):
            path = os.path.join(tmp, "iperf3_P%d_%s.json" % (n, "zc" if zc else "copy"))
            try:
                g = parse_iperf3(path)
            except (OSError, ValueError, KeyError, TypeError):
                g = None
            iperf3.append({"streams": n, "zerocopy": zc, "block": "1M", "gbytes_per_s": g})
    # The ratio rounds' iperf3 runs (N streams, copy, 3 s each), in round order: with the
    # system's congestion control, and (context) with reno, which our loopback streams choose.
    def rounds_of(pattern):
        out = []
        for path in sorted(glob.glob(os.path.join(tmp, pattern % streams)),
                           key=lambda p: int(re.findall(r"_round(\d+)\.json$", p)[0])):
            try:
                out.append(parse_iperf3(path))
            except (OSError, ValueError, KeyError, TypeError):
                pass
        return out
    iperf3_rounds = rounds_of("iperf3_P%d_copy_round*.json")
    iperf3_reno_rounds = rounds_of("iperf3_P%d_copy_reno_round*.json")

    def ucx_one(name):
        try:
            return parse_ucx(os.path.join(tmp, name))
        except (OSError, ValueError):
            return None

    def ucx_median(tls, kind, key):
        vals = [r[key] for r in
                (ucx_one(os.path.basename(p)) for p in
                 sorted(glob.glob(os.path.join(tmp, "ucx_%s_%s_*.txt" % (tls, kind)))))
                if r is not None]
        return (statistics.median(vals) if vals else None), vals

    ucx = {}
    for tls in ("tcp", "sm"):
        bw4, bw4_runs = ucx_median(tls, "bw_4M", "gbytes_per_s")
        bw64, bw64_runs = ucx_median(tls, "bw_64M", "gbytes_per_s")
        lat, lat_runs = ucx_median(tls, "lat_8B", "lat_p50_us")
        ucx[tls] = {
            "UCX_TLS": env.get("ucx_tls_" + tls, tls),
            "tag_bw_4M_gbytes_per_s": bw4,
            "tag_bw_64M_gbytes_per_s": bw64,
            "tag_lat_8B_us": lat,
            "runs": {"tag_bw_4M_gbytes_per_s": bw4_runs, "tag_bw_64M_gbytes_per_s": bw64_runs,
                     "tag_lat_8B_us": lat_runs},
        }

    nrt_tcp = load_json(os.path.join(tmp, "nrt_tcp.json"))
    nrt_shm = load_json(os.path.join(tmp, "nrt_shm.json"))
    scale = []
    for path in sorted(glob.glob(os.path.join(tmp, "nrt_scale_c*_w*.json")),
                       key=lambda p: tuple(int(x) for x in re.findall(r"_c(\d+)_w(\d+)", p)[0])):
        c, w = (int(x) for x in re.findall(r"_c(\d+)_w(\d+)", path)[0])
        d = load_json(path)
        r = (d or {}).get("results") or [{}]
        scale.append({"comms": c, "window": w, "window_used": r[0].get("window"), "size": r[0].get("size"),
                      "gbytes_per_s": r[0].get("gbytes_per_s"),
                      "rss_bytes_per_comm": (d or {}).get("rss_bytes_per_comm"),
                      "cpu_s_per_gb": (d or {}).get("cpu_s_per_gb")})
    # bench/tcp_pair.c (plain kernel TCP shaped like ours at 64 MiB), in round order.
    tcp_pair_rounds = []
    for path in sorted(glob.glob(os.path.join(tmp, "tcp_pair_round*.json")),
                       key=lambda p: int(re.findall(r"_round(\d+)\.json$", p)[0])):
        d = load_json(path) or {}
        if d.get("gbytes_per_s") is not None:
            tcp_pair_rounds.append(d)
    return env, errors, memcpy, iperf3, iperf3_rounds, iperf3_reno_rounds, ucx, nrt_tcp, nrt_shm, scale, tcp_pair_rounds


def nrt_at(run, size, key):
    """`key` of the result at `size` (None: the first result that has it)."""
    if not run:
        return None
    for r in run.get("results") or []:
        if size in (None, r.get("size")) and r.get(key) is not None:
            return r[key]
    return None


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def human_size(n):
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= (1 << shift) and n % (1 << shift) == 0:
            return "%d %s" % (n >> shift, unit)
    return "%d B" % n


def fmt(v, spec="%.3f"):
    return "-" if v is None else spec % v


def fmt_gbs(v):
    """GB/s with three significant digits below 1 (small messages), three decimals above."""
    if v is None:
        return "-"
    if v <= 0 or v >= 0.1:
        return "%.3f" % v
    return "%.*f" % (2 - math.floor(math.log10(v)), v)


# ---------------------------------------------------------------- refs / report

def build_refs(tmp):
    env, errors, memcpy, iperf3, _, _, ucx, *_, pair = collect(tmp)
    refs = []
    for r in iperf3:
        if r["gbytes_per_s"] is not None:
            refs.append({"label": "iperf3 -l 1M %d stream%s%s" % (
                r["streams"], "" if r["streams"] == 1 else "s", " -Z" if r["zerocopy"] else ""),
                "size": MIB, "gbytes_per_s": r["gbytes_per_s"]})
    for tls in ("tcp", "sm"):
        u = ucx[tls]
        for size, key in ((4 * MIB, "tag_bw_4M_gbytes_per_s"), (64 * MIB, "tag_bw_64M_gbytes_per_s")):
            if u[key] is not None:
                refs.append({"label": "ucx %s tag_bw" % tls, "size": size, "gbytes_per_s": u[key]})
        if u["tag_lat_8B_us"] is not None:
            refs.append({"label": "ucx %s tag_lat" % tls, "size": 8, "lat_us": u["tag_lat_8B_us"]})
    # memcpy at 64 MiB only: the 4 MiB figure runs from cache (several times higher) and would
    # flatten every other line of the bandwidth panel; results.json/md keep it.
    if memcpy and memcpy.get("64M_gbytes_per_s") is not None:
        refs.append({"label": "memcpy", "size": 64 * MIB, "gbytes_per_s": memcpy["64M_gbytes_per_s"]})
    if pair:
        refs.append({"label": "C tcp pair", "size": pair[0]["message_bytes"],
                     "gbytes_per_s": statistics.median(r["gbytes_per_s"] for r in pair)})
    return refs


def cmd_round_summary(args):
    tmp, k, streams = args[0], int(args[1]), int(args[2])

    def fmt_med(vals, f):
        vals = [v for v in vals if v is not None]
        if not vals:
            return "-"
        return f % statistics.median(vals) + ("" if len(vals) == 1 else " (%s)" % " ".join(f % v for v in vals))

    def ucx(tls, kind, key, f):
        vals = []
        for path in sorted(glob.glob(os.path.join(tmp, "ucx_%s_%s_%d.txt" % (tls, kind, k))) +
                           glob.glob(os.path.join(tmp, "ucx_%s_%s_%d_*.txt" % (tls, kind, k)))):
            try:
                vals.append(parse_ucx(path)[key])
            except (OSError, ValueError, KeyError, TypeError):
                pass
        return fmt_med(vals, f)

    def nrt(name, size, key, f):
        paths = sorted(glob.glob(os.path.join(tmp, "nrt_%s_%d.json" % (name, k))) +
                       glob.glob(os.path.join(tmp, "nrt_%s_%d_*.json" % (name, k))))
        return fmt_med([nrt_at(load_json(p), size, key) for p in paths], f)

    def iperf3_round(tag):
        try:
            return "%.2f" % parse_iperf3(os.path.join(tmp, "iperf3_P%d_copy%s_round%d.json" % (streams, tag, k)))
        except (OSError, ValueError, KeyError, TypeError):
            return "-"
    ip = iperf3_round("")
    ip_reno = iperf3_round("_reno")
    pair = fmt((load_json(os.path.join(tmp, "tcp_pair_round%d.json" % k)) or {}).get("gbytes_per_s"), "%.2f")
    print("GB/s tcp %s (iperf3 %s, -C reno %s, ucx %s, C pair %s), shm %s (ucx sm %s); us tcp %s (ucx %s), shm %s (ucx sm %s); "
          "GB/s 1 comm %s, 64 comms %s" % (
        nrt("tcp_bw64", 64 * MIB, "gbytes_per_s", "%.2f"), ip, ip_reno, ucx("tcp", "bw_64M", "gbytes_per_s", "%.2f"), pair,
        nrt("shm_bw64", 64 * MIB, "gbytes_per_s", "%.2f"), ucx("sm", "bw_64M", "gbytes_per_s", "%.2f"),
        nrt("tcp_lat8", 8, "lat_p50_us", "%.2f"), ucx("tcp", "lat_8B", "lat_p50_us", "%.2f"),
        nrt("shm_lat8", 8, "lat_p50_us", "%.2f"), ucx("sm", "lat_8B", "lat_p50_us", "%.2f"),
        nrt("comms1", None, "gbytes_per_s", "%.2f"), nrt("comms64", None, "gbytes_per_s", "%.2f")))
    return 0


def cmd_refs(args):
    tmp = args[0]
    with open(os.path.join(tmp, "refs.json"), "w") as f:
        json.dump(build_refs(tmp), f, indent=1)
    return 0


def render_md(results):
    """The latest results as Markdown lines for docs/performance.md, from a results.json."""
    m = results.get("machine") or {}
    settings = results.get("settings") or {}
    streams = settings.get("tcp_streams", 4)
    nrt = results.get("nrt") or {}
    nrt_tcp, nrt_shm, scale = nrt.get("tcp"), nrt.get("shm"), nrt.get("scale") or []
    iperf3 = results.get("iperf3") or []
    ucx = results.get("ucx") or {}
    memcpy = results.get("memcpy") or {}
    ratios = results.get("ratios") or {}
    targets = results.get("targets") or {}
    med = results.get("round_medians") or {}
    pair_runs = (results.get("tcp_pair_rounds") or {}).get("gbytes_per_s") or []
    reno_runs = (results.get("iperf3_reno_rounds") or {}).get("gbytes_per_s") or []
    n_rounds = med.get("rounds", len((results.get("iperf3_rounds") or {}).get("gbytes_per_s") or []))
    scale_size = med.get("scale_size") or next((r["size"] for r in scale if r.get("size")), MIB)

    def u(tls, key):
        return (ucx.get(tls) or {}).get(key)

    def u_runs(tls, key):
        return len(((ucx.get(tls) or {}).get("runs") or {}).get(key) or [])

    md = ["<!-- Written by scripts/bench_report.py from bench/results.json (make bench). Edit the script, not this text. -->", ""]
    md.append("Run of %s: loopback on %s (%s CPUs, %s GiB, kernel %s). TCP: %d streams per communicator."
              % ((results.get("date") or "-")[:10], m.get("cpu_model"), m.get("cpus"), m.get("mem_gib"),
                 m.get("kernel"), streams))
    others = settings.get("cpu_others_percent_during") or {}
    if others:
        md.append("CPU time used by other processes during each phase: %s."
                  % ", ".join("%s %d%%" % kv for kv in others.items()))
    md.append("")
    md.append("![bandwidth and latency against message size](../bench/report.png)")
    md.append("")
    md.append("### Bandwidth and latency by message size")
    md.append("")
    wins = sorted({r.get("window") for run in (nrt_tcp, nrt_shm) if run
                   for r in run.get("results") or [] if r.get("window") is not None})
    md.append("`nrt-sr-perf --local --mode both`, one communicator; bandwidth with %s messages in flight "
              "(fewer for the largest sizes: the tool keeps at most 1 GiB of tensors per side), latency as "
              "the p50 half round trip." % (
                  "up to %d" % wins[-1] if wins else "-"))
    md.append("")
    md.append("| size | tcp GB/s | shm GB/s | tcp p50 µs | shm p50 µs |")
    md.append("|---:|---:|---:|---:|---:|")
    sizes = sorted({r.get("size") for run in (nrt_tcp, nrt_shm) if run
                    for r in run.get("results") or [] if r.get("size") is not None})
    for s in sizes:
        md.append("| %s | %s | %s | %s | %s |" % (
            human_size(s), fmt_gbs(nrt_at(nrt_tcp, s, "gbytes_per_s")), fmt_gbs(nrt_at(nrt_shm, s, "gbytes_per_s")),
            fmt(nrt_at(nrt_tcp, s, "lat_p50_us"), "%.1f"), fmt(nrt_at(nrt_shm, s, "lat_p50_us"), "%.1f")))
    if not sizes:
        md.append("| - | - | - | - | - |")
    md.append("")
    md.append("### References")
    md.append("")
    md.append("| reference | GB/s | half round trip µs |")
    md.append("|---|---:|---:|")
    for r in iperf3:
        md.append("| iperf3 `-l 1M -P %d%s` (%d s) | %s | |" % (
            r["streams"], " -Z" if r["zerocopy"] else "", settings.get("seconds", 5), fmt(r["gbytes_per_s"])))
    for tls in ("tcp", "sm"):
        name = (ucx.get(tls) or {}).get("UCX_TLS", tls)
        md.append("| ucx_perftest tag_bw 4 MiB, `UCX_TLS=%s` (median of %d runs) | %s | |" % (
            name, u_runs(tls, "tag_bw_4M_gbytes_per_s"), fmt(u(tls, "tag_bw_4M_gbytes_per_s"))))
        md.append("| ucx_perftest tag_bw 64 MiB, `UCX_TLS=%s` (median of %d runs) | %s | |" % (
            name, u_runs(tls, "tag_bw_64M_gbytes_per_s"), fmt(u(tls, "tag_bw_64M_gbytes_per_s"))))
        md.append("| ucx_perftest tag_lat 8 B, `UCX_TLS=%s` (p50, median of %d runs) | | %s |" % (
            name, u_runs(tls, "tag_lat_8B_us"), fmt(u(tls, "tag_lat_8B_us"), "%.2f")))
    for size, key in (("4 MiB", "4M_gbytes_per_s"), ("64 MiB", "64M_gbytes_per_s")):
        md.append("| memcpy %s (one core, best of %s) | %s | |" % (size, memcpy.get("runs", "-"), fmt(memcpy.get(key))))
    md.append("| plain C TCP pair, 64 MiB, %d streams, `sendfile`/`recv` (bench/tcp_pair.c, median of %d runs) | %s | |" % (
        streams, len(pair_runs), fmt(med.get("tcp_pair_gbytes_per_s"))))
    md.append("")
    md.append("### Communicators and messages in flight")
    md.append("")
    md.append("TCP, each run moving the same bytes in all; RSS per communicator and CPU seconds per GB "
              "(both processes).")
    md.append("")
    md.append("| comms | in flight per comm | size | GB/s | RSS per comm | CPU s per GB |")
    md.append("|---:|---:|---:|---:|---:|---:|")
    for r in scale:
        rss = r.get("rss_bytes_per_comm")
        win = str(r["window"])
        if r.get("window_used") not in (None, r["window"]):
            win += " (used %s)" % r["window_used"]
        md.append("| %d | %s | %s | %s | %s | %s |" % (
            r["comms"], win, human_size(r["size"]) if r.get("size") else "-", fmt_gbs(r.get("gbytes_per_s")),
            "-" if rss is None else "%.0f KiB" % (rss / 1024), fmt(r.get("cpu_s_per_gb"), "%.2f")))
    if not scale:
        md.append("| - | - | - | - | - | - |")
    md.append("")
    md.append("### Ratios")
    md.append("")
    md.append("Ratios at 64 MiB (bandwidth) and 8 B (half round trip, p50), from %d rounds in which each "
              "of ours and its reference ran back to back (64 MiB: 64 messages, window 16; 8 B: 20,000 "
              "ping-pongs, three pairs per round; iperf3 `-l 1M -P %d` for 3 s); every input is its median over all its runs: "
              "nrt tcp 64 MiB %s GB/s, 8 B %s µs; nrt shm 64 MiB %s GB/s, 8 B %s µs; iperf3 %s GB/s; "
              "ucx tcp 64 MiB %s GB/s, 8 B %s µs; ucx sm 64 MiB %s GB/s, 8 B %s µs; "
              "TCP %s messages, 16 in flight per communicator: 1 communicator %s GB/s, 64 communicators %s GB/s." % (
                  n_rounds, streams, fmt_gbs(med.get("nrt_tcp_64M_gbytes_per_s")), fmt(med.get("nrt_tcp_8B_lat_p50_us"), "%.2f"),
                  fmt_gbs(med.get("nrt_shm_64M_gbytes_per_s")), fmt(med.get("nrt_shm_8B_lat_p50_us"), "%.2f"),
                  fmt_gbs(med.get("iperf3_gbytes_per_s")),
                  fmt_gbs(u("tcp", "tag_bw_64M_gbytes_per_s")), fmt(u("tcp", "tag_lat_8B_us"), "%.2f"),
                  fmt_gbs(u("sm", "tag_bw_64M_gbytes_per_s")), fmt(u("sm", "tag_lat_8B_us"), "%.2f"),
                  human_size(scale_size), fmt_gbs(med.get("nrt_tcp_comms1_gbytes_per_s")),
                  fmt_gbs(med.get("nrt_tcp_comms64_gbytes_per_s"))))
    md.append("")
    md.append("| ratio (ours / theirs) | value | target | |")
    md.append("|---|---:|---:|---|")
    for name, op, target in TARGETS:
        met = (targets.get(name) or {}).get("met")
        md.append("| %s | %s | %s %.1f | %s |" % (
            name, shown(ratios, name, target), op, target, "-" if met is None else ("met" if met else "missed")))
    md.append("")
    md.append("Context, no target: our TCP streams to this host run reno ([transports.md](transports.md#congestion-control)); "
              "iperf3 `-C reno -P %d` in the same rounds: %s GB/s (median of %d), ours / it %s; iperf3 with the "
              "system's congestion control (the target's reference): %s GB/s." % (
                  streams, fmt_gbs(med.get("iperf3_reno_gbytes_per_s")), len(reno_runs),
                  fmt(ratios.get("tcp_vs_iperf3_reno"), "%.2f"), fmt_gbs(med.get("iperf3_gbytes_per_s"))))
    md.append("")
    md.append("Context, no target: the plain C TCP pair (bench/tcp_pair.c: the kernel's loopback TCP with our "
              "shape, 64 MiB messages from and into 16 memfd buffers per side) moved %s GB/s in the same rounds: "
              "ours / C pair %s, C pair / iperf3 %s. The 8-byte ping-pongs' best runs (each run's p50 "
              "sits at one of two levels, by where the host places the two vCPUs; the best of each side "
              "compares like with like): tcp %s, shm %s." % (
                  fmt_gbs(med.get("tcp_pair_gbytes_per_s")), fmt(ratios.get("tcp_vs_tcp_pair"), "%.2f"),
                  fmt(ratios.get("tcp_pair_vs_iperf3"), "%.2f"),
                  fmt(ratios.get("lat8_tcp_vs_ucx_best"), "%.2f"), fmt(ratios.get("lat8_shm_vs_ucx_best"), "%.2f")))
    md.append("")
    md.append("The closing line of `make bench`:")
    md.append("")
    md.append("```")
    md.append(bench_line(ratios))
    md.append("```")
    errors = results.get("errors") or []
    if errors:
        md.append("")
        md.append("Measurements that failed in this run: %s." % "; ".join(errors))
    return md


def write_doc(doc, lines, name="bench"):
    """Replaces the text between DOC's `<!-- NAME:begin -->` and `<!-- NAME:end -->` lines with
    LINES; an error message, or None."""
    marker_begin, marker_end = "<!-- %s:begin -->" % name, "<!-- %s:end -->" % name
    try:
        with open(doc) as f:
            text = f.read()
    except OSError as e:
        return "%s: %s" % (doc, e)
    rows = text.split("\n")
    begin = [i for i, r in enumerate(rows) if r.strip() == marker_begin]
    end = [i for i, r in enumerate(rows) if r.strip() == marker_end]
    if len(begin) != 1 or len(end) != 1 or begin[0] > end[0]:
        return "%s: needs one line %s followed by one line %s; results not written there" % (doc, marker_begin, marker_end)
    rows[begin[0] + 1:end[0]] = [""] + lines + [""]
    tmp = doc + ".tmp"
    try:
        with open(tmp, "w") as f:
            f.write("\n".join(rows))
        os.replace(tmp, doc)
    except OSError as e:
        return "%s: %s" % (doc, e)
    return None


def cmd_docs(args):
    """Rewrites DOC's bench markers from an existing results.json."""
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    doc = args[1] if len(args) > 1 else DEFAULT_DOC
    try:
        with open(args[0]) as f:
            results = json.load(f)
    except (OSError, ValueError) as e:
        print("bench_report: %s: %s" % (args[0], e), file=sys.stderr)
        return 1
    err = write_doc(doc, render_md(results))
    if err:
        print("bench_report: %s" % err, file=sys.stderr)
        return 1
    print("bench_report: wrote the results of %s into %s" % (results.get("date", "?"), doc))
    return 0


def cmd_report(args):
    tmp, outdir = args[0], args[1]
    doc = args[2] if len(args) > 2 else DEFAULT_DOC
    env, errors, memcpy, iperf3, iperf3_rounds, iperf3_reno_rounds, ucx, nrt_tcp, nrt_shm, scale, tcp_pair_rounds = collect(tmp)
    streams = int(env.get("streams", "4"))
    S64 = 64 * MIB

    def iperf(n, zc):
        for r in iperf3:
            if r["streams"] == n and r["zerocopy"] == zc:
                return r["gbytes_per_s"]
        return None

    def scale_at(c, w):
        for r in scale:
            if r["comms"] == c and r["window"] == w:
                return r["gbytes_per_s"]
        return None

    def rounds_runs(name, size, key):
        return [v for v in (nrt_at(load_json(p), size, key) for p in
                            glob.glob(os.path.join(tmp, "nrt_%s_*.json" % name))) if v is not None]

    def median_runs(name, size, key, fallback):
        # The ratio rounds' runs (median, as for the references); the sweep's figure without them.
        vals = rounds_runs(name, size, key)
        return statistics.median(vals) if vals else fallback

    scale_size = next((r["size"] for r in scale if r.get("size")), MIB)
    comms1 = median_runs("comms1", scale_size, "gbytes_per_s", scale_at(1, 16))
    comms64 = median_runs("comms64", scale_size, "gbytes_per_s", scale_at(64, 16))
    tcp64 = median_runs("tcp_bw64", S64, "gbytes_per_s", nrt_at(nrt_tcp, S64, "gbytes_per_s"))
    tcp_pair = statistics.median(r["gbytes_per_s"] for r in tcp_pair_rounds) if tcp_pair_rounds else None
    # Its shape as the program reported it (the same every round).
    pair_shape = {k: v for k, v in (tcp_pair_rounds[0] if tcp_pair_rounds else {}).items() if k != "gbytes_per_s"}
    # The rounds' iperf3 median (the reference of tcp_vs_iperf3; the tables' run without rounds).
    iperf3_med = statistics.median(iperf3_rounds) if iperf3_rounds else None
    iperf3_reno_med = statistics.median(iperf3_reno_rounds) if iperf3_reno_rounds else None
    iperf3_ref = iperf3_med if iperf3_med is not None else iperf(streams, False)
    shm64 = median_runs("shm_bw64", S64, "gbytes_per_s", nrt_at(nrt_shm, S64, "gbytes_per_s"))
    tcp_lat8 = median_runs("tcp_lat8", 8, "lat_p50_us", nrt_at(nrt_tcp, 8, "lat_p50_us"))
    shm_lat8 = median_runs("shm_lat8", 8, "lat_p50_us", nrt_at(nrt_shm, 8, "lat_p50_us"))

    def best_runs(name, size, key):
        # Context for the ping-pongs: each run's p50 sits at one of two levels (where the host
        # places the two vCPUs), so a median over 15 runs can land on either level for either
        # side; the best run of each compares the same placement.
        vals = rounds_runs(name, size, key)
        return min(vals) if vals else None

    def ucx_best(tls):
        runs = [v for v in ucx[tls]["runs"]["tag_lat_8B_us"] if v is not None]
        return min(runs) if runs else None
    ratios = {
        "tcp_vs_iperf3": ratio(tcp64, iperf3_ref),
        "tcp_vs_ucx": ratio(tcp64, ucx["tcp"]["tag_bw_64M_gbytes_per_s"]),
        "shm_vs_memcpy": ratio(shm64, (memcpy or {}).get("64M_gbytes_per_s")),
        "shm_vs_ucx_sm": ratio(shm64, ucx["sm"]["tag_bw_64M_gbytes_per_s"]),
        "lat8_tcp_vs_ucx": ratio(tcp_lat8, ucx["tcp"]["tag_lat_8B_us"]),
        "lat8_shm_vs_ucx": ratio(shm_lat8, ucx["sm"]["tag_lat_8B_us"]),
        "many_comms_vs_one": ratio(comms64, comms1),
        # Context only (no target): the same 64 MiB TCP figure against the other iperf3 runs.
        "tcp_vs_iperf3_1stream": ratio(tcp64, iperf(1, False)),
        "tcp_vs_iperf3_zerocopy": ratio(tcp64, iperf(streams, True)),
        # Against iperf3 -C reno, the congestion control our loopback streams choose.
        "tcp_vs_iperf3_reno": ratio(tcp64, iperf3_reno_med),
        # The 8-byte ping-pongs' best runs (context: the same vCPU placement on both sides).
        "lat8_tcp_vs_ucx_best": ratio(best_runs("tcp_lat8", 8, "lat_p50_us"), ucx_best("tcp")),
        "lat8_shm_vs_ucx_best": ratio(best_runs("shm_lat8", 8, "lat_p50_us"), ucx_best("sm")),
        # Plain kernel TCP with our shape at 64 MiB (bench/tcp_pair.c), medians over the rounds.
        "tcp_vs_tcp_pair": ratio(tcp64, tcp_pair),
        "tcp_pair_vs_iperf3": ratio(tcp_pair, iperf3_med),
        "tcp_4M_vs_ucx_4M": ratio(nrt_at(nrt_tcp, 4 * MIB, "gbytes_per_s"),
                                  ucx["tcp"]["tag_bw_4M_gbytes_per_s"]),
        "shm_4M_vs_ucx_sm_4M": ratio(nrt_at(nrt_shm, 4 * MIB, "gbytes_per_s"),
                                     ucx["sm"]["tag_bw_4M_gbytes_per_s"]),
    }
    targets = {}
    for name, op, target in TARGETS:
        v = ratios[name]
        met = None if v is None else (v >= target if op == ">=" else v <= target)
        targets[name] = {"value": None if v is None else round(v, 4),
                         "target": target, "cmp": op, "met": met}

    # A measurement the ratios need that produced nothing is a failure even if no step said so.
    needed = {
        "nrt tcp 64 MiB bandwidth": tcp64, "nrt tcp 8 B latency": tcp_lat8,
        "nrt shm 64 MiB bandwidth": shm64, "nrt shm 8 B latency": shm_lat8,
        "nrt scale 1 comm window 16": scale_at(1, 16), "nrt scale 64 comms window 16": scale_at(64, 16),
        "iperf3 %d streams" % streams: iperf3_ref,
        "ucx tcp tag_bw 64 MiB": ucx["tcp"]["tag_bw_64M_gbytes_per_s"],
        "ucx sm tag_bw 64 MiB": ucx["sm"]["tag_bw_64M_gbytes_per_s"],
        "ucx tcp tag_lat 8 B": ucx["tcp"]["tag_lat_8B_us"],
        "ucx sm tag_lat 8 B": ucx["sm"]["tag_lat_8B_us"],
        "memcpy 64 MiB": (memcpy or {}).get("64M_gbytes_per_s"),
    }
    missing = [k for k, v in needed.items() if v is None]
    if missing:
        errors.append("no value for: " + ", ".join(missing))

    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            "seconds": int(env.get("seconds", "5")), "tcp_streams": streams,
            "sizes": env.get("sizes"), "scale_size": env.get("scale_size"),
            "loadavg_at_start": env.get("loadavg"),
            # Percent of CPU time busy over one second just before each phase (other processes).
            "cpu_busy_percent_before": {k[5:]: int(v) for k, v in env.items() if k.startswith("busy_")},
            # Percent of the machine's CPU time other processes used during each phase.
            "cpu_others_percent_during": {k[7:]: int(v) for k, v in env.items() if k.startswith("others_")},
        },
        "nrt": {"tcp": nrt_tcp, "shm": nrt_shm, "scale": scale},
        "iperf3": iperf3,
        "iperf3_rounds": {"streams": streams, "seconds": 3, "gbytes_per_s": iperf3_rounds},
        "iperf3_reno_rounds": {"streams": streams, "seconds": 3, "congestion": "reno", "gbytes_per_s": iperf3_reno_rounds},
        "tcp_pair_rounds": dict(pair_shape, gbytes_per_s=[r["gbytes_per_s"] for r in tcp_pair_rounds]),
        "ucx": ucx,
        "memcpy": memcpy,
        # The inputs of the ratios: medians over the rounds (the sweep's figure where no round
        # measured it), as docs/performance.md shows them.
        "round_medians": {
            "rounds": len(iperf3_rounds),
            "nrt_tcp_64M_gbytes_per_s": tcp64, "nrt_tcp_8B_lat_p50_us": tcp_lat8,
            "nrt_shm_64M_gbytes_per_s": shm64, "nrt_shm_8B_lat_p50_us": shm_lat8,
            "scale_size": scale_size,
            "nrt_tcp_comms1_gbytes_per_s": comms1, "nrt_tcp_comms64_gbytes_per_s": comms64,
            "iperf3_gbytes_per_s": iperf3_med, "iperf3_reno_gbytes_per_s": iperf3_reno_med,
            "tcp_pair_gbytes_per_s": tcp_pair,
        },
        "ratios": {k: (None if v is None else round(v, 4)) for k, v in ratios.items()},
        "targets": targets,
        "errors": errors,
    }
    with open(os.path.join(outdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")

    # ---- docs/performance.md, between its bench markers
    err = write_doc(doc, render_md(results))
    if err:
        errors.append(err)

    # ---- console: one line per target, then the final line
    busy = {k: v for k, v in results["settings"]["cpu_others_percent_during"].items() if v > 10}
    if busy:
        print("bench: warning: other processes used the CPUs during %s: those figures are low and noisy"
              % ", ".join("%s (%d%%)" % kv for kv in busy.items()))
    for e in errors:
        print("bench: error: %s" % e)
    for name, op, target in TARGETS:
        t = targets[name]
        state = "n/a (not measured)" if t["met"] is None else ("met" if t["met"] else "MISSED")
        print("bench: target %-17s %s %.1f: %-5s %s" % (name, op, target, shown(ratios, name, target), state))
    print(bench_line(ratios))
    return 1 if errors else 0


def main():
    cmds = {"free-port": cmd_free_port, "cpu-busy": cmd_cpu_busy,
            "cpu-mark": cmd_cpu_mark, "cpu-others": cmd_cpu_others, "wait-listen": cmd_wait_listen,
            "parse-iperf3": cmd_parse_iperf3, "parse-ucx": cmd_parse_ucx,
            "round-summary": cmd_round_summary, "refs": cmd_refs, "report": cmd_report,
            "docs": cmd_docs}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        print(__doc__, file=sys.stderr)
        return 2
    return cmds[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
