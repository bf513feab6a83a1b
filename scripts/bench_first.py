#!/usr/bin/env python3
"""First messages after connecting against the steady state (part of `make bench`).

Usage: bench_first.py TMP DOC [ROUNDS]

Builds bench/first5.c against build/lib, then for each transport (shm, tcp) and size (1 MiB,
64 MiB) runs ROUNDS fresh pairs: connect, one warm-up message, 5 timed messages one at a time,
then a steady batch (200 messages at 1 MiB, 30 at 64 MiB) timed the same way, every byte of the
batches' last messages checked by the receiver. Per round the ratio is the first batch's rate over
the steady batch's; the reported ratio is the median over the rounds, the smaller of the two sizes:
  first5_vs_steady_<transport>   (target >= 0.5: the first batch at least half the steady rate)
Prints one line per target, then
  bench first: first5_vs_steady_shm=R first5_vs_steady_tcp=R
writes TMP/first.json and the table between `<!-- bench-first:begin -->` and
`<!-- bench-first:end -->` in DOC. Exit 1 when a measurement failed.
"""
import bench_report, json, os, statistics, subprocess, sys

TMP, DOC = sys.argv[1], sys.argv[2]
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = [(1 << 20, 200), (64 << 20, 30)]


def free_base():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench_report.py"), "free-port", "4"],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def main():
    exe = os.path.join(TMP, "first5")
    subprocess.run(["cc", "-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I" + os.path.join(ROOT, "include"), "-o", exe,
                    os.path.join(ROOT, "bench", "first5.c"), "-L" + os.path.join(ROOT, "build", "lib"), "-lnrt",
                    "-Wl,-rpath," + os.path.join(ROOT, "build", "lib")], check=True)
    res, errors = {}, []
    for tr in ("shm", "tcp"):
        for size, steady in SIZES:
            runs = []
            for k in range(ROUNDS):
                base = free_base()
                env = dict(os.environ, NEURON_RT_ASYNC_SENDRECV_TRANSPORT=tr, NEURON_RT_ASYNC_SENDRECV_LISTEN_ADDR="127.0.0.1",
                           NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT=str(base), NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL="error")
                p = subprocess.run(["timeout", "120", exe, str(size), str(steady), "0"], env=env, capture_output=True, text=True)
                f = dict(kv.split("=") for kv in p.stdout.split()[2:]) if p.returncode == 0 and p.stdout.startswith("first5") else None
                if not f:
                    errors.append(f"{tr} {size} B round {k}: rc {p.returncode}: {p.stderr.strip()[-300:]}")
                    continue
                runs.append((float(f["us_first"]), float(f["us_steady"])))
            if runs:
                res[(tr, size)] = runs
                ratios = [s / f for f, s in runs]
                print(f"bench: first {tr} {size >> 20} MiB: first 5 {statistics.median(r[0] for r in runs):.1f} us/message, "
                      f"steady {statistics.median(r[1] for r in runs):.1f}; ratio per round {' '.join(f'{x:.2f}' for x in ratios)}")
    ratios, rows = {}, []
    for tr in ("shm", "tcp"):
        per = []
        for size, _ in SIZES:
            runs = res.get((tr, size))
            if not runs:
                continue
            r = statistics.median(s / f for f, s in runs)
            per.append(r)
            f_us, s_us = statistics.median(x[0] for x in runs), statistics.median(x[1] for x in runs)
            rows.append(f"| {tr} | {size >> 20} MiB | {size / f_us / 1e3:.2f} GB/s ({f_us:.0f} µs) | {size / s_us / 1e3:.2f} GB/s ({s_us:.0f} µs) | {r:.2f} |")
        if len(per) == len(SIZES):
            ratios[f"first5_vs_steady_{tr}"] = min(per)
    for e in errors:
        print(f"bench: error: first: {e}")
    for k, v in ratios.items():
        print(f"bench: target {k:<32} >= 0.5: {v:.2f}  {'met' if v >= 0.5 else 'MISSED'}")
    print("bench first: " + " ".join(f"{k}={v:.2f}" for k, v in ratios.items()))
    json.dump({"runs_us": {f"{t}_{s}": v for (t, s), v in res.items()}, "ratios": ratios, "errors": errors},
              open(os.path.join(TMP, "first.json"), "w"), indent=1)
    table = ["| transport | size | first 5 after connecting | steady state | first / steady |", "|---|---|---|---|---|"] + rows
    err = bench_report.write_doc(DOC, table, "bench-first")
    if err:
        errors.append(err)
        print(f"bench: error: {err}")
    return 1 if errors or len(ratios) < 2 else 0


sys.exit(main())
