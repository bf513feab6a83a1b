#!/bin/bash
# make test-preload: builds the stand-in vendor libnrt.so.1 and a program linked against it, runs
# the program with and without our libnrt_async_sendrecv.so preloaded (and preloaded once more
# with the stand-in's device tensors in "mapped HBM": FAKE_NRT_MAP_HBM=guard, an address nobody
# may touch; they must be staged), then the Python ctypes variant, and checks the preload
# library's exports. Ends with "preload: N passed, M failed".
set -u
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
OUT=$ROOT/build/preload-test
PRE=$ROOT/build/lib/libnrt_async_sendrecv.so
mkdir -p "$OUT/vendor"
passed=0; failed=0
res() { if [ "$1" -eq 0 ]; then echo "PASS $2"; passed=$((passed + 1)); else echo "FAIL $2"; failed=$((failed + 1)); fi; }
export NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT=${NRT_TEST_PORT_BASE:-27000}
export NEURON_RT_ASYNC_SENDRECV_LISTEN_ADDR=127.0.0.1  # loopback only
export NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL=${NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL:-error}

# The stand-in exports its names at NRT_2.0.0, as the vendor's library does: those of our
# standalone library, and the vendor's nrt_tensor_get_device_allocation_info and the stand-in's
# own counter besides.
sed 's/^\( *\)local:/\1  nrt_tensor_get_device_allocation_info;\n\1  fake_nrt_device_copies;\n\1local:/' \
    src/ffi/libnrt.map >"$OUT/vendor/fake_nrt.map"
cc -std=c11 -O1 -Wall -Wextra -Werror -fPIC -shared -Iinclude -o "$OUT/vendor/libnrt.so.1" \
   -Wl,-soname,libnrt.so.1 -Wl,--version-script="$OUT/vendor/fake_nrt.map" c_tests/preload/fake_nrt.c
res $? "stand-in vendor libnrt.so.1 builds"
ln -sf libnrt.so.1 "$OUT/vendor/libnrt.so"
cc -std=c11 -O1 -Wall -Wextra -Werror -Iinclude -o "$OUT/t_preload" c_tests/preload/t_preload.c \
   -L"$OUT/vendor" -lnrt -Wl,-rpath,"$OUT/vendor"
res $? "t_preload builds against the stand-in"
# The program's references are versioned like the vendor's: nrt_async_sendrecv_init@NRT_2.0.0.
nm -D "$OUT/t_preload" | grep -q 'U nrt_async_sendrecv_init@NRT_2.0.0'
res $? "the program binds versioned symbols (@NRT_2.0.0)"

timeout 60 "$OUT/t_preload" vendor >"$OUT/vendor.log" 2>&1
res $? "without LD_PRELOAD the stand-in's failing functions run"
timeout 120 env LD_PRELOAD="$PRE" "$OUT/t_preload" ours >"$OUT/ours.log" 2>&1
rc=$?; res $rc "with LD_PRELOAD: transfers host/device in four directions, byte-verified"
[ $rc -ne 0 ] && tail -20 "$OUT/ours.log"
timeout 120 env LD_PRELOAD="$PRE" FAKE_NRT_MAP_HBM=guard "$OUT/t_preload" ours >"$OUT/ours-hbm.log" 2>&1
rc=$?; res $rc "with LD_PRELOAD, device tensors with an address (mapped HBM, never touched): staged in four directions, byte-verified"
[ $rc -ne 0 ] && tail -20 "$OUT/ours-hbm.log"
timeout 120 env LD_PRELOAD="$PRE" python3 tests_py/preload_ctypes.py "$OUT/vendor/libnrt.so.1" >"$OUT/ctypes.log" 2>&1
rc=$?; res $rc "Python ctypes with LD_PRELOAD"
[ $rc -ne 0 ] && tail -20 "$OUT/ctypes.log"

want=$(sed -n 's/^ *\(nrt_[a-z_]*\);$/\1@@NRT_2.0.0/p' src/ffi/preload.map | sort)
have=$(nm -D --defined-only "$PRE" | awk '!($2 == "A" && $3 == "NRT_2.0.0") {print $3}' | sort)
[ "$want" = "$have" ] && [ "$(echo "$have" | wc -l)" -eq 11 ]
res $? "libnrt_async_sendrecv.so exports only the 11 nrt_async_sendrecv_* names @@NRT_2.0.0"

echo "preload: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
