#!/usr/bin/env bash
# make bench: our library (through build/bin/nrt-sr-perf) against iperf3, ucx_perftest and memcpy,
# all on this host's loopback, one after another (run it on an otherwise idle machine).
#
# Writes bench/results.json, bench/report.png (the tool's plot with the reference points) and the
# latest results into docs/performance.md, between its lines <!-- bench:begin --> and
# <!-- bench:end --> (scripts/bench_report.py; the method is described above them there); raw
# outputs stay in bench/tmp/ (ignored by git). Ends with one line per target (met / MISSED) and
# then exactly one line:
#   bench: tcp_vs_iperf3=R tcp_vs_ucx=R shm_vs_memcpy=R shm_vs_ucx_sm=R lat8_tcp_vs_ucx=R lat8_shm_vs_ucx=R many_comms_vs_one=R
# Every ratio is ours / theirs: bandwidths at 64 MiB (tcp against iperf3 -l 1M without -Z with the
# same number of TCP streams; against ucx_perftest tag_bw over UCX_TLS=tcp; shm against memcpy and
# ucx_perftest tag_bw over UCX_TLS=sm), latencies as the 8-byte half round trip p50 (against
# ucx_perftest tag_lat, whose latency is the round trip / 2), and
# many_comms_vs_one = GB/s with 64 communicators / GB/s with 1 (16 in flight each, TCP; both
# measured in every round). Context without a target: bench/tcp_pair.c, plain kernel TCP shaped
# like ours at 64 MiB (same streams, chunks, sendfile from memfd, 16 buffers per side, reno), runs in
# every round next to nrt tcp 64 MiB (results: tcp_vs_tcp_pair, tcp_pair_vs_iperf3), and so does
# iperf3 -C reno, the congestion control our streams choose on loopback (tcp_vs_iperf3_reno).
# The inputs of the ratios are medians over BENCH_ROUNDS rounds in which ours and the reference run
# back to back (loopback figures on a small VM drift a lot from minute to minute); the tables'
# iperf3 figures come from one 5 s run per setting, UCX 4 MiB from the median of 3 runs, memcpy
# from the best of 7 runs.
#
# The machine must be otherwise idle: before each phase the script waits (BENCH_IDLE_WAIT) for the
# CPUs to be < 10% busy, and after it prints a warning when other processes used more than 10% of
# the CPUs while it ran (results.json: settings.cpu_others_percent_during; docs/performance.md
# says it too).
# Exit status 0 when everything was measured (targets missed or not), 1 when a measurement failed
# (named on a "bench: error:" line before the target lines).
#
# Settings (environment):
#   BENCH_SECONDS      seconds per iperf3 run (after 1 omitted second)                 5
#   BENCH_TCP_STREAMS  TCP streams: iperf3 -P N and NEURON_RT_ASYNC_SENDRECV_TCP_STREAMS 4
#   BENCH_SIZES        nrt-sr-perf sweep sizes: powers of 8 up to 256 KiB, then of 4
#                      (4 MiB and 64 MiB are the sizes compared with ucx_perftest)
#                                                     8,64,512,4K,32K,256K,1M,4M,16M,64M,256M
#   BENCH_SCALE_SIZE   message size of the communicator/window scale runs; each run moves
#                      BENCH_SCALE_BYTES in all (split over its communicators), so runs with
#                      1 and 64 communicators are timed over the same volume. nrt-sr-perf keeps
#                      comms x window x size <= 1 GiB of tensors per side (it lowers the window
#                      beyond; results.json keeps the window used)                    1M
#   BENCH_SCALE_BYTES  bytes per scale run                                            4G
#   BENCH_FOOTPRINT    tensors per side that the rounds' 1- and 64-communicator runs cycle
#                      through (nrt-sr-perf --footprint): the same memory for both, so the
#                      ratio compares communicator counts, not a cache-resident 16 MiB window
#                      with 1 GiB of tensors (the scale matrix keeps one tensor per slot)  1G
#   BENCH_IDLE_WAIT    seconds to wait, before each phase, for the CPUs to be < 10% busy   30
#   BENCH_ROUNDS       ratio rounds (each: iperf3, ucx_perftest and nrt-sr-perf side by side,
#                      and nrt-sr-perf with 1 and 64 communicators)                   5
#   NRT_SR_PERF        the tool                                                       build/bin/nrt-sr-perf
set -u
cd "$(dirname "$0")/.."

SECS=${BENCH_SECONDS:-5}
N=${BENCH_TCP_STREAMS:-4}
SIZES=${BENCH_SIZES:-8,64,512,4K,32K,256K,1M,4M,16M,64M,256M}
SCALE_SIZE=${BENCH_SCALE_SIZE:-1M}
SCALE_BYTES=${BENCH_SCALE_BYTES:-4G}
FOOTPRINT=${BENCH_FOOTPRINT:-1G}
to_bytes() { python3 -c 'import sys; s=sys.argv[1].upper(); m={"K":1<<10,"M":1<<20,"G":1<<30}; print(int(s[:-1])*m[s[-1]] if s[-1] in m else int(s))' "$1"; }
IDLE_WAIT=${BENCH_IDLE_WAIT:-30}
ROUNDS=${BENCH_ROUNDS:-5}
TOOL=${NRT_SR_PERF:-build/bin/nrt-sr-perf}
OUT=bench
TMP=$OUT/tmp
DOC=docs/performance.md
PY="python3 scripts/bench_report.py"
UCX_TLS_TCP=tcp
UCX_TLS_SM=sm

# ------------------------------------------------------------------ packages
need=""
command -v python3 >/dev/null 2>&1 || need="$need python3"
command -v cc >/dev/null 2>&1 || need="$need gcc"
command -v timeout >/dev/null 2>&1 || need="$need coreutils"
command -v iperf3 >/dev/null 2>&1 || need="$need iperf3"
command -v ucx_perftest >/dev/null 2>&1 || need="$need ucx-utils"
command -v fi_pingpong >/dev/null 2>&1 || need="$need libfabric-bin"
# The plot's text.
ls /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf >/dev/null 2>&1 || need="$need fonts-dejavu-core"
if [ -n "$need" ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        if sudo -n true 2>/dev/null; then SUDO="sudo"; else SUDO="none"; fi
    fi
    if [ "$SUDO" = none ]; then
        echo "bench: missing packages:$need (not root and no sudo: the measurements that need them will fail)" >&2
    else
        echo "bench: installing$need"
        export DEBIAN_FRONTEND=noninteractive
        $SUDO apt-get update -qq >/dev/null
        $SUDO apt-get install -y -qq $need >/dev/null || echo "bench: apt-get install$need failed" >&2
    fi
fi
command -v python3 >/dev/null 2>&1 || { echo "bench: python3 is required" >&2; exit 1; }
# Messages per scale run (split over its communicators).
scale_msgs=$(( $(to_bytes "$SCALE_BYTES") / $(to_bytes "$SCALE_SIZE") ))

rm -rf "$TMP"
mkdir -p "$TMP"
: > "$TMP/errors.txt"
{
    echo "seconds=$SECS"
    echo "streams=$N"
    echo "sizes=$SIZES"
    echo "scale_size=$SCALE_SIZE"
    echo "footprint=$FOOTPRINT"
    echo "loadavg=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
    echo "ucx_tls_tcp=$UCX_TLS_TCP"
    echo "ucx_tls_sm=$UCX_TLS_SM"
} > "$TMP/env.txt"

# Background servers: killed on any exit (timeout passes the signal on to its command).
BG=()
cleanup() {
    local p
    for p in "${BG[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${BG[@]}"; do wait "$p" 2>/dev/null; done
    BG=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

log() { echo "bench: $*"; }
fail() { echo "bench: FAILED: $*" >&2; echo "$*" >> "$TMP/errors.txt"; }
# The last lines of a log, indented, on stderr.
tail_log() { [ -s "$1" ] && tail -n "${2:-8}" "$1" | sed 's/^/    | /' >&2; }
# A command run in the background and waited for, so that a signal to this script is handled at
# once (bash runs traps only between foreground commands) and the command is killed with the rest.
run_fg() { "$@" & local p=$!; BG+=("$p"); bg_wait "$p"; }
# wait for a background process, bounded: it runs under timeout(1) already.
bg_wait() { wait "$1" 2>/dev/null; local rc=$?; local keep=() p; for p in "${BG[@]}"; do [ "$p" != "$1" ] && keep+=("$p"); done; BG=("${keep[@]+"${keep[@]}"}"); return $rc; }

# Before each phase: wait (up to BENCH_IDLE_WAIT seconds) until the CPUs are less than 10% busy
# over one second; record the last sample; warn when the machine stayed busy.
idle_check() {  # phase
    local busy waited=0
    while :; do
        busy=$($PY cpu-busy 1)
        [ "$busy" -le 10 ] && break
        [ "$waited" -ge "$IDLE_WAIT" ] && break
        [ "$waited" -eq 0 ] && log "$1: waiting up to ${IDLE_WAIT}s for the machine to go idle (${busy}% busy)"
        sleep 1; waited=$((waited + 2))
    done
    echo "busy_$1=$busy" >> "$TMP/env.txt"
    if [ "$busy" -gt 10 ]; then
        log "warning: $1: the machine is not idle (${busy}% CPU busy before it): its figures will be low and noisy"
    fi
    MARK=$($PY cpu-mark $$)
}
# After a phase: how much of the machine other processes used while it ran (this script's
# children, and the kernel work done on their behalf, excluded).
phase_end() {  # phase
    local others
    # shellcheck disable=SC2086
    others=$($PY cpu-others $$ $MARK) || return 0
    echo "others_$1=$others" >> "$TMP/env.txt"
    if [ "$others" -gt 10 ]; then
        log "warning: $1: other processes used ${others}% of the CPUs during it: its figures are low and noisy"
    fi
}
MARK=""
log "$(nproc) CPUs; BENCH_SECONDS=$SECS BENCH_TCP_STREAMS=$N"

# ------------------------------------------------------------------ memcpy
idle_check memcpy
log "memcpy: 4 MiB and 64 MiB, one core, best of 7 runs"
if cc -O2 -std=c11 -o "$TMP/memcpy" bench/memcpy.c 2> "$TMP/memcpy.build.log"; then
    if ! run_fg timeout 60 "$TMP/memcpy" > "$TMP/memcpy.json" 2> "$TMP/memcpy.err"; then
        fail "memcpy: bench/memcpy.c run failed"; tail_log "$TMP/memcpy.err"
    else
        log "memcpy: $(cat "$TMP/memcpy.json")"
    fi
else
    fail "memcpy: cannot compile bench/memcpy.c"; tail_log "$TMP/memcpy.build.log"
fi

# ------------------------------------------------------------------ iperf3
iperf3_run() {  # streams zc|copy [tag seconds congestion-control]
    local streams=$1 mode=$2 tag=${3:-} secs=${4:-$SECS} port pid zflag="" out="$TMP/iperf3_P$1_$2${3:-}.json" g
    [ "$mode" = zc ] && zflag="-Z"
    [ -n "${5:-}" ] && zflag="$zflag -C $5"
    if ! command -v iperf3 >/dev/null 2>&1; then fail "iperf3 -P $streams $zflag: iperf3 not installed"; return; fi
    port=$($PY free-port 1) || { fail "iperf3: no free port"; return; }
    timeout $((secs + 30)) iperf3 -s -1 -B 127.0.0.1 -p "$port" > "$TMP/iperf3_P${streams}_${mode}${tag}.server.log" 2>&1 &
    pid=$!; BG+=("$pid")
    if ! $PY wait-listen "$port" 10; then
        fail "iperf3 -P $streams $zflag: server did not listen on port $port"; tail_log "$TMP/iperf3_P${streams}_${mode}${tag}.server.log"
        kill "$pid" 2>/dev/null; bg_wait "$pid"; return
    fi
    if ! run_fg timeout $((secs + 30)) iperf3 -c 127.0.0.1 -p "$port" -l 1M -t "$secs" -O 1 -P "$streams" $zflag -J \
            > "$out" 2> "$out.err"; then
        fail "iperf3 -P $streams $zflag: client failed"; tail_log "$out.err"; tail_log "$out" 4
    fi
    bg_wait "$pid"
    if g=$($PY parse-iperf3 "$out" 2>> "$out.err"); then
        log "iperf3 -l 1M -P $streams $zflag (${secs} s): $g GB/s"
    else
        fail "iperf3 -P $streams $zflag: no result"; tail_log "$out.err" 3
    fi
}
# The plain C TCP pair (bench/tcp_pair.c): run in the ratio rounds, next to nrt tcp 64 MiB.
PAIR_OK=0
if cc -O2 -std=c11 -o "$TMP/tcp_pair" bench/tcp_pair.c 2> "$TMP/tcp_pair.build.log"; then
    PAIR_OK=1
else
    fail "tcp_pair: cannot compile bench/tcp_pair.c"; tail_log "$TMP/tcp_pair.build.log"
fi
pair_run() {  # round
    [ $PAIR_OK = 1 ] || return
    if run_fg timeout 120 "$TMP/tcp_pair" "$N" 64 16 64 reno > "$TMP/tcp_pair_round$1.json" 2> "$TMP/tcp_pair_round$1.err" \
            && [ -s "$TMP/tcp_pair_round$1.json" ]; then
        return
    fi
    fail "tcp_pair (round $1): run failed"; tail_log "$TMP/tcp_pair_round$1.err"
    rm -f "$TMP/tcp_pair_round$1.json"
}
phase_end memcpy
idle_check iperf3
for s in $(printf '%s\n' 1 "$N" | sort -nu); do
    iperf3_run "$s" copy
    iperf3_run "$s" zc
done

# ------------------------------------------------------------------ ucx_perftest
ucx_run() {  # tls-name UCX_TLS test size iters warmup tag
    local name=$1 tls=$2 test=$3 size=$4 iters=$5 warm=$6 tag=$7 port pid r
    local out="$TMP/ucx_${name}_${tag}.txt"
    if ! command -v ucx_perftest >/dev/null 2>&1; then fail "ucx $name $tag: ucx_perftest not installed"; return; fi
    port=$($PY free-port 1) || { fail "ucx: no free port"; return; }
    UCX_TLS=$tls timeout 90 ucx_perftest -p "$port" > "$out.server" 2>&1 &
    pid=$!; BG+=("$pid")
    if ! $PY wait-listen "$port" 10; then
        fail "ucx $name $tag: server did not listen on port $port"; tail_log "$out.server"
        kill "$pid" 2>/dev/null; bg_wait "$pid"; return
    fi
    if ! UCX_TLS=$tls run_fg timeout 60 ucx_perftest 127.0.0.1 -p "$port" -t "$test" -s "$size" -n "$iters" -w "$warm" \
            > "$out" 2>&1; then
        fail "ucx $name $tag (UCX_TLS=$tls ucx_perftest -t $test -s $size): client failed"; tail_log "$out"
    fi
    bg_wait "$pid"
    if r=$($PY parse-ucx "$out" 2>> "$out.err"); then
        log "ucx $name $test $tag: $r"
    else
        fail "ucx $name $tag: no result"; tail_log "$out.err" 3
    fi
}
phase_end iperf3
idle_check ucx
for name in tcp sm; do
    if [ $name = tcp ]; then tls=$UCX_TLS_TCP; else tls=$UCX_TLS_SM; fi
    for i in 1 2 3; do
        ucx_run $name "$tls" tag_bw $((4 << 20)) 1000 100 "bw_4M_$i"
    done
done

phase_end ucx

# ------------------------------------------------------------------ nrt-sr-perf
TOOL_OK=1
if [ ! -x "$TOOL" ]; then
    TOOL_OK=0
    fail "nrt: $TOOL not found: build it with 'make perf-tool' (tools/nrt-sr-perf); no nrt figures"
fi

nrt_run() {  # name timeout_s tool-args...
    local name=$1 limit=$2; shift 2
    local port log="$TMP/nrt_$name.log" rc
    port=$($PY free-port 8) || { fail "nrt $name: no free port range"; return 1; }
    echo "+ $TOOL --local --port-base $port --no-progress --json $TMP/nrt_$name.json $*" > "$log"
    NEURON_RT_ASYNC_SENDRECV_LISTEN_ADDR=${NEURON_RT_ASYNC_SENDRECV_LISTEN_ADDR:-127.0.0.1} \
    NEURON_RT_ASYNC_SENDRECV_TCP_STREAMS=$N \
        run_fg timeout "$limit" "$TOOL" --local --port-base "$port" --no-progress --json "$TMP/nrt_$name.json" "$@" \
        >> "$log" 2>&1
    rc=$?
    if [ $rc -ne 0 ] || [ ! -s "$TMP/nrt_$name.json" ]; then
        [ $rc -eq 124 ] && rc="timeout after ${limit}s"
        fail "nrt $name ($*): exit $rc, log $log"; tail_log "$log" 10
        rm -f "$TMP/nrt_$name.json"
        return 1
    fi
    return 0
}

if [ $TOOL_OK = 1 ]; then
    idle_check nrt_tcp
    log "nrt tcp: sizes $SIZES, $N streams"
    nrt_run tcp 240 --transport tcp --mode both --sizes "$SIZES" --label "nrt tcp" && tail -n 20 "$TMP/nrt_tcp.log"
    phase_end nrt_tcp
    idle_check nrt_shm
    log "nrt shm: sizes $SIZES"
    nrt_run shm 240 --transport shm --mode both --sizes "$SIZES" --label "nrt shm" && tail -n 20 "$TMP/nrt_shm.log"
    phase_end nrt_shm
    idle_check nrt_scale
    log "nrt scale: TCP, $SCALE_SIZE messages, communicators 1 8 64 x in flight 1 16 128"
    for c in 1 8 64; do
        for w in 1 16 128; do
            if nrt_run "scale_c${c}_w${w}" 120 --transport tcp --mode bw --sizes "$SCALE_SIZE" \
                    --comms $c --window $w --iters $(( scale_msgs / c )) --min-iters 16 --bytes-per-size 64G \
                    --label "nrt tcp ${c}x${w}"; then
                log "  comms $c window $w: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); r=d["results"][0]; print("%.3f GB/s (window used %s), RSS/comm %s B, CPU s/GB %s" % (r["gbytes_per_s"] or 0, r.get("window"), d.get("rss_bytes_per_comm"), d.get("cpu_s_per_gb")))' "$TMP/nrt_scale_c${c}_w${w}.json" 2>&1)"
            fi
        done
    done
    phase_end nrt_scale
fi

# ------------------------------------------------------------------ ratio rounds
# The ratio inputs, measured in ROUNDS rounds, each running ours and the reference one after the
# other (iperf3 -P N for 3 s, nrt tcp 64 MiB, the plain C TCP pair, ucx tcp 64 MiB, nrt shm 64 MiB, ucx sm 64 MiB, then
# the 8-byte ping-pongs the same way, three times (and, as context, iperf3 -C reno), then 1 and 64 communicators x 16 in flight, TCP,
# SCALE_SIZE messages, SCALE_BYTES each, both cycling through FOOTPRINT of tensors): this VM's loopback speed drifts by tens of percent within
# minutes, and a pair measured seconds apart sees the same machine. Each side's figure is the
# median over the rounds.
idle_check ratio_rounds
log "ratio rounds: $ROUNDS x (iperf3 -P $N, nrt/ucx tcp 64 MiB, nrt/ucx shm|sm 64 MiB, nrt/ucx tcp 8 B, nrt/ucx shm|sm 8 B, nrt tcp 1 and 64 communicators)"
for k in $(seq "$ROUNDS"); do
    iperf3_run "$N" copy "_round$k" 3
    # Context: iperf3 with the congestion control our streams choose on loopback (reno).
    iperf3_run "$N" copy "_reno_round$k" 3 reno
    [ $TOOL_OK = 1 ] && { nrt_run "tcp_bw64_$k" 120 --transport tcp --mode bw --sizes 64M --iters 64 --bytes-per-size 8G --label "nrt tcp 64M #$k" || true; }
    pair_run "$k"
    ucx_run tcp "$UCX_TLS_TCP" tag_bw $((64 << 20)) 100 10 "bw_64M_$k"
    [ $TOOL_OK = 1 ] && { nrt_run "shm_bw64_$k" 120 --transport shm --mode bw --sizes 64M --iters 64 --bytes-per-size 8G --label "nrt shm 64M #$k" || true; }
    ucx_run sm "$UCX_TLS_SM" tag_bw $((64 << 20)) 100 10 "bw_64M_$k"
    # Ping-pongs are short (1-2 s) and the two vCPUs' placement on the host flips their figures
    # between two levels from one run to the next: 3 pairs per round.
    for j in 1 2 3; do
        [ $TOOL_OK = 1 ] && { nrt_run "tcp_lat8_${k}_$j" 120 --transport tcp --mode lat --sizes 8 --iters 20000 --label "nrt tcp 8B #$k.$j" || true; }
        ucx_run tcp "$UCX_TLS_TCP" tag_lat 8 10000 1000 "lat_8B_${k}_$j"
        [ $TOOL_OK = 1 ] && { nrt_run "shm_lat8_${k}_$j" 120 --transport shm --mode lat --sizes 8 --iters 20000 --label "nrt shm 8B #$k.$j" || true; }
        ucx_run sm "$UCX_TLS_SM" tag_lat 8 10000 1000 "lat_8B_${k}_$j"
    done
    # Scale pair: 1 and 64 communicators, 16 in flight each, the same volume.
    if [ $TOOL_OK = 1 ]; then
        for c in 1 64; do
            nrt_run "comms${c}_$k" 120 --transport tcp --mode bw --sizes "$SCALE_SIZE" --footprint "$FOOTPRINT" \
                --comms $c --window 16 --iters $(( scale_msgs / c )) --min-iters 16 --bytes-per-size 64G \
                --label "nrt tcp ${c}x16 #$k" || true
        done
    fi
    log "  round $k: $($PY round-summary "$TMP" "$k" "$N" 2>&1)"
done
phase_end ratio_rounds

# ------------------------------------------------------------------ report
$PY refs "$TMP" || fail "refs.json not written"
rm -f "$OUT/report.png"  # from this run or absent, never a stale one
runs=()
for r in tcp shm; do [ -s "$TMP/nrt_$r.json" ] && runs+=("$TMP/nrt_$r.json"); done
if [ $TOOL_OK = 1 ] && [ ${#runs[@]} -gt 0 ]; then
    model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
    if run_fg timeout 120 "$TOOL" plot --out "$OUT/report.png" \
            --title "nrt-sendrecv on loopback: $model, $(nproc) CPUs" \
            --refs "$TMP/refs.json" "${runs[@]}" > "$TMP/plot.log" 2>&1; then
        log "plot: $OUT/report.png"
    else
        fail "plot: $TOOL plot failed, log $TMP/plot.log"; tail_log "$TMP/plot.log"
    fi
else
    fail "plot: no nrt run to plot; $OUT/report.png not written"
fi
# ------------------------------------------------------------------ libfabric
# The ofi transport against fi_pingpong on the same provider (tcp, shm): its own target lines and
# "bench ofi: ..." line, and its table in $DOC (scripts/bench_ofi.py).
if [ $TOOL_OK = 1 ] && command -v fi_pingpong >/dev/null 2>&1 && ldd build/lib/libnrt.so.1 | grep -q libfabric; then
    idle_check ofi
    run_fg python3 scripts/bench_ofi.py "$TOOL" "$TMP" "$DOC" || fail "ofi: a measurement failed (see the lines above)"
    phase_end ofi
else
    log "ofi: skipped (no fi_pingpong, or the library was built with OFI=0)"
fi
# ------------------------------------------------------------------ first messages
# The first 5 messages after connecting against the steady state, shm and tcp (its own target
# lines and "bench first: ..." line, and its table in $DOC: scripts/bench_first.py).
idle_check first
run_fg python3 scripts/bench_first.py "$TMP" "$DOC" || fail "first: a measurement failed (see the lines above)"
phase_end first
cleanup
log "writing $OUT/results.json and the latest results in $DOC"
# Prints the errors, one line per target, then the final line; exits 1 when something failed.
$PY report "$TMP" "$OUT" "$DOC"
