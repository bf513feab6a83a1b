/* Bad input: NULL, forged and stale handles (freed tensors, completed requests, closed comms);
 * NULL out-pointers (live requests survive them); ranges beyond the tensor
 * (overflow included); wrong direction; unparsable addresses; lnc ranges; the communicator
 * limit. After each bad call the same communicators still carry a good, byte-checked transfer. */
#include "common.h"

int main(void) {
    test_begin("t_badinput");
    EXPECT(nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0"), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(0), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(1), NRT_SUCCESS);
    nrt_async_sendrecv_comm_t *s = NULL, *r = NULL;
    if (!pair("127.0.0.1", 0, 1, &s, &r)) return test_end();
    nrt_tensor_t *t = tensor(1000);
    nrt_async_sendrecv_request_t *q = NULL;
    bool done = false;
    size_t sz = 0;
    int local = 0;
    nrt_async_sendrecv_comm_t *forged_c[] = {(nrt_async_sendrecv_comm_t *)(uintptr_t)0x12345678,
                                             (nrt_async_sendrecv_comm_t *)&local,
                                             (nrt_async_sendrecv_comm_t *)(uintptr_t)UINTPTR_MAX,
                                             (nrt_async_sendrecv_comm_t *)(uintptr_t)1};
    nrt_async_sendrecv_request_t *forged_r[] = {(nrt_async_sendrecv_request_t *)(uintptr_t)0x12345678,
                                                (nrt_async_sendrecv_request_t *)&local,
                                                (nrt_async_sendrecv_request_t *)(uintptr_t)UINTPTR_MAX};
    nrt_tensor_t *forged_t[] = {(nrt_tensor_t *)(uintptr_t)0x12345678, (nrt_tensor_t *)&local};

    /* NULL and forged communicator handles. */
    EXPECT(nrt_async_sendrecv_test_comm(NULL, &done), NRT_INVALID_HANDLE);
    EXPECT(nrt_async_sendrecv_send_tensor(t, 0, 10, NULL, &q), NRT_INVALID_HANDLE);
    EXPECT(nrt_async_sendrecv_recv_tensor(t, 0, 10, NULL, &q), NRT_INVALID_HANDLE);
    for (size_t i = 0; i < sizeof forged_c / sizeof forged_c[0]; i++) {
        EXPECT(nrt_async_sendrecv_test_comm(forged_c[i], &done), NRT_INVALID_HANDLE);
        EXPECT(nrt_async_sendrecv_send_tensor(t, 0, 10, forged_c[i], &q), NRT_INVALID_HANDLE);
        EXPECT(nrt_async_sendrecv_recv_tensor(t, 0, 10, forged_c[i], &q), NRT_INVALID_HANDLE);
    }
    xfer(s, r, 1001, 1, 2, 11); /* the comms are unharmed */
    /* NULL and forged request handles. */
    EXPECT(nrt_async_sendrecv_test_request(NULL, &done, &sz), NRT_INVALID_HANDLE);
    for (size_t i = 0; i < sizeof forged_r / sizeof forged_r[0]; i++)
        EXPECT(nrt_async_sendrecv_test_request(forged_r[i], &done, &sz), NRT_INVALID_HANDLE);
    xfer(s, r, 1002, 1, 2, 12);
    /* NULL and forged tensor handles. */
    EXPECT(nrt_async_sendrecv_send_tensor(NULL, 0, 10, s, &q), NRT_INVALID_HANDLE);
    EXPECT(nrt_async_sendrecv_recv_tensor(NULL, 0, 10, r, &q), NRT_INVALID_HANDLE);
    for (size_t i = 0; i < sizeof forged_t / sizeof forged_t[0]; i++) {
        EXPECT(nrt_async_sendrecv_send_tensor(forged_t[i], 0, 10, s, &q), NRT_INVALID_HANDLE);
        EXPECT(nrt_async_sendrecv_recv_tensor(forged_t[i], 0, 10, r, &q), NRT_INVALID_HANDLE);
    }
    /* A freed tensor is stale. */
    nrt_tensor_t *gone = tensor(64), *gone_copy = gone;
    nrt_tensor_free(&gone);
    CHECK(gone == NULL, "free sets the pointer to NULL");
    EXPECT(nrt_async_sendrecv_send_tensor(gone_copy, 0, 10, s, &q), NRT_INVALID_HANDLE);
    xfer(s, r, 1003, 1, 2, 13);
    /* NULL out-pointers. */
    EXPECT(nrt_async_sendrecv_test_comm(s, NULL), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_send_tensor(t, 0, 10, s, NULL), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_recv_tensor(t, 0, 10, r, NULL), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_connect(IP_B, 1, 0, NULL), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_accept(IP_A, 0, 1, NULL), NRT_INVALID);
    xfer(s, r, 1004, 1, 2, 14);
    /* NULL done/size on a live request: INVALID, and the request stays live and completes. */
    {
        nrt_async_sendrecv_request_t *lq = NULL, *lsq = NULL;
        EXPECT(nrt_async_sendrecv_recv_tensor(t, 0, 1000, r, &lq), NRT_SUCCESS);
        EXPECT(nrt_async_sendrecv_test_request(lq, NULL, &sz), NRT_INVALID);
        EXPECT(nrt_async_sendrecv_test_request(lq, &done, NULL), NRT_INVALID);
        EXPECT(nrt_async_sendrecv_test_request(lq, NULL, NULL), NRT_INVALID);
        nrt_tensor_t *src = tensor(600);
        fill(nrt_tensor_get_va(src), 600, 15);
        EXPECT(nrt_async_sendrecv_send_tensor(src, 0, 600, s, &lsq), NRT_SUCCESS);
        EXPECT(nrt_async_sendrecv_test_request(lsq, NULL, &sz), NRT_INVALID);
        /* Live handles of another kind where one is expected: INVALID_HANDLE, nothing touched. */
        EXPECT(nrt_async_sendrecv_test_comm((nrt_async_sendrecv_comm_t *)lq, &done), NRT_INVALID_HANDLE);
        EXPECT(nrt_async_sendrecv_test_comm((nrt_async_sendrecv_comm_t *)t, &done), NRT_INVALID_HANDLE);
        EXPECT(nrt_async_sendrecv_recv_tensor(t, 0, 10, (nrt_async_sendrecv_comm_t *)lq, &q), NRT_INVALID_HANDLE);
        EXPECT(nrt_async_sendrecv_send_tensor(src, 0, 10, (nrt_async_sendrecv_comm_t *)src, &q), NRT_INVALID_HANDLE);
        EXPECT(nrt_async_sendrecv_test_request((nrt_async_sendrecv_request_t *)s, &done, &sz), NRT_INVALID_HANDLE);
        EXPECT(nrt_async_sendrecv_test_request((nrt_async_sendrecv_request_t *)r, &done, &sz), NRT_INVALID_HANDLE);
        EXPECT(nrt_async_sendrecv_test_request((nrt_async_sendrecv_request_t *)t, &done, &sz), NRT_INVALID_HANDLE);
        EXPECT(nrt_async_sendrecv_send_tensor((nrt_tensor_t *)s, 0, 10, s, &q), NRT_INVALID_HANDLE);
        EXPECT(nrt_async_sendrecv_recv_tensor((nrt_tensor_t *)lq, 0, 10, r, &q), NRT_INVALID_HANDLE);
        CHECK(nrt_tensor_get_va((nrt_tensor_t *)s) == NULL, "a communicator handle as a tensor has no address");
        CHECK(q == NULL, "refused posts leave *req NULL");
        size_t a = 0, b = 0;
        EXPECT(wait_req(lsq, 20, &a), NRT_SUCCESS);
        EXPECT(wait_req(lq, 20, &b), NRT_SUCCESS);
        CHECK(a == 600 && b == 600, "sizes after NULL out-pointer calls: %zu %zu", a, b);
        verify(nrt_tensor_get_va(t), 600, 15, "message after NULL out-pointer calls");
        nrt_tensor_free(&src);
    }
    /* Ranges beyond the tensor, overflow included. */
    EXPECT(nrt_async_sendrecv_send_tensor(t, 0, 1001, s, &q), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_send_tensor(t, 1001, 0, s, &q), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_send_tensor(t, 999, 2, s, &q), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_send_tensor(t, SIZE_MAX, 2, s, &q), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_send_tensor(t, 2, SIZE_MAX, s, &q), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_recv_tensor(t, 500, 501, r, &q), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_recv_tensor(t, SIZE_MAX, SIZE_MAX, r, &q), NRT_INVALID);
    CHECK(q == NULL, "a refused post leaves *req NULL");
    xfer(s, r, 1005, 1, 2, 16);
    /* Wrong direction. */
    EXPECT(nrt_async_sendrecv_send_tensor(t, 0, 10, r, &q), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_recv_tensor(t, 0, 10, s, &q), NRT_INVALID);
    xfer(s, r, 1006, 1, 2, 17);
    /* Addresses and lnc ids. */
    nrt_async_sendrecv_comm_t *c = NULL;
    EXPECT(nrt_async_sendrecv_connect(NULL, 1, 0, &c), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_accept(NULL, 1, 0, &c), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_connect("not an address!", 1, 0, &c), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_connect("300.1.2.3", 1, 0, &c), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_connect("", 1, 0, &c), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_accept("::1::2", 1, 0, &c), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_accept("1.2.3.4.5", 1, 0, &c), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_connect("127.0.0.1 trailing", 1, 0, &c), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_connect(IP_B, -1, 0, &c), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_connect(IP_B, 1024, 0, &c), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_accept(IP_A, 5000, 0, &c), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_connect(IP_B, 1, -5, &c), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_accept(IP_A, -1, 1, &c), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_accept(IP_A, 0, 1024, &c), NRT_INVALID);
    CHECK(c == NULL, "refused connect leaves *comm NULL");

    /* Communicators whose set-up has not finished: send/recv INVALID. Stale (closed) ones: INVALID_HANDLE. */
    EXPECT(nrt_async_sendrecv_init(2), NRT_SUCCESS);
    nrt_async_sendrecv_comm_t *pend_s = NULL, *pend_r = NULL;
    EXPECT(nrt_async_sendrecv_connect(IP_B, 9, 2, &pend_s), NRT_SUCCESS); /* nobody on lnc 9 */
    EXPECT(nrt_async_sendrecv_accept(IP_A, 9, 2, &pend_r), NRT_SUCCESS);
    done = true;
    EXPECT(nrt_async_sendrecv_test_comm(pend_s, &done), NRT_SUCCESS);
    CHECK(!done, "a connect to an lnc nobody listens on is not done at once");
    EXPECT(nrt_async_sendrecv_send_tensor(t, 0, 10, pend_s, &q), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_recv_tensor(t, 0, 10, pend_r, &q), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_close(2), NRT_FAILURE); /* both never connected */
    EXPECT(nrt_async_sendrecv_test_comm(pend_s, &done), NRT_INVALID_HANDLE);
    EXPECT(nrt_async_sendrecv_test_comm(pend_r, &done), NRT_INVALID_HANDLE);
    EXPECT(nrt_async_sendrecv_send_tensor(t, 0, 10, pend_s, &q), NRT_INVALID_HANDLE);
    EXPECT(nrt_async_sendrecv_recv_tensor(t, 0, 10, pend_r, &q), NRT_INVALID_HANDLE);
    /* A connected pair, closed: its handles are stale. */
    EXPECT(nrt_async_sendrecv_init(3), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(4), NRT_SUCCESS);
    nrt_async_sendrecv_comm_t *old_s = NULL, *old_r = NULL;
    if (pair("127.0.0.1", 3, 4, &old_s, &old_r)) xfer(old_s, old_r, 10, 0, 0, 18);
    EXPECT(nrt_async_sendrecv_close(3), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_close(4), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_test_comm(old_s, &done), NRT_INVALID_HANDLE);
    EXPECT(nrt_async_sendrecv_test_comm(old_r, &done), NRT_INVALID_HANDLE);
    EXPECT(nrt_async_sendrecv_send_tensor(t, 0, 10, old_s, &q), NRT_INVALID_HANDLE);
    EXPECT(nrt_async_sendrecv_recv_tensor(t, 0, 10, old_r, &q), NRT_INVALID_HANDLE);
    CHECK(q == NULL, "refused posts leave *req NULL");

    /* The same comms still work, and a request tested after done is stale. */
    xfer(s, r, 777, 3, 5, 1);
    nrt_async_sendrecv_request_t *rq = NULL, *sq = NULL;
    EXPECT(nrt_async_sendrecv_recv_tensor(t, 0, 100, r, &rq), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_send_tensor(t, 0, 100, s, &sq), NRT_SUCCESS);
    EXPECT(wait_req(sq, 20, &sz), NRT_SUCCESS);
    EXPECT(wait_req(rq, 20, &sz), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_test_request(sq, &done, &sz), NRT_INVALID_HANDLE);
    EXPECT(nrt_async_sendrecv_test_request(rq, &done, &sz), NRT_INVALID_HANDLE);
    /* A receive shorter than the send: both fail, nothing written, the comm goes on. */
    nrt_tensor_t *big = tensor(5000), *small = tensor(100);
    memset(nrt_tensor_get_va(small), 0x33, 100);
    EXPECT(nrt_async_sendrecv_recv_tensor(small, 0, 100, r, &rq), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_send_tensor(big, 0, 5000, s, &sq), NRT_SUCCESS);
    EXPECT(wait_req(sq, 20, &sz), NRT_FAILURE);
    EXPECT(wait_req(rq, 20, &sz), NRT_FAILURE);
    verify_const(nrt_tensor_get_va(small), 100, 0x33, "a too-short receive writes nothing");
    xfer(s, r, 4097, 0, 1, 2);
    /* Boundaries that are valid: zero bytes at offset == size, a whole tensor. A zero-length
     * receive is shorter than any non-empty send: both fail, the comm goes on. */
    EXPECT(nrt_async_sendrecv_recv_tensor(small, 100, 0, r, &rq), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_send_tensor(big, 5000, 0, s, &sq), NRT_SUCCESS);
    sz = 99;
    EXPECT(wait_req(sq, 20, &sz), NRT_SUCCESS);
    CHECK(sz == 0, "zero-length send size %zu", sz);
    sz = 99;
    EXPECT(wait_req(rq, 20, &sz), NRT_SUCCESS);
    CHECK(sz == 0, "zero-length receive size %zu", sz);
    EXPECT(nrt_async_sendrecv_recv_tensor(small, 0, 0, r, &rq), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_send_tensor(big, 0, 1, s, &sq), NRT_SUCCESS);
    EXPECT(wait_req(sq, 20, &sz), NRT_FAILURE);
    EXPECT(wait_req(rq, 20, &sz), NRT_FAILURE);
    verify_const(nrt_tensor_get_va(small), 100, 0x33, "a zero-length receive writes nothing");
    xfer(s, r, 4098, 0, 1, 3);

    /* The communicator limit: 128 per lnc (connect + accept); the 129th is RESOURCE. */
    int maxc = 0;
    EXPECT(nrt_async_sendrecv_get_max_num_communicators_per_lnc(&maxc), NRT_SUCCESS);
    CHECK(maxc == 128, "communicators per lnc: %d, documented 128", maxc);
    if (maxc < 1 || maxc > 4096) maxc = 128;
    EXPECT(nrt_async_sendrecv_init(5), NRT_SUCCESS);
    int made = 0;
    for (int i = 0; i < maxc; i++) {
        NRT_STATUS st = (i % 2) ? nrt_async_sendrecv_accept(IP_A, 6, 5, &c) : nrt_async_sendrecv_connect(IP_B, 6, 5, &c);
        made += st == NRT_SUCCESS;
    }
    CHECK(made == maxc, "%d communicators on lnc 5, got %d", maxc, made);
    EXPECT(nrt_async_sendrecv_connect(IP_B, 6, 5, &c), NRT_RESOURCE);
    EXPECT(nrt_async_sendrecv_accept(IP_A, 6, 5, &c), NRT_RESOURCE);
    EXPECT(nrt_async_sendrecv_close(5), NRT_FAILURE); /* none of them connected */
    /* Other lncs were not disturbed. */
    xfer(s, r, 12345, 7, 9, 3);
    nrt_tensor_free(&t);
    nrt_tensor_free(&big);
    nrt_tensor_free(&small);
    EXPECT(nrt_async_sendrecv_close(0), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_close(1), NRT_SUCCESS);
    EXPECT(nrt_close(), NRT_SUCCESS);
    return test_end();
}
