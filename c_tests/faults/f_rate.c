/* SPDX-License-Identifier: Apache-2.0
 * The rate of messages sent one at a time (scripts/faults.sh starts two, in two network namespaces).
 *   f_rate send|recv LNC PEER_IP PEER_LNC COUNT SIZE
 * The sender posts a message, waits for it to complete, posts the next: COUNT messages of SIZE
 * bytes, then prints "rate R GB/s (COUNT x SIZE bytes, T s in flight)": the bytes over the sum of
 * the times from each post to its completion (filling the tensors is not timed). The receiver
 * keeps two receives posted and checks every byte of every message (the first 8 bytes carry the
 * message's number, the rest one of two patterns, compared with memcmp so that checking keeps up
 * with the sender), then prints "done COUNT". A failure prints "status ..." (exit 10 + status) or
 * "corrupt ..." (exit 4). */
#define _GNU_SOURCE
#include <nrt/nrt.h>
#include <nrt/nrt_async_sendrecv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void fill(uint8_t *p, size_t size, unsigned k) {
    for (size_t i = 0; i < size; i++) p[i] = (uint8_t)((i * 131u) ^ (k * 7919u + 17u) ^ (i >> 10));
}

/* Waits for one request (bounded: the library's request deadline); 0 or the status. */
static NRT_STATUS wait_req(nrt_async_sendrecv_request_t *q, size_t *got) {
    bool d = false;
    NRT_STATUS st;
    do {
        st = nrt_async_sendrecv_test_request(q, &d, got);
    } while (st == NRT_SUCCESS && !d);
    return st;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: f_rate send|recv LNC PEER_IP PEER_LNC COUNT SIZE\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    int sender = strcmp(argv[1], "send") == 0;
    int lnc = atoi(argv[2]), peer_lnc = atoi(argv[4]);
    const char *peer = argv[3];
    long count = atol(argv[5]);
    size_t size = (size_t)strtoull(argv[6], NULL, 0);
    if (size < 16 || count < 1) {
        fprintf(stderr, "f_rate: SIZE must be at least 16 and COUNT at least 1\n");
        return 2;
    }
    NRT_STATUS st;
    if ((st = nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0")) != NRT_SUCCESS || (st = nrt_async_sendrecv_init(lnc)) != NRT_SUCCESS) {
        printf("status init %d\n", st);
        return 10 + (int)st;
    }
    nrt_async_sendrecv_comm_t *c = NULL;
    st = sender ? nrt_async_sendrecv_connect(peer, peer_lnc, lnc, &c) : nrt_async_sendrecv_accept(peer, peer_lnc, lnc, &c);
    bool done = false;
    while (st == NRT_SUCCESS && !done) st = nrt_async_sendrecv_test_comm(c, &done);
    if (st != NRT_SUCCESS) {
        printf("status setup %d\n", st);
        return 10 + (int)st;
    }
    printf("connected\n");
    /* Two tensors each side: the sender's hold the two patterns; the receiver's take messages in
     * turn, checked against its own copies of the patterns. */
    nrt_tensor_t *t[2];
    uint8_t *want[2];
    for (int w = 0; w < 2; w++) {
        if (nrt_tensor_allocate(NRT_TENSOR_PLACEMENT_HOST, 0, size, "f", &t[w]) != NRT_SUCCESS || !(want[w] = malloc(size))) {
            printf("status allocate\n");
            return 3;
        }
        fill(want[w], size, (unsigned)w);
        if (sender) memcpy(nrt_tensor_get_va(t[w]), want[w], size);
    }
    nrt_async_sendrecv_request_t *q[2];
    size_t got = 0;
    if (sender) {
        double busy = 0;
        for (long k = 0; k < count; k++) {
            uint8_t *va = nrt_tensor_get_va(t[k % 2]);
            uint64_t n = (uint64_t)k;
            memcpy(va, &n, 8);
            double t0 = now_s();
            if ((st = nrt_async_sendrecv_send_tensor(t[k % 2], 0, size, c, &q[0])) != NRT_SUCCESS || (st = wait_req(q[0], &got)) != NRT_SUCCESS) {
                printf("status %d (message %ld)\n", st, k);
                return 10 + (int)st;
            }
            busy += now_s() - t0;
            if (got != size) {
                printf("wrong size %zu for message %ld\n", got, k);
                return 3;
            }
        }
        printf("rate %.2f GB/s (%ld x %zu bytes, %.3f s in flight)\n", (double)count * (double)size / busy / 1e9, count, size, busy);
    } else {
        long posted = 0;
        for (; posted < 2 && posted < count; posted++)
            if ((st = nrt_async_sendrecv_recv_tensor(t[posted % 2], 0, size, c, &q[posted % 2])) != NRT_SUCCESS) {
                printf("status post %d\n", st);
                return 10 + (int)st;
            }
        for (long k = 0; k < count; k++) {
            int w = (int)(k % 2);
            if ((st = wait_req(q[w], &got)) != NRT_SUCCESS) {
                printf("status %d (message %ld)\n", st, k);
                return 10 + (int)st;
            }
            const uint8_t *va = nrt_tensor_get_va(t[w]);
            uint64_t n;
            memcpy(&n, va, 8);
            if (got != size || n != (uint64_t)k || memcmp(va + 8, want[w] + 8, size - 8) != 0) {
                printf("corrupt message %ld (size %zu, number %llu)\n", k, got, (unsigned long long)n);
                return 4;
            }
            if (posted < count) {
                if ((st = nrt_async_sendrecv_recv_tensor(t[w], 0, size, c, &q[w])) != NRT_SUCCESS) {
                    printf("status post %d\n", st);
                    return 10 + (int)st;
                }
                posted++;
            }
        }
        printf("done %ld\n", count);
    }
    nrt_async_sendrecv_close(lnc);
    nrt_close();
    return 0;
}
