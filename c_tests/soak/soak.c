/* SPDX-License-Identifier: Apache-2.0
 * make soak: random message sizes (0 to 4 MiB) over 16 communicator pairs between two lncs, 4
 * sender and 4 receiver threads (each owning 4 pairs, 4 messages in flight per pair), every byte
 * checked, for NRT_SOAK_SECONDS (default 600). RSS and open descriptors are sampled every minute
 * and must stay flat: the last sample may exceed the first (taken after one minute, when caches are
 * warm) by at most 16 MiB, and descriptors must be equal. Exit 0 when all of it holds. */
#define _GNU_SOURCE
#include <dirent.h>
#include <nrt/nrt.h>
#include <nrt/nrt_async_sendrecv.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { PAIRS = 16, THREADS = 4, INFLIGHT = 4, MAXN = 4 << 20 };

static nrt_async_sendrecv_comm_t *S[PAIRS], *R[PAIRS];
static atomic_int stop_flag, errors;
static atomic_long messages, bytes;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Message m of pair p: its size and bytes follow from (p, m) alone, so the receiver can check. */
static uint64_t mix(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull; x ^= x >> 33;
    return x;
}
static size_t size_of(int p, long m) {
    uint64_t r = mix((uint64_t)p << 40 ^ (uint64_t)m);
    return (r & 3) == 0 ? (size_t)(r >> 8) % MAXN : (size_t)(r >> 8) % 65536; /* mostly small */
}
static uint8_t byte_of(int p, long m, size_t i) { return (uint8_t)(mix((uint64_t)p * 977 + (uint64_t)m) >> (i % 57) ^ i); }

static int wait_req(nrt_async_sendrecv_request_t *q, size_t *got) {
    bool d = false;
    NRT_STATUS st;
    do st = nrt_async_sendrecv_test_request(q, &d, got);
    while (st == NRT_SUCCESS && !d); /* bounded by the library's request deadline */
    return st == NRT_SUCCESS;
}

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg, sender = id < THREADS, t = id % THREADS;
    nrt_tensor_t *buf[PAIRS / THREADS][INFLIGHT];
    nrt_async_sendrecv_request_t *q[PAIRS / THREADS][INFLIGHT];
    long next[PAIRS / THREADS] = {0}, done[PAIRS / THREADS] = {0};
    for (int k = 0; k < PAIRS / THREADS; k++)
        for (int w = 0; w < INFLIGHT; w++) nrt_tensor_allocate(NRT_TENSOR_PLACEMENT_HOST, 0, MAXN, "soak", &buf[k][w]);
    while (!atomic_load(&stop_flag) && !atomic_load(&errors)) {
        for (int k = 0; k < PAIRS / THREADS; k++) {
            int p = t * (PAIRS / THREADS) + k;
            while (next[k] - done[k] < INFLIGHT) {
                int w = (int)(next[k] % INFLIGHT);
                size_t n = size_of(p, next[k]);
                if (sender) {
                    uint8_t *va = nrt_tensor_get_va(buf[k][w]);
                    for (size_t i = 0; i < n; i++) va[i] = byte_of(p, next[k], i);
                }
                NRT_STATUS st = sender ? nrt_async_sendrecv_send_tensor(buf[k][w], 0, n, S[p], &q[k][w])
                                       : nrt_async_sendrecv_recv_tensor(buf[k][w], 0, MAXN, R[p], &q[k][w]);
                if (st != NRT_SUCCESS) { fprintf(stderr, "post failed: %d\n", st); atomic_fetch_add(&errors, 1); return NULL; }
                next[k]++;
            }
            int w = (int)(done[k] % INFLIGHT);
            size_t got = 0, n = size_of(p, done[k]);
            if (!wait_req(q[k][w], &got) || got != n) { fprintf(stderr, "pair %d message %ld failed\n", p, done[k]); atomic_fetch_add(&errors, 1); return NULL; }
            if (!sender) {
                const uint8_t *va = nrt_tensor_get_va(buf[k][w]);
                for (size_t i = 0; i < n; i++)
                    if (va[i] != byte_of(p, done[k], i)) { fprintf(stderr, "pair %d message %ld byte %zu corrupt\n", p, done[k], i); atomic_fetch_add(&errors, 1); return NULL; }
                atomic_fetch_add(&messages, 1);
                atomic_fetch_add(&bytes, (long)n);
            }
            done[k]++;
        }
    }
    /* Drain what is in flight so that close finds nothing pending. */
    for (int k = 0; k < PAIRS / THREADS; k++)
        while (done[k] < next[k]) { size_t got; wait_req(q[k][done[k] % INFLIGHT], &got); done[k]++; }
    return NULL;
}

static int fds(void) {
    DIR *d = opendir("/proc/self/fd"); int n = 0;
    if (!d) return -1;
    while (readdir(d)) n++;
    closedir(d);
    return n - 3;
}
static long rss_kib(void) {
    long a = 0, r = 0; FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%ld %ld", &a, &r) != 2) r = -1;
    if (f) fclose(f);
    return r * (sysconf(_SC_PAGESIZE) / 1024);
}

int main(void) {
    const char *e = getenv("NRT_SOAK_SECONDS");
    double secs = e ? atof(e) : 600;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0") != NRT_SUCCESS || nrt_async_sendrecv_init(0) != NRT_SUCCESS ||
        nrt_async_sendrecv_init(1) != NRT_SUCCESS) return 1;
    for (int p = 0; p < PAIRS; p++) {
        bool a = false, b = false;
        if (nrt_async_sendrecv_connect("127.0.0.1", 1, 0, &S[p]) || nrt_async_sendrecv_accept("127.0.0.1", 0, 1, &R[p])) return 1;
        double end = now_s() + 30;
        while ((!a || !b) && now_s() < end)
            if (nrt_async_sendrecv_test_comm(S[p], &a) || nrt_async_sendrecv_test_comm(R[p], &b)) return 1;
        if (!a || !b) return 1;
    }
    pthread_t th[2 * THREADS];
    for (int i = 0; i < 2 * THREADS; i++) pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i);
    double t0 = now_s(), next_sample = t0 + 60;
    long rss_first = -1, rss_last = -1;
    int fd_first = -1, fd_last = -1;
    while (now_s() - t0 < secs && !atomic_load(&errors)) {
        usleep(200000);
        if (now_s() >= next_sample || now_s() - t0 >= secs) {
            rss_last = rss_kib(); fd_last = fds();
            if (rss_first < 0) { rss_first = rss_last; fd_first = fd_last; }
            printf("soak %4.0f s: %ld messages, %.2f GB verified, RSS %ld KiB, %d descriptors\n", now_s() - t0,
                   atomic_load(&messages), (double)atomic_load(&bytes) / 1e9, rss_last, fd_last);
            next_sample += 60;
        }
    }
    atomic_store(&stop_flag, 1);
    for (int i = 0; i < 2 * THREADS; i++) pthread_join(th[i], NULL);
    int ok = atomic_load(&errors) == 0 && rss_last - rss_first <= 16384 && fd_last == fd_first;
    printf("soak: %s: %ld messages, %.2f GB, every byte checked; RSS %ld -> %ld KiB, descriptors %d -> %d\n", ok ? "PASS" : "FAIL",
           atomic_load(&messages), (double)atomic_load(&bytes) / 1e9, rss_first, rss_last, fd_first, fd_last);
    nrt_async_sendrecv_close(0);
    nrt_async_sendrecv_close(1);
    nrt_close();
    return ok ? 0 : 1;
}
