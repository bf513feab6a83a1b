/* SPDX-License-Identifier: Apache-2.0
 * f_cycles N: N rounds of nrt_async_sendrecv_init (two lncs), connect/accept, one 64 KiB
 * transfer checked byte by byte, close. Open descriptors and RSS after round 20 (allocator and
 * thread caches warm) must equal / stay within 4 MiB of those after round N. Exit 0 when they do. */
#define _GNU_SOURCE
#include "f_common.h"
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d) return -1;
    while (readdir(d)) n++;
    closedir(d);
    return n - 3; /* ".", ".." and the DIR's own descriptor */
}

static long rss_kib(void) {
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = -1;
    fclose(f);
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static int wait_done(nrt_async_sendrecv_request_t *q, size_t *got) {
    bool d = false;
    NRT_STATUS st;
    double end = now_s() + 30;
    do st = nrt_async_sendrecv_test_request(q, &d, got);
    while (st == NRT_SUCCESS && !d && now_s() < end);
    return st == NRT_SUCCESS && d;
}

static int round_trip(int round) {
    const size_t n = 65536;
    if (nrt_async_sendrecv_init(0) != NRT_SUCCESS || nrt_async_sendrecv_init(1) != NRT_SUCCESS) return 0;
    nrt_async_sendrecv_comm_t *s = NULL, *r = NULL;
    int ok = nrt_async_sendrecv_connect("127.0.0.1", 1, 0, &s) == NRT_SUCCESS &&
             nrt_async_sendrecv_accept("127.0.0.1", 0, 1, &r) == NRT_SUCCESS;
    bool ds = false, dr = false;
    double end = now_s() + 30;
    while (ok && (!ds || !dr) && now_s() < end)
        ok = nrt_async_sendrecv_test_comm(s, &ds) == NRT_SUCCESS && nrt_async_sendrecv_test_comm(r, &dr) == NRT_SUCCESS;
    ok = ok && ds && dr;
    nrt_tensor_t *a = NULL, *b = NULL;
    nrt_tensor_allocate(NRT_TENSOR_PLACEMENT_HOST, 0, n, "a", &a);
    nrt_tensor_allocate(NRT_TENSOR_PLACEMENT_HOST, 0, n, "b", &b);
    uint8_t *va = nrt_tensor_get_va(a), *vb = nrt_tensor_get_va(b);
    for (size_t i = 0; i < n; i++) va[i] = (uint8_t)(i * 31 + (size_t)round);
    nrt_async_sendrecv_request_t *rq = NULL, *sq = NULL;
    size_t x = 0, y = 0;
    if (ok) ok = nrt_async_sendrecv_recv_tensor(b, 0, n, r, &rq) == NRT_SUCCESS && nrt_async_sendrecv_send_tensor(a, 0, n, s, &sq) == NRT_SUCCESS;
    if (ok) ok = wait_done(sq, &x) && wait_done(rq, &y) && x == n && y == n && memcmp(va, vb, n) == 0;
    nrt_tensor_free(&a);
    nrt_tensor_free(&b);
    ok = (nrt_async_sendrecv_close(0) == NRT_SUCCESS) & (nrt_async_sendrecv_close(1) == NRT_SUCCESS) & ok;
    return ok;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 1000;
    setenv("NEURON_RT_ASYNC_SENDRECV_LISTEN_ADDR", "127.0.0.1", 1);
    if (nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0") != NRT_SUCCESS) return 1;
    int fd0 = -1;
    long rss0 = -1;
    double t0 = now_s();
    for (int i = 1; i <= rounds; i++) {
        if (!round_trip(i)) {
            printf("round %d failed\n", i);
            return 1;
        }
        if (i == 20) {
            fd0 = open_fds();
            rss0 = rss_kib();
        }
    }
    int fd1 = open_fds();
    long rss1 = rss_kib();
    nrt_close();
    int ok = fd1 == fd0 && rss1 - rss0 <= 4096;
    printf("%d rounds in %.1f s: descriptors %d -> %d, RSS %ld -> %ld KiB (%+ld KiB)%s\n", rounds, now_s() - t0, fd0, fd1, rss0, rss1,
           rss1 - rss0, ok ? "" : "  LEAK");
    return ok ? 0 : 1;
}
