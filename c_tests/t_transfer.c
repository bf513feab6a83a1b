/* Transfers of 0, 1, 4095, 1 MiB + 3 and 256 MiB at odd offsets over 127.0.0.1 and ::1, every
 * byte checked; receives longer than the send; a receive shorter than the send; flush. */
#include "common.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>


/* Ranges that end exactly at the end of both tensors (offset + length == size). */
static void exact_end(nrt_async_sendrecv_comm_t *s, nrt_async_sendrecv_comm_t *r, size_t n, uint64_t seed) {
    nrt_tensor_t *a = tensor(n + 11), *b = tensor(n + 17);
    if (!a || !b) return;
    fill((uint8_t *)nrt_tensor_get_va(a) + 11, n, seed);
    memset(nrt_tensor_get_va(b), 0x5A, n + 17);
    nrt_async_sendrecv_request_t *rq = NULL, *sq = NULL;
    size_t x = 0, y = 0;
    EXPECT(nrt_async_sendrecv_recv_tensor(b, 17, n, r, &rq), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_send_tensor(a, 11, n, s, &sq), NRT_SUCCESS);
    EXPECT(wait_req(sq, 60, &x), NRT_SUCCESS);
    EXPECT(wait_req(rq, 60, &y), NRT_SUCCESS);
    CHECK(x == n && y == n, "exact-end sizes %zu %zu, want %zu", x, y, n);
    verify((uint8_t *)nrt_tensor_get_va(b) + 17, n, seed, "message ending at the tensor's end");
    verify_const(nrt_tensor_get_va(b), 17, 0x5A, "bytes before an exact-end receive");
    nrt_tensor_free(&a);
    nrt_tensor_free(&b);
}

/* Tensors freed while their transfer is in flight: the memory stays valid until it ends, the
 * transfer completes, and the bytes arrive (a slice of the receive tensor, taken before, sees them). */
static void freed_mid_transfer(nrt_async_sendrecv_comm_t *s, nrt_async_sendrecv_comm_t *r, uint64_t seed) {
    const size_t n = (4u << 20) + 1;
    nrt_tensor_t *a = tensor(n), *b = tensor(n), *view = NULL;
    if (!a || !b) return;
    EXPECT(nrt_tensor_allocate_slice(b, 0, n, "view", &view), NRT_SUCCESS);
    fill(nrt_tensor_get_va(a), n, seed);
    nrt_async_sendrecv_request_t *rq = NULL, *sq = NULL;
    size_t x = 0, y = 0;
    EXPECT(nrt_async_sendrecv_recv_tensor(b, 0, n, r, &rq), NRT_SUCCESS);
    nrt_tensor_free(&b);
    EXPECT(nrt_async_sendrecv_send_tensor(a, 0, n, s, &sq), NRT_SUCCESS);
    nrt_tensor_free(&a);
    EXPECT(wait_req(sq, 60, &x), NRT_SUCCESS);
    EXPECT(wait_req(rq, 60, &y), NRT_SUCCESS);
    CHECK(x == n && y == n, "sizes with freed tensors %zu %zu, want %zu", x, y, n);
    if (view) verify(nrt_tensor_get_va(view), n, seed, "message whose tensors were freed mid-transfer");
    nrt_tensor_free(&view);
}

/* Every placement on both ends, and a caller's buffer attached to an empty tensor on both ends. */
static void placements(nrt_async_sendrecv_comm_t *s, nrt_async_sendrecv_comm_t *r) {
    const nrt_tensor_placement_t pl[] = {NRT_TENSOR_PLACEMENT_DEVICE, NRT_TENSOR_PLACEMENT_HOST, NRT_TENSOR_PLACEMENT_VIRTUAL};
    const size_t n = 200003;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            nrt_tensor_t *a = NULL, *b = NULL;
            EXPECT(nrt_tensor_allocate(pl[i], i, n, "src", &a), NRT_SUCCESS);
            EXPECT(nrt_tensor_allocate(pl[j], j, n, "dst", &b), NRT_SUCCESS);
            if (!a || !b) continue;
            uint64_t seed = 600 + (uint64_t)(3 * i + j);
            fill(nrt_tensor_get_va(a), n, seed);
            nrt_async_sendrecv_request_t *rq = NULL, *sq = NULL;
            size_t x = 0, y = 0;
            EXPECT(nrt_async_sendrecv_recv_tensor(b, 0, n, r, &rq), NRT_SUCCESS);
            EXPECT(nrt_async_sendrecv_send_tensor(a, 0, n, s, &sq), NRT_SUCCESS);
            EXPECT(wait_req(sq, 60, &x), NRT_SUCCESS);
            EXPECT(wait_req(rq, 60, &y), NRT_SUCCESS);
            CHECK(x == n && y == n, "placement %d -> %d sizes %zu %zu", i, j, x, y);
            verify(nrt_tensor_get_va(b), n, seed, "message between placements");
            nrt_tensor_free(&a);
            nrt_tensor_free(&b);
        }
    /* Attached caller buffers. */
    uint8_t *ub = malloc(n), *vb = malloc(n + 2);
    nrt_tensor_t *a = NULL, *b = NULL;
    EXPECT(nrt_tensor_allocate_empty("usrc", &a), NRT_SUCCESS);
    EXPECT(nrt_tensor_allocate_empty("udst", &b), NRT_SUCCESS);
    if (!ub || !vb || !a || !b) return;
    EXPECT(nrt_tensor_attach_buffer(a, ub, n), NRT_SUCCESS);
    EXPECT(nrt_tensor_attach_buffer(b, vb, n + 2), NRT_SUCCESS);
    fill(ub, n, 650);
    memset(vb, 0x5A, n + 2);
    nrt_async_sendrecv_request_t *rq = NULL, *sq = NULL;
    size_t x = 0, y = 0;
    EXPECT(nrt_async_sendrecv_recv_tensor(b, 1, n + 1, r, &rq), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_send_tensor(a, 0, n, s, &sq), NRT_SUCCESS);
    EXPECT(wait_req(sq, 60, &x), NRT_SUCCESS);
    EXPECT(wait_req(rq, 60, &y), NRT_SUCCESS);
    CHECK(x == n && y == n, "attached buffers: sizes %zu %zu", x, y);
    verify(vb + 1, n, 650, "message received into an attached caller buffer");
    CHECK(vb[0] == 0x5A && vb[n + 1] == 0x5A, "bytes around the attached receive range untouched");
    nrt_tensor_free(&a);
    nrt_tensor_free(&b);
    free(ub);
    free(vb);
}

/* Many small messages with up to W in flight each way: FIFO pairing under a steady stream. */
static void stream_small(nrt_async_sendrecv_comm_t *s, nrt_async_sendrecv_comm_t *r) {
    enum { MSGS = 3000, W = 64, MAXN = 3000 };
    static nrt_tensor_t *src[W], *dst[W];
    static nrt_async_sendrecv_request_t *sq[W], *rq[W];
    for (int w = 0; w < W; w++) {
        src[w] = tensor(MAXN);
        dst[w] = tensor(MAXN);
        sq[w] = rq[w] = NULL;
    }
    int bad = 0;
    double end = now_s() + 60;
    for (int m = 0; m < MSGS + W && now_s() < end; m++) {
        int w = m % W;
        if (m >= W) { /* reap message m - W from slot w */
            int k = m - W;
            size_t n = (size_t)(k * 7919) % MAXN, x = 0, y = 0;
            if (wait_req(sq[w], 30, &x) != NRT_SUCCESS || wait_req(rq[w], 30, &y) != NRT_SUCCESS || x != n || y != n) bad++;
            else if (first_bad(nrt_tensor_get_va(dst[w]), n, 10000 + (uint64_t)k) != SIZE_MAX) bad++;
        }
        if (m < MSGS) {
            size_t n = (size_t)(m * 7919) % MAXN;
            fill(nrt_tensor_get_va(src[w]), n, 10000 + (uint64_t)m);
            if (nrt_async_sendrecv_recv_tensor(dst[w], 0, MAXN, r, &rq[w]) != NRT_SUCCESS) bad++;
            if (nrt_async_sendrecv_send_tensor(src[w], 0, n, s, &sq[w]) != NRT_SUCCESS) bad++;
        }
        if (bad) break;
    }
    CHECK(bad == 0, "%d of %d pipelined small messages failed, had the wrong size or the wrong bytes", bad, MSGS);
    for (int w = 0; w < W; w++) {
        nrt_tensor_free(&src[w]);
        nrt_tensor_free(&dst[w]);
    }
}

/* Sends of mixed sizes (small ones may travel eagerly, large ones wait for the receiver) all
 * posted before any receive, then the receives, then the same again with receives first: every
 * message lands in its own receive, in order, every byte checked. */
static void mixed_before_receives(nrt_async_sendrecv_comm_t *s, nrt_async_sendrecv_comm_t *r) {
    enum { K = 24 };
    for (int round = 0; round < 2; round++) {
        nrt_tensor_t *src[K], *dst[K];
        nrt_async_sendrecv_request_t *sq[K], *rq[K];
        for (int k = 0; k < K; k++) {
            size_t n = (k % 5 == 4) ? (size_t)(300000 + k) : (size_t)(k * 173 % 4097);
            src[k] = tensor(n);
            dst[k] = tensor(n + 8);
            fill(nrt_tensor_get_va(src[k]), n, 9000 + (uint64_t)(round * K + k));
        }
        for (int phase = 0; phase < 2; phase++)
            for (int k = 0; k < K; k++) {
                if (phase == round) EXPECT(nrt_async_sendrecv_send_tensor(src[k], 0, nrt_tensor_get_size(src[k]), s, &sq[k]), NRT_SUCCESS);
                else EXPECT(nrt_async_sendrecv_recv_tensor(dst[k], 0, nrt_tensor_get_size(dst[k]), r, &rq[k]), NRT_SUCCESS);
            }
        for (int k = 0; k < K; k++) {
            size_t n = nrt_tensor_get_size(src[k]), a = 0, b = 0;
            EXPECT(wait_req(rq[k], 60, &b), NRT_SUCCESS);
            EXPECT(wait_req(sq[k], 60, &a), NRT_SUCCESS);
            CHECK(a == n && b == n, "mixed round %d message %d: sizes %zu/%zu, want %zu", round, k, a, b, n);
            CHECK(first_bad(nrt_tensor_get_va(dst[k]), n, 9000 + (uint64_t)(round * K + k)) == SIZE_MAX, "mixed round %d message %d corrupted or misrouted", round, k);
            nrt_tensor_free(&src[k]);
            nrt_tensor_free(&dst[k]);
        }
    }
}

static void run(const char *ip, int big) {
    nrt_async_sendrecv_comm_t *s = NULL, *r = NULL;
    if (!pair(ip, 0, 1, &s, &r)) return;
    const size_t sizes[] = {0, 1, 4095, (1u << 20) + 3};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) xfer(s, r, sizes[i], 7, 13, i);
    if (big) xfer(s, r, (size_t)256 << 20, 7, 13, 99);
    mixed_before_receives(s, r);
    /* Over verbs with writes of at most 1 MiB (the RDMA VM sets NEURON_RT_ASYNC_SENDRECV_RDMA_MAX_WRITE):
     * a message longer than one write goes as several, at odd offsets, every byte checked. */
    const char *mw = getenv("NEURON_RT_ASYNC_SENDRECV_RDMA_MAX_WRITE");
    if (mw && *mw) xfer(s, r, (64u << 20) + 3, 7, 13, 98);
    /* Receives longer than the send complete with the send's size; bytes beyond stay untouched. */
    xfer_ex(s, r, 100, 7, 13, (size_t)1 << 20, 40);
    xfer_ex(s, r, 0, 0, 1, 4096, 41);
    xfer_ex(s, r, 3u << 20, 1, 2, 1, 42);
    xfer_ex(s, r, 0, 0, 0, 0, 45); /* zero into zero */
    exact_end(s, r, (1u << 20) + 5, 46);
    freed_mid_transfer(s, r, 47);
    placements(s, r);
    stream_small(s, r);
    /* A receive shorter than the send fails both, then the comm goes on. */
    nrt_tensor_t *a = tensor(70000), *b = tensor(70000);
    nrt_async_sendrecv_request_t *rq = NULL, *sq = NULL;
    size_t sz = 1;
    fill(nrt_tensor_get_va(a), 70000, 43);
    memset(nrt_tensor_get_va(b), 0x77, 70000);
    EXPECT(nrt_async_sendrecv_recv_tensor(b, 1, 69998, r, &rq), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_send_tensor(a, 0, 69999, s, &sq), NRT_SUCCESS);
    EXPECT(wait_req(sq, 30, &sz), NRT_FAILURE);
    CHECK(sz == 0, "failed send reports size %zu", sz);
    sz = 1;
    EXPECT(wait_req(rq, 30, &sz), NRT_FAILURE);
    CHECK(sz == 0, "failed receive reports size %zu", sz);
    verify_const(nrt_tensor_get_va(b), 70000, 0x77, "a too-short receive writes nothing");
    /* A one-byte-short receive of a large message (several chunks), too. */
    nrt_tensor_t *c = tensor(3u << 20), *d = tensor(3u << 20);
    memset(nrt_tensor_get_va(d), 0x78, 3u << 20);
    EXPECT(nrt_async_sendrecv_recv_tensor(d, 0, (3u << 20) - 1, r, &rq), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_send_tensor(c, 0, 3u << 20, s, &sq), NRT_SUCCESS);
    EXPECT(wait_req(sq, 30, &sz), NRT_FAILURE);
    EXPECT(wait_req(rq, 30, &sz), NRT_FAILURE);
    verify_const(nrt_tensor_get_va(d), 3u << 20, 0x78, "a too-short receive of 3 MiB writes nothing");
    nrt_tensor_free(&c);
    nrt_tensor_free(&d);
    /* The communicator is still usable after both. */
    xfer(s, r, 65537, 7, 13, 44);
    /* Several messages queued both ways keep FIFO order. */
    enum { K = 6 };
    nrt_tensor_t *src[K], *dst[K];
    nrt_async_sendrecv_request_t *sr[K], *rr[K];
    for (int k = 0; k < K; k++) {
        size_t n = 1000u * (size_t)(k + 1) * (size_t)(k + 1) * 37u;
        src[k] = tensor(n);
        dst[k] = tensor(n);
        fill(nrt_tensor_get_va(src[k]), n, 500 + (uint64_t)k);
        EXPECT(nrt_async_sendrecv_send_tensor(src[k], 0, n, s, &sr[k]), NRT_SUCCESS);
    }
    for (int k = 0; k < K; k++) EXPECT(nrt_async_sendrecv_recv_tensor(dst[k], 0, nrt_tensor_get_size(dst[k]), r, &rr[k]), NRT_SUCCESS);
    for (int k = 0; k < K; k++) {
        size_t n = nrt_tensor_get_size(src[k]), x = 0, y = 0;
        EXPECT(wait_req(sr[k], 60, &x), NRT_SUCCESS);
        EXPECT(wait_req(rr[k], 60, &y), NRT_SUCCESS);
        CHECK(x == n && y == n, "message %d sizes %zu %zu", k, x, y);
        verify(nrt_tensor_get_va(dst[k]), n, 500 + (uint64_t)k, "queued message (FIFO order)");
        nrt_tensor_free(&src[k]);
        nrt_tensor_free(&dst[k]);
    }
    EXPECT(nrt_async_sendrecv_flush(1), NRT_SUCCESS);
    xfer(s, r, 5, 1, 1, 7);
    nrt_tensor_free(&a);
    nrt_tensor_free(&b);
}

int main(void) {
    test_begin("t_transfer");
    EXPECT(nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0"), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(0), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(1), NRT_SUCCESS);
    run("127.0.0.1", 1);
    EXPECT(nrt_async_sendrecv_close(0), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_close(1), NRT_SUCCESS);
    if (ipv6_loopback_ok()) {
        setenv("NEURON_RT_ASYNC_SENDRECV_LISTEN_ADDR", "::1", 1); /* read at init */
        EXPECT(nrt_async_sendrecv_init(0), NRT_SUCCESS);
        EXPECT(nrt_async_sendrecv_init(1), NRT_SUCCESS);
        run("::1", 0);
        EXPECT(nrt_async_sendrecv_close(0), NRT_SUCCESS);
        EXPECT(nrt_async_sendrecv_close(1), NRT_SUCCESS);
    } else {
        printf("note: no IPv6 loopback here; the ::1 half was skipped\n");
    }
    /* The number of TCP streams is the connecting side's choice: 1 and 16 against a receiver
     * initialised with a different number. */
    setenv("NEURON_RT_ASYNC_SENDRECV_LISTEN_ADDR", LISTEN_ADDR, 1);
    const char *streams[][2] = {{"1", "16"}, {"16", "1"}};
    for (int i = 0; i < 2; i++) {
        setenv("NEURON_RT_ASYNC_SENDRECV_TCP_STREAMS", streams[i][0], 1);
        EXPECT(nrt_async_sendrecv_init(2), NRT_SUCCESS);
        setenv("NEURON_RT_ASYNC_SENDRECV_TCP_STREAMS", streams[i][1], 1);
        EXPECT(nrt_async_sendrecv_init(3), NRT_SUCCESS);
        nrt_async_sendrecv_comm_t *s = NULL, *r = NULL;
        if (pair("127.0.0.1", 2, 3, &s, &r)) {
            xfer(s, r, (9u << 20) + 7, 3, 5, 700 + (uint64_t)i);
            xfer(s, r, 1, 0, 0, 702 + (uint64_t)i);
        }
        EXPECT(nrt_async_sendrecv_close(2), NRT_SUCCESS);
        EXPECT(nrt_async_sendrecv_close(3), NRT_SUCCESS);
    }
    unsetenv("NEURON_RT_ASYNC_SENDRECV_TCP_STREAMS");
    EXPECT(nrt_close(), NRT_SUCCESS);
    return test_end();
}
