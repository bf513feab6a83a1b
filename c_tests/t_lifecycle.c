/* Lifecycle: calls before nrt_init, init/close of lncs, double init/close, lnc range, close with
 * an unconnected communicator or a pending request (error, then re-init refused until
 * nrt_close + nrt_init), nrt_close closing everything, and 20 init/transfer/close rounds. */
#include "common.h"

int main(void) {
    test_begin("t_lifecycle");
    int n = 0;
    nrt_async_sendrecv_comm_t *c = NULL;
    /* Before nrt_init. */
    EXPECT(nrt_async_sendrecv_init(0), NRT_UNINITIALIZED);
    EXPECT(nrt_async_sendrecv_close(0), NRT_UNINITIALIZED);
    EXPECT(nrt_async_sendrecv_connect("127.0.0.1", 1, 0, &c), NRT_UNINITIALIZED);
    EXPECT(nrt_async_sendrecv_flush(0), NRT_UNINITIALIZED);
    /* Limits need no init; NULL out-pointers are INVALID. */
    EXPECT(nrt_async_sendrecv_get_max_num_communicators_per_lnc(&n), NRT_SUCCESS);
    CHECK(n == 128, "communicators per lnc: %d", n);
    EXPECT(nrt_async_sendrecv_get_max_num_pending_request(&n), NRT_SUCCESS);
    CHECK(n == 128, "pending requests: %d", n);
    EXPECT(nrt_async_sendrecv_get_max_num_communicators_per_lnc(NULL), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_get_max_num_pending_request(NULL), NRT_INVALID);

    EXPECT(nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0"), NRT_SUCCESS);
    EXPECT(nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0"), NRT_SUCCESS); /* second call: no-op */
    EXPECT(nrt_init((nrt_framework_type_t)77, "1.0", "1.0"), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_init(-1), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_init(1024), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_close(-1), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_init(0), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(0), NRT_INVALID); /* already initialised */
    EXPECT(nrt_async_sendrecv_flush(0), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_connect("127.0.0.1", 1, 2, &c), NRT_UNINITIALIZED); /* lnc 2 not initialised */
    EXPECT(nrt_async_sendrecv_accept("127.0.0.1", 1, 2, &c), NRT_UNINITIALIZED);
    EXPECT(nrt_async_sendrecv_close(0), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_close(0), NRT_UNINITIALIZED); /* second close */
    EXPECT(nrt_async_sendrecv_flush(0), NRT_UNINITIALIZED);

    /* Close with a communicator that never connected: error, freed anyway, handle dead. */
    EXPECT(nrt_async_sendrecv_init(0), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_connect("127.0.0.1", 9, 0, &c), NRT_SUCCESS);
    bool done = true;
    EXPECT(nrt_async_sendrecv_test_comm(c, &done), NRT_SUCCESS);
    CHECK(!done, "nobody listens on lnc 9: not done");
    EXPECT(nrt_async_sendrecv_close(0), NRT_FAILURE);
    EXPECT(nrt_async_sendrecv_test_comm(c, &done), NRT_INVALID_HANDLE);
    EXPECT(nrt_async_sendrecv_init(0), NRT_FAILURE); /* previous close failed */
    EXPECT(nrt_async_sendrecv_init(0), NRT_FAILURE);
    EXPECT(nrt_close(), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(0), NRT_UNINITIALIZED); /* runtime closed */
    EXPECT(nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0"), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(0), NRT_SUCCESS); /* allowed again */

    /* Close with a pending request: error; the request handle is dead afterwards. */
    EXPECT(nrt_async_sendrecv_init(1), NRT_SUCCESS);
    nrt_async_sendrecv_comm_t *s = NULL, *r = NULL;
    if (pair("127.0.0.1", 0, 1, &s, &r)) {
        nrt_tensor_t *t = tensor(4096);
        nrt_async_sendrecv_request_t *q = NULL;
        EXPECT(nrt_async_sendrecv_recv_tensor(t, 0, 4096, r, &q), NRT_SUCCESS);
        EXPECT(nrt_async_sendrecv_close(1), NRT_FAILURE);
        size_t sz = 0;
        EXPECT(nrt_async_sendrecv_test_request(q, &done, &sz), NRT_INVALID_HANDLE);
        EXPECT(nrt_async_sendrecv_test_comm(r, &done), NRT_INVALID_HANDLE);
        nrt_tensor_free(&t);
    }
    EXPECT(nrt_async_sendrecv_close(0), NRT_SUCCESS); /* its comm connected; nothing was pending */
    EXPECT(nrt_async_sendrecv_test_comm(s, &done), NRT_INVALID_HANDLE);

    /* nrt_close closes every lnc still open and clears failed-close marks. */
    EXPECT(nrt_close(), NRT_SUCCESS);
    EXPECT(nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0"), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(1), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(3), NRT_SUCCESS);
    EXPECT(nrt_close(), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_close(3), NRT_UNINITIALIZED);

    /* 20 rounds of init, transfer, close: ports are reusable at once. */
    EXPECT(nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0"), NRT_SUCCESS);
    for (int round = 0; round < 20; round++) {
        EXPECT(nrt_async_sendrecv_init(0), NRT_SUCCESS);
        EXPECT(nrt_async_sendrecv_init(1), NRT_SUCCESS);
        if (pair("127.0.0.1", 0, 1, &s, &r)) xfer(s, r, 10000 + (size_t)round, 1, 3, (uint64_t)round);
        EXPECT(nrt_async_sendrecv_close(0), NRT_SUCCESS);
        EXPECT(nrt_async_sendrecv_close(1), NRT_SUCCESS);
    }
    EXPECT(nrt_close(), NRT_SUCCESS);
    return test_end();
}
