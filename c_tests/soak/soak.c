/* SPDX-License-Identifier: Apache-2.0
 * make soak: random message sizes (0 to 4 MiB) over 16 communicator pairs between two lncs, 4
 * sender and 4 receiver threads (each owning 4 pairs, 4 messages in flight per pair), every byte
 * checked, for NRT_SOAK_SECONDS (default 600). RSS and open descriptors are sampled every minute
 * and must stay flat: the last sample may exceed the first (taken after one minute, when caches are
 * warm) by at most 16 MiB, and descriptors must be equal. Exit 0 when all of it holds. */
#define _GNU_SOURCE
#include <dirent.h>
#include <limits.h>
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

/* Posted-message counts each side publishes when the run stops, so both finish at the same count. */
static atomic_long published[2][PAIRS];

struct side {
    int sender;
    nrt_tensor_t *buf[PAIRS / THREADS][INFLIGHT];
    nrt_async_sendrecv_request_t *q[PAIRS / THREADS][INFLIGHT];
    long next[PAIRS / THREADS], done[PAIRS / THREADS];
};

/* Posts up to `limit` messages (at most INFLIGHT outstanding) on slot k, then reaps one. */
static int step(struct side *sd, int t, int k, long limit) {
    int p = t * (PAIRS / THREADS) + k;
    while (sd->next[k] < limit && sd->next[k] - sd->done[k] < INFLIGHT) {
        int w = (int)(sd->next[k] % INFLIGHT);
        size_t n = size_of(p, sd->next[k]);
        if (sd->sender) {
            uint8_t *va = nrt_tensor_get_va(sd->buf[k][w]);
            for (size_t i = 0; i < n; i++) va[i] = byte_of(p, sd->next[k], i);
        }
        NRT_STATUS st = sd->sender ? nrt_async_sendrecv_send_tensor(sd->buf[k][w], 0, n, S[p], &sd->q[k][w])
                                   : nrt_async_sendrecv_recv_tensor(sd->buf[k][w], 0, MAXN, R[p], &sd->q[k][w]);
        if (st != NRT_SUCCESS) { fprintf(stderr, "post failed: %d\n", st); return 0; }
        sd->next[k]++;
    }
    if (sd->done[k] == sd->next[k]) return 1;
    int w = (int)(sd->done[k] % INFLIGHT);
    size_t got = 0, n = size_of(p, sd->done[k]);
    if (!wait_req(sd->q[k][w], &got) || got != n) { fprintf(stderr, "pair %d message %ld failed\n", p, sd->done[k]); return 0; }
    if (!sd->sender) {
        const uint8_t *va = nrt_tensor_get_va(sd->buf[k][w]);
        for (size_t i = 0; i < n; i++)
            if (va[i] != byte_of(p, sd->done[k], i)) { fprintf(stderr, "pair %d message %ld byte %zu corrupt\n", p, sd->done[k], i); return 0; }
        atomic_fetch_add(&messages, 1);
        atomic_fetch_add(&bytes, (long)n);
    }
    sd->done[k]++;
    return 1;
}

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg, t = id % THREADS;
    struct side *sd = calloc(1, sizeof *sd);
    sd->sender = id < THREADS;
    for (int k = 0; k < PAIRS / THREADS; k++)
        for (int w = 0; w < INFLIGHT; w++) nrt_tensor_allocate(NRT_TENSOR_PLACEMENT_HOST, 0, MAXN, "soak", &sd->buf[k][w]);
    while (!atomic_load(&stop_flag) && !atomic_load(&errors))
        for (int k = 0; k < PAIRS / THREADS; k++)
            if (!step(sd, t, k, LONG_MAX)) { atomic_fetch_add(&errors, 1); break; }
    /* Finish at the same message count on both sides: the larger of the two posted counts. */
    for (int k = 0; k < PAIRS / THREADS; k++) atomic_store(&published[sd->sender][t * (PAIRS / THREADS) + k], sd->next[k]);
    for (int k = 0; k < PAIRS / THREADS && !atomic_load(&errors); k++) {
        int p = t * (PAIRS / THREADS) + k;
        double end = now_s() + 30;
        while (atomic_load(&published[!sd->sender][p]) < 0 && now_s() < end && !atomic_load(&errors)) usleep(1000);
        long target = atomic_load(&published[!sd->sender][p]);
        if (target < sd->next[k]) target = sd->next[k];
        while (sd->done[k] < target && !atomic_load(&errors))
            if (!step(sd, t, k, target)) atomic_fetch_add(&errors, 1);
    }
    for (int k = 0; k < PAIRS / THREADS; k++)
        for (int w = 0; w < INFLIGHT; w++) nrt_tensor_free(&sd->buf[k][w]);
    free(sd);
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
    for (int p = 0; p < PAIRS; p++) published[0][p] = published[1][p] = -1;
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
    /* Everything was reaped: closing finds nothing unfinished. */
    ok = (nrt_async_sendrecv_close(0) == NRT_SUCCESS) & (nrt_async_sendrecv_close(1) == NRT_SUCCESS) & ok;
    nrt_close();
    if (!ok) printf("soak: FAIL\n");
    return ok ? 0 : 1;
}
