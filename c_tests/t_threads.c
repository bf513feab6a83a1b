/* Several threads posting on one communicator at once: 4 sender threads on the send comm, 4
 * receiver threads on the receive comm. Each message carries (thread, sequence) in its first
 * bytes and a pattern derived from them; every received message is checked whole, each
 * (thread, sequence) must arrive exactly once, and sizes must match. */
#include "common.h"
#include <pthread.h>
#include <stdatomic.h>

enum { T = 4, M = 150, MAXN = 40000 };

static nrt_async_sendrecv_comm_t *S, *R;
static atomic_int seen[T][M];
static atomic_int bad;

/* Size depends only on (thread, seq) so the receiver can check it from the header. */
static size_t size_of(int t, int m) { return 16 + (size_t)((t * 7919 + m * 104729) % (MAXN - 16)); }

static void *sender(void *arg) {
    int t = (int)(intptr_t)arg;
    nrt_tensor_t *x = tensor(MAXN);
    uint8_t *va = nrt_tensor_get_va(x);
    for (int m = 0; m < M; m++) {
        size_t n = size_of(t, m);
        fill(va, n, (uint64_t)(t * M + m));
        uint32_t hdr[2] = {(uint32_t)t, (uint32_t)m};
        memcpy(va, hdr, sizeof hdr);
        nrt_async_sendrecv_request_t *q = NULL;
        NRT_STATUS st;
        double end = now_s() + 30;
        while ((st = nrt_async_sendrecv_send_tensor(x, 0, n, S, &q)) == NRT_RESOURCE && now_s() < end) usleep(100);
        size_t got = 0;
        if (st != NRT_SUCCESS || wait_req(q, 60, &got) != NRT_SUCCESS || got != n) atomic_fetch_add(&bad, 1);
    }
    nrt_tensor_free(&x);
    return NULL;
}

static void *receiver(void *arg) {
    (void)arg;
    nrt_tensor_t *x = tensor(MAXN);
    uint8_t *va = nrt_tensor_get_va(x);
    for (int m = 0; m < M; m++) {
        nrt_async_sendrecv_request_t *q = NULL;
        NRT_STATUS st;
        double end = now_s() + 30;
        while ((st = nrt_async_sendrecv_recv_tensor(x, 0, MAXN, R, &q)) == NRT_RESOURCE && now_s() < end) usleep(100);
        size_t got = 0;
        if (st != NRT_SUCCESS || wait_req(q, 60, &got) != NRT_SUCCESS) {
            atomic_fetch_add(&bad, 1);
            continue;
        }
        uint32_t hdr[2];
        memcpy(hdr, va, sizeof hdr);
        if (hdr[0] >= T || hdr[1] >= M || got != size_of((int)hdr[0], (int)hdr[1])) {
            atomic_fetch_add(&bad, 1);
            continue;
        }
        /* The pattern of (thread, seq) under the 8-byte header: every byte checked. */
        uint8_t *ref = malloc(got);
        fill(ref, got, (uint64_t)(hdr[0] * M + hdr[1]));
        if (memcmp(ref + 8, va + 8, got - 8) != 0) atomic_fetch_add(&bad, 1);
        free(ref);
        atomic_fetch_add(&seen[hdr[0]][hdr[1]], 1);
    }
    nrt_tensor_free(&x);
    return NULL;
}

/* Part 2: connect and accept called from several threads at once (both are thread-safe). Which
 * connect pairs with which accept depends on the call order the threads happened to produce, so
 * each send comm carries its own index and the receivers must see every index exactly once. */
enum { CT = 4, CPER = 3, NC = CT * CPER, CN = 70001 };
static nrt_async_sendrecv_comm_t *CS[NC], *CR[NC];
static atomic_int cbad;

static void *connector(void *arg) {
    int t = (int)(intptr_t)arg;
    for (int i = 0; i < CPER; i++)
        if (nrt_async_sendrecv_connect(IP_B, 3, 2, &CS[t * CPER + i]) != NRT_SUCCESS) atomic_fetch_add(&cbad, 1);
    return NULL;
}

static void *acceptor(void *arg) {
    int t = (int)(intptr_t)arg;
    for (int i = 0; i < CPER; i++)
        if (nrt_async_sendrecv_accept(IP_A, 2, 3, &CR[t * CPER + i]) != NRT_SUCCESS) atomic_fetch_add(&cbad, 1);
    return NULL;
}

static void concurrent_setup(void) {
    EXPECT(nrt_async_sendrecv_init(2), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(3), NRT_SUCCESS);
    pthread_t th[2 * CT];
    for (int i = 0; i < CT; i++) {
        pthread_create(&th[i], NULL, connector, (void *)(intptr_t)i);
        pthread_create(&th[CT + i], NULL, acceptor, (void *)(intptr_t)i);
    }
    for (int i = 0; i < 2 * CT; i++) pthread_join(th[i], NULL);
    CHECK(atomic_load(&cbad) == 0, "%d concurrent connect/accept calls failed", atomic_load(&cbad));
    for (int k = 0; k < NC; k++) {
        EXPECT(poll_comm(CS[k], 20), NRT_SUCCESS);
        EXPECT(poll_comm(CR[k], 20), NRT_SUCCESS);
    }
    /* Distinct handles. */
    int distinct = 1;
    for (int i = 0; i < NC; i++)
        for (int j = i + 1; j < NC; j++) distinct &= CS[i] != CS[j] && CR[i] != CR[j];
    CHECK(distinct, "concurrent connects/accepts returned the same handle twice");
    nrt_tensor_t *src[NC], *dst[NC];
    nrt_async_sendrecv_request_t *sq[NC], *rq[NC];
    for (int k = 0; k < NC; k++) {
        src[k] = tensor(CN);
        dst[k] = tensor(CN);
        fill((uint8_t *)nrt_tensor_get_va(src[k]) + 4, CN - 4, 5000 + (uint64_t)k);
        uint32_t idx = (uint32_t)k;
        memcpy(nrt_tensor_get_va(src[k]), &idx, sizeof idx);
        EXPECT(nrt_async_sendrecv_recv_tensor(dst[k], 0, CN, CR[k], &rq[k]), NRT_SUCCESS);
        EXPECT(nrt_async_sendrecv_send_tensor(src[k], 0, CN, CS[k], &sq[k]), NRT_SUCCESS);
    }
    int seen_idx[NC] = {0};
    for (int k = 0; k < NC; k++) {
        size_t a = 0, b = 0;
        EXPECT(wait_req(sq[k], 60, &a), NRT_SUCCESS);
        EXPECT(wait_req(rq[k], 60, &b), NRT_SUCCESS);
        CHECK(a == CN && b == CN, "concurrently set-up comm %d: sizes %zu %zu", k, a, b);
        uint32_t idx = UINT32_MAX;
        memcpy(&idx, nrt_tensor_get_va(dst[k]), sizeof idx);
        if (idx < NC) {
            seen_idx[idx]++;
            verify((uint8_t *)nrt_tensor_get_va(dst[k]) + 4, CN - 4, 5000 + (uint64_t)idx, "message on a concurrently set-up comm");
        } else {
            CHECK(0, "receive comm %d got a message with index %u", k, idx);
        }
    }
    for (int k = 0; k < NC; k++) CHECK(seen_idx[k] == 1, "send comm %d's message arrived %d times", k, seen_idx[k]);
    for (int k = 0; k < NC; k++) {
        nrt_tensor_free(&src[k]);
        nrt_tensor_free(&dst[k]);
    }
    EXPECT(nrt_async_sendrecv_close(2), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_close(3), NRT_SUCCESS);
}

int main(void) {
    test_begin("t_threads");
    EXPECT(nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0"), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(0), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_init(1), NRT_SUCCESS);
    if (!pair("127.0.0.1", 0, 1, &S, &R)) return test_end();
    pthread_t th[2 * T];
    for (int i = 0; i < T; i++) pthread_create(&th[i], NULL, sender, (void *)(intptr_t)i);
    for (int i = 0; i < T; i++) pthread_create(&th[T + i], NULL, receiver, NULL);
    for (int i = 0; i < 2 * T; i++) pthread_join(th[i], NULL);
    CHECK(atomic_load(&bad) == 0, "%d messages failed, were corrupted or had the wrong size", atomic_load(&bad));
    int missing = 0, dup = 0;
    for (int t = 0; t < T; t++)
        for (int m = 0; m < M; m++) {
            int c = atomic_load(&seen[t][m]);
            missing += c == 0;
            dup += c > 1;
        }
    CHECK(missing == 0 && dup == 0, "%d messages missing, %d duplicated", missing, dup);
    concurrent_setup();
    EXPECT(nrt_async_sendrecv_close(0), NRT_SUCCESS);
    EXPECT(nrt_async_sendrecv_close(1), NRT_SUCCESS);
    EXPECT(nrt_close(), NRT_SUCCESS);
    return test_end();
}
