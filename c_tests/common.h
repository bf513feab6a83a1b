/* SPDX-License-Identifier: Apache-2.0
 * Helpers of the C conformance suite: checks that count failures, bounded polling, patterns that
 * let every received byte be verified, and the port base each test runs on.
 *
 * Every test is one program: test_begin(name) first, `return report();` last (prints
 * "PASS name" or "FAIL name (k checks failed)" and gives the exit status). */
#ifndef NRT_TEST_COMMON_H
#define NRT_TEST_COMMON_H
#define _GNU_SOURCE
#include <stdbool.h>
#include <nrt/nrt.h>
#include <nrt/nrt_async_sendrecv.h>
#include <nrt/nrt_status.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Addresses. By default everything is loopback. The RDMA VM (scripts/rdma-vm.sh) sets
 * NRT_TEST_IP_A (senders' address, what accept names), NRT_TEST_IP_B (receivers' address, what
 * connect names), NRT_TEST_LISTEN_ADDR (0.0.0.0) and NRT_TEST_NO_IPV6, so that one side uses
 * one RDMA device and the other side the other. */
static inline const char *env_or(const char *name, const char *dflt) {
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}
#define IP_A env_or("NRT_TEST_IP_A", "127.0.0.1")
#define IP_B env_or("NRT_TEST_IP_B", "127.0.0.1")
#define LISTEN_ADDR env_or("NRT_TEST_LISTEN_ADDR", "127.0.0.1")

static int t_checks, t_failures;
static const char *t_name = "test";

/* What poll_comm / wait_req return when *the test's own* deadline passed and the library still
 * said "not done". Deliberately not an NRT_STATUS value, so it can never be mistaken for the
 * library's NRT_TIMEOUT. */
#define T_DEADLINE ((NRT_STATUS)9999)

static inline const char *st_name(NRT_STATUS s) {
    switch ((int)s) {
    case NRT_SUCCESS: return "NRT_SUCCESS";
    case NRT_FAILURE: return "NRT_FAILURE";
    case NRT_INVALID: return "NRT_INVALID";
    case NRT_INVALID_HANDLE: return "NRT_INVALID_HANDLE";
    case NRT_RESOURCE: return "NRT_RESOURCE";
    case NRT_TIMEOUT: return "NRT_TIMEOUT";
    case NRT_HW_ERROR: return "NRT_HW_ERROR";
    case NRT_QUEUE_FULL: return "NRT_QUEUE_FULL";
    case NRT_LOAD_NOT_ENOUGH_NC: return "NRT_LOAD_NOT_ENOUGH_NC";
    case NRT_UNSUPPORTED_NEFF_VERSION: return "NRT_UNSUPPORTED_NEFF_VERSION";
    case NRT_FAIL_HOST_MEM_ALLOC: return "NRT_FAIL_HOST_MEM_ALLOC";
    case NRT_UNINITIALIZED: return "NRT_UNINITIALIZED";
    case NRT_CLOSED: return "NRT_CLOSED";
    case NRT_QUEUE_EMPTY: return "NRT_QUEUE_EMPTY";
    case NRT_NETWORK_PROXY_FAILURE: return "NRT_NETWORK_PROXY_FAILURE";
    case 9999: return "T_DEADLINE (the test gave up waiting; the library never said done)";
    default: return "(other NRT_STATUS)";
    }
}

/* CHECK(cond, fmt, ...): counts a check; on failure prints file:line, the condition and the message. */
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

/* expect_status(got, want, what): counts a check; on a mismatch prints both status names. */
static inline bool expect_status_at(NRT_STATUS got, NRT_STATUS want, const char *what, const char *file, int line) {
    t_checks++;
    if (got == want) return true;
    t_failures++;
    fprintf(stderr, "%s:%d: %s returned %s (%d), expected %s (%d)\n", file, line, what, st_name(got), (int)got,
            st_name(want), (int)want);
    return false;
}
#define expect_status(got, want) expect_status_at((got), (want), #got, __FILE__, __LINE__)
/* EXPECT(call, want): the same, naming the call. */
#define EXPECT(call, want) ((void)expect_status_at((call), (want), #call, __FILE__, __LINE__))

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void sleep_ms(double ms) {
    struct timespec ts;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)((ms - (double)ts.tv_sec * 1000) * 1e6);
    nanosleep(&ts, NULL);
}

/* Every test runs on its own ports: NRT_TEST_PORT_BASE (set by run.sh) becomes the library's base
 * (it is read by nrt_async_sendrecv_init, so this must run before the first init). */
static inline int port_base(void) {
    const char *b = getenv("NRT_TEST_PORT_BASE");
    int base = b ? atoi(b) : 0;
    if (base < 1024 || base > 60000) base = 20000 + (int)(getpid() % 8000);
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
    setenv("NEURON_RT_ASYNC_SENDRECV_LISTEN_ADDR", LISTEN_ADDR, 1);
    setvbuf(stdout, NULL, _IOLBF, 0);
}

/* The last statement of every test: `return report();`. */
static inline int report(void) {
    if (t_failures) printf("FAIL %s (%d checks failed, of %d)\n", t_name, t_failures, t_checks);
    else printf("PASS %s (%d checks)\n", t_name, t_checks);
    fflush(stdout);
    return t_failures ? 1 : 0;
}
static inline int test_end(void) { return report(); }

/* Polls test_comm until done, an error, or `secs` pass (then T_DEADLINE). A non-success status
 * from the library is returned as is. */
static inline NRT_STATUS poll_comm(nrt_async_sendrecv_comm_t *c, double secs) {
    double end = now_s() + secs;
    bool done = false;
    for (;;) {
        NRT_STATUS s = nrt_async_sendrecv_test_comm(c, &done);
        if (s != NRT_SUCCESS) return s;
        if (done) return NRT_SUCCESS;
        if (now_s() > end) return T_DEADLINE;
        usleep(200);
    }
}

/* Polls test_request until done, or `secs` pass (then T_DEADLINE and *size = SIZE_MAX; the
 * request is still live then). Returns the final status; *size is what the library reported.
 * Checks the contract for failed requests on the way: done = true and size = 0. */
static inline NRT_STATUS wait_req(nrt_async_sendrecv_request_t *r, double secs, size_t *size) {
    double end = now_s() + secs;
    unsigned spins = 0;
    for (;;) {
        bool done = false;
        size_t sz = 0;
        NRT_STATUS s = nrt_async_sendrecv_test_request(r, &done, &sz);
        if (s != NRT_SUCCESS || done) {
            if (size) *size = sz;
            if (s != NRT_SUCCESS && s != NRT_INVALID_HANDLE && s != NRT_INVALID) {
                CHECK(done, "a request that ended in %s reports done=true", st_name(s));
                CHECK(sz == 0, "a request that ended in %s reports size 0, got %zu", st_name(s), sz);
            }
            return s;
        }
        if (now_s() > end) {
            if (size) *size = SIZE_MAX;
            return T_DEADLINE;
        }
        if (++spins % 64 == 0) sched_yield(); /* busy-poll, but let other threads run on small hosts */
    }
}
#define wait_request wait_req

/* The deterministic pattern: byte i of message `seed`. */
static inline uint8_t pat(uint64_t seed, size_t i) {
    uint64_t x = (seed + 1) * 0x9E3779B97F4A7C15ull ^ (uint64_t)(i >> 8) * 0xBF58476D1CE4E5B9ull;
    return (uint8_t)((x >> 29) ^ i);
}

static inline void fill(void *buf, size_t n, uint64_t seed) {
    uint8_t *p = (uint8_t *)buf;
    for (size_t i = 0; i < n; i++) p[i] = pat(seed, i);
}

/* Index of the first byte that differs from the pattern, or SIZE_MAX when all match. */
static inline size_t first_bad(const void *buf, size_t n, uint64_t seed) {
    const uint8_t *p = (const uint8_t *)buf;
    for (size_t i = 0; i < n; i++)
        if (p[i] != pat(seed, i)) return i;
    return SIZE_MAX;
}

/* Checks EVERY byte of buf[0..n) against the pattern; reports the first mismatch (and how many). */
#define verify(buf, n, seed, what) verify_at((buf), (n), (seed), (what), __FILE__, __LINE__)
static inline bool verify_at(const void *buf, size_t n, uint64_t seed, const char *what, const char *file, int line) {
    const uint8_t *p = (const uint8_t *)buf;
    t_checks++;
    size_t bad = first_bad(p, n, seed);
    if (bad == SIZE_MAX) return true;
    size_t count = 0;
    for (size_t i = bad; i < n; i++) count += p[i] != pat(seed, i);
    t_failures++;
    fprintf(stderr, "%s:%d: %s: %zu of %zu bytes wrong; first at offset %zu: got 0x%02x, expected 0x%02x\n", file,
            line, what, count, n, bad, p[bad], pat(seed, bad));
    return false;
}

/* Checks that every byte of buf[0..n) equals `value`; reports the first that does not. */
#define verify_const(buf, n, value, what) verify_const_at((buf), (n), (value), (what), __FILE__, __LINE__)
static inline bool verify_const_at(const void *buf, size_t n, uint8_t value, const char *what, const char *file, int line) {
    const uint8_t *p = (const uint8_t *)buf;
    t_checks++;
    for (size_t i = 0; i < n; i++)
        if (p[i] != value) {
            t_failures++;
            fprintf(stderr, "%s:%d: %s: byte %zu of %zu is 0x%02x, expected 0x%02x\n", file, line, what, i, n, p[i], value);
            return false;
        }
    return true;
}

/* Whether this host has IPv6 loopback (binding ::1 works). */
static inline int ipv6_loopback_ok(void) {
    if (getenv("NRT_TEST_NO_IPV6")) return 0;
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static inline nrt_tensor_t *tensor(size_t size) {
    nrt_tensor_t *t = NULL;
    EXPECT(nrt_tensor_allocate(NRT_TENSOR_PLACEMENT_DEVICE, 0, size, "t", &t), NRT_SUCCESS);
    return t;
}

/* Connects lnc `a` (sender) to lnc `b` (receiver) over `ip`; both comms ready or the test fails. */
static inline int pair(const char *ip, int a, int b, nrt_async_sendrecv_comm_t **s, nrt_async_sendrecv_comm_t **r) {
    *s = *r = NULL;
    /* "127.0.0.1" stands for the default pair of addresses (see IP_A / IP_B). */
    int dflt = strcmp(ip, "127.0.0.1") == 0;
    EXPECT(nrt_async_sendrecv_connect(dflt ? IP_B : ip, b, a, s), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_accept(dflt ? IP_A : ip, a, b, r), NRT_SUCCESS);
    if (!*s || !*r) return 0;
    NRT_STATUS x = poll_comm(*s, 20), y = poll_comm(*r, 20);
    CHECK(x == NRT_SUCCESS && y == NRT_SUCCESS, "connect %s lnc %d -> %d: %s / %s", ip, a, b, st_name(x), st_name(y));
    return x == NRT_SUCCESS && y == NRT_SUCCESS;
}

/* One message of n bytes from offset so of a fresh tensor to offset ro of another (the receive
 * posted `extra` bytes longer than the send), every byte checked, sizes checked on both ends, and
 * the bytes around the destination range checked untouched. Returns whether all of it held. */
static inline bool xfer_ex(nrt_async_sendrecv_comm_t *s, nrt_async_sendrecv_comm_t *r, size_t n, size_t so, size_t ro,
                           size_t extra, uint64_t seed) {
    const size_t pad = extra + 64;
    int f0 = t_failures;
    nrt_tensor_t *ts = tensor(so + n + 1), *tr = tensor(ro + n + pad);
    if (!ts || !tr) return false;
    uint8_t *sv = (uint8_t *)nrt_tensor_get_va(ts), *rv = (uint8_t *)nrt_tensor_get_va(tr);
    fill(sv + so, n, seed);
    memset(rv, 0x5A, ro + n + pad);
    nrt_async_sendrecv_request_t *rq = NULL, *sq = NULL;
    EXPECT(nrt_async_sendrecv_recv_tensor(tr, ro, n + extra, r, &rq), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_send_tensor(ts, so, n, s, &sq), NRT_SUCCESS);
    size_t a = 0, b = 0;
    if (sq) EXPECT(wait_req(sq, 100, &a), NRT_SUCCESS);
    if (rq) EXPECT(wait_req(rq, 100, &b), NRT_SUCCESS);
    CHECK(a == n && b == n, "sizes for a %zu-byte message (receive of %zu): send reported %zu, receive %zu", n,
          n + extra, a, b);
    char what[96];
    snprintf(what, sizeof what, "%zu-byte message received at offset %zu", n, ro);
    verify(rv + ro, n, seed, what);
    verify_const(rv, ro, 0x5A, "bytes before the receive range");
    verify_const(rv + ro + n, pad, 0x5A, "bytes after the message (beyond the sender's length)");
    nrt_tensor_free(&ts);
    nrt_tensor_free(&tr);
    return t_failures == f0;
}

static inline bool xfer(nrt_async_sendrecv_comm_t *s, nrt_async_sendrecv_comm_t *r, size_t n, size_t so, size_t ro, uint64_t seed) {
    return xfer_ex(s, r, n, so, ro, 32, seed);
}

#endif
