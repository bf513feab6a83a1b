/* Deadlines: connect to an lnc nobody listens on ends in NRT_TIMEOUT at the connect deadline
 * (and keeps saying so); an accept nobody connects to, likewise; a receive nobody sends to ends
 * in NRT_TIMEOUT at the request deadline, done = true, size = 0, and the communicator is failed. */
#include "common.h"

int main(void) {
    test_begin("t_timeout");
    setenv("NEURON_RT_ASYNC_SENDRECV_CONNECT_TIMEOUT_MS", "500", 1);
    setenv("NEURON_RT_ASYNC_SENDRECV_REQUEST_TIMEOUT_MS", "700", 1);
    EXPECT(nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0"), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(0), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(1), NRT_SUCCESS);
    nrt_async_sendrecv_comm_t *c = NULL, *a = NULL;
    double t0 = now_s();
    EXPECT(nrt_async_sendrecv_connect("127.0.0.1", 7, 0, &c), NRT_SUCCESS); /* lnc 7: nobody */
    EXPECT(nrt_async_sendrecv_accept("127.0.0.1", 8, 1, &a), NRT_SUCCESS);  /* nobody connects */
    EXPECT(poll_comm(c, 5), NRT_TIMEOUT);
    double dt = now_s() - t0;
    CHECK(dt >= 0.45 && dt < 3.0, "connect timed out after %.2f s (deadline 0.5 s)", dt);
    bool done = true;
    EXPECT(nrt_async_sendrecv_test_comm(c, &done), NRT_TIMEOUT); /* and keeps saying so */
    EXPECT(poll_comm(a, 5), NRT_TIMEOUT);
    /* A request deadline. */
    nrt_async_sendrecv_comm_t *s = NULL, *r = NULL;
    setenv("NEURON_RT_ASYNC_SENDRECV_CONNECT_TIMEOUT_MS", "10000", 1);
    EXPECT(nrt_async_sendrecv_init(2), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(3), NRT_SUCCESS);
    if (pair("127.0.0.1", 2, 3, &s, &r)) {
        nrt_tensor_t *t = tensor(1000);
        nrt_async_sendrecv_request_t *q = NULL;
        t0 = now_s();
        EXPECT(nrt_async_sendrecv_recv_tensor(t, 0, 1000, r, &q), NRT_SUCCESS);
        size_t sz = 77;
        EXPECT(wait_req(q, 5, &sz), NRT_TIMEOUT);
        dt = now_s() - t0;
        CHECK(sz == 0, "timed-out request size %zu", sz);
        CHECK(dt >= 0.65 && dt < 3.0, "request timed out after %.2f s (deadline 0.7 s)", dt);
        EXPECT(nrt_async_sendrecv_test_request(q, &done, &sz), NRT_INVALID_HANDLE); /* reaped */
        EXPECT(nrt_async_sendrecv_recv_tensor(t, 0, 1000, r, &q), NRT_FAILURE);   /* comm failed */
        nrt_tensor_free(&t);
    }
    EXPECT(nrt_async_sendrecv_close(0), NRT_FAILURE); /* its comm never connected */
    EXPECT(nrt_async_sendrecv_close(1), NRT_FAILURE);
    EXPECT(nrt_async_sendrecv_close(2), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_close(3), NRT_SUCCESS);
    EXPECT(nrt_close(), NRT_SUCCESS);
    return test_end();
}
