#!/bin/bash
# `make test`: Rust unit tests, header and export checks, the C conformance suite, the Python
# ctypes pattern. Prints one line per check group and ends with "N passed, M failed".
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
LOGDIR=$ROOT/build/test-logs
mkdir -p "$LOGDIR"
passed=0
failed=0

pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1"; failed=$((failed + 1)); }
# collect LABEL LOG: adds the counts of LOG's last "LABEL: N passed, M failed" line.
collect() {
    local line
    line=$(grep -E "^$1: [0-9]+ passed, [0-9]+ failed" "$2" | tail -1)
    if [ -z "$line" ]; then fail "$1 did not report (see $2)"; return; fi
    passed=$((passed + $(echo "$line" | sed -E 's/.*: ([0-9]+) passed.*/\1/')))
    failed=$((failed + $(echo "$line" | sed -E 's/.* ([0-9]+) failed/\1/')))
}

# 1. Rust unit tests (request table, frame decoder, registry, ...): each test counts.
echo "== cargo test"
if cargo test --release --locked --lib 2>&1 | tee "$LOGDIR/cargo-test.log" | grep -E "^test result:|FAILED|panicked" ; then :; fi
r_pass=$(awk '/^test result:/ {for (i = 1; i < NF; i++) if ($(i+1) ~ /^passed/) s += $i} END {print s + 0}' "$LOGDIR/cargo-test.log")
r_fail=$(awk '/^test result:/ {for (i = 1; i < NF; i++) if ($(i+1) ~ /^failed/) s += $i} END {print s + 0}' "$LOGDIR/cargo-test.log")
if ! grep -q "^test result:" "$LOGDIR/cargo-test.log"; then
    fail "cargo test (did not run; see $LOGDIR/cargo-test.log)"
else
    passed=$((passed + ${r_pass:-0})); failed=$((failed + ${r_fail:-0}))
    echo "Rust: ${r_pass:-0} passed, ${r_fail:-0} failed"
fi

# 2. The committed headers are what the pinned cbindgen generates now.
echo "== header check"
if make -s header-check >"$LOGDIR/header-check.log" 2>&1; then pass "headers match a fresh cbindgen generation"
else fail "headers differ from a fresh generation (make header; see $LOGDIR/header-check.log)"; fi

# 2a. Formatting: the Rust sources (library, tools, fuzz targets) are as rustfmt.toml says.
echo "== rustfmt"
fmt_bad=""
: > "$LOGDIR/rustfmt.log"
for d in . tools/nrt-sr-perf tools/gen-header fuzz; do
    (cd "$d" && cargo fmt --check) >>"$LOGDIR/rustfmt.log" 2>&1 || fmt_bad="$fmt_bad $d"
done
if [ -z "$fmt_bad" ]; then pass "rustfmt: library, tools and fuzz targets formatted (rustfmt.toml)"
else fail "rustfmt: not formatted in$fmt_bad (cargo fmt there; see $LOGDIR/rustfmt.log)"; fi

# 2b. Module graph: no cycle among src/'s files (scripts/modcycles.py: crate::, super:: and self::
#     paths, test code left out), after the script's own tests on small synthetic crates.
echo "== module graph"
if python3 scripts/modcycles_test.py >"$LOGDIR/modcycles-test.log" 2>&1; then pass "modcycles.py on synthetic crates (its own tests)"
else fail "modcycles.py's own tests (see $LOGDIR/modcycles-test.log)"; tail -5 "$LOGDIR/modcycles-test.log"; fi
# The layers of docs/architecture.md, top first: no file refers to one of a layer above it.
layers="ffi runtime engine comm transport wire,tensor,sys,config,status,log,registry"
if python3 scripts/modcycles.py src --layers "$layers" >"$LOGDIR/modcycles.log" 2>&1; then pass "$(tail -1 "$LOGDIR/modcycles.log")"
else fail "module graph: cycles among src/'s files, or a reference to a layer above (see $LOGDIR/modcycles.log)"; grep -E "^cycle|^upward|^module graph" "$LOGDIR/modcycles.log"; fi

# 2c. loom: model checks of the request slots' lock-free protocol (src/comm/slots.rs,
#     `loom_tests`: claim, pin, unpin, take, retire, reuse under every interleaving of small models),
#     the crate built with --cfg loom in its own target folder.
echo "== loom"
l_pass=0
if RUSTFLAGS="--cfg loom" cargo test --release --locked --lib --target-dir target/loom loom_ >"$LOGDIR/loom.log" 2>&1; then
    l_pass=$(awk '/^test result: ok\./ {for (i = 1; i < NF; i++) if ($(i+1) ~ /^passed/) s += $i} END {print s + 0}' "$LOGDIR/loom.log")
fi
if [ "${l_pass:-0}" -ge 4 ]; then pass "loom: $l_pass models of the request slots (src/comm/slots.rs) hold"
else fail "loom models of the request slots (see $LOGDIR/loom.log)"; grep -E "^test .*FAILED|panicked at|^error" "$LOGDIR/loom.log" | head -5; fi

# 3. Exports: exactly the promised names, each @@NRT_2.0.0, nothing else; SONAME libnrt.so.1.
echo "== exports"
want=$(sed -n 's/^ *\(nrt_[a-z_]*\);$/\1@@NRT_2.0.0/p' src/ffi/libnrt.map | sort)
have=$(nm -D --defined-only build/lib/libnrt.so.1 | awk '!($2 == "A" && $3 == "NRT_2.0.0") {print $3}' | sort)
info=$(echo "$have" | grep -E '^nrt_get_' | sed 's/@@NRT_2.0.0//' | tr '\n' ' ')
if [ "$want" = "$have" ] && [ "$(echo "$want" | wc -l)" -eq 30 ]; then pass "exports: 30 names, each @@NRT_2.0.0, nothing else (besides send/receive and tensors: ${info% })"
else fail "exports differ:"; diff <(echo "$want") <(echo "$have"); fi
if readelf -d build/lib/libnrt.so.1 | grep -q 'SONAME.*\[libnrt.so.1\]' && [ "$(readlink build/lib/libnrt.so)" = libnrt.so.1 ]; then
    pass "SONAME libnrt.so.1 and the libnrt.so link"
else fail "SONAME or libnrt.so link"; fi
# Every exported function is declared in the headers, and every declared function is exported.
declared=$(cat include/nrt/*.h | grep -oE '^[A-Za-z_ *]+[ *](nrt_[a-z_]+)\(' | grep -oE 'nrt_[a-z_]+' | sort)
if [ "$declared" = "$(echo "$want" | sed 's/@@NRT_2.0.0//')" ]; then pass "headers declare exactly the exported functions"
else fail "headers and exports disagree"; diff <(echo "$declared") <(echo "$want" | sed 's/@@NRT_2.0.0//'); fi

# 4. make install into a scratch prefix, then build a program with pkg-config against it.
echo "== install"
inst=$ROOT/build/install-check
rm -rf "$inst"
if make -s install PREFIX="$inst" >"$LOGDIR/install.log" 2>&1 \
   && PKG_CONFIG_PATH=$inst/lib/pkgconfig cc -std=c11 -Wall -Wextra -Werror -o "$inst/prog" c_tests/t_header_c.c \
        $(PKG_CONFIG_PATH=$inst/lib/pkgconfig pkg-config --cflags --libs nrt) -Wl,-rpath,"$inst/lib" >>"$LOGDIR/install.log" 2>&1 \
   && "$inst/prog" >>"$LOGDIR/install.log" 2>&1; then
    pass "make install + pkg-config build"
else fail "make install + pkg-config build (see $LOGDIR/install.log)"; fi

# 5. The C conformance suite, over TCP and over shared memory (the default between processes of
#    one host; required here, so a silent fallback to TCP fails the run).
for tr in tcp shm; do
    echo "== C conformance suite, NEURON_RT_ASYNC_SENDRECV_TRANSPORT=$tr"
    NEURON_RT_ASYNC_SENDRECV_TRANSPORT=$tr c_tests/run.sh "$ROOT" | sed "s/^\(PASS\|FAIL\) /\1 [$tr] /" | tee "$LOGDIR/c-suite-$tr.log"
    collect C "$LOGDIR/c-suite-$tr.log"
done
# TCP's copying send path for memfd tensors (sendfile is the default for them) under the
# transfer test.
if NEURON_RT_ASYNC_SENDRECV_TCP_SENDFILE=0 NEURON_RT_ASYNC_SENDRECV_TRANSPORT=tcp NRT_TEST_PORT_BASE=28800 \
   NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL=error timeout 120 build/c_tests/t_transfer >"$LOGDIR/t_transfer-sendmsg.log" 2>&1; then
    pass "t_transfer over TCP with NEURON_RT_ASYNC_SENDRECV_TCP_SENDFILE=0"
else fail "t_transfer over TCP with sendmsg copies (see $LOGDIR/t_transfer-sendmsg.log)"; tail -5 "$LOGDIR/t_transfer-sendmsg.log"; fi

# A congestion control the kernel does not have (NEURON_RT_ASYNC_SENDRECV_TCP_CONGESTION): the
# sockets keep their own, the cause is logged once, and the transfer test passes over TCP.
if NEURON_RT_ASYNC_SENDRECV_TCP_CONGESTION=no_such_cc NEURON_RT_ASYNC_SENDRECV_TRANSPORT=tcp NRT_TEST_PORT_BASE=29200 \
   NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL=warn timeout 120 build/c_tests/t_transfer >"$LOGDIR/t_transfer-cc.log" 2>&1 \
   && [ "$(grep -c 'TCP congestion control "no_such_cc" not set' "$LOGDIR/t_transfer-cc.log")" = 1 ]; then
    pass "t_transfer over TCP with an unknown congestion control: logged once, every byte checked"
else fail "t_transfer over TCP with an unknown congestion control (see $LOGDIR/t_transfer-cc.log)"; tail -5 "$LOGDIR/t_transfer-cc.log"; fi

# Mutual authentication (NEURON_RT_ASYNC_SENDRECV_AUTH_SECRET, the same on both ends): every
# stream of every connection proved both ways, under the transfer test over TCP (its stream-count
# cases included) and shared memory, and the two-process test over shared memory.
port=29300
for run in "t_transfer tcp" "t_transfer shm" "t_twoproc shm"; do
    set -- $run
    if NEURON_RT_ASYNC_SENDRECV_AUTH_SECRET=make-test-secret-4f1c9a NEURON_RT_ASYNC_SENDRECV_TRANSPORT=$2 NRT_TEST_PORT_BASE=$port \
       NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL=error timeout 120 build/c_tests/$1 >"$LOGDIR/$1-auth-$2.log" 2>&1; then
        pass "$1 over $2 with NEURON_RT_ASYNC_SENDRECV_AUTH_SECRET on both ends (mutual authentication, every byte checked)"
    else fail "$1 over $2 with an authentication secret (see $LOGDIR/$1-auth-$2.log)"; tail -5 "$LOGDIR/$1-auth-$2.log"; fi
    port=$((port + 100))
done

# Shared memory where the kernel refuses process_vm_readv (a seccomp filter, as container
# policies and Yama's ptrace_scope can): still shared memory (required), messages that do not lie
# in a memfd staged by the sender; the transfer test and the two-process test, every byte checked.
if cc -std=c11 -Wall -Wextra -Werror -pedantic -o build/c_tests/no_vm_readv c_tests/no_vm_readv.c >"$LOGDIR/no_vm_readv.log" 2>&1; then
    port=28900
    for t in t_transfer t_twoproc; do
        if NEURON_RT_ASYNC_SENDRECV_TRANSPORT=shm NRT_TEST_PORT_BASE=$port NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL=info \
               timeout 120 build/c_tests/no_vm_readv build/c_tests/$t >"$LOGDIR/$t-no-vm-readv.log" 2>&1 \
           && grep -q "process_vm_readv of pid .* is not permitted" "$LOGDIR/$t-no-vm-readv.log"; then
            pass "$t over shared memory with process_vm_readv refused (seccomp): staged, every byte checked"
        else fail "$t over shared memory with process_vm_readv refused (see $LOGDIR/$t-no-vm-readv.log)"; tail -5 "$LOGDIR/$t-no-vm-readv.log"; fi
        port=$((port + 100))
    done
else fail "c_tests/no_vm_readv.c does not build (see $LOGDIR/no_vm_readv.log)"; fi

# 6. LD_PRELOAD mode (make test-preload): stand-in vendor library, C and Python.
echo "== LD_PRELOAD mode"
NRT_TEST_PORT_BASE=27000 c_tests/preload/run.sh | tee "$LOGDIR/preload.log"
collect preload "$LOGDIR/preload.log"

# 7. The vendor's Python ctypes usage pattern (docs/semantics.md), unchanged, in two processes.
echo "== python ctypes"
if NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT=29500 NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL=error \
   timeout 120 python3 tests_py/ctypes_pattern.py build/lib/libnrt.so.1 >"$LOGDIR/ctypes.log" 2>&1; then
    pass "python ctypes pattern (two processes, byte-verified)"
else fail "python ctypes pattern (see $LOGDIR/ctypes.log)"; tail -5 "$LOGDIR/ctypes.log"; fi

# 7a. nrt-sr-perf (make perf-tool): its unit tests, then short runs over TCP and shared memory
#     through the C API (warm-up bytes verified by the tool), JSON and plot checked.
echo "== nrt-sr-perf"
if cargo test --release --locked --manifest-path tools/nrt-sr-perf/Cargo.toml >"$LOGDIR/perf-tool-test.log" 2>&1; then
    pass "nrt-sr-perf unit tests ($(grep -Eo '[0-9]+ passed' "$LOGDIR/perf-tool-test.log" | awk '{s+=$1} END {print s}') tests)"
else fail "nrt-sr-perf unit tests (see $LOGDIR/perf-tool-test.log)"; fi
if make -s perf-tool >"$LOGDIR/perf-tool.log" 2>&1; then
    for tr in tcp shm; do
        out=$LOGDIR/perf-$tr.json
        if timeout 300 build/bin/nrt-sr-perf --local --transport $tr --sizes 8,4K,1M,9M --iters 50 --warmup 4 --window 4 \
               --port-base 29600 --no-progress --json "$out" --plot "$LOGDIR/perf-$tr.png" >>"$LOGDIR/perf-tool.log" 2>&1 \
           && python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); r=d["results"]; assert d["verified"] and len(r)==4 and all(x["gbytes_per_s"]>0 and x["lat_p50_us"]>0 for x in r), d' "$out" \
           && [ -s "$LOGDIR/perf-$tr.png" ]; then
            pass "nrt-sr-perf --local over $tr (4 sizes, warm-up bytes verified, JSON and plot)"
        else fail "nrt-sr-perf --local over $tr (see $LOGDIR/perf-tool.log)"; tail -5 "$LOGDIR/perf-tool.log"; fi
    done
    # Attached buffers (this program's, page-aligned) received 16 bytes past the sender's
    # offset: the copy-distance detours across processes (transport/copy.rs), every warm-up
    # byte verified by the receiver.
    for tr in tcp shm; do
        out=$LOGDIR/perf-$tr-attached.json
        if timeout 300 build/bin/nrt-sr-perf --local --transport $tr --memory attached --recv-offset 16 --sizes 64K,1M,5M \
               --iters 20 --warmup 6 --window 4 --mode bw --port-base 29610 --no-progress --json "$out" >>"$LOGDIR/perf-tool.log" 2>&1 \
           && python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); r=d["results"]; assert d["verified"] and len(r)==3 and all(x["gbytes_per_s"]>0 for x in r), d' "$out"; then
            pass "nrt-sr-perf --local over $tr, attached buffers, receiver 16 bytes off (warm-up bytes verified)"
        else fail "nrt-sr-perf --local over $tr --memory attached --recv-offset 16 (see $LOGDIR/perf-tool.log)"; tail -5 "$LOGDIR/perf-tool.log"; fi
    done
    # The same over TCP from our tensors with the detours off (NEURON_RT_ASYNC_SENDRECV_COPY_DETOUR=0).
    out=$LOGDIR/perf-tcp-nodetour.json
    if NEURON_RT_ASYNC_SENDRECV_COPY_DETOUR=0 timeout 300 build/bin/nrt-sr-perf --local --transport tcp --recv-offset 16 --sizes 1M \
           --iters 10 --warmup 6 --window 4 --mode bw --port-base 29610 --no-progress --json "$out" >>"$LOGDIR/perf-tool.log" 2>&1 \
       && python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["verified"] and d["results"][0]["gbytes_per_s"]>0, d' "$out"; then
        pass "nrt-sr-perf --local over tcp, receiver 16 bytes off, NEURON_RT_ASYNC_SENDRECV_COPY_DETOUR=0 (warm-up bytes verified)"
    else fail "nrt-sr-perf with NEURON_RT_ASYNC_SENDRECV_COPY_DETOUR=0 (see $LOGDIR/perf-tool.log)"; tail -5 "$LOGDIR/perf-tool.log"; fi
    # Two-host mode (--role/--peer), both processes on loopback: both exit 0, the sender's JSON
    # has its results with the warm-up verified, and neither side logs an ERROR (a run that went
    # well ends with nothing in flight: the sender's goodbye, then the receiver closes first).
    rlog=$LOGDIR/perf-role-recv.log slog=$LOGDIR/perf-role-send.log
    timeout 120 build/bin/nrt-sr-perf --role recv --peer 127.0.0.1 --lnc 1 --peer-lnc 0 --port-base 29620 \
        --sizes 8,1M --iters 20 --no-progress >"$rlog" 2>&1 &
    rpid=$!
    if timeout 120 build/bin/nrt-sr-perf --role send --peer 127.0.0.1 --lnc 0 --peer-lnc 1 --port-base 29620 \
           --sizes 8,1M --iters 20 --no-progress --json "$LOGDIR/perf-role.json" >"$slog" 2>&1 \
       && wait "$rpid" \
       && python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); r=d["results"]; assert d["verified"] and len(r)==2 and all(x["gbytes_per_s"]>0 for x in r), d' "$LOGDIR/perf-role.json" \
       && ! grep -q ERROR "$rlog" "$slog"; then
        pass "nrt-sr-perf two-host mode on loopback (--role send/recv: both exit 0, no ERROR line)"
    else
        kill "$rpid" 2>/dev/null; wait "$rpid" 2>/dev/null
        fail "nrt-sr-perf two-host mode (see $slog, $rlog)"; grep -h ERROR "$rlog" "$slog" | head -3
    fi
else fail "make perf-tool (see $LOGDIR/perf-tool.log)"; tail -5 "$LOGDIR/perf-tool.log"; fi

# 7b. bench/overlap.c (a double-buffering receiver that works between receives, through the C
#     API): builds against the headers and library, runs short over TCP and shared memory, every
#     byte of its last messages checked and each message's ends, JSON out.
echo "== bench/overlap.c"
if cc -O2 -Wall -Wextra -Werror -I include -o "$LOGDIR/overlap" bench/overlap.c -L build/lib -lnrt \
      -Wl,-rpath,"$PWD/build/lib" >"$LOGDIR/overlap.log" 2>&1; then
    port=29640
    for run in "tcp 1048579" "tcp 8" "shm 1048579"; do
        set -- $run
        if NEURON_RT_ASYNC_SENDRECV_TRANSPORT=$1 NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT=$port \
               timeout 120 "$LOGDIR/overlap" "$2" 50 40 >"$LOGDIR/overlap-$1-$2.json" 2>>"$LOGDIR/overlap.log" \
           && python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["bytes"]==int(sys.argv[2]) and d["computed_us"]>=50 and d["us_per_message_with_compute"]>0, d' \
                  "$LOGDIR/overlap-$1-$2.json" "$2"; then
            pass "bench/overlap.c over $1, $2 bytes (exit 0, bytes checked, JSON)"
        else fail "bench/overlap.c over $1, $2 bytes (see $LOGDIR/overlap.log)"; tail -3 "$LOGDIR/overlap.log"; fi
        port=$((port + 10))
    done
else fail "bench/overlap.c does not build (see $LOGDIR/overlap.log)"; tail -5 "$LOGDIR/overlap.log"; fi

# 7c/7d. Reference programs in bench/, each built warning-free and run once briefly (60 s bound),
#     its one JSON object checked: c_reference NAME LINK ARGS CHECK WHAT, where LINK "lib" builds
#     against build/lib/libnrt, CHECK is a Python expression over the object d.
c_reference() {
    local name=$1 link=$2 args=$3 check=$4 what=$5 flags=()
    [ "$link" = lib ] && flags=(-I include -L build/lib -lnrt -Wl,-rpath,"$PWD/build/lib")
    echo "== bench/$name.c"
    if cc -O2 -Wall -Wextra -Werror -o "$LOGDIR/$name" "bench/$name.c" "${flags[@]}" >"$LOGDIR/$name.log" 2>&1; then
        # shellcheck disable=SC2086 # args are words
        if timeout 60 "$LOGDIR/$name" $args >"$LOGDIR/$name.json" 2>>"$LOGDIR/$name.log" \
           && python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert $check, d" "$LOGDIR/$name.json"; then
            pass "bench/$name.c ($what)"
        else fail "bench/$name.c run (see $LOGDIR/$name.log)"; tail -3 "$LOGDIR/$name.log"; fi
    else fail "bench/$name.c does not build (see $LOGDIR/$name.log)"; tail -5 "$LOGDIR/$name.log"; fi
}
# The kernel's loopback TCP ping-pong with our shape, no library: the floor under nrt-sr-perf's
# 8-byte TCP latency.
c_reference tcp_lat none "29700 2000" 'd["iters"]==2000 and 0<d["p50_half_rtt_us"]<=d["p99_half_rtt_us"]' "exit 0, JSON"
# nrt_tensor_read/write/copy with the caller's buffer 0, 16 and 48 bytes into its page, through
# the C API; the program checks every byte of its last copies.
c_reference tensor_copy lib 10 \
    'len(d["results"])==9 and all(x[k]>0 for x in d["results"] for k in ("read_gbytes_per_s","write_gbytes_per_s","copy_gbytes_per_s"))' \
    "exit 0, bytes checked, JSON"

# 7e. The Python package (python/, docs/python.md): a virtual environment build/pyvenv (made
#     once, reused) with pytest and numpy from the package index, `pip install ./python` (which
#     bundles build/lib/libnrt.so.1), then its pytest suite against this build's library: two
#     processes over TCP and shared memory, asyncio, the bench module. Each test counts.
echo "== python package"
venv=$ROOT/build/pyvenv
pylog=$LOGDIR/python-pip.log
: > "$pylog"
if { [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >>"$pylog" 2>&1; } \
   && timeout 300 "$venv/bin/python" -m pip install --disable-pip-version-check -q pytest numpy "setuptools>=61" wheel >>"$pylog" 2>&1 \
   && timeout 300 "$venv/bin/python" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation --force-reinstall ./python >>"$pylog" 2>&1; then
    ptlog=$LOGDIR/python-pytest.log
    (cd python && NRT_SENDRECV_LIBRARY=$ROOT/build/lib/libnrt.so.1 NRT_PY_TEST_PORT_START=30000 NRT_PY_TEST_REQUIRE_BUNDLED=1 \
        timeout 600 "$venv/bin/python" -m pytest -v -p no:cacheprovider -rfE tests) >"$ptlog" 2>&1
    prc=$?
    sed -nE 's/^tests\/([^ ]+) (PASSED|FAILED|ERROR).*/\2 \1/p' "$ptlog" | sed -E 's/^PASSED /PASS [python] /; s/^(FAILED|ERROR) /FAIL [python] /' \
        | tee "$LOGDIR/python.log"
    py_pass=$(grep -c '^PASS ' "$LOGDIR/python.log"); py_fail=$(grep -c '^FAIL ' "$LOGDIR/python.log")
    if [ "$prc" -ne 0 ] && [ "$py_fail" -eq 0 ]; then
        py_fail=1; echo "FAIL [python] pytest exited with status $prc (see $ptlog)"; tail -5 "$ptlog"
    elif [ "$py_pass" -eq 0 ]; then
        py_fail=$((py_fail + 1)); echo "FAIL [python] no test passed (see $ptlog)"
    fi
    [ "$py_fail" -gt 0 ] && grep -E "^(FAILED|ERROR) " "$ptlog" | head -10
    echo "python: $py_pass passed, $py_fail failed" | tee -a "$LOGDIR/python.log"
    collect python "$LOGDIR/python.log"
else
    fail "python package: no virtual environment, or pip could not install pytest, numpy and ./python (is the package index reachable? see $pylog)"
    tail -5 "$pylog"
fi

# 8. Sanitizers (make test-sanitizers): ASan/UBSan build of the C suite, valgrind memcheck.
echo "== sanitizers"
scripts/sanitize.sh 2>&1 | tee "$LOGDIR/sanitize.log" | grep -E "^(asan: )?(PASS|FAIL) "
collect sanitizers "$LOGDIR/sanitize.log"

# 8a. Fuzzing (make test-fuzz): the frame decoder and the handshake, 30 s each.
echo "== fuzz"
scripts/fuzz.sh 2>&1 | tee "$LOGDIR/fuzz.log" | grep -E "^(PASS|FAIL) "
collect fuzz "$LOGDIR/fuzz.log"

# 8b. Faults between network namespaces (make test-faults).
echo "== faults"
scripts/faults.sh 2>&1 | tee "$LOGDIR/faults.log" | grep -E "^(PASS|FAIL|KNOWN|SKIP) "
collect faults "$LOGDIR/faults.log"

# 8c. libfabric (make test-ofi): the rails' tests, the C suite over FI_PROVIDER=tcp and shm.
echo "== libfabric transport"
if [ "${OFI:-1}" = 1 ]; then
    scripts/test-ofi.sh 2>&1 | tee "$LOGDIR/ofi.log" | grep -E "^(PASS|FAIL|SKIP) "
    collect ofi "$LOGDIR/ofi.log"
fi

# 9. RDMA verbs (make test-rdma): the C suite and the demo between two Soft-RoCE devices in a VM.
echo "== RDMA verbs in a VM"
make -s test-rdma >"$LOGDIR/rdma-vm.log" 2>&1
grep -E "^(PASS|FAIL) |^    |^\[rdma-vm\]|^rdma-vm" "$LOGDIR/rdma-vm.log" | grep -v "    log: "
collect rdma-vm "$LOGDIR/rdma-vm.log"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
