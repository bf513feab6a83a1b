/* SPDX-License-Identifier: Apache-2.0
 * One end of a fault-injection run (scripts/faults.sh starts two, in two network namespaces).
 *   f_node send|recv LNC PEER_IP PEER_LNC COUNT SIZE
 * Moves COUNT messages of SIZE bytes (4 in flight), each with its own pattern; the receiver checks
 * every byte. Prints "progress K" after each completed message, and at the end either
 * "done COUNT" (exit 0) or "status NAME after T s" for the first request that failed (exit 10 +
 * status), with the seconds since that request was posted. */
#define _GNU_SOURCE
#include "f_common.h"
#include <stdint.h>
#include <unistd.h>

#define WINDOW 4

static uint8_t pat(uint64_t msg, size_t i) { return (uint8_t)((i * 131u) ^ (msg * 7919u) ^ (i >> 10)); }

int main(int argc, char **argv) {
    struct f_run r;
    int early = f_start(argc, argv, "f_node", &r);
    if (early >= 0) return early;
    const int sender = r.sender;
    const long count = r.count;
    const size_t size = r.size;
    nrt_async_sendrecv_comm_t *c = r.comm;
    NRT_STATUS st;
    nrt_tensor_t *t[WINDOW];
    nrt_async_sendrecv_request_t *q[WINDOW];
    double posted[WINDOW];
    long msg_of[WINDOW];
    for (int w = 0; w < WINDOW; w++) nrt_tensor_allocate(NRT_TENSOR_PLACEMENT_HOST, 0, size, "f", &t[w]);
    long next = 0, finished = 0;
    int inflight = 0, rc = 0;
    while (finished < count) {
        while (inflight < WINDOW && next < count) {
            int w = (int)(next % WINDOW);
            uint8_t *va = nrt_tensor_get_va(t[w]);
            if (sender) for (size_t i = 0; i < size; i++) va[i] = pat((uint64_t)next, i);
            st = sender ? nrt_async_sendrecv_send_tensor(t[w], 0, size, c, &q[w]) : nrt_async_sendrecv_recv_tensor(t[w], 0, size, c, &q[w]);
            if (st != NRT_SUCCESS) {
                printf("status post %d after 0.00 s\n", st);
                return 10 + (int)st;
            }
            posted[w] = now_s();
            msg_of[w] = next++;
            inflight++;
        }
        int w = (int)(finished % WINDOW);
        size_t got = 0;
        if ((st = wait_req(q[w], &got)) != NRT_SUCCESS) {
            printf("status %d after %.2f s (message %ld)\n", st, now_s() - posted[w], msg_of[w]);
            rc = 10 + (int)st;
            break;
        }
        if (got != size) {
            printf("wrong size %zu for message %ld\n", got, msg_of[w]);
            rc = 3;
            break;
        }
        if (!sender) {
            const uint8_t *va = nrt_tensor_get_va(t[w]);
            for (size_t i = 0; i < size; i++)
                if (va[i] != pat((uint64_t)msg_of[w], i)) {
                    printf("corrupt byte %zu of message %ld\n", i, msg_of[w]);
                    return 4;
                }
        }
        finished++;
        inflight--;
        printf("progress %ld\n", finished);
    }
    if (rc == 0) printf("done %ld\n", finished);
    nrt_async_sendrecv_close(r.lnc);
    nrt_close();
    return rc;
}
