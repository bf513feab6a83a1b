#!/bin/bash
# make test-ofi: the libfabric transport on loopback, once per provider this host can run:
# FI_PROVIDER=tcp (tcp;ofi_rxm) and FI_PROVIDER=shm. For each: the C conformance suite with
# NEURON_RT_ASYNC_SENDRECV_TRANSPORT=ofi (every byte checked by the programs), and t_transfer at
# log level info, whose log must say "transport ofi" with the provider. Ends with one line
# "ofi: N passed, M failed".
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
LOGDIR=$ROOT/build/test-logs
mkdir -p "$LOGDIR"
passed=0
failed=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failed=$((failed + 1)); }

if ! ldd build/lib/libnrt.so.1 2>/dev/null | grep -q 'libfabric\.so\.1'; then
    fail "build/lib/libnrt.so.1 does not link libfabric.so.1 (built with OFI=0?)"
    echo "ofi: $passed passed, $failed failed"
    exit 1
fi
pass "build/lib/libnrt.so.1 links libfabric.so.1"
# The shm provider's regions in /dev/shm ("<pid>:<uid>:<n>") before the runs: at the end, those
# the runs left behind are counted (see the end).
shm_regions() { ls /dev/shm 2>/dev/null | grep -E '^[0-9]+:[0-9]+:[0-9]+$' | sort; }
shm_before=$(shm_regions)
# The rails over libfabric itself (transport/ofi/fabric/): tagged messages, RMA writes with
# remote CQ data and reads between two endpoints of one process, tcp and shm, every byte checked.
if env -u FI_PROVIDER cargo test --release --locked --lib --features ofi transport::ofi::fabric >"$LOGDIR/ofi-fabric.log" 2>&1 \
   && grep -q "^test result: ok" "$LOGDIR/ofi-fabric.log"; then
    pass "libfabric rails: $(grep -Eo '[0-9]+ passed' "$LOGDIR/ofi-fabric.log" | tail -1) (fabric/tests.rs: tcp and shm endpoints, bytes checked)"
else fail "libfabric rails' tests (see $LOGDIR/ofi-fabric.log)"; grep -E "FAILED|panicked" "$LOGDIR/ofi-fabric.log" | head -5; fi
start=12000
for prov in tcp shm; do
    log=$LOGDIR/ofi-$prov-suite.log
    FI_PROVIDER=$prov NEURON_RT_ASYNC_SENDRECV_TRANSPORT=ofi NRT_TEST_PORT_START=$start \
        c_tests/run.sh "$ROOT" >"$log" 2>&1
    line=$(grep -E "^C: [0-9]+ passed, [0-9]+ failed" "$log" | tail -1)
    grep -E "^(PASS|FAIL) " "$log" | sed "s/^\(PASS\|FAIL\) /\1 [ofi $prov] /"
    if [ -z "$line" ]; then fail "[ofi $prov] C suite did not report (see $log)"; else
        passed=$((passed + $(echo "$line" | sed -E 's/.*: ([0-9]+) passed.*/\1/')))
        failed=$((failed + $(echo "$line" | sed -E 's/.* ([0-9]+) failed/\1/')))
    fi
    tlog=$LOGDIR/ofi-$prov-transfer.log
    if FI_PROVIDER=$prov NEURON_RT_ASYNC_SENDRECV_TRANSPORT=ofi NRT_TEST_PORT_BASE=$((start + 9000)) \
           NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL=info timeout 120 build/c_tests/t_transfer >"$tlog" 2>&1 \
       && grep -q "transport ofi .*$prov" "$tlog"; then
        pass "[ofi $prov] t_transfer at log level info: $(grep -m1 -o "transport ofi[^(]*" "$tlog")"
    else fail "[ofi $prov] t_transfer at log level info (see $tlog)"; tail -5 "$tlog"; fi
    start=$((start + 200))
done
# The LD_PRELOAD library over libfabric: the stand-in vendor library's host and device tensors in
# four directions, every byte checked by t_preload, device tensors without an address and (run.sh's
# second run, FAKE_NRT_MAP_HBM=guard) with one that nobody may touch. No provider here registers
# Neuron device memory, so device tensors must be staged through host memory of ours, and the
# log says so: over tcp (no FI_HMEM) and shm (FI_HMEM offered, FI_HMEM_NEURON registration
# refused: device memory is staged after the refusal).
for prov in tcp shm; do
    plog=$LOGDIR/ofi-preload-$prov.log
    case $prov in
        tcp) why="the provider offers no FI_HMEM" ;;
        shm) why="registering it as device memory failed" ;;
    esac
    if NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL=info NEURON_RT_ASYNC_SENDRECV_TRANSPORT=ofi FI_PROVIDER=$prov NRT_TEST_PORT_BASE=$((start + 9500)) \
           c_tests/preload/run.sh >"$plog" 2>&1 && grep -q "transport ofi" build/preload-test/ours.log \
       && grep -q "device memory staged through host memory over .*: it has no virtual address" build/preload-test/ours.log \
       && grep -q "device memory staged through host memory over .*: $why" build/preload-test/ours-hbm.log; then
        pass "[ofi $prov] LD_PRELOAD library: host/device tensors in four directions, device tensors with and without an address staged ($why), byte-verified ($(tail -1 "$plog"))"
    else fail "[ofi $prov] LD_PRELOAD library (see $plog, build/preload-test/ours.log, ours-hbm.log)"; tail -5 "$plog"; fi
    start=$((start + 200))
done
# Two rails on real libfabric: FI_PROVIDER=tcp over two of its domains (lo and the host's
# interface), t_transfer's every byte checked, and the debug log's per-rail byte counters show that
# both rails carried bytes. Needs a second domain (a network interface besides lo).
if [ "$(fi_info -p tcp -t FI_EP_RDM 2>/dev/null | awk '/domain:/ {print $2}' | sort -u | wc -l)" -ge 2 ]; then
    rlog=$LOGDIR/ofi-tcp-2rails.log
    if FI_PROVIDER=tcp NEURON_RT_ASYNC_SENDRECV_OFI_RAILS=2 NEURON_RT_ASYNC_SENDRECV_TRANSPORT=ofi NRT_TEST_PORT_BASE=$((start + 9000)) \
           NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL=debug timeout 120 build/c_tests/t_transfer >"$rlog" 2>&1 \
       && python3 - "$rlog" <<'PY'
import re, sys
rows = [list(map(int, m.group(1).split(","))) for m in re.finditer(r"bytes per rail: \[([0-9, ]+)\]", open(sys.argv[1]).read())]
assert rows and all(len(r) == 2 for r in rows), rows
assert any(all(b > 1 << 20 for b in r) for r in rows), rows
PY
    then pass "[ofi tcp] two rails: t_transfer, both rails carried bytes ($(grep -m1 -o 'bytes per rail: \[[0-9, ]*\]' "$rlog"))"
    else fail "[ofi tcp] two rails (see $rlog)"; tail -5 "$rlog"; fi
else
    echo "SKIP [ofi tcp] two rails: the tcp provider offers one domain here"
fi
# Regions the runs left in /dev/shm (files in memory, 16 MiB each) whose process is gone: an
# endpoint closes its region, and one still open when its process exits is removed at exit
# (fabric/shm_names.rs), so only a process killed by SIGKILL leaves its own: t_peerkill's one
# (one endpoint). They are removed here.
left=()
for r in $(comm -13 <(echo "$shm_before") <(shm_regions)); do
    [ -d "/proc/${r%%:*}" ] || left+=("$r")
done
if [ "${#left[@]}" -le 1 ]; then pass "[ofi shm] /dev/shm: ${#left[@]} region(s) left by the runs' dead processes (a killed process's own: at most 1)"
else fail "[ofi shm] /dev/shm: ${#left[@]} regions left by the runs' dead processes (at most 1 expected): ${left[*]}"; fi
for r in "${left[@]}"; do rm -f "/dev/shm/$r"; done
echo "ofi: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
