#!/bin/bash
# The C conformance suite under AddressSanitizer + UndefinedBehaviorSanitizer (the test programs
# instrumented; any report fails the program), then three programs under valgrind memcheck (the
# library itself checked: invalid reads/writes, uninitialised values, bad frees). Ends with
# "sanitizers: N passed, M failed".
set -u
cd "$(dirname "$0")/.."
passed=0; failed=0
export ASAN_OPTIONS=abort_on_error=0:halt_on_error=1:detect_leaks=1:exitcode=99
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:exitcode=98
echo "== ASan + UBSan"
C_TESTS_OUT=c_tests-san C_TESTS_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
    NRT_TEST_PORT_START=10000 c_tests/run.sh | tee build/sanitize-asan.log | grep -E "^(PASS|FAIL) " | sed 's/^/asan: /'
line=$(grep -E "^C: [0-9]+ passed, [0-9]+ failed" build/sanitize-asan.log | tail -1)
if [ -n "$line" ]; then
    passed=$((passed + $(echo "$line" | sed -E 's/C: ([0-9]+) passed.*/\1/')))
    failed=$((failed + $(echo "$line" | sed -E 's/.* ([0-9]+) failed/\1/')))
else echo "FAIL the sanitizer suite did not report"; failed=$((failed + 1)); fi

echo "== valgrind memcheck"
if ! command -v valgrind >/dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq valgrind >/dev/null 2>&1
fi
port=11000
for t in t_tensor t_badinput t_lifecycle; do
    log=build/c_tests/$t.valgrind.log
    NRT_TEST_PORT_BASE=$port NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL=off timeout 600 valgrind --error-exitcode=97 --errors-for-leak-kinds=none \
        --track-origins=yes --quiet build/c_tests/$t >"$log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then echo "PASS valgrind $t"; passed=$((passed + 1))
    else echo "FAIL valgrind $t (exit $rc; see $log)"; tail -30 "$log" | sed 's/^/    /'; failed=$((failed + 1)); fi
    port=$((port + 800))
done
echo "sanitizers: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
