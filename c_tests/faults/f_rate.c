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
#include "f_common.h"
#include <stdint.h>
#include <unistd.h>

static void fill(uint8_t *p, size_t size, unsigned k) {
    for (size_t i = 0; i < size; i++) p[i] = (uint8_t)((i * 131u) ^ (k * 7919u + 17u) ^ (i >> 10));
}

int main(int argc, char **argv) {
    if (argc == 7 && (strtoull(argv[6], NULL, 0) < 16 || atol(argv[5]) < 1)) {
        fprintf(stderr, "f_rate: SIZE must be at least 16 and COUNT at least 1\n");
        return 2;
    }
    struct f_run r;
    int early = f_start(argc, argv, "f_rate", &r);
    if (early >= 0) return early;
    const int sender = r.sender;
    const long count = r.count;
    const size_t size = r.size;
    nrt_async_sendrecv_comm_t *c = r.comm;
    NRT_STATUS st;
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
    nrt_async_sendrecv_close(r.lnc);
    nrt_close();
    return 0;
}
