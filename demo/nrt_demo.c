/* SPDX-License-Identifier: Apache-2.0
 * nrt_demo: the main job. A receiver process (lnc 1) and a sender process (lnc 0) on loopback
 * move messages of 4 KiB to 256 MiB through the public nrt_async_sendrecv API, a few in flight,
 * and the sender prints size, GB/s and microseconds per message. The receiver checks every byte
 * of the last message in each slot of each size; any error ends the demo with a non-zero status.
 *
 * Usage: nrt_demo [receiver-ip [sender-ip]]
 *   receiver-ip: the address the sender connects to; sender-ip: the address the receiver accepts
 *   from. Both default to 127.0.0.1 ("::1" for IPv6 loopback); two addresses let each side use its
 *   own interface (and RDMA device).
 */
#define _GNU_SOURCE
#include <nrt/nrt.h>
#include <nrt/nrt_async_sendrecv.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MIN_SIZE ((size_t)4 << 10)
#define MAX_SIZE ((size_t)256 << 20)
#define BYTES_PER_SIZE ((size_t)1 << 30) /* about this much moved per size */
#define MAX_WINDOW 8
#define MEM_PER_SIDE ((size_t)256 << 20)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int die(const char *who, const char *what, NRT_STATUS st) {
    fprintf(stderr, "nrt_demo %s: %s failed with status %d\n", who, what, (int)st);
    return 1;
}

static uint8_t pattern(size_t size, int slot, size_t i) {
    return (uint8_t)((i * 131u) ^ (size >> 12) ^ ((size_t)slot * 29u) ^ (i >> 9));
}

/* Environment overrides (the VM harness runs a short demo): NRT_DEMO_BYTES_PER_SIZE,
 * NRT_DEMO_MIN_SIZE (from 1 byte), NRT_DEMO_MAX_SIZE, NRT_DEMO_MIN_ITERS, NRT_DEMO_WINDOW (1: one
 * message at a time, so microseconds per message is a round trip: the send completes when the
 * peer has the bytes). */
static size_t env_size(const char *name, size_t dflt) {
    const char *v = getenv(name);
    return v && *v ? (size_t)strtoull(v, NULL, 0) : dflt;
}

/* NRT_DEMO_SENDER_<NAME>=<value> (NRT_DEMO_RECEIVER_<NAME>): <NAME>=<value> in that side's process
 * only, set before nrt_init (the library reads its settings there). The two sides are one program,
 * forked, and otherwise share their environment; the VM harness gives each side its own libfabric
 * rail this way (NRT_DEMO_SENDER_NEURON_RT_ASYNC_SENDRECV_OFI_RAILS=rxeA). */
extern char **environ;
static int role_env(const char *who) {
    char prefix[32], *todo[64];
    int n = 0;
    snprintf(prefix, sizeof prefix, "NRT_DEMO_%s_", who);
    size_t plen = strlen(prefix);
    /* Copied first: setenv may move environ. */
    for (char **e = environ; *e && n < 64; e++)
        if (strncmp(*e, prefix, plen) == 0 && strchr(*e + plen, '=') && (todo[n] = strdup(*e + plen))) n++;
    int rc = 0;
    for (int i = 0; i < n; i++) {
        char *eq = strchr(todo[i], '=');
        *eq = '\0';
        if (*todo[i] == '\0' || setenv(todo[i], eq + 1, 1) != 0) {
            fprintf(stderr, "nrt_demo: cannot set %s from %s%s\n", todo[i], prefix, todo[i]);
            rc = 1;
        }
        free(todo[i]);
    }
    return rc;
}

/* NRT_DEMO_CPU=<n> (usually per side: NRT_DEMO_SENDER_NRT_DEMO_CPU=0): that side's process,
 * and the library's threads it starts, run on CPU n only (the VM harness pins both sides of its
 * round-trip measurement, as it pins perftest's). */
static int pin_cpu(void) {
    const char *v = getenv("NRT_DEMO_CPU");
    if (!v || !*v) return 0;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(atoi(v), &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        perror("nrt_demo: sched_setaffinity (NRT_DEMO_CPU)");
        return 1;
    }
    return 0;
}

static int window_for(size_t size) {
    size_t w = MEM_PER_SIDE / size, most = env_size("NRT_DEMO_WINDOW", MAX_WINDOW);
    if (most < 1 || most > MAX_WINDOW) most = MAX_WINDOW;
    if (w > most) w = most;
    if (w < 1) w = 1;
    return (int)w;
}

static int iters_for(size_t size) {
    size_t n = env_size("NRT_DEMO_BYTES_PER_SIZE", BYTES_PER_SIZE) / size, lo = env_size("NRT_DEMO_MIN_ITERS", 16);
    if (n < lo) n = lo;
    if (n > 20000) n = 20000;
    return (int)n;
}

/* Polls until done; the library's request deadline bounds this loop. */
static NRT_STATUS wait_req(nrt_async_sendrecv_request_t *r, size_t *size) {
    bool done = false;
    NRT_STATUS st;
    do {
        st = nrt_async_sendrecv_test_request(r, &done, size);
    } while (st == NRT_SUCCESS && !done);
    return st;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Moves `count` messages of `size` bytes with up to `window` in flight, slot k % window. With
 * `lat` (one at a time), each message's time from posting to completion, in seconds. */
static int pump(int is_sender, nrt_async_sendrecv_comm_t *comm, nrt_tensor_t **t, int window, int count, size_t size, double *lat) {
    const char *who = is_sender ? "sender" : "receiver";
    nrt_async_sendrecv_request_t *req[MAX_WINDOW] = {0};
    NRT_STATUS st;
    double posted = 0;
    for (int k = 0; k < count + window; k++) {
        int s = k % window;
        if (k >= window) { /* reap the request that used this slot */
            size_t got = 0;
            if ((st = wait_req(req[s], &got)) != NRT_SUCCESS) return die(who, "test_request", st);
            if (lat) lat[k - window] = now_s() - posted;
            if (got != size) {
                fprintf(stderr, "nrt_demo %s: request reported %zu bytes, expected %zu\n", who, got, size);
                return 1;
            }
        }
        if (k < count) {
            posted = now_s();
            st = is_sender ? nrt_async_sendrecv_send_tensor(t[s], 0, size, comm, &req[s])
                           : nrt_async_sendrecv_recv_tensor(t[s], 0, size, comm, &req[s]);
            if (st != NRT_SUCCESS) return die(who, "send/recv", st);
        }
    }
    return 0;
}

static int run(int is_sender, const char *peer) {
    /* peer: for the sender, the receiver's address; for the receiver, the sender's. */
    const char *who = is_sender ? "sender" : "receiver";
    int lnc = is_sender ? 0 : 1, peer_lnc = is_sender ? 1 : 0;
    NRT_STATUS st;
    if (role_env(is_sender ? "SENDER" : "RECEIVER") != 0 || pin_cpu() != 0) return 1;
    if ((st = nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0")) != NRT_SUCCESS) return die(who, "nrt_init", st);
    if ((st = nrt_async_sendrecv_init(lnc)) != NRT_SUCCESS) return die(who, "nrt_async_sendrecv_init", st);
    nrt_async_sendrecv_comm_t *comm = NULL;
    st = is_sender ? nrt_async_sendrecv_connect(peer, peer_lnc, lnc, &comm)
                   : nrt_async_sendrecv_accept(peer, peer_lnc, lnc, &comm);
    if (st != NRT_SUCCESS) return die(who, "connect/accept", st);
    bool done = false;
    while (!done) /* bounded by the connect deadline: test_comm returns NRT_TIMEOUT */
        if ((st = nrt_async_sendrecv_test_comm(comm, &done)) != NRT_SUCCESS) return die(who, "test_comm", st);

    if (is_sender) {
        printf("%12s %10s %10s %14s %8s %8s\n", "size", "GB/s", "Gbit/s", "us/message", "iters", "window");
        fflush(stdout);
    }
    size_t first = env_size("NRT_DEMO_MIN_SIZE", MIN_SIZE);
    if (first < 1) first = 1;
    for (size_t size = first; size <= env_size("NRT_DEMO_MAX_SIZE", MAX_SIZE); size *= 4) {
        int window = window_for(size), iters = iters_for(size);
        nrt_tensor_t *t[MAX_WINDOW] = {0};
        for (int s = 0; s < window; s++) {
            if ((st = nrt_tensor_allocate(NRT_TENSOR_PLACEMENT_DEVICE, 0, size, "demo", &t[s])) != NRT_SUCCESS)
                return die(who, "nrt_tensor_allocate", st);
            if (!is_sender) { /* touch the pages first, as a reused buffer would be */
                if ((st = nrt_tensor_memset(t[s], 0, 0, size)) != NRT_SUCCESS) return die(who, "nrt_tensor_memset", st);
            } else {
                uint8_t *va = nrt_tensor_get_va(t[s]);
                for (size_t i = 0; i < size; i++) va[i] = pattern(size, s, i);
            }
        }
        /* A warm-up round first, untimed: the peer may still be checking the previous size. */
        if (pump(is_sender, comm, t, window, window, size, NULL) != 0) return 1;
        /* One at a time, the sender times each message too (a median beside the mean). */
        double *lat = is_sender && window == 1 ? calloc((size_t)iters, sizeof *lat) : NULL;
        double t0 = now_s();
        if (pump(is_sender, comm, t, window, iters, size, lat) != 0) return 1;
        double dt = now_s() - t0;
        if (is_sender) {
            double bytes = (double)size * iters;
            char label[32];
            if (size >= ((size_t)1 << 20) && size % ((size_t)1 << 20) == 0) snprintf(label, sizeof label, "%zu MiB", size >> 20);
            else if (size >= 1024 && size % 1024 == 0) snprintf(label, sizeof label, "%zu KiB", size >> 10);
            else snprintf(label, sizeof label, "%zu B", size);
            printf("%12s %10.3f %10.2f %14.1f %8d %8d\n", label, bytes / dt / 1e9, bytes * 8 / dt / 1e9, dt / iters * 1e6, iters, window);
            if (lat) {
                qsort(lat, (size_t)iters, sizeof *lat, cmp_double);
                printf("demo: %s one at a time: median %.1f us per message (p10 %.1f, p90 %.1f, %d messages)\n", label,
                       lat[iters / 2] * 1e6, lat[iters / 10] * 1e6, lat[iters * 9 / 10] * 1e6, iters);
            }
            fflush(stdout);
        } else {
            if ((st = nrt_async_sendrecv_flush(lnc)) != NRT_SUCCESS) return die(who, "flush", st);
            for (int s = 0; s < window; s++) {
                const uint8_t *va = nrt_tensor_get_va(t[s]);
                for (size_t i = 0; i < size; i++)
                    if (va[i] != pattern(size, s, i)) {
                        fprintf(stderr, "nrt_demo receiver: size %zu slot %d byte %zu is %u, expected %u\n", size, s, i, va[i], pattern(size, s, i));
                        return 1;
                    }
            }
        }
        for (int s = 0; s < window; s++) nrt_tensor_free(&t[s]);
        free(lat);
    }
    if ((st = nrt_async_sendrecv_close(lnc)) != NRT_SUCCESS) return die(who, "close", st);
    nrt_close();
    return 0;
}

int main(int argc, char **argv) {
    const char *recv_ip = argc > 1 ? argv[1] : "127.0.0.1";
    const char *send_ip = argc > 2 ? argv[2] : recv_ip;
    pid_t child = fork();
    if (child < 0) { perror("fork"); return 1; }
    if (child == 0) _exit(run(0, send_ip));
    int rc = run(1, recv_ip);
    int status = 0;
    if (waitpid(child, &status, 0) < 0) { perror("waitpid"); return 1; }
    int child_ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (rc == 0 && child_ok) {
        printf("demo: every message arrived, every byte of each size's last messages verified\n");
        return 0;
    }
    fprintf(stderr, "demo: FAILED (sender %d, receiver %s)\n", rc, child_ok ? "ok" : "failed");
    return 1;
}
