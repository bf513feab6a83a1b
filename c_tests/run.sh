#!/bin/bash
# The C conformance suite: builds every c_tests/t_*.c (C11) and t_*.cpp (C++11) with
# -Wall -Wextra -Werror against include/ and build/lib/libnrt.so.1, runs each under a time limit
# on its own ports, and ends with "C: N passed, M failed". Usage: c_tests/run.sh [ROOT]
set -u
ROOT=$(cd "${1:-$(dirname "$0")/..}" && pwd)
OUT=$ROOT/build/c_tests
mkdir -p "$OUT"
LIB=$ROOT/build/lib
passed=0; failed=0
port=20000
for src in "$ROOT"/c_tests/t_*.c "$ROOT"/c_tests/t_*.cpp; do
    [ -e "$src" ] || continue
    name=$(basename "${src%.*}")
    if [[ $src == *.cpp ]]; then
        build=(c++ -std=c++11 -Wall -Wextra -Werror -pedantic)
    else
        build=(cc -std=c11 -Wall -Wextra -Werror -pedantic)
    fi
    if ! "${build[@]}" -O1 -g -I"$ROOT/include" -o "$OUT/$name" "$src" -L"$LIB" -lnrt -Wl,-rpath,"$LIB" -pthread \
        >"$OUT/$name.build.log" 2>&1; then
        echo "FAIL $name (does not compile; see $OUT/$name.build.log)"
        sed 's/^/    /' "$OUT/$name.build.log" | head -20
        failed=$((failed + 1)); continue
    fi
    start=$(date +%s.%N)
    NRT_TEST_PORT_BASE=$port timeout 120 "$OUT/$name" >"$OUT/$name.log" 2>&1
    rc=$?
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
    if [ $rc -eq 0 ]; then
        echo "PASS $name (${secs}s)"; passed=$((passed + 1))
    else
        why="exit $rc"; [ $rc -eq 124 ] && why="timed out after 120 s"
        echo "FAIL $name ($why; log $OUT/$name.log)"
        tail -15 "$OUT/$name.log" | sed 's/^/    /'
        failed=$((failed + 1))
    fi
    # Tests use lncs below 64. Ports stay below 32768, outside Linux's ephemeral range, where a
    # connection's own source port could otherwise hold a port a later test wants to listen on.
    port=$((port + 64))
done
echo "C: $passed passed, $failed failed"
[ $failed -eq 0 ]
