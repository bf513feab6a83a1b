/* Deadlines: connect to an lnc nobody listens on ends in NRT_TIMEOUT at the connect deadline
 * (and keeps saying so); an accept nobody connects to, likewise; a receive nobody sends to ends
 * in NRT_TIMEOUT at the request deadline, done = true, size = 0, and the communicator is failed. */
#include "common.h"

int main(void) {
    test_begin("t_timeout");
    setenv("NEURON_RT_ASYNC_SENDRECV_CONNECT_TIMEOUT_MS", "500", 1);
    setenv("NEURON_RT_ASYNC_SENDRECV_REQUEST_TIMEOUT_MS", "500", 1);
    EXPECT(nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0"), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(0), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(1), NRT_SUCCESS);
    nrt_async_sendrecv_comm_t *c = NULL, *a = NULL;
    double t0 = now_s();
    EXPECT(nrt_async_sendrecv_connect(IP_B, 7, 0, &c), NRT_SUCCESS); /* lnc 7: nobody */
    EXPECT(nrt_async_sendrecv_accept(IP_A, 8, 1, &a), NRT_SUCCESS);  /* nobody connects */
    EXPECT(poll_comm(c, 5), NRT_TIMEOUT);
    double dt = now_s() - t0;
    CHECK(dt >= 0.45 && dt < 3.0, "connect timed out after %.2f s (deadline 0.5 s)", dt);
    bool done = true;
    EXPECT(nrt_async_sendrecv_test_comm(c, &done), NRT_TIMEOUT); /* and keeps saying so */
    EXPECT(poll_comm(a, 5), NRT_TIMEOUT);
    dt = now_s() - t0;
    CHECK(dt >= 0.45 && dt < 3.0, "accept timed out after %.2f s (deadline 0.5 s)", dt);
    EXPECT(nrt_async_sendrecv_test_comm(a, &done), NRT_TIMEOUT); /* and keeps saying so */
    nrt_tensor_t *u = tensor(10);
    nrt_async_sendrecv_request_t *uq = NULL;
    NRT_STATUS st = nrt_async_sendrecv_send_tensor(u, 0, 10, c, &uq);
    CHECK(st == NRT_INVALID || st == NRT_FAILURE, "send on a timed-out comm: %s (want INVALID or FAILURE)", st_name(st));
    CHECK(uq == NULL, "refused send leaves *req NULL");
    nrt_tensor_free(&u);
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
        CHECK(dt >= 0.45 && dt < 3.0, "request timed out after %.2f s (deadline 0.5 s)", dt);
        EXPECT(nrt_async_sendrecv_test_request(q, &done, &sz), NRT_INVALID_HANDLE); /* reaped */
        EXPECT(nrt_async_sendrecv_recv_tensor(t, 0, 1000, r, &q), NRT_FAILURE);   /* comm failed */
        nrt_tensor_free(&t);
    }
    /* A send nobody receives (10 MiB: more than the sockets buffer) times out the same way. */
    EXPECT(nrt_async_sendrecv_init(4), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(5), NRT_SUCCESS);
    nrt_async_sendrecv_comm_t *s4 = NULL, *r5 = NULL;
    if (pair("127.0.0.1", 4, 5, &s4, &r5)) {
        const size_t n = (size_t)10 << 20;
        nrt_tensor_t *t = tensor(n);
        nrt_async_sendrecv_request_t *q = NULL;
        t0 = now_s();
        EXPECT(nrt_async_sendrecv_send_tensor(t, 0, n, s4, &q), NRT_SUCCESS);
        size_t sz = 77;
        EXPECT(wait_req(q, 5, &sz), NRT_TIMEOUT);
        dt = now_s() - t0;
        CHECK(sz == 0, "timed-out send size %zu", sz);
        CHECK(dt >= 0.45 && dt < 3.0, "send timed out after %.2f s (deadline 0.5 s)", dt);
        EXPECT(nrt_async_sendrecv_send_tensor(t, 0, 1, s4, &q), NRT_FAILURE); /* comm failed */
        nrt_tensor_free(&t);
    }
    EXPECT(nrt_async_sendrecv_close(4), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_close(5), NRT_SUCCESS);
    /* A connection from the wrong peer lnc never pairs: the accept (expecting lnc 8) times out,
     * and the connect (from lnc 6) does not succeed either. */
    setenv("NEURON_RT_ASYNC_SENDRECV_CONNECT_TIMEOUT_MS", "500", 1);
    EXPECT(nrt_async_sendrecv_init(6), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(7), NRT_SUCCESS);
    nrt_async_sendrecv_comm_t *c6 = NULL, *a7 = NULL;
    t0 = now_s();
    EXPECT(nrt_async_sendrecv_connect(IP_B, 7, 6, &c6), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_accept(IP_A, 8, 7, &a7), NRT_SUCCESS);
    EXPECT(poll_comm(a7, 5), NRT_TIMEOUT);
    NRT_STATUS cs = poll_comm(c6, 5);
    CHECK(cs == NRT_TIMEOUT || cs == NRT_FAILURE, "connect that no accept matches ended in %s (want TIMEOUT or FAILURE)", st_name(cs));
    dt = now_s() - t0;
    CHECK(dt < 3.0, "unmatched connect/accept took %.2f s to fail (deadline 0.5 s)", dt);
    EXPECT(nrt_async_sendrecv_close(6), NRT_FAILURE);
    EXPECT(nrt_async_sendrecv_close(7), NRT_FAILURE);
    EXPECT(nrt_async_sendrecv_close(0), NRT_FAILURE); /* its comm never connected */
    EXPECT(nrt_async_sendrecv_close(1), NRT_FAILURE);
    EXPECT(nrt_async_sendrecv_close(2), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_close(3), NRT_SUCCESS);
    EXPECT(nrt_close(), NRT_SUCCESS);
    return test_end();
}
