// C++11: the three headers compile with -Wall -Wextra -Werror -pedantic and a transfer works.
#include <nrt/nrt_async_sendrecv.h>
#include <nrt/nrt.h>
#include <nrt/nrt_status.h>
#include <nrt/nrt_version.h>
#include <cstring>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

static const char *env_or(const char *n, const char *d) {
    const char *v = std::getenv(n);
    return v && *v ? v : d;
}
#define IP_A env_or("NRT_TEST_IP_A", "127.0.0.1")
#define IP_B env_or("NRT_TEST_IP_B", "127.0.0.1")

static int failures = 0;
#define CHECK(c)                                                        \
    do {                                                                \
        if (!(c)) {                                                     \
            ++failures;                                                 \
            std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #c); \
        }                                                               \
    } while (0)

template <typename F>
static NRT_STATUS poll(F f, double secs) {
    auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(secs);
    bool done = false;
    NRT_STATUS st;
    while ((st = f(&done)) == NRT_SUCCESS && !done)
        if (std::chrono::steady_clock::now() > end) return NRT_TIMEOUT;
    return st;
}

int main() {
    const char *b = std::getenv("NRT_TEST_PORT_BASE");
    setenv("NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT", b ? b : "24500", 1);
    setenv("NEURON_RT_ASYNC_SENDRECV_LISTEN_ADDR", env_or("NRT_TEST_LISTEN_ADDR", "127.0.0.1"), 1);
    // Status names, the version and the core counts, from C++, before nrt_init.
    CHECK(std::strcmp(nrt_get_status_as_str(NRT_TIMEOUT), "NRT_TIMEOUT") == 0);
    CHECK(std::strcmp(nrt_get_status_as_str(static_cast<NRT_STATUS>(4242)), "NRT_UNKNOWN_STATUS") == 0);
    nrt_version_t ver{};
    CHECK(nrt_get_version(&ver, sizeof ver) == NRT_SUCCESS && std::strncmp(ver.rt_detail, "nrt-sendrecv ", 13) == 0);
    CHECK(nrt_get_version(nullptr, sizeof ver) == NRT_INVALID);
    unsetenv("NEURON_RT_VISIBLE_CORES");
    setenv("NEURON_RT_NUM_CORES", "2", 1);
    uint32_t cnt[4] = {0, 0, 0, 0};
    CHECK(nrt_get_visible_vnc_count(&cnt[0]) == NRT_SUCCESS && nrt_get_total_vnc_count(&cnt[1]) == NRT_SUCCESS &&
          nrt_get_visible_nc_count(&cnt[2]) == NRT_SUCCESS && nrt_get_total_nc_count(&cnt[3]) == NRT_SUCCESS);
    CHECK(cnt[0] == 2 && cnt[1] == 2 && cnt[2] == 2 && cnt[3] == 2);
    CHECK(nrt_get_visible_vnc_count(nullptr) == NRT_INVALID);
    unsetenv("NEURON_RT_NUM_CORES");
    CHECK(nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0") == NRT_SUCCESS);
    CHECK(nrt_async_sendrecv_init(0) == NRT_SUCCESS);
    CHECK(nrt_async_sendrecv_init(1) == NRT_SUCCESS);
    nrt_async_sendrecv_comm_t *s = nullptr, *r = nullptr;
    CHECK(nrt_async_sendrecv_connect(IP_B, 1, 0, &s) == NRT_SUCCESS);
    CHECK(nrt_async_sendrecv_accept(IP_A, 0, 1, &r) == NRT_SUCCESS);
    CHECK(poll([&](bool *d) { return nrt_async_sendrecv_test_comm(s, d); }, 20) == NRT_SUCCESS);
    CHECK(poll([&](bool *d) { return nrt_async_sendrecv_test_comm(r, d); }, 20) == NRT_SUCCESS);
    const size_t n = 3 * 1024 * 1024 + 11;
    std::vector<unsigned char> data(n);
    for (size_t i = 0; i < n; ++i) data[i] = static_cast<unsigned char>(i * 131 + (i >> 11));
    nrt_tensor_t *a = nullptr, *c = nullptr;
    CHECK(nrt_tensor_allocate(NRT_TENSOR_PLACEMENT_HOST, 0, n, "a", &a) == NRT_SUCCESS);
    CHECK(nrt_tensor_allocate(NRT_TENSOR_PLACEMENT_HOST, 0, n, "c", &c) == NRT_SUCCESS);
    CHECK(nrt_tensor_write(a, data.data(), 0, n) == NRT_SUCCESS);
    nrt_async_sendrecv_request_t *rq = nullptr, *sq = nullptr;
    CHECK(nrt_async_sendrecv_recv_tensor(c, 0, n, r, &rq) == NRT_SUCCESS);
    CHECK(nrt_async_sendrecv_send_tensor(a, 0, n, s, &sq) == NRT_SUCCESS);
    size_t x = 0, y = 0;
    CHECK(poll([&](bool *d) { return nrt_async_sendrecv_test_request(sq, d, &x); }, 30) == NRT_SUCCESS);
    CHECK(poll([&](bool *d) { return nrt_async_sendrecv_test_request(rq, d, &y); }, 30) == NRT_SUCCESS);
    CHECK(x == n && y == n);
    std::vector<unsigned char> got(n);
    CHECK(nrt_tensor_read(c, got.data(), 0, n) == NRT_SUCCESS);
    CHECK(got == data);
    nrt_tensor_free(&a);
    nrt_tensor_free(&c);
    CHECK(a == nullptr && c == nullptr);
    CHECK(nrt_async_sendrecv_close(0) == NRT_SUCCESS);
    CHECK(nrt_async_sendrecv_close(1) == NRT_SUCCESS);
    CHECK(nrt_close() == NRT_SUCCESS);
    std::printf("%s t_cxx\n", failures ? "FAIL" : "PASS");
    return failures ? 1 : 0;
}
