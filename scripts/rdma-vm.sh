#!/bin/bash
# make test-rdma: the C conformance suite and the demo over the RDMA verbs transport, between two
# Soft-RoCE (rdma_rxe) devices, inside a qemu VM running Debian's own kernel (the host kernel has
# no RDMA). Nothing on the host's boot set-up is touched: the kernel package is only unpacked.
#
# Inside the VM: a veth pair vethA (10.9.0.1) / vethB (10.9.0.2) in the main namespace (rxe is not
# namespace-aware), policy routing so traffic between the two local addresses really crosses the
# veth, rxeA on vethA and rxeB on vethB. Every test runs with NEURON_RT_ASYNC_SENDRECV_TRANSPORT=verbs:
# senders connect to 10.9.0.2 from 10.9.0.1 (rxeA), receivers accept on 10.9.0.2 (rxeB). Then the
# demo over verbs beside ib_write_bw / ib_send_lat in the same VM. Where libnrt links libfabric:
# a second pair, vethC 10.9.1.1 (rxeC) / vethD 10.9.1.2 (rxeD), and the libfabric transport over
# FI_PROVIDER=verbs (verbs;ofi_rxm) on two rails: two processes on rxeA,rxeC / rxeB,rxeD, then
# the C suite; then the demo over libfabric on one rail per side, rxeA -> rxeB, measured at 1 MiB
# and 8 bytes one at a time beside the perftest runs (docs/rdma-vm.md).
#
# Prints the guest's console; ends with the verbs/perftest and ofi/perftest ratios and
# "rdma-vm: N passed, M failed".
# Environment: VM_TIMEOUT (default 1500 s), VM_MEM (4G), VM_SMP (2), RDMA_VM_WORK (build/rdma-vm),
# RDMA_VM_TESTS (only these test programs), RDMA_VM_QUICK, RDMA_VM_EXP, RDMA_VM_APPEND (see below).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
WORK=${RDMA_VM_WORK:-$ROOT/build/rdma-vm}
VM_TIMEOUT=${VM_TIMEOUT:-1500}
INITRD_ROOT=$WORK/initrd-root
mkdir -p "$WORK"

# ---------------------------------------------------------------- 1. packages and kernel
PKGS="qemu-system-x86 busybox-static rdma-core ibverbs-providers ibverbs-utils perftest iproute2 kmod cpio"
if ! dpkg -s $PKGS >/dev/null 2>&1; then
    echo "[rdma-vm] installing $PKGS"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    apt-cache show perftest >/dev/null 2>&1 || $SUDO timeout 300 apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO timeout 900 apt-get install -y -qq --no-install-recommends $PKGS
fi
if ! ls "$WORK"/kroot/boot/vmlinuz-* >/dev/null 2>&1; then
    KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
    echo "[rdma-vm] fetching kernel package $KPKG"
    (cd "$WORK" && rm -f linux-image-*.deb && timeout 600 apt-get download "$KPKG" 2>&1 | grep -v 'unsandboxed' || true)
    rm -rf "$WORK/kroot" && dpkg -x "$WORK"/linux-image-*.deb "$WORK/kroot"
fi
KVER=$(ls "$WORK/kroot/lib/modules" | head -1)
[ -f "$WORK/kroot/lib/modules/$KVER/modules.dep" ] || depmod -b "$WORK/kroot" "$KVER"

# ---------------------------------------------------------------- 2. what runs inside
for f in build/lib/libnrt.so.1 build/bin/nrt_demo; do
    [ -e "$f" ] || { echo "[rdma-vm] $f missing: run make test-rdma (it builds what runs in the VM)" >&2; exit 1; }
done
ls build/c_tests/t_* >/dev/null 2>&1 || { echo "[rdma-vm] no test binaries in build/c_tests" >&2; exit 1; }

rm -rf "$INITRD_ROOT"
mkdir -p "$INITRD_ROOT"/{usr/bin,usr/sbin,usr/lib/x86_64-linux-gnu/libibverbs,usr/lib64,etc/libibverbs.d,proc,sys,dev,tmp,run,tests,var}
ln -s usr/bin "$INITRD_ROOT/bin"; ln -s usr/sbin "$INITRD_ROOT/sbin"; ln -s usr/lib "$INITRD_ROOT/lib"; ln -s usr/lib64 "$INITRD_ROOT/lib64"
cp /bin/busybox "$INITRD_ROOT/usr/bin/busybox"
for a in $(/bin/busybox --list-full); do
    [ -e "$INITRD_ROOT/$a" ] || [ -L "$INITRD_ROOT/$a" ] || ln -s /usr/bin/busybox "$INITRD_ROOT/$a"
done

# Kernel modules in dependency order. crc32_generic is needed by rdma_rxe but not listed; rdma_ucm
# (/dev/infiniband/rdma_cm) for libfabric's verbs provider, which connects through librdmacm.
: > "$INITRD_ROOT/etc/modules.order"
for m in crc32_generic rdma_rxe rdma_ucm veth sch_netem; do
    modprobe -d "$WORK/kroot" -S "$KVER" --show-depends "$m" | awk '$1=="insmod"{print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
    rel=${ko#"$WORK"/kroot/}
    mkdir -p "$INITRD_ROOT/$(dirname "$rel")"; cp "$ko" "$INITRD_ROOT/$rel"
    echo "/$rel" >> "$INITRD_ROOT/etc/modules.order"
done

# Programs and every library they (and the rxe provider) load. --remove-destination: some
# targets are busybox applet links, and cp must never write through them into the host's files.
BINS="ip tc rdma ibv_devices ibv_devinfo ib_write_bw ib_send_lat"
# libfabric's fi_info (libfabric-bin) where installed: the guest lists the verbs provider's domains.
command -v fi_info >/dev/null && BINS="$BINS fi_info"
# And fi_pingpong (libfabric-bin too): the libfabric reference for the demo's round trip over it.
command -v fi_pingpong >/dev/null && BINS="$BINS fi_pingpong"
LIBS=""
for b in $BINS; do
    p=$(command -v "$b"); d=/usr/bin; case "$p" in */sbin/*) d=/usr/sbin;; esac
    cp -L --remove-destination "$p" "$INITRD_ROOT$d/$b"; LIBS="$LIBS $p"
done
for t in build/c_tests/t_*; do
    case "$t" in *.log) continue;; esac
    # RDMA_VM_TESTS="t_a t_b": run only these (debugging).
    [ -n "${RDMA_VM_TESTS:-}" ] && ! echo " $RDMA_VM_TESTS " | grep -q " $(basename "$t") " && continue
    [ -x "$t" ] && cp "$t" "$INITRD_ROOT/tests/" && LIBS="$LIBS $t"
done
cp build/bin/nrt_demo "$INITRD_ROOT/usr/bin/"; LIBS="$LIBS build/bin/nrt_demo"
# The LD_PRELOAD library over verbs: a stand-in vendor libnrt.so.1 (as c_tests/preload/run.sh
# builds it) and t_preload, in /preload (the guest's own libnrt.so.1 is ours).
if [ -e build/lib/libnrt_async_sendrecv.so ]; then
    mkdir -p "$INITRD_ROOT/preload" "$WORK/preload"
    sed 's/^\( *\)local:/\1  nrt_tensor_get_device_allocation_info;\n\1  fake_nrt_device_copies;\n\1local:/' \
        src/ffi/libnrt.map > "$WORK/preload/fake_nrt.map"
    cc -std=c11 -O1 -Wall -Wextra -Werror -fPIC -shared -Iinclude -o "$INITRD_ROOT/preload/libnrt.so.1" \
        -Wl,-soname,libnrt.so.1 -Wl,--version-script="$WORK/preload/fake_nrt.map" c_tests/preload/fake_nrt.c
    cc -std=c11 -O1 -Wall -Wextra -Werror -Iinclude -o "$INITRD_ROOT/preload/t_preload" c_tests/preload/t_preload.c \
        -L"$INITRD_ROOT/preload" -l:libnrt.so.1
    cp -L build/lib/libnrt_async_sendrecv.so "$INITRD_ROOT/preload/"; LIBS="$LIBS build/lib/libnrt_async_sendrecv.so"
fi
# The fault-injection node (tc netem runs here: the host kernel has no netem).
cc -std=c11 -O2 -Wall -Wextra -Werror -Iinclude -o "$WORK/f_node" c_tests/faults/f_node.c -Lbuild/lib -lnrt
cp "$WORK/f_node" "$INITRD_ROOT/usr/bin/"; LIBS="$LIBS $WORK/f_node"
cp -L build/lib/libnrt.so.1 "$INITRD_ROOT/usr/lib/x86_64-linux-gnu/"; LIBS="$LIBS build/lib/libnrt.so.1"
PROV=$(ls /usr/lib/x86_64-linux-gnu/libibverbs/librxe-rdmav*.so)
cp -L $PROV "$INITRD_ROOT/usr/lib/x86_64-linux-gnu/libibverbs/"
cp /etc/libibverbs.d/rxe.driver "$INITRD_ROOT/etc/libibverbs.d/"
LD_LIBRARY_PATH=$ROOT/build/lib ldd $LIBS $PROV 2>/dev/null \
    | awk '$2=="=>" && $3 ~ /^\//{print $3} $1 ~ /^\/.*ld-linux/{print $1}' | sort -u | while read -r l; do
    case "$l" in
        */ld-linux-x86-64.so.2) cp -L --remove-destination "$l" "$INITRD_ROOT/usr/lib64/" ;;
        "$ROOT"/*) ;;
        *) cp -L --remove-destination "$l" "$INITRD_ROOT/usr/lib/x86_64-linux-gnu/" ;;
    esac
done
cp -L --remove-destination /lib/x86_64-linux-gnu/libgcc_s.so.1 "$INITRD_ROOT/usr/lib/x86_64-linux-gnu/"
# RDMA_VM_QUICK=1: the C suite, the verbs measurement and the preload run only (no netem, Yama,
# device-from-environment or libfabric parts): for working on the verbs transport.
[ -n "${RDMA_VM_QUICK:-}" ] && touch "$INITRD_ROOT/etc/rdma-vm-quick"
# RDMA_VM_EXP=script: the guest sources it after the network and device set-up, instead of the
# suite (investigations: it has the guest's tools, the library, nrt_demo and gid_v4).
[ -n "${RDMA_VM_EXP:-}" ] && cp "$RDMA_VM_EXP" "$INITRD_ROOT/exp.sh"
printf '127.0.0.1 localhost\n' > "$INITRD_ROOT/etc/hosts"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/tmp:/bin/sh\n' > "$INITRD_ROOT/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$INITRD_ROOT/etc/group"

cat > "$INITRD_ROOT/init" <<'EOF'
#!/bin/sh
export PATH=/usr/sbin:/usr/bin LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp; mount -t tmpfs tmpfs /run
for ko in $(cat /etc/modules.order); do insmod $ko || echo "insmod $ko FAILED"; done
echo "=== guest up $(cut -d' ' -f1 /proc/uptime)s, kernel $(uname -r)"
sh /guest.sh 2>&1
echo "=== guest done $(cut -d' ' -f1 /proc/uptime)s"
sync
poweroff -f
EOF
chmod +x "$INITRD_ROOT/init"

cat > "$INITRD_ROOT/guest.sh" <<'EOF'
# Busybox's shell prefers its own applets: iproute2's ip by full path.
IP2=/usr/sbin/ip
$IP2 link set lo up
$IP2 link add vethA type veth peer name vethB
$IP2 addr add 10.9.0.1/24 dev vethA; $IP2 addr add 10.9.0.2/24 dev vethB
$IP2 link set vethA up; $IP2 link set vethB up
for f in all default vethA vethB; do
    echo 1 > /proc/sys/net/ipv4/conf/$f/accept_local; echo 0 > /proc/sys/net/ipv4/conf/$f/rp_filter
done
# Traffic between the two local addresses leaves through one end and enters through the other.
$IP2 rule add pref 10 iif lo to 10.9.0.2 lookup 100; $IP2 route add 10.9.0.2 dev vethA src 10.9.0.1 table 100
$IP2 rule add pref 10 iif lo to 10.9.0.1 lookup 101; $IP2 route add 10.9.0.1 dev vethB src 10.9.0.2 table 101
$IP2 rule add pref 100 lookup local; $IP2 rule del pref 0
rdma link add rxeA type rxe netdev vethA || echo "rdma link add rxeA FAILED"
rdma link add rxeB type rxe netdev vethB || echo "rdma link add rxeB FAILED"
sleep 1
ibv_devices
gid_v4() { for g in /sys/class/infiniband/$1/ports/1/gids/*; do
    case "$(cat $g)" in 0000:0000:0000:0000:0000:ffff:*) basename $g; return;; esac; done; echo 1; }
ulimit -l unlimited
if [ -e /exp.sh ]; then . /exp.sh; exit 0; fi

export NEURON_RT_ASYNC_SENDRECV_TRANSPORT=verbs
export NEURON_RT_ASYNC_SENDRECV_LISTEN_ADDR=0.0.0.0
export NRT_TEST_IP_A=10.9.0.1 NRT_TEST_IP_B=10.9.0.2 NRT_TEST_NO_IPV6=1 NRT_TEST_LISTEN_ADDR=0.0.0.0
export NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL=info
passed=0; failed=0; port=20000
# Writes of at most 1 MiB in the C suite: every longer message goes as several (t_transfer adds a
# 64 MiB + 3 byte message at odd offsets when this is set); and registrations of at most 3 MiB:
# longer memory (that message's tensors on both sides) is registered in parts, which no write
# crosses (the receiver's clear-to-send comes as one record per part).
export NEURON_RT_ASYNC_SENDRECV_RDMA_MAX_WRITE=1M NEURON_RT_ASYNC_SENDRECV_RDMA_MAX_REGISTRATION=3M
for t in /tests/t_*; do
    n=$(basename $t)
    start=$(cut -d' ' -f1 /proc/uptime)
    NRT_TEST_PORT_BASE=$port timeout 600 $t > /tmp/$n.log 2>&1
    rc=$?
    end=$(cut -d' ' -f1 /proc/uptime)
    verbs=$(grep -c "transport verbs" /tmp/$n.log)
    tcp=$(grep -c "transport tcp" /tmp/$n.log)
    if [ $rc = 0 ]; then
        echo "PASS $n (rc 0, $start..$end s, lncs logging transport verbs: $verbs, tcp: $tcp)"; passed=$((passed+1))
    else
        echo "FAIL $n (rc $rc)"; grep -v " INFO: " /tmp/$n.log | tail -25 | sed 's/^/    /'; failed=$((failed+1))
    fi
    grep -m2 "transport verbs" /tmp/$n.log | sed 's/^/    log: /'
    port=$((port+816))
done
unset NEURON_RT_ASYNC_SENDRECV_RDMA_MAX_WRITE NEURON_RT_ASYNC_SENDRECV_RDMA_MAX_REGISTRATION
if [ -e /tmp/t_transfer.log ]; then
    if grep -q "RDMA writes of at most 1048576 bytes" /tmp/t_transfer.log && grep -q "went as several RDMA writes" /tmp/t_transfer.log; then
        echo "PASS t_transfer's 64 MiB + 3 byte message at odd offsets went as several RDMA writes of at most 1 MiB, every byte checked"; passed=$((passed+1))
    else
        echo "FAIL t_transfer's log shows no message that went as several RDMA writes"; failed=$((failed+1))
    fi
    { grep -m1 "registrations of at most" /tmp/t_transfer.log; grep -m1 "registered in several parts" /tmp/t_transfer.log; } | sed 's/^/    log: /'
    if grep -q "registrations of at most 3145728 bytes" /tmp/t_transfer.log && [ "$(grep -c "message(s) registered in several parts" /tmp/t_transfer.log)" -ge 2 ]; then
        echo "PASS t_transfer's tensors longer than one registration (3 MiB here) were registered in parts on both sides, every byte checked"; passed=$((passed+1))
    else
        echo "FAIL t_transfer's log shows no message registered in several parts"; failed=$((failed+1))
    fi
    grep -h "RDMA writes" /tmp/t_transfer.log | sort | uniq -c | sed 's/^/    log: /'
fi

echo "===== demo over verbs (rxeA -> rxeB)"
NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL=info NRT_DEMO_BYTES_PER_SIZE=16777216 NRT_DEMO_MAX_SIZE=4194304 NRT_DEMO_MIN_ITERS=4 \
    timeout 600 nrt_demo 10.9.0.2 10.9.0.1 > /tmp/demo.log 2>&1
rc=$?; echo "demo rc=$rc"; cat /tmp/demo.log
if [ $rc = 0 ]; then echo "PASS demo over verbs (every message, every checked byte)"; passed=$((passed+1))
else echo "FAIL demo over verbs (rc $rc)"; failed=$((failed+1)); fi
echo "===== verbs measured beside perftest (rxeA <-> rxeB), five rounds"
# perftest converts cycles to time with "cpu MHz" from /proc/cpuinfo, which the emulated CPU
# lacks (latencies print as inf): give it the TSC rate the guest kernel calibrated.
mhz=$(dmesg | sed -n 's/.*tsc: Detected \([0-9.]*\) MHz.*/\1/p' | head -1)
echo "perftest clock: TSC '${mhz}' MHz; cpuinfo says: $(grep -m1 'cpu MHz' /proc/cpuinfo); the kernel's clocksource: $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
if [ -n "$mhz" ]; then
    grep -v "^cpu MHz" /proc/cpuinfo | sed "s/^processor.*/&\ncpu MHz\t\t: $mhz/" > /tmp/cpuinfo && mount -o bind /tmp/cpuinfo /proc/cpuinfo
fi
XA=$(gid_v4 rxeA); XB=$(gid_v4 rxeB)
# Each round: the demo at 1 MiB (8 in flight), ib_write_bw -s 1048576, the demo at 8 bytes one
# message at a time (a round trip per message: the send completes on the receiver's Ack), and
# ib_send_lat -s 8; rows marked VBW/WBW/VRT/SLAT and the round. The host takes the medians.
# The bandwidth runs model a NIC (docs/rdma-vm.md, "Figures"): CPU 0 does the packet work, RPS
# steering both veths' receive to it, so a queue pair's packets arrive in the order sent (veth
# queues a packet on the sending CPU: packets a queue pair sends from both CPUs can overtake each
# other, and the responder's NAK sends the requester back); both tools run on CPU 1. The rows
# RETRY<round> count the requesters' go-back-N retries (completer_retry_err, both devices)
# during the demo's and ib_write_bw's run.
nic_cpu0() { for v in vethA vethB; do echo "$1" > /sys/class/net/$v/queues/rx-0/rps_cpus; done; }
retries() { cat /sys/class/infiniband/rxe[AB]/ports/1/hw_counters/completer_retry_err | awk '{n += $1} END {print n + 0}'; }
# One perftest pair between rxeA (server) and rxeB (client), the client's report in $2:
# perftest_pair TOOL LOG SERVER_CPUS CLIENT_CPUS ARGS... (CPUS "" leaves it to the scheduler).
perftest_pair() {
    tool=$1; log=$2; scpu=$3; ccpu=$4; shift 4
    ${scpu:+taskset -c $scpu} timeout 300 $tool -d rxeA -i 1 -x $XA -F "$@" > /tmp/perftest_srv.log 2>&1 &
    sleep 2
    ${ccpu:+taskset -c $ccpu} timeout 300 $tool -d rxeB -i 1 -x $XB -F "$@" 10.9.0.1 > $log 2>&1
    wait
}
# The LD_PRELOAD library with the stand-in vendor libnrt.so.1 (t_preload, both ends in one
# process, the bootstrap on loopback): host and device tensors in four directions, 0 to
# 32 MiB + 7 bytes at odd offsets, every byte checked; the stand-in's device tensors are staged
# through host memory. preload_run NAME LOG TRANSPORT_LINE PORT ENV...: the log must show
# TRANSPORT_LINE and the staging.
preload_run() {
    name=$1; log=$2; want=$3; port=$4; shift 4
    env "$@" LD_LIBRARY_PATH=/preload:$LD_LIBRARY_PATH LD_PRELOAD=/preload/libnrt_async_sendrecv.so \
        NEURON_RT_ASYNC_SENDRECV_LISTEN_ADDR=127.0.0.1 NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT=$port \
        NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL=info timeout 300 /preload/t_preload ours > $log 2>&1
    rc=$?
    grep -m3 -E "$want|staged" $log | sed 's/^/    log: /'
    if [ $rc = 0 ] && grep -q "$want" $log && grep -q "device memory staged through host memory" $log; then
        echo "PASS $name: host and device tensors in four directions, byte-verified"; passed=$((passed+1))
    else
        echo "FAIL $name (rc $rc)"; grep -v " INFO: " $log | tail -15 | sed 's/^/    /'; failed=$((failed+1))
    fi
}
vdemo() { # tag log env...
    tag=$1; log=$2; shift 2
    env NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL=info "$@" timeout 300 nrt_demo 10.9.0.2 10.9.0.1 > $log 2>&1
    rc=$?
    if [ $rc = 0 ] && grep -q "^demo: every message arrived" $log && grep -q "transport verbs on rxeA" $log && grep -q "transport verbs on rxeB" $log; then
        echo "PASS demo over verbs, $tag (rxeA -> rxeB, every message, the last ones' every byte checked)"; passed=$((passed+1))
    else
        echo "FAIL demo over verbs, $tag (rc $rc)"; grep -v " INFO: " $log | tail -15 | sed 's/^/    /'; failed=$((failed+1))
    fi
}
for i in 1 2 3 4 5; do
    nic_cpu0 1; r0=$(retries)
    vdemo "1 MiB, 8 in flight, round $i" /tmp/vbw.log NRT_DEMO_MIN_SIZE=1048576 NRT_DEMO_MAX_SIZE=1048576 NRT_DEMO_BYTES_PER_SIZE=33554432 NRT_DEMO_MIN_ITERS=4 NRT_DEMO_CPU=1
    r1=$(retries)
    grep -E "^ *1 MiB " /tmp/vbw.log | sed "s/^ */VBW$i /"
    perftest_pair ib_write_bw /tmp/wbw.log 1 1 -s 1048576 -n 64
    awk '$1=="1048576"' /tmp/wbw.log | sed "s/^ */WBW$i /"
    echo "RETRY$i $((r1 - r0)) $(( $(retries) - r1 ))"
    nic_cpu0 0
    # The round trips with each side on its own CPU, both tools (left to the scheduler, the demo's
    # forked receiver and its sender share a CPU in some runs, which doubles the round trip).
    # Two pairs a round, ten in all: the host's load comes and goes in spells of seconds, which
    # slow a whole run of either tool (rows marked <round>a and <round>b).
    for j in a b; do
        vdemo "8 bytes, one at a time, round $i$j" /tmp/vrt.log NRT_DEMO_MIN_SIZE=8 NRT_DEMO_MAX_SIZE=8 NRT_DEMO_BYTES_PER_SIZE=0 NRT_DEMO_MIN_ITERS=500 NRT_DEMO_WINDOW=1 \
            NRT_DEMO_SENDER_NRT_DEMO_CPU=0 NRT_DEMO_RECEIVER_NRT_DEMO_CPU=1
        grep -E "^ *8 B " /tmp/vrt.log | sed "s/^ */VRT$i$j /"
        grep -E "^demo: 8 B one at a time: median" /tmp/vrt.log | sed "s/^demo: /VRTM$i$j /"
        perftest_pair ib_send_lat /tmp/lat.log 1 0 -s 8 -n 500
        awk '$1=="8" && NF>=5' /tmp/lat.log | sed "s/^ */SLAT$i$j /"
    done
done
# The library's advice for Soft-RoCE over veth (verbs/sysfs.rs): logged where the veths' receive
# is not steered (the round trips), not where it is (the bandwidth runs).
if grep -q "rxeA is a software device over vethA" /tmp/vrt.log && grep -q "rxeB is a software device over vethB" /tmp/vrt.log \
   && ! grep -q "is a software device over" /tmp/vbw.log; then
    echo "PASS advice for Soft-RoCE over veth: logged with the veths' receive unsteered, not with it steered to CPU 0"; passed=$((passed+1))
else
    echo "FAIL advice for Soft-RoCE over veth (unsteered: $(grep -c 'is a software device over' /tmp/vrt.log) lines, steered: $(grep -c 'is a software device over' /tmp/vbw.log))"; failed=$((failed+1))
fi
grep -m1 "is a software device over" /tmp/vrt.log | sed 's/^/    log: /'

echo "===== the LD_PRELOAD library over verbs (stand-in vendor libnrt.so.1, t_preload)"
# On rxeA, named in the environment.
if [ -e /preload/t_preload ]; then
    preload_run "LD_PRELOAD library over verbs" /tmp/preload.log "transport verbs on rxeA" 25500 NEURON_RT_ASYNC_SENDRECV_RDMA_DEVICE=rxeA
else
    echo "FAIL no LD_PRELOAD library in the VM (build/lib/libnrt_async_sendrecv.so missing)"; failed=$((failed+1))
fi

if [ ! -e /etc/rdma-vm-quick ]; then
echo "===== device named in the environment (NEURON_RT_ASYNC_SENDRECV_RDMA_DEVICE)"
# Bootstrap over 127.0.0.1, which no RDMA device carries: each side uses the device it names.
NEURON_RT_ASYNC_SENDRECV_LISTEN_ADDR=127.0.0.1 NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT=25000 NEURON_RT_ASYNC_SENDRECV_RDMA_DEVICE=rxeB \
    timeout 300 f_node recv 1 127.0.0.1 0 64 65536 > /tmp/er.log 2>&1 &
rp=$!
NEURON_RT_ASYNC_SENDRECV_LISTEN_ADDR=127.0.0.1 NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT=25000 NEURON_RT_ASYNC_SENDRECV_RDMA_DEVICE=rxeA \
    timeout 300 f_node send 0 127.0.0.1 1 64 65536 > /tmp/es.log 2>&1
s=$?; wait $rp; r=$?
if [ $s = 0 ] && [ $r = 0 ] && grep -q "verbs on rxeA" /tmp/es.log && grep -q "verbs on rxeB" /tmp/er.log; then
    echo "PASS device from the environment: 64 x 64 KiB over rxeA -> rxeB with a loopback bootstrap"; passed=$((passed+1))
else
    echo "FAIL device from the environment (sender rc $s, receiver rc $r)"; tail -5 /tmp/es.log /tmp/er.log | sed 's/^/    /'; failed=$((failed+1))
fi

echo "===== shared memory under Yama ptrace_scope 1, unprivileged (Ubuntu's default policy)"
# A receiver that is not the sender's ancestor may not process_vm_readv it (EPERM), but may open
# its /proc/<pid>/fd: shared memory must still be used (required here), staging the rest.
# t_twoproc's receiver is the forked child, its sender the parent.
if [ -w /proc/sys/kernel/yama/ptrace_scope ]; then
    echo 1 > /proc/sys/kernel/yama/ptrace_scope
    su -s /bin/sh -c "env LD_LIBRARY_PATH=$LD_LIBRARY_PATH NEURON_RT_ASYNC_SENDRECV_TRANSPORT=shm \
        NEURON_RT_ASYNC_SENDRECV_LISTEN_ADDR=127.0.0.1 NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL=info NRT_TEST_NO_IPV6=1 \
        NRT_TEST_IP_A=127.0.0.1 NRT_TEST_IP_B=127.0.0.1 NRT_TEST_LISTEN_ADDR=127.0.0.1 NRT_TEST_PORT_BASE=26000 \
        timeout 300 /tests/t_twoproc" nobody > /tmp/yama.log 2>&1
    rc=$?
    echo 0 > /proc/sys/kernel/yama/ptrace_scope
    if [ $rc = 0 ] && grep -q "process_vm_readv of pid .* is not permitted" /tmp/yama.log && grep -q "transport shm" /tmp/yama.log; then
        echo "PASS t_twoproc as nobody under Yama ptrace_scope 1: shared memory, staged, every byte checked"; passed=$((passed+1))
    else
        echo "FAIL t_twoproc as nobody under Yama ptrace_scope 1 (rc $rc)"; grep -v " DEBUG: " /tmp/yama.log | tail -15 | sed 's/^/    /'; failed=$((failed+1))
    fi
else
    echo "FAIL no /proc/sys/kernel/yama/ptrace_scope in the guest kernel"; failed=$((failed+1))
fi

echo "===== network faults with tc netem (TCP), between two namespaces"
# netem shapes what leaves fA (A -> B data) and fB (B -> A acknowledgements).
$IP2 netns add nA; $IP2 netns add nB
$IP2 link add fA netns nA type veth peer name fB netns nB
$IP2 -n nA addr add 10.88.0.1/24 dev fA; $IP2 -n nB addr add 10.88.0.2/24 dev fB
for n in nA nB; do $IP2 -n $n link set lo up; done
$IP2 -n nA link set fA up; $IP2 -n nB link set fB up
netem_case() { # name count size netem-args...
    name=$1; count=$2; size=$3; shift 3
    $IP2 netns exec nA tc qdisc replace dev fA root netem "$@" || echo "tc on fA failed"
    $IP2 netns exec nB tc qdisc replace dev fB root netem "$@" || echo "tc on fB failed"
    t0=$(cut -d' ' -f1 /proc/uptime)
    NEURON_RT_ASYNC_SENDRECV_TRANSPORT=tcp NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT=24000 NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL=error \
        $IP2 netns exec nB timeout 300 f_node recv 1 10.88.0.1 0 $count $size > /tmp/fr.log 2>&1 &
    rp=$!
    NEURON_RT_ASYNC_SENDRECV_TRANSPORT=tcp NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT=24000 NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL=error \
        $IP2 netns exec nA timeout 300 f_node send 0 10.88.0.2 1 $count $size > /tmp/fs.log 2>&1
    s=$?; wait $rp; r=$?
    t1=$(cut -d' ' -f1 /proc/uptime)
    secs=$(awk -v a=$t0 -v b=$t1 'BEGIN {printf "%.1f", b - a}')
    mbit=$(awk -v a=$t0 -v b=$t1 -v n=$((count * size)) 'BEGIN {printf "%.1f", n * 8 / (b - a) / 1e6}')
    $IP2 netns exec nA tc qdisc del dev fA root; $IP2 netns exec nB tc qdisc del dev fB root
    if [ $s = 0 ] && [ $r = 0 ] && grep -q "^done $count" /tmp/fr.log; then
        echo "PASS netem $name: $count x $size bytes, every byte checked, ${secs} s, ${mbit} Mbit/s"; passed=$((passed+1))
        echo "NETEM| $name | all delivered and verified | ${secs} s, ${mbit} Mbit/s | $((count * size / 1024)) KiB |"
    else
        echo "FAIL netem $name (sender rc $s: $(tail -1 /tmp/fs.log); receiver rc $r: $(tail -1 /tmp/fr.log))"; failed=$((failed+1))
    fi
}
netem_case "2% loss" 200 65536 loss 2%
netem_case "50 ms delay, 10 ms jitter" 100 65536 delay 50ms 10ms
netem_case "reordering (25%, 10 ms)" 200 65536 delay 10ms reorder 25% 50%
netem_case "5% duplication" 200 65536 duplicate 5%
netem_case "20 Mbit/s cap" 40 262144 rate 20mbit
echo "===== libfabric: NEURON_RT_ASYNC_SENDRECV_TRANSPORT=ofi, FI_PROVIDER=verbs (verbs;ofi_rxm over rxe), two rails"
# A second veth pair and two more Soft-RoCE devices, routed like the first: vethC 10.9.1.1 (rxeC)
# and vethD 10.9.1.2 (rxeD). Rails are libfabric domains (the verbs provider's domain is the
# device): a side at 10.9.0.1 uses rxeA and rxeC, one at 10.9.0.2 rxeB and rxeD.
fi
if [ -e /etc/rdma-vm-quick ]; then
    echo "SKIP device from the environment, Yama, netem and libfabric parts (RDMA_VM_QUICK)"
elif [ ! -e /usr/lib/x86_64-linux-gnu/libfabric.so.1 ]; then
    echo "SKIP libfabric: libnrt.so.1 does not link libfabric (built with OFI=0)"
else
$IP2 link add vethC type veth peer name vethD
$IP2 addr add 10.9.1.1/24 dev vethC; $IP2 addr add 10.9.1.2/24 dev vethD
$IP2 link set vethC up; $IP2 link set vethD up
for f in vethC vethD; do
    echo 1 > /proc/sys/net/ipv4/conf/$f/accept_local; echo 0 > /proc/sys/net/ipv4/conf/$f/rp_filter
done
$IP2 rule add pref 10 iif lo to 10.9.1.2 lookup 102; $IP2 route add 10.9.1.2 dev vethC src 10.9.1.1 table 102
$IP2 rule add pref 10 iif lo to 10.9.1.1 lookup 103; $IP2 route add 10.9.1.1 dev vethD src 10.9.1.2 table 103
rdma link add rxeC type rxe netdev vethC || echo "rdma link add rxeC FAILED"
rdma link add rxeD type rxe netdev vethD || echo "rdma link add rxeD FAILED"
sleep 1
echo "fi_info -p verbs -t FI_EP_RDM:"
fi_info -p verbs -t FI_EP_RDM 2>&1 | awk '/provider:/ {p=$2} /fabric:/ {f=$2} /domain:/ {print "    " p ", fabric " f ", domain " $2}' | sort -u
# Byte counters of the four veths and the four rxe devices (what crossed which wire).
counters() { for d in A B C D; do
    printf ' veth%s tx %s rx %s, rxe%s sent_pkts %s rcvd_pkts %s;' $d $(cat /sys/class/net/veth$d/statistics/tx_bytes /sys/class/net/veth$d/statistics/rx_bytes) \
        $d $(cat /sys/class/infiniband/rxe$d/ports/1/hw_counters/sent_pkts /sys/class/infiniband/rxe$d/ports/1/hw_counters/rcvd_pkts 2>/dev/null || echo "? ?"); done; echo; }
# both_rails LOG...: every "bytes per rail" row of the logs has two entries, and some row has both
# above 1 MiB. (verbs;ofi_rxm offers 4 bytes of CQ data, which the write path needs: large
# messages go by RDMA write, counted by the sender as written and by the receiver as landed.)
both_rails() { cat "$@" | sed -n 's/.*bytes per rail: \[\([0-9]*\), *\([0-9]*\)\].*/\1 \2/p' | awk '
    {rows++; if ($1 > 1048576 && $2 > 1048576) both++} END {exit !(rows > 0 && both > 0)}' &&
    ! cat "$@" | grep "bytes per rail: \[" | grep -vq "bytes per rail: \[[0-9]*, *[0-9]*\]"; }
echo "verbs;ofi_rxm on rxeA: $(fi_info -p verbs -d rxeA -t FI_EP_RDM -v 2>/dev/null | grep -m1 -o 'cq_data_size: [0-9]*'), rxe $(ibv_devinfo -v -d rxeA | grep -m1 -o 'max_cqe:.*' | tr -s '\t' ' ')"
# FI_UNIVERSE_SIZE: ofi_rxm sizes each endpoint's verbs completion queue as the universe size
# (default 256) times the verbs endpoints' tx + rx sizes, beyond Soft-RoCE's max_cqe (32767):
# ibv_create_cq fails and fi_enable returns EINVAL ("Unable to create verbs CQ"). 32 peers fit.
ofi_env="NEURON_RT_ASYNC_SENDRECV_TRANSPORT=ofi FI_PROVIDER=verbs FI_UNIVERSE_SIZE=32"

# 1. The per-side case, two processes: f_node receiver at 10.9.0.2 on rxeB,rxeD, sender at
# 10.9.0.1 on rxeA,rxeC; 512 KiB stripes dealt over both rails, the receiver checks every byte.
echo "counters before:$(counters)"
t0=$(cut -d' ' -f1 /proc/uptime)
env $ofi_env NEURON_RT_ASYNC_SENDRECV_OFI_RAILS=rxeB,rxeD NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL=debug \
    NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT=27000 NEURON_RT_ASYNC_SENDRECV_LISTEN_ADDR=10.9.0.2 \
    timeout 300 f_node recv 1 10.9.0.1 0 8 4194304 > /tmp/ofi_r.log 2>&1 &
rp=$!
env $ofi_env NEURON_RT_ASYNC_SENDRECV_OFI_RAILS=rxeA,rxeC NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL=debug \
    NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT=27000 NEURON_RT_ASYNC_SENDRECV_LISTEN_ADDR=10.9.0.1 \
    timeout 300 f_node send 0 10.9.0.2 1 8 4194304 > /tmp/ofi_s.log 2>&1
s=$?; wait $rp; r=$?
t1=$(cut -d' ' -f1 /proc/uptime)
echo "counters after: $(counters)"
grep -h -E "transport ofi|bytes per rail" /tmp/ofi_s.log /tmp/ofi_r.log | sed 's/^/    log: /'
if [ $s = 0 ] && [ $r = 0 ] && grep -q "^done 8" /tmp/ofi_r.log \
   && grep -q "transport ofi verbs;ofi_rxm .*domains rxeA,rxeC" /tmp/ofi_s.log && grep -q "transport ofi verbs;ofi_rxm .*domains rxeB,rxeD" /tmp/ofi_r.log \
   && both_rails /tmp/ofi_s.log /tmp/ofi_r.log; then
    echo "PASS [ofi verbs] two processes, two rails per side (rxeA,rxeC -> rxeB,rxeD): 8 x 4 MiB, every byte checked, both rails carried bytes ($t0..$t1 s)"; passed=$((passed+1))
else
    echo "FAIL [ofi verbs] two processes, two rails per side (sender rc $s, receiver rc $r)"
    grep -v " DEBUG: " /tmp/ofi_s.log | tail -12 | sed 's/^/    send: /'; grep -v " DEBUG: " /tmp/ofi_r.log | tail -12 | sed 's/^/    recv: /'
    failed=$((failed+1))
fi

# 2. The C suite. Most programs run both ends in one process (threads, or lncs of one process),
# and the rails come from the process's environment (NEURON_RT_ASYNC_SENDRECV_OFI_RAILS cannot
# differ between two ends of one process): both ends use rxeA,rxeC, so rail 0 is rxeA -> rxeA and
# rail 1 rxeC -> rxeC, a device talking to itself (the counters printed after the suite show the
# wires it used). Only the per-side case above has each side on its own two devices.
# t_transfer runs at debug level: its log must name the provider and both domains, and show that
# both rails carried bytes. t_manycomms is left out here: 16 communicators, each opening its own
# two rails (fabric, domain, endpoint, 256 registered bounce buffers each), take about 50 s under
# emulation; it runs over libfabric in make test-ofi (tcp, shm).
port=2000
for t in /tests/t_*; do
    n=$(basename $t)
    if [ $n = t_manycomms ]; then echo "SKIP [ofi verbs] $n: time (about 50 s under emulation; make test-ofi runs it over tcp and shm)"; continue; fi
    level=info; [ $n = t_transfer ] && level=debug
    start=$(cut -d' ' -f1 /proc/uptime)
    env $ofi_env NEURON_RT_ASYNC_SENDRECV_OFI_RAILS=rxeA,rxeC NRT_TEST_PORT_BASE=$port NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL=$level \
        timeout 300 $t > /tmp/ofi_$n.log 2>&1
    rc=$?
    end=$(cut -d' ' -f1 /proc/uptime)
    ok=1; why=""
    if [ $n = t_transfer ]; then
        grep -m2 "transport ofi" /tmp/ofi_$n.log | sed 's/^/    log: /'
        grep "bytes per rail" /tmp/ofi_$n.log | head -4 | sed 's/^/    log: /'
        grep -m1 -o "cq_data_size [0-9]* write_data [a-z]*" /tmp/ofi_$n.log | sed 's/^/    log: rail: /'
        grep -q "write_data true" /tmp/ofi_$n.log || { ok=0; why="$why; the rails do not take the RDMA write path (no 'write_data true' in the log)"; }
        grep -q "transport ofi verbs;ofi_rxm .*domains rxeA,rxeC" /tmp/ofi_$n.log || { ok=0; why="$why; no 'transport ofi verbs;ofi_rxm ... domains rxeA,rxeC' in the log"; }
        both_rails /tmp/ofi_$n.log || { ok=0; why="$why; the log does not show both rails carrying bytes"; }
    fi
    if [ $rc = 0 ] && [ $ok = 1 ]; then
        echo "PASS [ofi verbs] $n (rc 0, $start..$end s, lines logging transport ofi: $(grep -c "transport ofi" /tmp/ofi_$n.log))"; passed=$((passed+1))
    else
        echo "FAIL [ofi verbs] $n (rc $rc$why)"; grep -v -E " (INFO|DEBUG): " /tmp/ofi_$n.log | tail -25 | sed 's/^/    /'; failed=$((failed+1))
    fi
    port=$((port+816))
done
echo "counters after the suite: $(counters)"

# 3. Measured beside perftest (the host prints the ratios): the demo over libfabric, one rail per
# side, rxeA (sender, 10.9.0.1) -> rxeB (receiver, 10.9.0.2), the pair ib_write_bw and ib_send_lat
# use. The demo is one program that forks its receiver: NRT_DEMO_SENDER_<NAME> and
# NRT_DEMO_RECEIVER_<NAME> set <NAME> in one side only. Bandwidth: 1 MiB messages, 8 in flight;
# round trip: 8 bytes (ib_send_lat's size), one at a time. Rows are marked OFIBW / OFIRT for the
# host; the receiver checks every byte of each size's last messages, and the logs must name the
# two devices.
ofi_demo() { # name log env...
    name=$1; log=$2; shift 2
    env $ofi_env NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL=info NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT=27100 \
        NRT_DEMO_SENDER_NEURON_RT_ASYNC_SENDRECV_OFI_RAILS=rxeA NRT_DEMO_RECEIVER_NEURON_RT_ASYNC_SENDRECV_OFI_RAILS=rxeB \
        "$@" timeout 300 nrt_demo 10.9.0.2 10.9.0.1 > $log 2>&1
    rc=$?
    grep -E "transport ofi|: FAILED|failed with" $log | sed 's/^/    log: /'
    if [ $rc = 0 ] && grep -q "^demo: every message arrived" $log \
       && grep -q "lnc 0: transport ofi verbs;ofi_rxm (.*domains rxeA)" $log && grep -q "lnc 1: transport ofi verbs;ofi_rxm (.*domains rxeB)" $log; then
        echo "PASS [ofi verbs] demo, $name (rxeA -> rxeB, one rail per side, every message, the last ones' every byte checked)"; passed=$((passed+1))
    else
        echo "FAIL [ofi verbs] demo, $name (rc $rc)"; grep -v " INFO: " $log | tail -15 | sed 's/^/    /'; failed=$((failed+1))
    fi
}
echo "===== libfabric measured: demo over ofi verbs (rxeA -> rxeB), 1 MiB, 8 in flight"
echo "counters before:$(counters)"
t0=$(cut -d' ' -f1 /proc/uptime)
# As the verbs bandwidth rounds (and the final ib_write_bw): packet work on CPU 0, the tool on 1.
nic_cpu0 1
ofi_demo "1 MiB, 8 in flight" /tmp/ofi_bw.log NRT_DEMO_MIN_SIZE=1048576 NRT_DEMO_MAX_SIZE=1048576 NRT_DEMO_BYTES_PER_SIZE=33554432 NRT_DEMO_MIN_ITERS=4 NRT_DEMO_CPU=1
nic_cpu0 0
echo "counters after: $(counters) ($t0..$(cut -d' ' -f1 /proc/uptime) s)"
grep -v " INFO: " /tmp/ofi_bw.log | sed -E 's/^ *([0-9]+ (B|KiB|MiB) )/OFIBW \1/'
echo "===== libfabric measured: demo over ofi verbs (rxeA -> rxeB), 8 bytes, one message at a time, beside fi_pingpong"
# Three pairs: the demo (sender on CPU 0, receiver on CPU 1, as the verbs round trips), then
# fi_pingpong over the same provider and devices (server on rxeA, CPU 0; client on rxeB, CPU 1;
# tagged messages, as the demo's), 500 iterations. Rows OFIRT<n> (the demo's 8 B row: its
# us/message is a mean) and OFIPP<n> (fi_pingpong's row: its usec/xfer is a mean half round trip).
for i in 1 2 3; do
    t0=$(cut -d' ' -f1 /proc/uptime)
    ofi_demo "8 bytes, one at a time, run $i" /tmp/ofi_rt.log NRT_DEMO_MIN_SIZE=8 NRT_DEMO_MAX_SIZE=8 NRT_DEMO_BYTES_PER_SIZE=0 NRT_DEMO_MIN_ITERS=500 NRT_DEMO_WINDOW=1 \
        NRT_DEMO_SENDER_NRT_DEMO_CPU=0 NRT_DEMO_RECEIVER_NRT_DEMO_CPU=1
    echo "($t0..$(cut -d' ' -f1 /proc/uptime) s)"
    grep -v " INFO: " /tmp/ofi_rt.log | sed -E "s/^ *([0-9]+ (B|KiB|MiB) )/OFIRT$i \1/"
    if command -v fi_pingpong >/dev/null; then
        FI_UNIVERSE_SIZE=32 taskset -c 0 timeout 60 fi_pingpong -p "verbs;ofi_rxm" -e rdm -m tagged -d rxeA -S 8 -I 500 > /tmp/pp_srv.log 2>&1 &
        sleep 1
        FI_UNIVERSE_SIZE=32 taskset -c 1 timeout 60 fi_pingpong -p "verbs;ofi_rxm" -e rdm -m tagged -d rxeB -S 8 -I 500 10.9.0.1 > /tmp/pp.log 2>&1
        wait
        awk '$1 == "8" && NF >= 8' /tmp/pp.log | sed "s/^/OFIPP$i /"
        grep -q "^8 " /tmp/pp.log || { echo "fi_pingpong run $i reported no row:"; tail -3 /tmp/pp.log /tmp/pp_srv.log | sed 's/^/    /'; }
    fi
done

# 4. The LD_PRELOAD library over libfabric: t_preload with the stand-in vendor library, both ends
# in one process on one rail, rxeA (as the verbs run above); device tensors staged.
echo "===== the LD_PRELOAD library over libfabric (verbs;ofi_rxm on rxeA, stand-in vendor libnrt.so.1)"
if [ -e /preload/t_preload ]; then
    preload_run "[ofi verbs] LD_PRELOAD library" /tmp/preload_ofi.log "transport ofi verbs;ofi_rxm" 25600 $ofi_env NEURON_RT_ASYNC_SENDRECV_OFI_RAILS=rxeA
fi
fi
echo "rdma-vm suite: $passed passed, $failed failed"
echo "===== perftest (rxeA <-> rxeB), beside the libfabric runs"
nic_cpu0 1
perftest_pair ib_write_bw /tmp/wbw.log 1 1 -s 1048576 -n 64
nic_cpu0 0
cat /tmp/wbw.log
perftest_pair ib_send_lat /tmp/lat.log "" "" -s 8 -n 500
cat /tmp/lat.log
echo "===== END"
EOF

(cd "$INITRD_ROOT" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 > "$WORK/initrd.cpio.gz"

# ---------------------------------------------------------------- 3. boot
# Software emulation where this host's KVM cannot run the guest (see docs/rdma-vm.md).
if [ -z "${ACCEL:-}" ]; then
    if [ -w /dev/kvm ] && [ ! -d /sys/module/kvm_pvm ] && grep -qE 'vmx|svm' /proc/cpuinfo; then ACCEL=kvm; else ACCEL=tcg; fi
fi
# Under emulation the guest kernel finds the vCPUs' TSCs unsynchronised and falls back to the
# HPET, whose every read is an emulated device access (a system call and a trip through the
# emulator's I/O lock): a program that reads CLOCK_MONOTONIC while it polls, as the library does,
# pays for it and perftest (which reads the TSC itself) does not. The emulator derives every
# vCPU's TSC from one host clock: the guest keeps it, as a real host would (tsc=reliable).
# RDMA_VM_APPEND adds kernel arguments.
if [ "$ACCEL" = kvm ]; then ACC="-enable-kvm -cpu host"; KARGS=""; else ACC="-accel tcg,thread=multi -cpu max"; KARGS=" tsc=reliable"; fi
echo "[rdma-vm] accel=$ACCEL kernel=$KVER initrd=$(du -h "$WORK/initrd.cpio.gz" | cut -f1)"
set +e
timeout -k 10 "$VM_TIMEOUT" qemu-system-x86_64 $ACC -m "${VM_MEM:-4G}" -smp "${VM_SMP:-2}" \
    -kernel "$WORK/kroot/boot/vmlinuz-$KVER" -initrd "$WORK/initrd.cpio.gz" \
    -append "console=ttyS0 panic=-1 quiet loglevel=3$KARGS${RDMA_VM_APPEND:+ $RDMA_VM_APPEND}" -nic none \
    -display none -monitor none -serial stdio -no-reboot </dev/null 2>&1 | tr -d '\r' | tee "$WORK/serial.log"
QRC=${PIPESTATUS[0]}
set -e

# ---------------------------------------------------------------- 4. results
LOG=$WORK/serial.log
line=$({ grep -E "^rdma-vm suite: [0-9]+ passed, [0-9]+ failed" "$LOG" || true; } | tail -1)
p=$(echo "$line" | sed -nE 's/.* ([0-9]+) passed.*/\1/p'); f=$(echo "$line" | sed -nE 's/.* ([0-9]+) failed/\1/p')
p=${p:-0}; f=${f:-0}
[ -z "$line" ] && f=$((f + 1)) && echo "[rdma-vm] the suite did not report (qemu rc $QRC)"
used=$(grep -c "transport verbs on rxe" "$LOG" || true)
echo "[rdma-vm] log lines showing the verbs transport in use: $used"
[ "$used" -gt 0 ] || { echo "[rdma-vm] no test logged the verbs transport"; f=$((f + 1)); }
# The verbs transport beside perftest, five interleaved rounds (emulation drifts; ten round-trip
# pairs). Each demo run is paired with the perftest run next to it (seconds apart, the same
# devices and CPUs), and the figure is the median of the pairs' ratios: the emulator's speed
# changes in spells (the host's load) that slow or speed whole runs of either tool, so each
# tool's median over its runs depends on how many of its runs fell in slow spells, while a pair
# whose two runs share a spell gives the same ratio in either, and a pair split by a change of
# speed gives an outlier the median sets aside (docs/rdma-vm.md, "Figures"). The ratio of the
# two tools' medians is printed beside it.
# Bandwidth: the demo's microseconds per 1 MiB message as MB/s, against ib_write_bw's average
# (perftest's MB are 2^20 bytes). Round trip: the demo's median time per 8-byte message, one at a
# time (post to completion: the send completes on the receiver's Ack), against twice
# ib_send_lat's typical half round trip (its median): a median against a median. The means
# (the demo's, ib_send_lat's average) are printed beside: emulation stalls of milliseconds
# weigh on both.
median() { sort -g | awk '{v[NR] = $1} END {if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)}'; }
vbw=$(awk '$1 ~ /^VBW[0-9]$/ && $3 == "MiB" && $6 + 0 > 0 {print 1048576 / $6}' "$LOG" | median)
wbw=$(awk '$1 ~ /^WBW[0-9]$/ && $5 + 0 > 0 {print $5 * 1.048576}' "$LOG" | median)
vrt=$(awk '$1 ~ /^VRTM[0-9][ab]$/ && $8 == "median" && $9 + 0 > 0 {print $9}' "$LOG" | median)
vrt_mean=$(awk '$1 ~ /^VRT[0-9][ab]$/ && $3 == "B" && $6 + 0 > 0 {print $6}' "$LOG" | median)
slat_typ=$(awk '$1 ~ /^SLAT[0-9][ab]$/ && $6 + 0 > 0 && $6 !~ /inf|nan/ {print $6}' "$LOG" | median)
slat_avg=$(awk '$1 ~ /^SLAT[0-9][ab]$/ && $7 + 0 > 0 && $7 !~ /inf|nan/ {print $7}' "$LOG" | median)
# The pairs' ratios, in round order: bandwidth by round (VBW<i> / WBW<i>), round trip by pair
# (VRTM<i><a|b> / 2 x SLAT<i><a|b>); a pair one of whose runs did not report is left out.
bw_pairs=$(awk '$1 ~ /^VBW[0-9]$/ && $3 == "MiB" && $6 + 0 > 0 {v[substr($1, 4)] = 1048576 / $6}
    $1 ~ /^WBW[0-9]$/ && $5 + 0 > 0 {w[substr($1, 4)] = $5 * 1.048576}
    END {for (k in v) if (k in w) printf "%s %.4f\n", k, v[k] / w[k]}' "$LOG" | sort | awk '{print $2}')
rt_pairs=$(awk '$1 ~ /^VRTM[0-9][ab]$/ && $8 == "median" && $9 + 0 > 0 {o[substr($1, 5)] = $9}
    $1 ~ /^SLAT[0-9][ab]$/ && $6 + 0 > 0 && $6 !~ /inf|nan/ {t[substr($1, 5)] = 2 * $6}
    END {for (k in o) if (k in t) printf "%s %.4f\n", k, o[k] / t[k]}' "$LOG" | sort | awk '{print $2}')
pbw=$(echo "$bw_pairs" | grep . | median); prt=$(echo "$rt_pairs" | grep . | median)
echo "[rdma-vm] rounds: verbs 1 MiB MB/s $(awk '$1 ~ /^VBW[0-9]$/ && $6 + 0 > 0 {printf "%.1f ", 1048576 / $6}' "$LOG")| ib_write_bw MB/s $(awk '$1 ~ /^WBW[0-9]$/ {printf "%.1f ", $5 * 1.048576}' "$LOG")| ratios $(echo "$bw_pairs" | awk 'NF {printf "%.2f ", $1}')"
echo "[rdma-vm] rounds: go-back-N retries during the demo $(awk '$1 ~ /^RETRY[0-9]$/ {printf "%s ", $2}' "$LOG")| during ib_write_bw $(awk '$1 ~ /^RETRY[0-9]$/ {printf "%s ", $3}' "$LOG")"
echo "[rdma-vm] rounds: verbs 8 B median us $(awk '$1 ~ /^VRTM[0-9][ab]$/ {printf "%s ", $9}' "$LOG")| ib_send_lat typical us $(awk '$1 ~ /^SLAT[0-9][ab]$/ {printf "%s ", $6}' "$LOG")| ratios $(echo "$rt_pairs" | awk 'NF {printf "%.2f ", $1}')| verbs 8 B mean us $(awk '$1 ~ /^VRT[0-9][ab]$/ {printf "%s ", $6}' "$LOG")| ib_send_lat average us $(awk '$1 ~ /^SLAT[0-9][ab]$/ {printf "%s ", $7}' "$LOG")"
if [ -n "$vbw" ] && [ -n "$wbw" ] && [ -n "$pbw" ]; then
    awk -v v="$vbw" -v w="$wbw" -v p="$pbw" -v n="$(echo "$bw_pairs" | grep -c .)" 'BEGIN {printf "[rdma-vm] bandwidth at 1 MiB: median of %d paired ratios %.2f; medians: nrt-sendrecv verbs %.1f MB/s, ib_write_bw %.1f MB/s, ratio %.2f\n", n, p, v, w, v / w}'
fi
if [ -n "$vrt" ] && [ -n "$slat_typ" ] && [ -n "$prt" ]; then
    awk -v o="$vrt" -v t="$slat_typ" -v p="$prt" -v n="$(echo "$rt_pairs" | grep -c .)" -v m="${vrt_mean:-0}" -v a="${slat_avg:-0}" 'BEGIN {printf "[rdma-vm] round trip, 8 B one at a time: median of %d paired ratios %.2f; medians: nrt-sendrecv verbs %.1f us, ib_send_lat typical x2 %.1f us, ratio %.2f (means: %.1f against average x2 %.1f us: %.2f)\n", n, p, o, 2 * t, o / (2 * t), m, 2 * a, (a > 0 ? m / (2 * a) : 0)}'
fi
if [ -n "$pbw" ] && [ -n "$prt" ]; then
    awk -v b="$pbw" -v r="$prt" 'BEGIN {printf "rdma-vm ratios: verbs_bw_vs_ib_write_bw=%.2f verbs_lat8_vs_ib_send_lat=%.2f\n", b, r}'
    # A guard against regressions, far outside the emulator's spread (the paired figures have
    # read 0.91-1.25 and 1.18-1.43): the targets (0.9, 1.5) are printed, not enforced, since
    # one run under emulation on a shared host could miss them; half the bandwidth or three
    # times the round trip is a change in the code (control back over TCP read 5-11 times).
    if awk -v b="$pbw" -v r="$prt" 'BEGIN {exit !(b < 0.5 || r > 3.0)}'; then
        echo "FAIL rdma-vm ratios beyond the regression guard (bandwidth below 0.5 or round trip above 3.0 times perftest's)"; f=$((f + 1))
    else
        echo "PASS rdma-vm ratios within the regression guard (bandwidth at least 0.5, round trip at most 3.0 times perftest's)"; p=$((p + 1))
    fi
else
    echo "[rdma-vm] the verbs measurement rounds did not report"; f=$((f + 1))
fi
lat_us=$(awk '$1=="8" && NF>=5 {print $5}' "$LOG" | tail -1)
wbw_mbs=$(awk '$1=="1048576" {print $4}' "$LOG" | tail -1)
# The libfabric transport, same devices (rxeA -> rxeB), same perftest runs: 1 MiB, 8 in flight,
# against ib_write_bw; 8 bytes one at a time (a round trip per message: the send completes when
# the receiver's acknowledgement is back) against twice ib_send_lat's typical half round trip.
ofi_us_mib=$(awk '$1=="OFIBW" && $2=="1" && $3=="MiB" {print $6}' "$LOG" | tail -1)
ofi_rt_us=$(awk '$1 ~ /^OFIRT[0-9]$/ && $2=="8" && $3=="B" && $6 + 0 > 0 {print $6}' "$LOG" | median)
# fi_pingpong over the same provider: the libfabric reference (mean half round trips, x2).
ofi_pp_us=$(awk '$1 ~ /^OFIPP[0-9]$/ && $8 + 0 > 0 {print $8}' "$LOG" | median)
# The demo's figure is a mean: ib_send_lat's average beside it too (its typical is a median, and
# emulation hiccups set the two far apart).
lat_avg_us=$(awk '$1=="8" && NF>=6 {print $6}' "$LOG" | tail -1)
if [ -n "$ofi_us_mib" ] && [ -n "$wbw_mbs" ]; then
    awk -v u="$ofi_us_mib" -v w="$wbw_mbs" 'BEGIN {if (u + 0 > 0) printf "[rdma-vm] ofi bandwidth at 1 MiB: nrt-sendrecv ofi %.1f MB/s, ib_write_bw %.1f MB/s, ratio %.2f\n", 1048576/u, w*1.048576, (1048576/u)/(w*1.048576)}'
fi
echo "[rdma-vm] rounds: ofi 8 B mean us $(awk '$1 ~ /^OFIRT[0-9]$/ && $2=="8" {printf "%s ", $6}' "$LOG")| fi_pingpong usec/xfer $(awk '$1 ~ /^OFIPP[0-9]$/ {printf "%s ", $8}' "$LOG")"
if [ -n "$ofi_rt_us" ] && [ -n "$ofi_pp_us" ]; then
    awk -v o="$ofi_rt_us" -v p="$ofi_pp_us" 'BEGIN {printf "[rdma-vm] ofi round trip against fi_pingpong (verbs;ofi_rxm, rxeA <-> rxeB, medians of 3, means each): nrt-sendrecv ofi 8 B %.1f us, fi_pingpong x2 %.1f us, ratio %.2f\n", o, 2 * p, o / (2 * p)}'
fi
if [ -n "$lat_us" ] && [ -n "$ofi_rt_us" ]; then
    awk -v o="$ofi_rt_us" -v l="$lat_us" -v a="${lat_avg_us:-0}" 'BEGIN {if (l + 0 > 0 && l !~ /inf|nan/) {
        printf "[rdma-vm] ofi round trip: nrt-sendrecv ofi 8 B %.1f us, ib_send_lat 8 B x2 %.1f us, ratio %.2f", o, 2*l, o/(2*l)
        if (a + 0 > 0 && a !~ /inf|nan/) printf " (against its average x2, %.1f us: %.2f)", 2*a, o/(2*a)
        printf "\n" }}'
fi
echo "rdma-vm: $p passed, $f failed"
[ "$f" -eq 0 ]
