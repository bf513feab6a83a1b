/* 128 sends in flight on one communicator before any receive; the 129th is NRT_RESOURCE; then
 * 128 receives drain them in FIFO order (each message its own pattern and size), and a 129th
 * send works once one was reaped. */
#include "common.h"

enum { N = 128 };

int main(void) {
    test_begin("t_pending");
    EXPECT(nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0"), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(0), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(1), NRT_SUCCESS);
    int maxp = 0;
    EXPECT(nrt_async_sendrecv_get_max_num_pending_request(&maxp), NRT_SUCCESS);
    CHECK(maxp == N, "pending-request limit %d, documented %d", maxp, N);
    if (maxp != N) return report(); /* the rest is written for the documented limit */
    nrt_async_sendrecv_comm_t *s = NULL, *r = NULL;
    if (!pair("127.0.0.1", 0, 1, &s, &r)) return test_end();
    static nrt_tensor_t *src[N + 1], *dst[N + 1];
    static nrt_async_sendrecv_request_t *sr[N + 1], *rr[N + 1];
    for (int k = 0; k <= N; k++) {
        size_t n = 1 + (size_t)k * 997;
        src[k] = tensor(n);
        dst[k] = tensor(n + 10);
        fill(nrt_tensor_get_va(src[k]), n, (uint64_t)k);
    }
    for (int k = 0; k < N; k++) EXPECT(nrt_async_sendrecv_send_tensor(src[k], 0, nrt_tensor_get_size(src[k]), s, &sr[k]), NRT_SUCCESS);
    nrt_async_sendrecv_request_t *extra = NULL;
    EXPECT(nrt_async_sendrecv_send_tensor(src[N], 0, 1, s, &extra), NRT_RESOURCE);
    CHECK(extra == NULL, "refused post leaves *req NULL");
    /* Receives: also 128 at most on the receiving comm. */
    for (int k = 0; k < N; k++) EXPECT(nrt_async_sendrecv_recv_tensor(dst[k], 0, nrt_tensor_get_size(dst[k]), r, &rr[k]), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_recv_tensor(dst[N], 0, 1, r, &extra), NRT_RESOURCE);
    /* Requests count until test_request reports them done, even once their bytes have moved. */
    sleep_ms(300);
    EXPECT(nrt_async_sendrecv_send_tensor(src[N], 0, 1, s, &extra), NRT_RESOURCE);
    EXPECT(nrt_async_sendrecv_recv_tensor(dst[N], 0, 1, r, &extra), NRT_RESOURCE);
    CHECK(extra == NULL, "refused post leaves *req NULL");
    /* Reap the first send and receive: one slot frees on each side. */
    size_t x = 0;
    EXPECT(wait_req(sr[0], 30, &x), NRT_SUCCESS);
    CHECK(x == 1, "first send size %zu", x);
    EXPECT(wait_req(rr[0], 30, &x), NRT_SUCCESS);
    CHECK(x == 1, "first receive size %zu", x);
    EXPECT(nrt_async_sendrecv_send_tensor(src[N], 0, nrt_tensor_get_size(src[N]), s, &sr[N]), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_recv_tensor(dst[N], 0, nrt_tensor_get_size(dst[N]), r, &rr[N]), NRT_SUCCESS);
    /* Reap the rest in reverse order of posting: completion order is the engine's business. */
    for (int k = N; k >= 1; k--) {
        size_t n = nrt_tensor_get_size(src[k]), a = 0, b = 0;
        EXPECT(wait_req(rr[k], 60, &b), NRT_SUCCESS);
        EXPECT(wait_req(sr[k], 60, &a), NRT_SUCCESS);
        CHECK(a == n && b == n, "message %d: sizes %zu %zu, want %zu", k, a, b, n);
        CHECK(first_bad(nrt_tensor_get_va(dst[k]), n, (uint64_t)k) == SIZE_MAX, "message %d went to the wrong receive or was corrupted", k);
    }
    CHECK(first_bad(nrt_tensor_get_va(dst[0]), 1, 0) == SIZE_MAX, "message 0");
    for (int k = 0; k <= N; k++) {
        nrt_tensor_free(&src[k]);
        nrt_tensor_free(&dst[k]);
    }
    EXPECT(nrt_async_sendrecv_close(0), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_close(1), NRT_SUCCESS);
    EXPECT(nrt_close(), NRT_SUCCESS);
    return test_end();
}
