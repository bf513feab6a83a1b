/* Lifecycle: calls before nrt_init, init/close of lncs, double init/close, lnc range, close with
 * an unconnected communicator or a pending request (error, then re-init refused until
 * nrt_close + nrt_init), nrt_close closing everything, and 20 init/transfer/close rounds. */
#include "common.h"
#include <arpa/inet.h>

/* A listening socket on 127.0.0.1:port, or -1. */
static int occupy(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 1) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* nrt_close with the library's log (fd 2) sent to a temporary file: its text, NUL-terminated, in
 * buf (and passed on to stderr). */
static NRT_STATUS nrt_close_logged(char *buf, size_t len) {
    buf[0] = 0;
    FILE *f = tmpfile();
    fflush(stderr);
    int saved = f ? dup(2) : -1;
    if (saved < 0 || dup2(fileno(f), 2) < 0) {
        if (saved >= 0) close(saved);
        if (f) fclose(f);
        return nrt_close(); /* nothing captured: the caller's check reports it */
    }
    NRT_STATUS st = nrt_close();
    dup2(saved, 2);
    close(saved);
    rewind(f);
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = 0;
    fclose(f);
    fputs(buf, stderr);
    return st;
}

int main(void) {
    test_begin("t_lifecycle");
    int n = 0;
    nrt_async_sendrecv_comm_t *c = NULL;
    /* Before nrt_init. */
    EXPECT(nrt_async_sendrecv_init(0), NRT_UNINITIALIZED);
    EXPECT(nrt_async_sendrecv_close(0), NRT_UNINITIALIZED);
    EXPECT(nrt_async_sendrecv_connect(IP_B, 1, 0, &c), NRT_UNINITIALIZED);
    EXPECT(nrt_async_sendrecv_flush(0), NRT_UNINITIALIZED);
    EXPECT(nrt_async_sendrecv_accept(IP_A, 1, 0, &c), NRT_UNINITIALIZED);
    CHECK(c == NULL, "a refused connect/accept leaves *comm NULL");
    /* Tensor functions need no runtime state. */
    nrt_tensor_t *early = NULL;
    EXPECT(nrt_tensor_allocate(NRT_TENSOR_PLACEMENT_HOST, 0, 64, "early", &early), NRT_SUCCESS);
    CHECK(early != NULL && nrt_tensor_get_size(early) == 64, "tensor allocated before nrt_init");
    nrt_tensor_free(&early);
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
    EXPECT(nrt_async_sendrecv_init(INT32_MIN), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_close(-1), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_close(1024), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_flush(-1), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_flush(1024), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_connect(IP_B, 1, 1024, &c), NRT_INVALID);
    EXPECT(nrt_async_sendrecv_accept(IP_A, 1, -1, &c), NRT_INVALID);
    /* An lnc whose port someone else holds: RESOURCE, and it stays uninitialised. */
    int fd = occupy(port_base() + 5);
    CHECK(fd >= 0, "could not occupy port %d for the test", port_base() + 5);
    if (fd >= 0) {
        EXPECT(nrt_async_sendrecv_init(5), NRT_RESOURCE);
        EXPECT(nrt_async_sendrecv_close(5), NRT_UNINITIALIZED);
        close(fd);
        EXPECT(nrt_async_sendrecv_init(5), NRT_SUCCESS); /* free again */
        EXPECT(nrt_async_sendrecv_close(5), NRT_SUCCESS);
    }
    /* The highest lnc id is valid (it listens on base + 1023). */
    EXPECT(nrt_async_sendrecv_init(1023), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_flush(1023), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_close(1023), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(0), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(0), NRT_INVALID); /* already initialised */
    EXPECT(nrt_async_sendrecv_flush(0), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_connect(IP_B, 1, 2, &c), NRT_UNINITIALIZED); /* lnc 2 not initialised */
    EXPECT(nrt_async_sendrecv_accept(IP_A, 1, 2, &c), NRT_UNINITIALIZED);
    EXPECT(nrt_async_sendrecv_close(0), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_close(0), NRT_UNINITIALIZED); /* second close */
    EXPECT(nrt_async_sendrecv_flush(0), NRT_UNINITIALIZED);

    /* Close with a communicator that never connected: error, freed anyway, handle dead. */
    EXPECT(nrt_async_sendrecv_init(0), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_connect(IP_B, 9, 0, &c), NRT_SUCCESS);
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
        EXPECT(nrt_async_sendrecv_recv_tensor(t, 0, 4096, r, &q), NRT_INVALID_HANDLE);
        EXPECT(nrt_async_sendrecv_init(1), NRT_FAILURE); /* its close failed */
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
    /* Handles of lncs that nrt_close closed are stale (checked after a fresh nrt_init). */
    /* (At log level warn: nrt_close says what it dropped.) */
    char *level = getenv("NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL");
    char was[32];
    snprintf(was, sizeof was, "%s", level ? level : "error");
    setenv("NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL", "warn", 1);
    EXPECT(nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0"), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(0), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(1), NRT_SUCCESS);
    nrt_async_sendrecv_request_t *live = NULL;
    nrt_tensor_t *lt = tensor(100);
    bool paired = pair("127.0.0.1", 0, 1, &s, &r);
    if (paired) EXPECT(nrt_async_sendrecv_recv_tensor(lt, 0, 100, r, &live), NRT_SUCCESS);
    char said[8192];
    EXPECT(nrt_close_logged(said, sizeof said), NRT_SUCCESS); /* closes lnc 0 and 1, pending receive included */
    if (paired)
        CHECK(strstr(said, "WARN: nrt_close: NRT_FAILURE: lnc 1: closed with 0 communicator(s) never connected and 1 request(s) in flight; all freed"),
              "nrt_close logs the receive it dropped (its log: %s)", said);
    setenv("NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL", was, 1);
    EXPECT(nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0"), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_test_comm(s, &done), NRT_INVALID_HANDLE);
    EXPECT(nrt_async_sendrecv_test_comm(r, &done), NRT_INVALID_HANDLE);
    size_t lsz = 0;
    EXPECT(nrt_async_sendrecv_test_request(live, &done, &lsz), NRT_INVALID_HANDLE);
    nrt_tensor_free(&lt);
    EXPECT(nrt_async_sendrecv_init(0), NRT_SUCCESS); /* nrt_close cleared any failed-close mark */
    EXPECT(nrt_async_sendrecv_init(1), NRT_SUCCESS);
    EXPECT(nrt_close(), NRT_SUCCESS);

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
