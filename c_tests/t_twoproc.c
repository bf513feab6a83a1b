/* Two processes over loopback: a forked child receives on lnc 1, the parent sends from lnc 0;
 * sizes 0 to 64 MiB + 1, over 127.0.0.1 and ::1 (when the host has IPv6 loopback). The child
 * checks every byte and reports through its exit status. */
#include "common.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

static const size_t sizes[] = {0, 1, 4095, 65536, (1u << 20) + 3, (64u << 20) + 1};
enum { NS = sizeof sizes / sizeof sizes[0] };


static int child(int nips, const char **ips) {
    EXPECT(nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0"), NRT_SUCCESS);
    for (int i = 0; i < nips; i++) {
        setenv("NEURON_RT_ASYNC_SENDRECV_LISTEN_ADDR", i == 0 ? LISTEN_ADDR : ips[i], 1);
        EXPECT(nrt_async_sendrecv_init(1), NRT_SUCCESS);
        nrt_async_sendrecv_comm_t *r = NULL;
        EXPECT(nrt_async_sendrecv_accept(i == 0 ? IP_A : ips[i], 0, 1, &r), NRT_SUCCESS);
        if (!r || poll_comm(r, 30) != NRT_SUCCESS) { t_failures++; break; }
        for (int k = 0; k < NS; k++) {
            nrt_tensor_t *t = tensor(sizes[k] + 9);
            nrt_async_sendrecv_request_t *q = NULL;
            size_t got = 0;
            EXPECT(nrt_async_sendrecv_recv_tensor(t, 9, sizes[k], r, &q), NRT_SUCCESS);
            EXPECT(wait_req(q, 60, &got), NRT_SUCCESS);
            CHECK(got == sizes[k], "%s: size %zu, want %zu", ips[i], got, sizes[k]);
            EXPECT(nrt_async_sendrecv_flush(1), NRT_SUCCESS);
            CHECK(first_bad((uint8_t *)nrt_tensor_get_va(t) + 9, sizes[k], (uint64_t)(k + 10 * i)) == SIZE_MAX, "%s: %zu bytes corrupted", ips[i], sizes[k]);
            nrt_tensor_free(&t);
        }
        EXPECT(nrt_async_sendrecv_close(1), NRT_SUCCESS);
    }
    EXPECT(nrt_close(), NRT_SUCCESS);
    if (t_failures) fprintf(stderr, "receiver process: %d of %d checks failed\n", t_failures, t_checks);
    return t_failures ? 1 : 0;
}

int main(void) {
    test_begin("t_twoproc");
    const char *ips[2] = {"127.0.0.1", "::1"};
    int nips = ipv6_loopback_ok() ? 2 : 1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) _exit(child(nips, ips));
    EXPECT(nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0"), NRT_SUCCESS);
    for (int i = 0; i < nips; i++) {
        setenv("NEURON_RT_ASYNC_SENDRECV_LISTEN_ADDR", i == 0 ? LISTEN_ADDR : ips[i], 1);
        EXPECT(nrt_async_sendrecv_init(0), NRT_SUCCESS);
        nrt_async_sendrecv_comm_t *s = NULL;
        EXPECT(nrt_async_sendrecv_connect(i == 0 ? IP_B : ips[i], 1, 0, &s), NRT_SUCCESS);
        if (!s || poll_comm(s, 30) != NRT_SUCCESS) { t_failures++; break; }
        for (int k = 0; k < NS; k++) {
            nrt_tensor_t *t = tensor(sizes[k] + 3);
            fill((uint8_t *)nrt_tensor_get_va(t) + 3, sizes[k], (uint64_t)(k + 10 * i));
            nrt_async_sendrecv_request_t *q = NULL;
            size_t got = 0;
            EXPECT(nrt_async_sendrecv_send_tensor(t, 3, sizes[k], s, &q), NRT_SUCCESS);
            EXPECT(wait_req(q, 60, &got), NRT_SUCCESS);
            CHECK(got == sizes[k], "send size %zu", got);
            nrt_tensor_free(&t);
        }
        /* Every send was acknowledged, so the receiver has all the bytes: closing is safe. */
        EXPECT(nrt_async_sendrecv_close(0), NRT_SUCCESS);
    }
    int status = 0;
    double end = now_s() + 60;
    pid_t w = 0;
    while ((w = waitpid(pid, &status, WNOHANG)) == 0 && now_s() < end) usleep(10000);
    if (w == 0) kill(pid, SIGKILL), waitpid(pid, &status, 0);
    CHECK(w == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0, "receiver process failed (status %d)", status);
    EXPECT(nrt_close(), NRT_SUCCESS);
    if (nips == 1) printf("note: no IPv6 loopback here; only 127.0.0.1 was used\n");
    return test_end();
}
