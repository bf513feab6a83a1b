/* SPDX-License-Identifier: Apache-2.0
 * LD_PRELOAD test: linked against the stand-in vendor libnrt.so.1 (fake_nrt.c), run with
 * LD_PRELOAD=libnrt_async_sendrecv.so. Transfers between HOST tensors (host address: moved
 * directly) and DEVICE tensors (no host address: staged through nrt_tensor_read/write) in all
 * four directions, sizes 0 to 32 MiB + 7 at odd offsets; every byte is checked, including the
 * bytes around the received range, which must stay untouched.
 * With FAKE_NRT_MAP_HBM set (the stand-in's HBM-mapped mode), DEVICE tensors also have a virtual
 * address ("guard": one without access, which crashes whoever touches it). No provider here
 * registers device memory (no FI_HMEM with Neuron support), so every transfer of a DEVICE tensor
 * must be staged through nrt_tensor_read/write, whether or not it has an address: the stand-in
 * counts those calls, and the test checks that each such transfer made some.
 *   t_preload ours     expects our send/receive (run with LD_PRELOAD)
 *   t_preload vendor   expects the stand-in's own functions (run without LD_PRELOAD): they fail */
#define _POSIX_C_SOURCE 200809L
#include <nrt/nrt.h>
#include <nrt/nrt_async_sendrecv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The stand-in's own (fake_nrt.c), and the vendor function it stands in for. */
typedef struct nrt_tensor_device_allocation_info {
    uint64_t physical_address;
    size_t size;
    int hbm_index;
} nrt_tensor_device_allocation_info_t;
NRT_STATUS nrt_tensor_get_device_allocation_info(const nrt_tensor_t *t, nrt_tensor_device_allocation_info_t *info);
size_t fake_nrt_device_copies(void);

static int failures;
static unsigned staged_transfers;
#define CHECK(c, ...) do { if (!(c)) { failures++; fprintf(stderr, "%s:%d: ", __FILE__, __LINE__); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint8_t pat(size_t i, unsigned seed) { return (uint8_t)(i * 2654435761u >> 13 ^ seed); }

static NRT_STATUS wait_req(nrt_async_sendrecv_request_t *r, size_t *size, double secs) {
    bool done = false;
    NRT_STATUS st;
    double end = now_s() + secs;
    do {
        st = nrt_async_sendrecv_test_request(r, &done, size);
    } while (st == NRT_SUCCESS && !done && now_s() < end);
    return (st == NRT_SUCCESS && !done) ? NRT_TIMEOUT : st;
}

static int connect_pair(nrt_async_sendrecv_comm_t **s, nrt_async_sendrecv_comm_t **r) {
    if (nrt_async_sendrecv_connect("127.0.0.1", 1, 0, s) != NRT_SUCCESS) return 0;
    if (nrt_async_sendrecv_accept("127.0.0.1", 0, 1, r) != NRT_SUCCESS) return 0;
    bool ds = false, dr = false;
    double end = now_s() + 20;
    while ((!ds || !dr) && now_s() < end) {
        if (!ds && nrt_async_sendrecv_test_comm(*s, &ds) != NRT_SUCCESS) return 0;
        if (!dr && nrt_async_sendrecv_test_comm(*r, &dr) != NRT_SUCCESS) return 0;
    }
    return ds && dr;
}

static void transfer(nrt_async_sendrecv_comm_t *sc, nrt_async_sendrecv_comm_t *rc, nrt_tensor_placement_t sp,
                     nrt_tensor_placement_t rp, size_t n, unsigned seed) {
    const size_t soff = 5, roff = 11, pad = 17;
    nrt_tensor_t *st = NULL, *rt = NULL;
    CHECK(nrt_tensor_allocate(sp, 0, soff + n + pad, "src", &st) == NRT_SUCCESS, "allocate src");
    CHECK(nrt_tensor_allocate(rp, 0, roff + n + pad, "dst", &rt) == NRT_SUCCESS, "allocate dst");
    if (!st || !rt) return;
    unsigned char *src = malloc(n + 1), *got = malloc(roff + n + pad);
    for (size_t i = 0; i < n; i++) src[i] = pat(i, seed);
    CHECK(nrt_tensor_write(st, src, soff, n) == NRT_SUCCESS, "write src");
    memset(got, 0xA5, roff + n + pad);
    CHECK(nrt_tensor_write(rt, got, 0, roff + n + pad) == NRT_SUCCESS, "prefill dst");
    nrt_async_sendrecv_request_t *rr = NULL, *sr = NULL;
    size_t copies = fake_nrt_device_copies();
    CHECK(nrt_async_sendrecv_recv_tensor(rt, roff, n, rc, &rr) == NRT_SUCCESS, "post recv");
    CHECK(nrt_async_sendrecv_send_tensor(st, soff, n, sc, &sr) == NRT_SUCCESS, "post send");
    size_t ss = 1, rs = 1;
    NRT_STATUS a = wait_req(sr, &ss, 60), b = wait_req(rr, &rs, 60);
    CHECK(a == NRT_SUCCESS && ss == n, "send %zu bytes %d->%d: status %d size %zu", n, sp, rp, a, ss);
    CHECK(b == NRT_SUCCESS && rs == n, "recv %zu bytes %d->%d: status %d size %zu", n, sp, rp, b, rs);
    CHECK(nrt_async_sendrecv_flush(1) == NRT_SUCCESS, "flush");
    if (n > 0 && (sp == NRT_TENSOR_PLACEMENT_DEVICE || rp == NRT_TENSOR_PLACEMENT_DEVICE)) {
        /* Each staged DEVICE end reads or writes it at least once through the vendor. */
        size_t want = (sp == NRT_TENSOR_PLACEMENT_DEVICE) + (rp == NRT_TENSOR_PLACEMENT_DEVICE);
        size_t made = fake_nrt_device_copies() - copies;
        CHECK(made >= want, "%zu bytes %d->%d: %zu nrt_tensor_read/write calls on device tensors, %zu expected at least", n, sp,
              rp, made, want);
        staged_transfers++;
    }
    CHECK(nrt_tensor_read(rt, got, 0, roff + n + pad) == NRT_SUCCESS, "read dst");
    size_t bad = SIZE_MAX;
    for (size_t i = 0; i < roff + n + pad && bad == SIZE_MAX; i++) {
        uint8_t want = (i >= roff && i < roff + n) ? src[i - roff] : 0xA5;
        if (got[i] != want) bad = i;
    }
    CHECK(bad == SIZE_MAX, "%zu bytes %d->%d: byte %zu of the destination differs", n, sp, rp, bad);
    free(src);
    free(got);
    nrt_tensor_free(&st);
    nrt_tensor_free(&rt);
}

/* The stand-in's device tensors: allocation info for DEVICE only, an address in its HBM-mapped
 * mode only. */
static void stand_in_tensors(int map_hbm) {
    nrt_tensor_t *d = NULL, *h = NULL;
    nrt_tensor_allocate(NRT_TENSOR_PLACEMENT_DEVICE, 0, 64, "d", &d);
    nrt_tensor_allocate(NRT_TENSOR_PLACEMENT_HOST, 0, 64, "h", &h);
    nrt_tensor_device_allocation_info_t info;
    CHECK(d && nrt_tensor_get_device_allocation_info(d, &info) == NRT_SUCCESS && info.size == 64, "device allocation info");
    CHECK(h && nrt_tensor_get_device_allocation_info(h, &info) != NRT_SUCCESS, "a host tensor has no device allocation");
    CHECK((nrt_tensor_get_va(d) != NULL) == (map_hbm != 0), "a device tensor has an address iff FAKE_NRT_MAP_HBM is set");
    CHECK(nrt_tensor_get_va(h) != NULL, "a host tensor has an address");
    nrt_tensor_free(&d);
    nrt_tensor_free(&h);
}

int main(int argc, char **argv) {
    int ours = argc > 1 && strcmp(argv[1], "ours") == 0;
    const char *hbm = getenv("FAKE_NRT_MAP_HBM");
    int map_hbm = hbm && *hbm && strcmp(hbm, "0") != 0;
    CHECK(nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0") == NRT_SUCCESS, "nrt_init (stand-in)");
    stand_in_tensors(map_hbm);
    NRT_STATUS st0 = nrt_async_sendrecv_init(0);
    if (!ours) {
        CHECK(st0 == NRT_FAILURE, "without LD_PRELOAD the stand-in's init must fail, got %d", st0);
        printf("%s t_preload vendor: the stand-in's own send/receive is what runs without LD_PRELOAD\n", failures ? "FAIL" : "PASS");
        return failures != 0;
    }
    int maxc = 0, maxp = 0;
    CHECK(st0 == NRT_SUCCESS, "init lnc 0 (ours): %d", st0);
    CHECK(nrt_async_sendrecv_init(1) == NRT_SUCCESS, "init lnc 1");
    CHECK(nrt_async_sendrecv_get_max_num_communicators_per_lnc(&maxc) == NRT_SUCCESS && maxc == 128, "max comms");
    CHECK(nrt_async_sendrecv_get_max_num_pending_request(&maxp) == NRT_SUCCESS && maxp == 128, "max pending");
    nrt_async_sendrecv_comm_t *sc = NULL, *rc = NULL;
    if (!connect_pair(&sc, &rc)) {
        fprintf(stderr, "FAIL t_preload: no connection\n");
        return 1;
    }
    const size_t sizes[] = {0, 1, 4095, (1u << 20) + 3, (32u << 20) + 7};
    const nrt_tensor_placement_t pl[] = {NRT_TENSOR_PLACEMENT_HOST, NRT_TENSOR_PLACEMENT_DEVICE};
    unsigned seed = 1;
    for (int s = 0; s < 2; s++)
        for (int r = 0; r < 2; r++)
            for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) transfer(sc, rc, pl[s], pl[r], sizes[k], seed++);

    /* A device receive shorter than the send: both fail, nothing is written, the comm goes on. */
    nrt_tensor_t *a = NULL, *b = NULL;
    nrt_tensor_allocate(NRT_TENSOR_PLACEMENT_DEVICE, 0, 4096, "a", &a);
    nrt_tensor_allocate(NRT_TENSOR_PLACEMENT_DEVICE, 0, 4096, "b", &b);
    nrt_async_sendrecv_request_t *rr = NULL, *sr = NULL;
    CHECK(nrt_async_sendrecv_recv_tensor(b, 0, 100, rc, &rr) == NRT_SUCCESS, "post short recv");
    CHECK(nrt_async_sendrecv_send_tensor(a, 0, 4096, sc, &sr) == NRT_SUCCESS, "post long send");
    size_t z = 1;
    CHECK(wait_req(sr, &z, 20) == NRT_FAILURE && z == 0, "long send fails");
    CHECK(wait_req(rr, &z, 20) == NRT_FAILURE && z == 0, "short recv fails");
    nrt_tensor_free(&a);
    nrt_tensor_free(&b);
    transfer(sc, rc, NRT_TENSOR_PLACEMENT_DEVICE, NRT_TENSOR_PLACEMENT_DEVICE, 70000, 99);
    /* A tensor handle the vendor does not know: its get_size says 0, so any range is invalid. */
    int fake = 0;
    CHECK(nrt_async_sendrecv_send_tensor((nrt_tensor_t *)&fake, 0, 1, sc, &sr) == NRT_INVALID, "unknown vendor tensor");

    CHECK(nrt_async_sendrecv_close(0) == NRT_SUCCESS, "close 0");
    CHECK(nrt_async_sendrecv_close(1) == NRT_SUCCESS, "close 1");
    nrt_close();
    printf("%s t_preload ours: host/device transfers in four directions through the preloaded library, device tensors %s, "
           "%u transfers of device tensors staged\n",
           failures ? "FAIL" : "PASS", map_hbm ? "with an address (FAKE_NRT_MAP_HBM)" : "without an address", staged_transfers);
    return failures != 0;
}
