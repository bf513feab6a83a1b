/* Compute/transfer overlap through the library's C API: does a sender's next message cross while
 * the receiver works on the previous one?
 *
 *   cc -O2 -I include -o overlap bench/overlap.c -L build/lib -lnrt -Wl,-rpath,$PWD/build/lib
 *   ./overlap [bytes] [compute_us] [messages]          (defaults: 1 MiB, 200 us, 400)
 *
 * A forked receiver (lnc 1) double-buffers, as such loops do (eight tensors in turn): it posts
 * receive i+1, waits for receive i, then "computes" for compute_us without calling the library: it
 * checks the message's first and last 64 bytes, then spins until compute_us have passed since the
 * receive completed (it reports the time it really spent, "computed_us"). After each phase it
 * checks every byte of its eight tensors (the last eight messages). The sender (lnc 0) has one send in flight: post, poll until done, next
 * (four tensors, each with its own pattern, so a message landing in the wrong place shows).
 * Two phases on one communicator: compute 0 (the transfer alone, T), then compute_us (C).
 * Perfect overlap gives max(T, C) per message, none gives T + C: "hidden" is the share of
 * min(T, C) that the second phase saved (C as measured). Transport as the library picks it
 * (NEURON_RT_ASYNC_SENDRECV_TRANSPORT=tcp to force TCP on loopback). One JSON object on stdout;
 * exit 1 on any failure (a wrong byte, a status other than success, a request over 60 s).
 */
#define _GNU_SOURCE
#include <nrt/nrt.h>
#include <nrt/nrt_async_sendrecv.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WARMUP 16
#define SENDER_BUFS 4
#define RECEIVER_BUFS 8

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void fail(const char *who, const char *what, int st) {
    fprintf(stderr, "overlap: %s: %s (status %d)\n", who, what, st);
    exit(1);
}

static uint8_t byte_of(int buf, size_t i) { return (uint8_t)((i * 131u + (size_t)buf * 29u + (i >> 12)) & 0xff); }

static nrt_async_sendrecv_comm_t *ready(nrt_async_sendrecv_comm_t *c, const char *who);

/* nrt_init, lnc `lnc`, and a ready communicator with lnc `peer` on 127.0.0.1 (sender: connect). */
static nrt_async_sendrecv_comm_t *open_side(const char *who, int lnc, int peer, bool sender) {
    NRT_STATUS s;
    if ((s = nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0")) != NRT_SUCCESS) fail(who, "nrt_init", s);
    if ((s = nrt_async_sendrecv_init(lnc)) != NRT_SUCCESS) fail(who, "init", s);
    nrt_async_sendrecv_comm_t *c = NULL;
    s = sender ? nrt_async_sendrecv_connect("127.0.0.1", peer, lnc, &c) : nrt_async_sendrecv_accept("127.0.0.1", peer, lnc, &c);
    if (s != NRT_SUCCESS) fail(who, sender ? "connect" : "accept", s);
    return ready(c, who);
}

static nrt_async_sendrecv_comm_t *ready(nrt_async_sendrecv_comm_t *c, const char *who) {
    double end = now_s() + 30;
    for (;;) {
        bool done = false;
        NRT_STATUS s = nrt_async_sendrecv_test_comm(c, &done);
        if (s != NRT_SUCCESS) fail(who, "test_comm", s);
        if (done) return c;
        if (now_s() > end) fail(who, "connection not ready after 30 s", 0);
        usleep(200);
    }
}

static size_t wait_req(nrt_async_sendrecv_request_t *r, const char *who) {
    double end = now_s() + 60;
    for (unsigned spins = 0;; spins++) {
        bool done = false;
        size_t size = 0;
        NRT_STATUS s = nrt_async_sendrecv_test_request(r, &done, &size);
        if (s != NRT_SUCCESS) fail(who, "test_request", s);
        if (done) return size;
        if (spins % 4096 == 0 && now_s() > end) fail(who, "request not done after 60 s", 0);
        /* Both processes poll: on a 2-CPU host a poller that never yields keeps the kernel's
         * softirq thread (loopback delivery) waiting for a time slice. */
        if (spins % 64 == 63) sched_yield();
    }
}

static nrt_tensor_t *tensor(size_t n, const char *who) {
    nrt_tensor_t *t = NULL;
    NRT_STATUS s = nrt_tensor_allocate(NRT_TENSOR_PLACEMENT_DEVICE, 0, n, "overlap", &t);
    if (s != NRT_SUCCESS) fail(who, "nrt_tensor_allocate", s);
    return t;
}

static int receiver(size_t n, double compute_us, int messages, int report_fd) {
    const char *who = "receiver";
    NRT_STATUS s;
    nrt_async_sendrecv_comm_t *r = open_side(who, 1, 0, false);
    nrt_tensor_t *t[RECEIVER_BUFS];
    for (int b = 0; b < RECEIVER_BUFS; b++) t[b] = tensor(n, who);
    uint8_t *want[SENDER_BUFS];
    for (int b = 0; b < SENDER_BUFS; b++) {
        if (!(want[b] = malloc(n))) fail(who, "malloc", 0);
        for (size_t k = 0; k < n; k++) want[b][k] = byte_of(b, k);
    }
    double worked = 0; /* seconds spent computing in the timed part of phase 1 */
    for (int phase = 0; phase < 2; phase++) {
        double work = phase ? compute_us * 1e-6 : 0;
        int total = WARMUP + messages;
        /* The usual double buffering: post the next receive, wait for this one, work on it. */
        nrt_async_sendrecv_request_t *next = NULL, *q;
        if ((s = nrt_async_sendrecv_recv_tensor(t[0], 0, n, r, &next)) != NRT_SUCCESS) fail(who, "recv_tensor", s);
        for (int i = 0; i < total; i++) {
            q = next;
            if (i + 1 < total && (s = nrt_async_sendrecv_recv_tensor(t[(i + 1) % RECEIVER_BUFS], 0, n, r, &next)) != NRT_SUCCESS)
                fail(who, "recv_tensor", s);
            size_t got = wait_req(q, who);
            double done_at = now_s();
            if (got != n) fail(who, "a receive completed with the wrong size", (int)got);
            /* While it runs, each message's first and last 64 bytes; every byte after the phase. */
            const uint8_t *got_bytes = nrt_tensor_get_va(t[i % RECEIVER_BUFS]), *w = want[i % SENDER_BUFS];
            size_t edge = n < 64 ? n : 64;
            if (memcmp(got_bytes, w, edge) != 0 || memcmp(got_bytes + n - edge, w + n - edge, edge) != 0)
                fail(who, "wrong bytes received", i);
            double end;
            while ((end = now_s()) - done_at < work) {
            }
            if (phase == 1 && i >= WARMUP) worked += end - done_at;
        }
        for (int b = 0; b < RECEIVER_BUFS && b < total; b++) {
            int last = total - 1 - ((total - 1 - b) % RECEIVER_BUFS); /* the last message that landed in t[b] */
            if (memcmp(nrt_tensor_get_va(t[b]), want[last % SENDER_BUFS], n) != 0) fail(who, "wrong bytes received", last);
        }
    }
    if ((s = nrt_async_sendrecv_flush(1)) != NRT_SUCCESS) fail(who, "flush", s);
    double mean_us = worked * 1e6 / messages;
    if (write(report_fd, &mean_us, sizeof mean_us) != sizeof mean_us) fail(who, "reporting its compute time", 0);
    for (int b = 0; b < RECEIVER_BUFS; b++) nrt_tensor_free(&t[b]);
    for (int b = 0; b < SENDER_BUFS; b++) free(want[b]);
    if ((s = nrt_async_sendrecv_close(1)) != NRT_SUCCESS) fail(who, "close", s);
    nrt_close();
    return 0;
}

int main(int argc, char **argv) {
    size_t n = argc > 1 ? strtoull(argv[1], NULL, 0) : 1u << 20;
    double compute_us = argc > 2 ? atof(argv[2]) : 200;
    int messages = argc > 3 ? atoi(argv[3]) : 400;
    if (n == 0 || compute_us < 0 || messages < 1) {
        fprintf(stderr, "usage: overlap [bytes >= 1] [compute_us >= 0] [messages >= 1]\n");
        return 2;
    }
    setenv("NEURON_RT_ASYNC_SENDRECV_LISTEN_ADDR", "127.0.0.1", 0);
    int report[2];
    if (pipe(report) != 0) fail("main", "pipe", 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) fail("main", "fork", 0);
    if (pid == 0) _exit(receiver(n, compute_us, messages, report[1]));

    const char *who = "sender";
    NRT_STATUS s;
    nrt_async_sendrecv_comm_t *c = open_side(who, 0, 1, true);
    nrt_tensor_t *t[SENDER_BUFS];
    for (int b = 0; b < SENDER_BUFS; b++) {
        t[b] = tensor(n, who);
        uint8_t *p = nrt_tensor_get_va(t[b]);
        for (size_t k = 0; k < n; k++) p[k] = byte_of(b, k);
    }
    double per_msg[2];
    for (int phase = 0; phase < 2; phase++) {
        double t0 = 0;
        for (int i = 0; i < WARMUP + messages; i++) {
            if (i == WARMUP) t0 = now_s();
            nrt_async_sendrecv_request_t *q = NULL;
            if ((s = nrt_async_sendrecv_send_tensor(t[i % SENDER_BUFS], 0, n, c, &q)) != NRT_SUCCESS) fail(who, "send_tensor", s);
            if (wait_req(q, who) != n) fail(who, "a send completed with the wrong size", 0);
        }
        per_msg[phase] = (now_s() - t0) * 1e6 / messages;
    }
    double C = -1;
    if (read(report[0], &C, sizeof C) != sizeof C) fail(who, "no compute time from the receiver", 0);
    int st = 0;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) fail(who, "the receiver failed", st);
    for (int b = 0; b < SENDER_BUFS; b++) nrt_tensor_free(&t[b]);
    nrt_async_sendrecv_close(0);
    nrt_close();
    double T = per_msg[0], both = per_msg[1];
    double least = T < C ? T : C;
    double hidden = least > 0 ? (T + C - both) / least : 1;
    printf("{\"bytes\": %zu, \"messages\": %d, \"compute_us\": %.1f, \"computed_us\": %.1f, \"us_per_message_alone\": %.1f, "
           "\"us_per_message_with_compute\": %.1f, \"hidden\": %.2f}\n",
           n, messages, compute_us, C, T, both, hidden);
    return 0;
}
