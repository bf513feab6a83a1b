#!/bin/bash
# The C conformance suite. Usage: c_tests/run.sh [ROOT]   (ROOT: the repository root, by default
# the parent of this script's folder).
#
# Builds every c_tests/t_*.c (C11) and t_*.cpp (C++11) with -Wall -Wextra -Werror -pedantic against
# ROOT/include and ROOT/build/lib/libnrt.so.1 into ROOT/build/c_tests/ (a program that does not
# compile is a failed test), checks that the four headers compile in every include order (C11 and
# C++11), then runs each program under `timeout 120` on its own ports and prints one line per test,
# and last exactly one line "C: N passed, M failed". Exit status 0 only when M is 0.
#
# Ports: each program gets its own NRT_TEST_PORT_BASE (lnc n listens on base + n). The bases are
# distinct, lie in 20000..30000 (below Linux's ephemeral range, 32768 and up, where the source port
# of some connection could otherwise hold a port a later test wants to listen on), and are spaced
# as widely as that range allows (2048 apart at most; with 12 programs, 816 apart, and no program
# listens on an lnc id at or above the spacing, except t_lifecycle's single boundary check of 1023,
# which the next program's ports overlap only on paper: programs run one at a time).
# NRT_TEST_PORT_START (default 20000) moves the whole 10000-port window, so that two copies of
# the suite can run at once (e.g. NRT_TEST_PORT_START=10000); keep it below 22768.
# C_TESTS_BUILD_ONLY=1 builds the programs without running them.
set -u
ROOT=$(cd "${1:-$(dirname "$0")/..}" && pwd)
# C_TESTS_OUT (a folder under build/) and C_TESTS_CFLAGS (extra compiler flags, e.g. sanitizers)
# let scripts/sanitize.sh build a second copy of the suite.
OUT=$ROOT/build/${C_TESTS_OUT:-c_tests}
LIB=$ROOT/build/lib
INC=$ROOT/include
mkdir -p "$OUT"
export NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL=${NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL:-error}
CC=${CC:-cc}
CXX=${CXX:-c++}
CFLAGS_C=(-std=c11 -Wall -Wextra -Werror -pedantic ${C_TESTS_CFLAGS:-})
CFLAGS_CXX=(-std=c++11 -Wall -Wextra -Werror -pedantic ${C_TESTS_CFLAGS:-})

passed=0; failed=0
pass() { echo "PASS $1${2:+ ($2)}"; passed=$((passed + 1)); }
fail() { # name, reason, log
    echo "FAIL $1 ($2; see $3; last lines:)"
    tail -n 15 "$3" | sed 's/^/    /'
    failed=$((failed + 1))
}

if [ ! -e "$LIB/libnrt.so.1" ]; then
    echo "note: $LIB/libnrt.so.1 does not exist (run make first); every program will fail to link"
fi

# 1. The headers in every include order, alone and together, compile-only, C11 and C++11.
hdrs=(nrt/nrt.h nrt/nrt_async_sendrecv.h nrt/nrt_status.h nrt/nrt_version.h)
hlog=$OUT/t_header_order.log
: >"$hlog"
hbad=0
norders=0
mkdir -p "$OUT/header_order"
# Each header alone, then every order of all four.
orders=("0" "1" "2" "3")
while read -r o; do orders+=("$o"); done < <(python3 -c 'import itertools; [print(*p) for p in itertools.permutations(range(4))]')
for order in "${orders[@]}"; do
    tu=$OUT/header_order/order_${order// /}.c
    : >"$tu"
    for i in $order; do echo "#include <${hdrs[$i]}>" >>"$tu"; done
    # Something that needs the types, so an include that forgot its dependencies fails.
    if [[ $order == *1* ]]; then
        echo 'NRT_STATUS use_it(nrt_async_sendrecv_comm_t *c, nrt_async_sendrecv_request_t *r, nrt_tensor_t *t, bool *d);' >>"$tu"
    elif [[ $order == *0* ]]; then
        echo 'NRT_STATUS use_it(nrt_tensor_t *t, nrt_tensor_placement_t p, nrt_framework_type_t f);' >>"$tu"
    elif [[ $order == *3* ]]; then
        echo 'NRT_STATUS use_it(nrt_version_t *v, char (*d)[RT_VERSION_DETAIL_LEN]);' >>"$tu"
    else
        echo 'NRT_STATUS use_it(NRT_STATUS s);' >>"$tu"
    fi
    echo "--- $tu" >>"$hlog"; cat "$tu" >>"$hlog"
    "$CC" "${CFLAGS_C[@]}" -I"$INC" -fsyntax-only "$tu" >>"$hlog" 2>&1 || { hbad=1; echo "^^^ C11 failed" >>"$hlog"; }
    "$CXX" "${CFLAGS_CXX[@]}" -I"$INC" -fsyntax-only -x c++ "$tu" >>"$hlog" 2>&1 || { hbad=1; echo "^^^ C++11 failed" >>"$hlog"; }
    norders=$((norders + 1))
done
if [ $hbad -eq 0 ]; then pass t_header_order "$norders include sets (each header alone, every order of the four), C11 and C++11"
else fail t_header_order "a header does not compile on its own or in some order" "$hlog"; fi

# 2. The programs.
srcs=()
for src in "$ROOT"/c_tests/t_*.c "$ROOT"/c_tests/t_*.cpp; do [ -e "$src" ] && srcs+=("$src"); done
n=${#srcs[@]}
start=${NRT_TEST_PORT_START:-20000}
spacing=2048
if [ "$n" -gt 1 ]; then
    fit=$(( (10000 - 1024) / (n - 1) ))
    [ $fit -lt $spacing ] && spacing=$fit
fi
port=$start
for src in "${srcs[@]}"; do
    name=$(basename "${src%.*}")
    if [[ $src == *.cpp ]]; then build=("$CXX" "${CFLAGS_CXX[@]}")
    else build=("$CC" "${CFLAGS_C[@]}"); fi
    blog=$OUT/$name.build.log
    log=$OUT/$name.log
    rm -f "$OUT/$name" "$log"
    if ! "${build[@]}" -O1 -g -I"$INC" -o "$OUT/$name" "$src" -L"$LIB" -lnrt -Wl,-rpath,"$LIB" -pthread >"$blog" 2>&1; then
        fail "$name" "does not compile" "$blog"
        port=$((port + spacing)); continue
    fi
    # C_TESTS_BUILD_ONLY=1: only build (the RDMA VM harness runs the programs itself).
    if [ -n "${C_TESTS_BUILD_ONLY:-}" ]; then pass "$name" "built"; port=$((port + spacing)); continue; fi
    start=$(date +%s.%N)
    NRT_TEST_PORT_BASE=$port timeout -k 5 120 "$OUT/$name" >"$log" 2>&1
    rc=$?
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
    if [ $rc -eq 0 ]; then
        pass "$name" "${secs} s"
    else
        why="exit $rc"
        [ $rc -eq 124 ] || [ $rc -eq 137 ] && why="timed out after 120 s"
        [ $rc -gt 128 ] && [ $rc -ne 137 ] && why="killed by signal $((rc - 128))"
        fail "$name" "$why after ${secs} s" "$log"
    fi
    port=$((port + spacing))
done
echo "C: $passed passed, $failed failed"
[ $failed -eq 0 ]
