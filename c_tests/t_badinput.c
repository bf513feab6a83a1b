/* Bad input: NULL, forged and stale handles; NULL out-pointers; ranges beyond the tensor
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
    /* NULL and forged request handles. */
    EXPECT(nrt_async_sendrecv_test_request(NULL, &done, &sz), NRT_INVALID_HANDLE);
    for (size_t i = 0; i < sizeof forged_r / sizeof forged_r[0]; i++)
        EXPECT(nrt_async_sendrecv_test_request(forged_r[i], &done, &sz), NRT_INVALID_HANDLE);
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
    /* NULL out-pointers. */
    EXPECT(nrt_async_sendrecv_test_comm(s, NULL), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_send_tensor(t, 0, 10, s, NULL), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_recv_tensor(t, 0, 10, r, NULL), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_connect("127.0.0.1", 1, 0, NULL), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_accept("127.0.0.1", 0, 1, NULL), NRT_INVALID);
    /* Ranges beyond the tensor, overflow included. */
    EXPECT(nrt_async_sendrecv_send_tensor(t, 0, 1001, s, &q), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_send_tensor(t, 1001, 0, s, &q), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_send_tensor(t, 999, 2, s, &q), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_send_tensor(t, SIZE_MAX, 2, s, &q), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_send_tensor(t, 2, SIZE_MAX, s, &q), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_recv_tensor(t, 500, 501, r, &q), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_recv_tensor(t, SIZE_MAX, SIZE_MAX, r, &q), NRT_INVALID);
    CHECK(q == NULL, "a refused post leaves *req NULL");
    /* Wrong direction. */
    EXPECT(nrt_async_sendrecv_send_tensor(t, 0, 10, r, &q), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_recv_tensor(t, 0, 10, s, &q), NRT_INVALID);
    /* Addresses and lnc ids. */
    nrt_async_sendrecv_comm_t *c = NULL;
    EXPECT(nrt_async_sendrecv_connect(NULL, 1, 0, &c), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_accept(NULL, 1, 0, &c), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_connect("not an address!", 1, 0, &c), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_connect("300.1.2.3", 1, 0, &c), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_connect("", 1, 0, &c), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_connect("127.0.0.1", -1, 0, &c), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_connect("127.0.0.1", 1024, 0, &c), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_accept("127.0.0.1", 5000, 0, &c), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_connect("127.0.0.1", 1, -5, &c), NRT_INVALID);
    CHECK(c == NULL, "refused connect leaves *comm NULL");

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
    int untouched = 1;
    for (int i = 0; i < 100; i++) untouched &= ((uint8_t *)nrt_tensor_get_va(small))[i] == 0x33;
    CHECK(untouched, "a too-short receive writes nothing");
    xfer(s, r, 4097, 0, 1, 2);

    /* The communicator limit: 128 per lnc (connect + accept); the 129th is RESOURCE. */
    EXPECT(nrt_async_sendrecv_init(5), NRT_SUCCESS);
    int made = 0;
    for (int i = 0; i < 128; i++) {
        NRT_STATUS st = (i % 2) ? nrt_async_sendrecv_accept("127.0.0.1", 6, 5, &c) : nrt_async_sendrecv_connect("127.0.0.1", 6, 5, &c);
        made += st == NRT_SUCCESS;
    }
    CHECK(made == 128, "128 communicators on lnc 5, got %d", made);
    EXPECT(nrt_async_sendrecv_connect("127.0.0.1", 6, 5, &c), NRT_RESOURCE);
    EXPECT(nrt_async_sendrecv_accept("127.0.0.1", 6, 5, &c), NRT_RESOURCE);
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
