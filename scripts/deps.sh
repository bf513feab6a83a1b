#!/bin/sh
# Installs the Debian packages the build, the tests and the demo need, when they are missing.
set -e
need=""
command -v cc >/dev/null 2>&1 || need="$need gcc"
command -v c++ >/dev/null 2>&1 || need="$need g++"
command -v nm >/dev/null 2>&1 || need="$need binutils"
command -v python3 >/dev/null 2>&1 || need="$need python3"
# The Python package's tests run in a virtual environment (python3 -m venv needs ensurepip).
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need="$need python3-venv"
command -v timeout >/dev/null 2>&1 || need="$need coreutils"
command -v pkg-config >/dev/null 2>&1 || need="$need pkg-config"
# The fault tests: ip (network namespaces, veth) and pgrep.
command -v ip >/dev/null 2>&1 || need="$need iproute2"
command -v pgrep >/dev/null 2>&1 || need="$need procps"
# nrt-sr-perf's --plot draws text with a TrueType font.
ls /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf >/dev/null 2>&1 || need="$need fonts-dejavu-core"
if [ "${VERBS:-1}" = 1 ]; then
    # The verbs transport: rdma-sys links libibverbs/librdmacm and runs bindgen (libclang).
    pkg-config --exists libibverbs 2>/dev/null || need="$need libibverbs-dev"
    pkg-config --exists librdmacm 2>/dev/null || need="$need librdmacm-dev"
    # libclang itself (libclang.so.N or libclang-N.so.M), not libclang-cpp, which some hosts
    # have without it.
    ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/x86_64-linux-gnu/libclang.so* \
       /usr/lib/x86_64-linux-gnu/libclang-[0-9]*.so* 2>/dev/null | grep -q . || need="$need libclang-dev"
fi
if [ "${OFI:-1}" = 1 ]; then
    # The libfabric transport: build.rs runs bindgen over libfabric's headers (libclang) and
    # links libfabric; fi_info (libfabric-bin) lists what the providers offer.
    pkg-config --exists libfabric 2>/dev/null || need="$need libfabric-dev"
    command -v fi_info >/dev/null 2>&1 || need="$need libfabric-bin"
    case "$need" in *libclang-dev*) ;; *)
        ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/x86_64-linux-gnu/libclang.so* \
           /usr/lib/x86_64-linux-gnu/libclang-[0-9]*.so* 2>/dev/null | grep -q . || need="$need libclang-dev" ;;
    esac
fi
if ! command -v cargo >/dev/null 2>&1; then
    # Debian's own toolchain (edition 2024 needs rustc >= 1.85); rustup's works as well.
    need="$need cargo rustc rustfmt"
elif ! cargo fmt --version >/dev/null 2>&1; then
    # make test checks the formatting (rustfmt.toml).
    if command -v rustup >/dev/null 2>&1; then rustup component add rustfmt >/dev/null 2>&1 || need="$need rustfmt"
    else need="$need rustfmt"; fi
fi
if [ -n "$need" ]; then
    echo "deps: installing$need"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq $need
fi
# Edition 2024 with let chains needs rustc 1.88 or later (rustup; Debian 13 ships 1.85).
v=$(rustc --version | awk '{print $2}')
major=${v%%.*}; rest=${v#*.}; minor=${rest%%.*}
if [ "$major" -lt 1 ] || { [ "$major" -eq 1 ] && [ "$minor" -lt 88 ]; }; then
    echo "deps: rustc $v is too old: nrt-sendrecv needs 1.88 or later (let chains; rustup)" >&2
    exit 1
fi
