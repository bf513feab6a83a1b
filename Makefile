# nrt-sendrecv: build libnrt.so.1, generate/check headers, run tests and the demo.
#   make            build build/lib/libnrt.so.1 (+ libnrt.so link)
#   make demo       the main job: receiver + sender processes on loopback, bandwidth table
#   make test       every test; last line "N passed, M failed"
#   make test-ofi   the libfabric transport alone (FI_PROVIDER=tcp and shm on loopback)
#   make header     regenerate include/nrt/*.h with the pinned cbindgen (tools/gen-header)
#   make install PREFIX=/usr/local

PREFIX    ?= /usr/local
CARGO     ?= cargo
CC        ?= cc
BUILD     := build
LIBDIR    := $(BUILD)/lib
STATIC    := target/release/libnrt_sendrecv.a
MAP       := src/ffi/libnrt.map
SONAME    := libnrt.so.1
LIB       := $(LIBDIR)/$(SONAME)
GENHDR    := tools/gen-header/target/release/gen-header
HEADERS   := include/nrt/nrt_status.h include/nrt/nrt.h include/nrt/nrt_async_sendrecv.h include/nrt/nrt_version.h
EXPORTS   := $(shell sed -n 's/^ *\(nrt_[a-z_]*\);$$/\1/p' $(MAP))
# VERBS=1 (default): the RDMA verbs transport is built in (needs rdma-core; libibverbs.so.1 at
# run time). VERBS=0 builds a TCP-only library for hosts without rdma-core.
# OFI=1 (default): the libfabric transport is built in (needs libfabric-dev to build,
# libfabric.so.1 at run time). OFI=0 leaves it out.
VERBS     ?= 1
OFI       ?= 1
comma     := ,
empty     :=
space     := $(empty) $(empty)
FEATLIST  :=
LIBS      :=
ifeq ($(VERBS),1)
FEATLIST  += verbs
LIBS      += -libverbs -lrdmacm
endif
ifeq ($(OFI),1)
FEATLIST  += ofi
LIBS      += -lfabric
endif
FEATURES  := $(if $(strip $(FEATLIST)),--features $(subst $(space),$(comma),$(strip $(FEATLIST))))
NATIVE    := $(strip $(LIBS) -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc)
# The preload library carries the RDMA transports too (VERBS=1, OFI=1): vendor device tensors
# are staged through host memory of ours, or, over libfabric where the provider offers FI_HMEM
# and HBM is mapped, registered as device memory (docs/preload.md).
P_FEATLIST := preload $(if $(filter 1,$(VERBS)),verbs) $(if $(filter 1,$(OFI)),ofi)
P_FEATURES := $(subst $(space),$(comma),$(strip $(P_FEATLIST)))
P_NATIVE  := $(strip $(LIBS) -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc)
DEMO      := $(BUILD)/bin/nrt_demo
# LD_PRELOAD mode: the same crate with feature `preload`, only the eleven send/receive exports.
P_STATIC  := target/preload/release/libnrt_sendrecv.a
P_MAP     := src/ffi/preload.map
P_LIB     := $(LIBDIR)/libnrt_async_sendrecv.so
P_EXPORTS := $(shell sed -n 's/^ *\(nrt_[a-z_]*\);$$/\1/p' $(P_MAP))

.PHONY: all lib preload deps header header-check install test test-preload test-ofi test-rdma test-faults test-sanitizers test-fuzz soak demo demo-bin clean bench perf-tool FORCE

all: lib

# Debian packages the build and tests need, installed when missing (root or sudo).
deps:
	@VERBS=$(VERBS) OFI=$(OFI) scripts/deps.sh

$(STATIC): FORCE
	$(CARGO) build --release --lib --locked $(FEATURES)

# The features and libraries of the last link: switching VERBS or OFI relinks even though cargo
# hands back a cached archive older than the library.
LINKCFG   := $(BUILD)/link-config
$(LINKCFG): FORCE
	@mkdir -p $(BUILD)
	@echo '$(FEATURES) $(NATIVE)' | cmp -s - $@ || echo '$(FEATURES) $(NATIVE)' > $@

# The shared object: only the exported names are pulled from the Rust archive (-u), the version
# script gives each the NRT_2.0.0 version and hides everything else.
$(LIB): $(STATIC) $(MAP) $(LINKCFG)
	@mkdir -p $(LIBDIR)
	$(CC) -shared -o $@ -Wl,-soname,$(SONAME) -Wl,--version-script=$(MAP) -Wl,--gc-sections \
	    $(addprefix -Wl$(comma)-u$(comma),$(EXPORTS)) $(STATIC) $(NATIVE)
	ln -sf $(SONAME) $(LIBDIR)/libnrt.so

lib: deps $(LIB) $(P_LIB)

$(P_STATIC): FORCE
	$(CARGO) build --release --lib --locked --features $(P_FEATURES) --target-dir target/preload

$(P_LIB): $(P_STATIC) $(P_MAP)
	@mkdir -p $(LIBDIR)
	$(CC) -shared -o $@ -Wl,-soname,libnrt_async_sendrecv.so -Wl,--version-script=$(P_MAP) -Wl,--gc-sections \
	    $(addprefix -Wl$(comma)-u$(comma),$(P_EXPORTS)) $(P_STATIC) $(P_NATIVE)

preload: deps $(P_LIB)

# A stand-in vendor libnrt.so.1 and a program linked against it, run with our library preloaded.
test-preload: lib
	@c_tests/preload/run.sh

$(GENHDR): tools/gen-header/src/main.rs tools/gen-header/Cargo.toml
	$(CARGO) build --release --locked --manifest-path tools/gen-header/Cargo.toml

header: $(GENHDR)
	$(GENHDR) . include/nrt

# Fails when a fresh generation differs from the committed headers.
header-check: $(GENHDR)
	@rm -rf $(BUILD)/header-check && mkdir -p $(BUILD)/header-check
	@$(GENHDR) . $(BUILD)/header-check
	@diff -u include/nrt $(BUILD)/header-check && echo "headers: committed files match a fresh generation"

$(DEMO): demo/nrt_demo.c $(HEADERS) $(LIB)
	@mkdir -p $(BUILD)/bin
	$(CC) -std=c11 -O2 -Wall -Wextra -Werror -Iinclude -o $@ $< -L$(LIBDIR) -lnrt -Wl,-rpath,$(abspath $(LIBDIR)) -pthread

demo: lib $(DEMO)
	$(DEMO)

demo-bin: lib $(DEMO)

# The C suite under ASan/UBSan, and three programs under valgrind memcheck.
test-sanitizers: lib
	@C_TESTS_BUILD_ONLY=1 c_tests/run.sh >/dev/null
	@scripts/sanitize.sh

# cargo fuzz on the frame decoder and the handshake, FUZZ_SECONDS (30) each.
test-fuzz:
	@scripts/fuzz.sh

# Random sizes over 16 communicators and 8 threads for NRT_SOAK_SECONDS (600); RSS must stay flat.
# Not part of make test.
soak: lib
	@mkdir -p $(BUILD)/bin
	$(CC) -std=c11 -O2 -Wall -Wextra -Werror -Iinclude -o $(BUILD)/bin/soak c_tests/soak/soak.c -L$(LIBDIR) -lnrt \
	    -Wl,-rpath,$(abspath $(LIBDIR)) -pthread
	NEURON_RT_ASYNC_SENDRECV_LISTEN_ADDR=127.0.0.1 NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT=$${NRT_SOAK_PORT:-25000} $(BUILD)/bin/soak

# Faults between two network namespaces (root): link down, peer killed/stopped, port taken, leaks.
test-faults: lib
	@scripts/faults.sh

# The libfabric transport on loopback: its rails' tests, and the C suite over FI_PROVIDER=tcp and shm.
test-ofi: lib
	@C_TESTS_BUILD_ONLY=1 c_tests/run.sh >/dev/null
	@scripts/test-ofi.sh

# The C suite and the demo over RDMA verbs between two Soft-RoCE devices in a qemu VM.
test-rdma: lib $(DEMO)
	@C_TESTS_BUILD_ONLY=1 c_tests/run.sh >/dev/null
	@scripts/rdma-vm.sh

test: lib $(GENHDR)
	@OFI=$(OFI) scripts/test.sh

install: lib
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include/nrt $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 0755 $(LIB) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	install -m 0755 $(P_LIB) $(DESTDIR)$(PREFIX)/lib/libnrt_async_sendrecv.so
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/libnrt.so
	install -m 0644 $(HEADERS) $(DESTDIR)$(PREFIX)/include/nrt/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e "s|@VERSION@|$$(sed -n 's/^version = \"\(.*\)\"/\1/p' Cargo.toml | head -1)|" \
	    scripts/nrt.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/nrt.pc

# nrt-sr-perf (tools/nrt-sr-perf), copied to build/bin/nrt-sr-perf.
perf-tool:
	@test -f tools/nrt-sr-perf/Cargo.toml || { echo "perf-tool: tools/nrt-sr-perf/Cargo.toml not found" >&2; exit 1; }
	$(CARGO) build --release --locked --manifest-path tools/nrt-sr-perf/Cargo.toml
	@mkdir -p $(BUILD)/bin
	cp "$$($(CARGO) metadata --format-version 1 --no-deps --manifest-path tools/nrt-sr-perf/Cargo.toml | \
	    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/nrt-sr-perf" $(BUILD)/bin/nrt-sr-perf

# Our library (nrt-sr-perf over TCP and shared memory) against iperf3, ucx_perftest and memcpy on
# loopback; writes bench/results.json, bench/report.png and the latest results in
# docs/performance.md (scripts/bench.sh).
bench: lib perf-tool
	@scripts/bench.sh

clean:
	rm -rf $(BUILD)
	$(CARGO) clean
