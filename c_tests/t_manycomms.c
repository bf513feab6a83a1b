/* 16 communicators between the same pair of lncs, created in interleaved call order: the k-th
 * connect pairs with the k-th accept, shown by a distinct pattern on each; then all carry
 * messages at once; a third lnc's traffic in the same process is independent. */
#include "common.h"

enum { K = 16 };

int main(void) {
    test_begin("t_manycomms");
    EXPECT(nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0"), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(0), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(1), NRT_SUCCESS);
    nrt_async_sendrecv_comm_t *s[K] = {0}, *r[K] = {0};
    /* Interleaved: accepts run ahead of connects for the first half, behind for the rest. */
    for (int k = 0; k < K / 2; k++) EXPECT(nrt_async_sendrecv_accept(IP_A, 0, 1, &r[k]), NRT_SUCCESS);
    for (int k = 0; k < K; k++) {
        EXPECT(nrt_async_sendrecv_connect(IP_B, 1, 0, &s[k]), NRT_SUCCESS);
        if (k % 3 == 0) usleep(2000);
    }
    for (int k = K / 2; k < K; k++) EXPECT(nrt_async_sendrecv_accept(IP_A, 0, 1, &r[k]), NRT_SUCCESS);
    for (int k = 0; k < K; k++) {
        EXPECT(poll_comm(s[k], 20), NRT_SUCCESS);
        EXPECT(poll_comm(r[k], 20), NRT_SUCCESS);
    }
    /* Post all receives first, then sends in reverse order: pairing must follow comms, not time. */
    nrt_tensor_t *src[K], *dst[K];
    nrt_async_sendrecv_request_t *sq[K], *rq[K];
    for (int k = 0; k < K; k++) {
        size_t n = 300000 + (size_t)k * 1111;
        src[k] = tensor(n);
        dst[k] = tensor(n);
        fill(nrt_tensor_get_va(src[k]), n, 1000 + (uint64_t)k);
        EXPECT(nrt_async_sendrecv_recv_tensor(dst[k], 0, n, r[k], &rq[k]), NRT_SUCCESS);
    }
    for (int k = K - 1; k >= 0; k--) EXPECT(nrt_async_sendrecv_send_tensor(src[k], 0, nrt_tensor_get_size(src[k]), s[k], &sq[k]), NRT_SUCCESS);
    for (int k = 0; k < K; k++) {
        size_t n = nrt_tensor_get_size(src[k]), a = 0, b = 0;
        EXPECT(wait_req(rq[k], 60, &b), NRT_SUCCESS);
        EXPECT(wait_req(sq[k], 60, &a), NRT_SUCCESS);
        CHECK(a == n && b == n, "comm %d sizes %zu %zu want %zu", k, a, b, n);
        CHECK(first_bad(nrt_tensor_get_va(dst[k]), n, 1000 + (uint64_t)k) == SIZE_MAX, "comm %d: k-th connect did not pair with k-th accept (or bytes corrupted)", k);
        nrt_tensor_free(&src[k]);
        nrt_tensor_free(&dst[k]);
    }
    /* Another pair of lncs, and a transfer per comm again. */
    EXPECT(nrt_async_sendrecv_init(2), NRT_SUCCESS);
    nrt_async_sendrecv_comm_t *s2 = NULL, *r2 = NULL;
    if (pair("127.0.0.1", 2, 0, &s2, &r2)) xfer(s2, r2, 123457, 1, 2, 77);
    for (int k = 0; k < K; k++) xfer(s[k], r[k], 4096 + (size_t)k, 1, 3, 2000 + (uint64_t)k);
    /* A peer that starts late: connect to lnc 4 before it is initialised (the connect keeps
     * retrying), and an accept on lnc 5 from lnc 6 before lnc 6 exists; both pair once it does. */
    nrt_async_sendrecv_comm_t *ls = NULL, *lr = NULL, *ls2 = NULL, *lr2 = NULL;
    EXPECT(nrt_async_sendrecv_connect(IP_B, 4, 2, &ls), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(5), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_accept(IP_A, 6, 5, &lr2), NRT_SUCCESS);
    sleep_ms(300);
    bool done = true;
    if (ls) EXPECT(nrt_async_sendrecv_test_comm(ls, &done), NRT_SUCCESS);
    CHECK(!done, "a connect to an lnc not yet initialised is not done");
    EXPECT(nrt_async_sendrecv_init(4), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(6), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_accept(IP_A, 2, 4, &lr), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_connect(IP_B, 5, 6, &ls2), NRT_SUCCESS);
    if (ls && lr && ls2 && lr2) {
        EXPECT(poll_comm(ls, 20), NRT_SUCCESS);
        EXPECT(poll_comm(lr, 20), NRT_SUCCESS);
        EXPECT(poll_comm(ls2, 20), NRT_SUCCESS);
        EXPECT(poll_comm(lr2, 20), NRT_SUCCESS);
        xfer(ls, lr, 100000, 1, 2, 88);
        xfer(ls2, lr2, 100001, 2, 1, 89);
    }
    EXPECT(nrt_async_sendrecv_close(4), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_close(5), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_close(6), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_close(2), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_close(0), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_close(1), NRT_SUCCESS);
    EXPECT(nrt_close(), NRT_SUCCESS);
    return test_end();
}
