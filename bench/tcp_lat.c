/* SPDX-License-Identifier: Apache-2.0
 * bench/tcp_lat.c: the kernel's loopback TCP ping-pong with our shape, no library: what an 8-byte
 * half round trip of nrt-sr-perf --transport tcp --mode lat costs in the kernel alone.
 *
 * Like ours: the ping and its echo travel on two connections (one per direction, as a send and a
 * receive communicator would), each 48-byte message (a 40-byte frame header and 8 bytes) is
 * answered by a 40-byte acknowledgement on the connection it came on, sent after the echo, and
 * both sides spin on non-blocking recv(). The pinger's clock runs from its send to the echo's
 * arrival (as nrt-sr-perf's does); the acknowledgements are collected afterwards, untimed.
 *
 *   tcp_lat PORT [ITERS]   uses PORT and PORT+1 on 127.0.0.1; prints one JSON line:
 *                          {"iters": N, "p50_half_rtt_us": X, "p99_half_rtt_us": Y}
 *
 * Every wait is bounded (10 s without progress: exit 1); the echoing child dies with its parent. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MSG 48
#define ACK 40
#define WARMUP 1000
#define STALL_S 10.0

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void die(const char *what) {
    fprintf(stderr, "tcp_lat: %s: %s\n", what, errno ? strerror(errno) : "failed");
    exit(1);
}

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static void nodelay(int s) {
    int one = 1;
    if (setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one)) die("TCP_NODELAY");
}

static int listen_on(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = loopback(port);
    if (s < 0 || setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) || bind(s, (void *)&a, sizeof a) || listen(s, 4))
        die("listen");
    return s;
}

static int connect_to(int port) {
    struct sockaddr_in a = loopback(port);
    double t0 = now_s();
    for (;;) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) die("socket");
        if (connect(s, (void *)&a, sizeof a) == 0) {
            nodelay(s);
            return s;
        }
        close(s);
        if (now_s() - t0 > STALL_S) die("connect");
        usleep(1000);
    }
}

static int accept_on(int l) {
    int s = accept(l, NULL, NULL);
    if (s < 0) die("accept");
    nodelay(s);
    return s;
}

/* Reads exactly n bytes, spinning on non-blocking recv. */
static void get(int s, char *b, int n) {
    int got = 0;
    long spins = 0;
    double t0 = 0;
    while (got < n) {
        ssize_t r = recv(s, b + got, (size_t)(n - got), MSG_DONTWAIT);
        if (r > 0) {
            got += (int)r;
        } else if (r == 0) {
            errno = 0;
            die("peer closed");
        } else if (errno != EAGAIN && errno != EINTR) {
            die("recv");
        } else if ((++spins & 0xfff) == 0) {
            if (t0 == 0) t0 = now_s();
            else if (now_s() - t0 > STALL_S) die("no data for 10 s");
        }
    }
}

static void put(int s, const char *b, int n) {
    if (send(s, b, (size_t)n, MSG_NOSIGNAL) != n) die("send");
}

static int cmp(const void *x, const void *y) {
    double p = *(const double *)x, q = *(const double *)y;
    return p < q ? -1 : p > q;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: tcp_lat PORT [ITERS]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    int iters = argc > 2 ? atoi(argv[2]) : 20000;
    if (port <= 0 || port > 65534 || iters <= 0) {
        fprintf(stderr, "tcp_lat: bad PORT or ITERS\n");
        return 2;
    }
    char buf[MSG];
    memset(buf, 0x5a, sizeof buf);
    int l_ping = listen_on(port), l_echo = listen_on(port + 1);
    pid_t parent = getpid();
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        /* The echoing side: dies with the pinger (no orphan left spinning). */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() != parent) _exit(1);
        int ping = connect_to(port), echo = connect_to(port + 1);
        for (int i = 0; i < WARMUP + iters; i++) {
            get(ping, buf, MSG);
            put(echo, buf, MSG); /* the echo first, */
            put(ping, buf, ACK); /* then the ping's acknowledgement */
            get(echo, buf, ACK); /* and the echo's */
        }
        _exit(0);
    }
    int ping = accept_on(l_ping), echo = accept_on(l_echo);
    double *t = malloc(sizeof(double) * (size_t)iters);
    if (!t) die("malloc");
    for (int i = 0; i < WARMUP + iters; i++) {
        double t0 = now_s();
        put(ping, buf, MSG);
        get(echo, buf, MSG);
        double dt = now_s() - t0;
        put(echo, buf, ACK);
        get(ping, buf, ACK);
        if (i >= WARMUP) t[i - WARMUP] = dt;
    }
    int status = 0;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        errno = 0;
        die("the echoing side failed");
    }
    qsort(t, (size_t)iters, sizeof *t, cmp);
    printf("{\"iters\": %d, \"p50_half_rtt_us\": %.3f, \"p99_half_rtt_us\": %.3f}\n", iters, t[iters / 2] / 2 * 1e6,
           t[(size_t)iters * 99 / 100] / 2 * 1e6);
    free(t);
    return 0;
}
