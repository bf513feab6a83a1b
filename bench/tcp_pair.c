/* Plain kernel TCP on loopback, shaped like our TCP transport at 64 MiB: the context figure for
 * `make bench`'s tcp ratios (what a sender/receiver pair with no library at all moves here).
 *
 *   cc -O2 -o tcp_pair bench/tcp_pair.c && ./tcp_pair [streams] [message_MiB] [buffers] [messages] [cc]
 *
 * Defaults: 4 streams, 64 MiB messages, 16 buffers per side, 64 timed messages, as the bench's
 * `nrt-sr-perf --sizes 64M --iters 64` (window 16, one tensor per slot), and the system's TCP
 * congestion control unless `cc` names one (the bench passes reno, which our streams to this host
 * choose; set before listen/connect, as ours is). A forked sender
 * `sendfile`s each message from a memfd (like our tensors) in 512 KiB chunks dealt round robin over
 * the streams, blocking; the receiver `recv`s every chunk in place into its own memfd buffers,
 * blocking, one stream after the other. 4 untimed messages first, then the timed ones: GB/s =
 * bytes / (receiver's time from the first timed byte asked for to the last one landed) / 1e9.
 * Every byte of the receiver's buffers is checked afterwards against the sender's pattern. One
 * JSON object on stdout; exit 1 with the cause on stderr on any failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (512u << 10)
#define WARMUP 4
#define MAX_STREAMS 64

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what) {
    fprintf(stderr, "tcp_pair: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* The 8-byte word at byte offset `off` of buffer `b`: differs between buffers and offsets. */
static uint64_t pattern(uint64_t b, uint64_t off) {
    return (b << 48) ^ off ^ 0x5a5a5a5a5a5a5a5aull;
}

/* A shared mapping of a new memfd of `bytes` (like our tensors); its fd in *fd. */
static char *map_memfd(size_t bytes, const char *name, int *fd) {
    *fd = memfd_create(name, 0);
    if (*fd < 0) die("memfd_create");
    if (ftruncate(*fd, (off_t)bytes) != 0) die("ftruncate");
    char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
    if (p == MAP_FAILED) die("mmap");
    return p;
}

static void sender(const int *socks, int streams, size_t msg, int buffers, int messages, int fd) {
    size_t chunks = (msg + CHUNK - 1) / CHUNK;
    for (int m = 0; m < WARMUP + messages; m++) {
        size_t base = (size_t)(m % buffers) * msg;
        for (size_t c = 0; c < chunks; c++) {
            int s = socks[c % (size_t)streams];
            size_t len = c + 1 < chunks ? CHUNK : msg - c * CHUNK, done = 0;
            while (done < len) {
                off_t off = (off_t)(base + c * CHUNK + done);
                ssize_t r = sendfile(s, fd, &off, len - done);
                if (r < 0 && errno == EINTR) continue;
                if (r <= 0) die("sendfile");
                done += (size_t)r;
            }
        }
    }
    char x;
    if (recv(socks[0], &x, 1, 0) != 1) die("sender: waiting for the receiver's end byte");
}

static void set_cc(int fd, const char *cc) {
    if (cc && setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, (socklen_t)strlen(cc)) != 0) die("setsockopt TCP_CONGESTION");
}

int main(int argc, char **argv) {
    int streams = argc > 1 ? atoi(argv[1]) : 4;
    size_t msg = (size_t)(argc > 2 ? atoi(argv[2]) : 64) << 20;
    int buffers = argc > 3 ? atoi(argv[3]) : 16;
    int messages = argc > 4 ? atoi(argv[4]) : 64;
    const char *cc = argc > 5 ? argv[5] : NULL;
    if (streams < 1 || streams > MAX_STREAMS || msg == 0 || buffers < 1 || messages < 1) {
        fprintf(stderr, "usage: tcp_pair [streams 1-%d] [message_MiB] [buffers] [messages] [congestion control]\n", MAX_STREAMS);
        return 2;
    }
    size_t total = msg * (size_t)buffers;

    int listeners[MAX_STREAMS], socks[MAX_STREAMS];
    struct sockaddr_in addr[MAX_STREAMS];
    for (int s = 0; s < streams; s++) {
        listeners[s] = socket(AF_INET, SOCK_STREAM, 0);
        if (listeners[s] < 0) die("socket");
        set_cc(listeners[s], cc);
        memset(&addr[s], 0, sizeof addr[s]);
        addr[s].sin_family = AF_INET;
        addr[s].sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        addr[s].sin_port = 0; /* any free port */
        socklen_t len = sizeof addr[s];
        if (bind(listeners[s], (struct sockaddr *)&addr[s], sizeof addr[s]) != 0) die("bind 127.0.0.1");
        if (listen(listeners[s], 1) != 0) die("listen");
        if (getsockname(listeners[s], (struct sockaddr *)&addr[s], &len) != 0) die("getsockname");
    }

    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
        int fd;
        char *src = map_memfd(total, "tcp_pair_src", &fd);
        for (size_t off = 0; off < total; off += 8) {
            uint64_t w = pattern(off / msg, off % msg);
            memcpy(src + off, &w, 8);
        }
        for (int s = 0; s < streams; s++) {
            socks[s] = socket(AF_INET, SOCK_STREAM, 0);
            if (socks[s] < 0) die("socket");
            set_cc(socks[s], cc);
            if (connect(socks[s], (struct sockaddr *)&addr[s], sizeof addr[s]) != 0) die("connect");
        }
        sender(socks, streams, msg, buffers, messages, fd);
        _exit(0);
    }

    /* Receiver. A sender that dies leaves recv with 0 bytes: reported, not waited on forever. */
    for (int s = 0; s < streams; s++) {
        socks[s] = accept(listeners[s], NULL, NULL);
        if (socks[s] < 0) die("accept");
    }
    int dst_fd;
    char *dst = map_memfd(total, "tcp_pair_dst", &dst_fd);
    memset(dst, 0, total);
    size_t chunks = (msg + CHUNK - 1) / CHUNK;
    double t0 = 0;
    for (int m = 0; m < WARMUP + messages; m++) {
        if (m == WARMUP) t0 = now_s();
        char *b = dst + (size_t)(m % buffers) * msg;
        for (size_t c = 0; c < chunks; c++) {
            int s = socks[c % (size_t)streams];
            size_t len = c + 1 < chunks ? CHUNK : msg - c * CHUNK, got = 0;
            while (got < len) {
                ssize_t r = recv(s, b + c * CHUNK + got, len - got, 0);
                if (r < 0 && errno == EINTR) continue;
                if (r < 0) die("recv");
                if (r == 0) {
                    fprintf(stderr, "tcp_pair: the sender closed early (message %d)\n", m);
                    kill(child, SIGKILL);
                    return 1;
                }
                got += (size_t)r;
            }
        }
    }
    double dt = now_s() - t0;
    if (send(socks[0], "x", 1, 0) != 1) die("send end byte");
    int st = 0;
    if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "tcp_pair: the sender failed\n");
        return 1;
    }
    /* Every buffer was received at least once when messages >= buffers; check what landed. */
    int filled = WARMUP + messages < buffers ? WARMUP + messages : buffers;
    for (size_t off = 0; off < (size_t)filled * msg; off += 8) {
        uint64_t w;
        memcpy(&w, dst + off, 8);
        if (w != pattern(off / msg, off % msg)) {
            fprintf(stderr, "tcp_pair: wrong bytes at buffer %zu offset %zu\n", off / msg, off % msg);
            return 1;
        }
    }
    printf("{\"gbytes_per_s\": %.3f, \"streams\": %d, \"message_bytes\": %zu, \"buffers\": %d, "
           "\"messages\": %d, \"chunk_bytes\": %u, \"verified_bytes\": %zu, \"congestion\": \"%s\"}\n",
           (double)msg * messages / dt / 1e9, streams, msg, buffers, messages, CHUNK, (size_t)filled * msg,
           cc ? cc : "system");
    return 0;
}
