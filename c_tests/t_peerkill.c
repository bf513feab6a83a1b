/* A peer SIGKILLed mid-transfer: the sender's pending requests fail with NRT_FAILURE within 2 s,
 * new posts on that communicator fail, and another communicator pair in the same process (two
 * other lncs) carries on with a byte-checked transfer. */
#include "common.h"
#include <signal.h>
#include <sys/wait.h>

#define BIG ((size_t)256 << 20)

int main(void) {
    test_begin("t_peerkill");
    int go[2];
    if (pipe(go) != 0) return 1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) { /* receiver: posts receives for the first message only, signals, then idles */
        nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0");
        nrt_async_sendrecv_init(1);
        nrt_async_sendrecv_comm_t *r = NULL;
        nrt_async_sendrecv_accept(IP_A, 0, 1, &r);
        if (poll_comm(r, 30) != NRT_SUCCESS) _exit(3);
        nrt_tensor_t *t = tensor(BIG);
        nrt_async_sendrecv_request_t *q = NULL;
        nrt_async_sendrecv_recv_tensor(t, 0, BIG, r, &q);
        size_t got = 0;
        if (wait_req(q, 60, &got) != NRT_SUCCESS) _exit(4);
        /* No second receive: the next messages stall half-sent in the socket buffers. */
        if (write(go[1], "x", 1) != 1) _exit(5);
        for (int i = 0; i < 600; i++) usleep(100000); /* bounded: killed long before */
        _exit(6);
    }
    close(go[1]);
    EXPECT(nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0"), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(0), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(2), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(3), NRT_SUCCESS);
    nrt_async_sendrecv_comm_t *s = NULL, *s2 = NULL, *r2 = NULL;
    EXPECT(nrt_async_sendrecv_connect(IP_B, 1, 0, &s), NRT_SUCCESS);
    EXPECT(poll_comm(s, 30), NRT_SUCCESS);
    CHECK(pair("127.0.0.1", 2, 3, &s2, &r2), "second pair");
    nrt_tensor_t *t = tensor(BIG);
    fill(nrt_tensor_get_va(t), 4096, 1);
    nrt_async_sendrecv_request_t *q[3] = {0};
    size_t got = 0;
    EXPECT(nrt_async_sendrecv_send_tensor(t, 0, BIG, s, &q[0]), NRT_SUCCESS);
    EXPECT(wait_req(q[0], 60, &got), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_send_tensor(t, 0, BIG, s, &q[1]), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_send_tensor(t, 0, BIG, s, &q[2]), NRT_SUCCESS);
    char c;
    CHECK(read(go[0], &c, 1) == 1, "receiver ready");
    usleep(50000); /* let the second message fill the socket buffers */
    kill(pid, SIGKILL);
    double t0 = now_s();
    for (int i = 1; i < 3; i++) EXPECT(wait_req(q[i], 10, &got), NRT_FAILURE);
    double dt = now_s() - t0;
    CHECK(dt < 2.0, "pending requests failed after %.2f s (limit 2 s)", dt);
    printf("note: requests failed %.3f s after the peer was killed\n", dt);
    nrt_async_sendrecv_request_t *late = NULL;
    EXPECT(nrt_async_sendrecv_send_tensor(t, 0, 10, s, &late), NRT_FAILURE);
    /* The other pair carries on. */
    if (s2 && r2) xfer(s2, r2, (3u << 20) + 1, 1, 2, 42);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child killed (status %d)", status);
    nrt_tensor_free(&t);
    EXPECT(nrt_async_sendrecv_close(0), NRT_SUCCESS); /* connected once, nothing pending */
    EXPECT(nrt_async_sendrecv_close(2), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_close(3), NRT_SUCCESS);
    EXPECT(nrt_close(), NRT_SUCCESS);
    return test_end();
}
