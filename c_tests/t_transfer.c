/* Transfers of 0, 1, 4095, 1 MiB + 3 and 256 MiB at odd offsets over 127.0.0.1 and ::1, every
 * byte checked; receives longer than the send; a receive shorter than the send; flush. */
#include "common.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static int have_ipv6_loopback(void) {
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static void run(const char *ip, int big) {
    nrt_async_sendrecv_comm_t *s = NULL, *r = NULL;
    if (!pair(ip, 0, 1, &s, &r)) return;
    const size_t sizes[] = {0, 1, 4095, (1u << 20) + 3};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) xfer(s, r, sizes[i], 7, 13, i);
    if (big) xfer(s, r, (size_t)256 << 20, 3, 5, 99);
    /* A receive shorter than the send fails both, then the comm goes on. */
    nrt_tensor_t *a = tensor(70000), *b = tensor(70000);
    nrt_async_sendrecv_request_t *rq = NULL, *sq = NULL;
    size_t sz = 1;
    EXPECT(nrt_async_sendrecv_recv_tensor(b, 1, 69998, r, &rq), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_send_tensor(a, 0, 69999, s, &sq), NRT_SUCCESS);
    EXPECT(wait_req(sq, 30, &sz), NRT_FAILURE);
    EXPECT(wait_req(rq, 30, &sz), NRT_FAILURE);
    /* Several messages queued both ways keep FIFO order. */
    enum { K = 6 };
    nrt_tensor_t *src[K], *dst[K];
    nrt_async_sendrecv_request_t *sr[K], *rr[K];
    for (int k = 0; k < K; k++) {
        size_t n = 1000u * (size_t)(k + 1) * (size_t)(k + 1) * 37u;
        src[k] = tensor(n);
        dst[k] = tensor(n);
        fill(nrt_tensor_get_va(src[k]), n, 500 + (uint64_t)k);
        EXPECT(nrt_async_sendrecv_send_tensor(src[k], 0, n, s, &sr[k]), NRT_SUCCESS);
    }
    for (int k = 0; k < K; k++) EXPECT(nrt_async_sendrecv_recv_tensor(dst[k], 0, nrt_tensor_get_size(dst[k]), r, &rr[k]), NRT_SUCCESS);
    for (int k = 0; k < K; k++) {
        size_t n = nrt_tensor_get_size(src[k]), x = 0, y = 0;
        EXPECT(wait_req(sr[k], 60, &x), NRT_SUCCESS);
        EXPECT(wait_req(rr[k], 60, &y), NRT_SUCCESS);
        CHECK(x == n && y == n, "message %d sizes %zu %zu", k, x, y);
        CHECK(first_bad(nrt_tensor_get_va(dst[k]), n, 500 + (uint64_t)k) == SIZE_MAX, "message %d bytes", k);
        nrt_tensor_free(&src[k]);
        nrt_tensor_free(&dst[k]);
    }
    EXPECT(nrt_async_sendrecv_flush(1), NRT_SUCCESS);
    xfer(s, r, 5, 1, 1, 7);
    nrt_tensor_free(&a);
    nrt_tensor_free(&b);
}

int main(void) {
    test_begin("t_transfer");
    EXPECT(nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0"), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(0), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(1), NRT_SUCCESS);
    run("127.0.0.1", 1);
    EXPECT(nrt_async_sendrecv_close(0), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_close(1), NRT_SUCCESS);
    if (have_ipv6_loopback()) {
        setenv("NEURON_RT_ASYNC_SENDRECV_LISTEN_ADDR", "::1", 1); /* read at init */
        EXPECT(nrt_async_sendrecv_init(0), NRT_SUCCESS);
        EXPECT(nrt_async_sendrecv_init(1), NRT_SUCCESS);
        run("::1", 0);
        EXPECT(nrt_async_sendrecv_close(0), NRT_SUCCESS);
        EXPECT(nrt_async_sendrecv_close(1), NRT_SUCCESS);
    } else {
        printf("note: no IPv6 loopback here; the ::1 half was skipped\n");
    }
    EXPECT(nrt_close(), NRT_SUCCESS);
    return test_end();
}
