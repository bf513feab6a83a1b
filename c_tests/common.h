/* SPDX-License-Identifier: Apache-2.0
 * Helpers of the C conformance suite: checks that count failures, bounded polling, patterns that
 * let every received byte be verified, and the port base each test runs on. */
#ifndef NRT_TEST_COMMON_H
#define NRT_TEST_COMMON_H
#define _GNU_SOURCE
#include <nrt/nrt.h>
#include <nrt/nrt_async_sendrecv.h>
#include <nrt/nrt_status.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int t_checks, t_failures;
static const char *t_name = "test";

static inline const char *st_name(NRT_STATUS s) {
    switch (s) {
    case NRT_SUCCESS: return "NRT_SUCCESS";
    case NRT_FAILURE: return "NRT_FAILURE";
    case NRT_INVALID: return "NRT_INVALID";
    case NRT_INVALID_HANDLE: return "NRT_INVALID_HANDLE";
    case NRT_RESOURCE: return "NRT_RESOURCE";
    case NRT_TIMEOUT: return "NRT_TIMEOUT";
    case NRT_UNINITIALIZED: return "NRT_UNINITIALIZED";
    case NRT_CLOSED: return "NRT_CLOSED";
    default: return "other";
    }
}

#define CHECK(cond, ...)                                                              \
    do {                                                                              \
        t_checks++;                                                                   \
        if (!(cond)) {                                                                \
            t_failures++;                                                             \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                      \
        }                                                                             \
    } while (0)

/* Checks a status against the expected one, printing both names. */
#define EXPECT(call, want)                                                                          \
    do {                                                                                            \
        NRT_STATUS got_ = (call);                                                                   \
        t_checks++;                                                                                 \
        if (got_ != (want)) {                                                                       \
            t_failures++;                                                                           \
            fprintf(stderr, "%s:%d: %s returned %s (%d), expected %s\n", __FILE__, __LINE__, #call, \
                    st_name(got_), (int)got_, st_name(want));                                       \
        }                                                                                           \
    } while (0)

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Every test runs on its own ports: NRT_TEST_PORT_BASE (set by run.sh) becomes the library's base. */
static inline int port_base(void) {
    const char *b = getenv("NRT_TEST_PORT_BASE");
    int base = b ? atoi(b) : 0;
    if (base < 1024 || base > 60000) base = 20000 + (int)(getpid() % 4000);
    char v[16];
    snprintf(v, sizeof v, "%d", base);
    setenv("NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT", v, 1);
    return base;
}

static inline void test_begin(const char *name) {
    t_name = name;
    port_base();
    if (!getenv("NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL")) setenv("NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL", "error", 1);
    /* Tests listen on loopback only (the library's default is every address). */
    setenv("NEURON_RT_ASYNC_SENDRECV_LISTEN_ADDR", "127.0.0.1", 1);
}

static inline int test_end(void) {
    if (t_failures) printf("FAIL %s (%d of %d checks failed)\n", t_name, t_failures, t_checks);
    else printf("PASS %s (%d checks)\n", t_name, t_checks);
    fflush(stdout);
    return t_failures ? 1 : 0;
}

/* Polls test_comm until done, an error, or `secs` pass (then NRT_TIMEOUT). */
static inline NRT_STATUS poll_comm(nrt_async_sendrecv_comm_t *c, double secs) {
    double end = now_s() + secs;
    bool done = false;
    for (;;) {
        NRT_STATUS s = nrt_async_sendrecv_test_comm(c, &done);
        if (s != NRT_SUCCESS) return s;
        if (done) return NRT_SUCCESS;
        if (now_s() > end) return NRT_TIMEOUT;
        usleep(200);
    }
}

/* Polls test_request until done, or `secs` pass (then NRT_TIMEOUT and *size = SIZE_MAX).
 * Returns the final status; *size is what the library reported. */
static inline NRT_STATUS wait_req(nrt_async_sendrecv_request_t *r, double secs, size_t *size) {
    double end = now_s() + secs;
    bool done = false;
    size_t sz = 0;
    for (;;) {
        NRT_STATUS s = nrt_async_sendrecv_test_request(r, &done, &sz);
        if (s != NRT_SUCCESS || done) {
            if (size) *size = sz;
            if (s != NRT_SUCCESS) CHECK(done, "a failed request reports done=true");
            if (s != NRT_SUCCESS) CHECK(sz == 0, "a failed request reports size 0, got %zu", sz);
            return s;
        }
        if (now_s() > end) {
            if (size) *size = SIZE_MAX;
            return NRT_TIMEOUT;
        }
    }
}

static inline uint8_t pat(uint64_t seed, size_t i) {
    uint64_t x = (seed + 1) * 0x9E3779B97F4A7C15ull ^ (uint64_t)(i >> 8) * 0xBF58476D1CE4E5B9ull;
    return (uint8_t)((x >> 29) ^ i);
}

static inline void fill(uint8_t *p, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++) p[i] = pat(seed, i);
}

/* Index of the first byte that differs from the pattern, or SIZE_MAX when all match. */
static inline size_t first_bad(const uint8_t *p, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != pat(seed, i)) return i;
    return SIZE_MAX;
}

static inline nrt_tensor_t *tensor(size_t size) {
    nrt_tensor_t *t = NULL;
    EXPECT(nrt_tensor_allocate(NRT_TENSOR_PLACEMENT_DEVICE, 0, size, "t", &t), NRT_SUCCESS);
    return t;
}

/* Connects lnc `a` (sender) to lnc `b` (receiver) over `ip`; both comms ready or the test fails. */
static inline int pair(const char *ip, int a, int b, nrt_async_sendrecv_comm_t **s, nrt_async_sendrecv_comm_t **r) {
    *s = *r = NULL;
    EXPECT(nrt_async_sendrecv_connect(ip, b, a, s), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_accept(ip, a, b, r), NRT_SUCCESS);
    if (!*s || !*r) return 0;
    NRT_STATUS x = poll_comm(*s, 20), y = poll_comm(*r, 20);
    CHECK(x == NRT_SUCCESS && y == NRT_SUCCESS, "connect %s lnc %d -> %d: %s / %s", ip, a, b, st_name(x), st_name(y));
    return x == NRT_SUCCESS && y == NRT_SUCCESS;
}

/* One message of n bytes from offset so of a fresh tensor to offset ro of another, every byte
 * checked, and the bytes around the destination range checked untouched. */
static inline void xfer(nrt_async_sendrecv_comm_t *s, nrt_async_sendrecv_comm_t *r, size_t n, size_t so, size_t ro, uint64_t seed) {
    const size_t pad = 64;
    nrt_tensor_t *ts = tensor(so + n + 1), *tr = tensor(ro + n + pad);
    if (!ts || !tr) return;
    uint8_t *sv = nrt_tensor_get_va(ts), *rv = nrt_tensor_get_va(tr);
    fill(sv + so, n, seed);
    memset(rv, 0x5A, ro + n + pad);
    nrt_async_sendrecv_request_t *rq = NULL, *sq = NULL;
    EXPECT(nrt_async_sendrecv_recv_tensor(tr, ro, n + pad / 2, r, &rq), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_send_tensor(ts, so, n, s, &sq), NRT_SUCCESS);
    size_t a = 0, b = 0;
    EXPECT(wait_req(sq, 120, &a), NRT_SUCCESS);
    EXPECT(wait_req(rq, 120, &b), NRT_SUCCESS);
    CHECK(a == n && b == n, "sizes for %zu bytes: send %zu recv %zu", n, a, b);
    size_t bad = first_bad(rv + ro, n, seed);
    CHECK(bad == SIZE_MAX, "%zu-byte message: byte %zu differs", n, bad);
    size_t untouched = 1;
    for (size_t i = 0; i < ro; i++) untouched &= rv[i] == 0x5A;
    for (size_t i = ro + n; i < ro + n + pad; i++) untouched &= rv[i] == 0x5A;
    CHECK(untouched, "%zu-byte message: bytes outside the received range changed", n);
    nrt_tensor_free(&ts);
    nrt_tensor_free(&tr);
}

#endif
