/* SPDX-License-Identifier: Apache-2.0
 * What the fault programs share: the clock (all), one request's wait and the start of a two-process
 * run (f_node.c, f_rate.c), "NAME send|recv LNC PEER_IP PEER_LNC COUNT SIZE": the runtime, the lnc
 * and the communicator, then "connected" on stdout. */
#ifndef F_COMMON_H
#define F_COMMON_H
#include <nrt/nrt.h>
#include <nrt/nrt_async_sendrecv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Polls one request until it is done (bounded: the library's request deadline); its status. */
static inline NRT_STATUS wait_req(nrt_async_sendrecv_request_t *q, size_t *got) {
    bool d = false;
    NRT_STATUS st;
    do {
        st = nrt_async_sendrecv_test_request(q, &d, got);
    } while (st == NRT_SUCCESS && !d);
    return st;
}

struct f_run {
    int sender, lnc;
    long count;
    size_t size;
    nrt_async_sendrecv_comm_t *comm;
};

/* Reads the arguments, starts the runtime and the lnc and sets up the communicator (the wait
 * bounded by the library's connect deadline). Returns -1 when the run may go on, else the exit
 * status: 2 for bad usage, 10 + status where a step failed ("status init N", or "status setup N
 * after T s", on stdout). */
static inline int f_start(int argc, char **argv, const char *name, struct f_run *r) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s send|recv LNC PEER_IP PEER_LNC COUNT SIZE\n", name);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    r->sender = strcmp(argv[1], "send") == 0;
    r->lnc = atoi(argv[2]);
    int peer_lnc = atoi(argv[4]);
    const char *peer = argv[3];
    r->count = atol(argv[5]);
    r->size = (size_t)strtoull(argv[6], NULL, 0);
    NRT_STATUS st;
    if ((st = nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0")) != NRT_SUCCESS || (st = nrt_async_sendrecv_init(r->lnc)) != NRT_SUCCESS) {
        printf("status init %d\n", st);
        return 10 + (int)st;
    }
    r->comm = NULL;
    st = r->sender ? nrt_async_sendrecv_connect(peer, peer_lnc, r->lnc, &r->comm) : nrt_async_sendrecv_accept(peer, peer_lnc, r->lnc, &r->comm);
    bool done = false;
    double t0 = now_s();
    while (st == NRT_SUCCESS && !done) st = nrt_async_sendrecv_test_comm(r->comm, &done);
    if (st != NRT_SUCCESS) {
        printf("status setup %d after %.2f s\n", st, now_s() - t0);
        return 10 + (int)st;
    }
    printf("connected\n");
    return -1;
}

#endif
