/* Status names, the version and the core counts (nrt_status.h, nrt_version.h, nrt.h): each
 * called before nrt_init and after, with good and bad input, the core counts under each of the
 * vendor's variables (set in this process; the library reads them at each call). */
#include "common.h"
#include <nrt/nrt_version.h>
#include <stdlib.h>
#include <string.h>

static void counts(const char *visible, const char *num, const char *logical, NRT_STATUS want, uint32_t vis_vnc,
                   uint32_t tot_vnc, uint32_t vis_nc, uint32_t tot_nc) {
    if (visible) setenv("NEURON_RT_VISIBLE_CORES", visible, 1); else unsetenv("NEURON_RT_VISIBLE_CORES");
    if (num) setenv("NEURON_RT_NUM_CORES", num, 1); else unsetenv("NEURON_RT_NUM_CORES");
    if (logical) setenv("NEURON_LOGICAL_NC_CONFIG", logical, 1); else unsetenv("NEURON_LOGICAL_NC_CONFIG");
    uint32_t a = 7777, b = 7777, c = 7777, d = 7777;
    NRT_STATUS s1 = nrt_get_visible_vnc_count(&a), s2 = nrt_get_total_vnc_count(&b);
    NRT_STATUS s3 = nrt_get_visible_nc_count(&c), s4 = nrt_get_total_nc_count(&d);
    const char *v = visible ? visible : "(unset)", *n = num ? num : "(unset)", *l = logical ? logical : "(unset)";
    CHECK(s1 == want && s2 == want && s3 == want && s4 == want, "VISIBLE_CORES=%s NUM_CORES=%s LOGICAL=%s: statuses %s %s %s %s, want %s",
          v, n, l, st_name(s1), st_name(s2), st_name(s3), st_name(s4), st_name(want));
    if (want == NRT_SUCCESS) {
        CHECK(a == vis_vnc && b == tot_vnc && c == vis_nc && d == tot_nc,
              "VISIBLE_CORES=%s NUM_CORES=%s LOGICAL=%s: visible vnc %u total vnc %u visible nc %u total nc %u; want %u %u %u %u", v, n, l,
              a, b, c, d, vis_vnc, tot_vnc, vis_nc, tot_nc);
    } else {
        CHECK(a == 7777 && b == 7777 && c == 7777 && d == 7777, "a failed count leaves its out-value alone (%u %u %u %u)", a, b, c, d);
    }
}

static void run_all(void) {
    /* Status names: every NRT_STATUS value by name; anything else a fixed text, never NULL. */
    static const struct { NRT_STATUS s; const char *name; } names[] = {
        {NRT_SUCCESS, "NRT_SUCCESS"}, {NRT_FAILURE, "NRT_FAILURE"}, {NRT_INVALID, "NRT_INVALID"},
        {NRT_INVALID_HANDLE, "NRT_INVALID_HANDLE"}, {NRT_RESOURCE, "NRT_RESOURCE"}, {NRT_TIMEOUT, "NRT_TIMEOUT"},
        {NRT_HW_ERROR, "NRT_HW_ERROR"}, {NRT_QUEUE_FULL, "NRT_QUEUE_FULL"}, {NRT_LOAD_NOT_ENOUGH_NC, "NRT_LOAD_NOT_ENOUGH_NC"},
        {NRT_UNSUPPORTED_NEFF_VERSION, "NRT_UNSUPPORTED_NEFF_VERSION"}, {NRT_FAIL_HOST_MEM_ALLOC, "NRT_FAIL_HOST_MEM_ALLOC"},
        {NRT_UNINITIALIZED, "NRT_UNINITIALIZED"}, {NRT_CLOSED, "NRT_CLOSED"}, {NRT_QUEUE_EMPTY, "NRT_QUEUE_EMPTY"},
        {NRT_EXEC_UNIT_UNRECOVERABLE, "NRT_EXEC_UNIT_UNRECOVERABLE"}, {NRT_EXEC_BAD_INPUT, "NRT_EXEC_BAD_INPUT"},
        {NRT_EXEC_COMPLETED_WITH_NUM_ERR, "NRT_EXEC_COMPLETED_WITH_NUM_ERR"}, {NRT_EXEC_COMPLETED_WITH_ERR, "NRT_EXEC_COMPLETED_WITH_ERR"},
        {NRT_EXEC_NC_BUSY, "NRT_EXEC_NC_BUSY"}, {NRT_EXEC_OOB, "NRT_EXEC_OOB"}, {NRT_COLL_PENDING, "NRT_COLL_PENDING"},
        {NRT_EXEC_HW_ERR_COLLECTIVES, "NRT_EXEC_HW_ERR_COLLECTIVES"}, {NRT_EXEC_HW_ERR_HBM_UE, "NRT_EXEC_HW_ERR_HBM_UE"},
        {NRT_EXEC_HW_ERR_NC_UE, "NRT_EXEC_HW_ERR_NC_UE"}, {NRT_EXEC_HW_ERR_DMA_ABORT, "NRT_EXEC_HW_ERR_DMA_ABORT"},
        {NRT_EXEC_SW_NQ_OVERFLOW, "NRT_EXEC_SW_NQ_OVERFLOW"}, {NRT_EXEC_HW_ERR_REPAIRABLE_HBM_UE, "NRT_EXEC_HW_ERR_REPAIRABLE_HBM_UE"},
        {NRT_NETWORK_PROXY_FAILURE, "NRT_NETWORK_PROXY_FAILURE"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *got = nrt_get_status_as_str(names[i].s);
        CHECK(got && strcmp(got, names[i].name) == 0, "status %d is named '%s', want '%s'", (int)names[i].s, got ? got : "(NULL)", names[i].name);
        CHECK(got == nrt_get_status_as_str(names[i].s), "status %d: the same static string each time", (int)names[i].s);
    }
    const int odd[] = {-1, 8, 12, 16, 100, 1001, 1007, 1207, 0x7fffffff, (int)0x80000000};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        const char *got = nrt_get_status_as_str((NRT_STATUS)odd[i]);
        CHECK(got && strcmp(got, "NRT_UNKNOWN_STATUS") == 0, "unknown status %d gives '%s'", odd[i], got ? got : "(NULL)");
    }

    /* The version: this library's, the whole struct or the part a shorter caller asks for. */
    nrt_version_t v;
    memset(&v, 0xAB, sizeof v);
    EXPECT(nrt_get_version(&v, sizeof v), NRT_SUCCESS);
    CHECK(v.rt_maintenance == 0 && v.rt_major < 1000 && v.rt_minor < 1000 && v.rt_patch < 1000, "version %llu.%llu.%llu.%llu",
          (unsigned long long)v.rt_major, (unsigned long long)v.rt_minor, (unsigned long long)v.rt_patch, (unsigned long long)v.rt_maintenance);
    CHECK(memchr(v.rt_detail, 0, sizeof v.rt_detail) != NULL && strncmp(v.rt_detail, "nrt-sendrecv ", 13) == 0, "rt_detail '%.*s'",
          (int)sizeof v.rt_detail, v.rt_detail);
    CHECK(v.git_hash[0] == 0 && memchr(v.git_hash, 0, sizeof v.git_hash) != NULL, "git_hash is empty and terminated");
    unsigned char part[sizeof(nrt_version_t) + 8];
    memset(part, 0xCD, sizeof part);
    EXPECT(nrt_get_version((nrt_version_t *)(void *)part, 16), NRT_SUCCESS);
    uint64_t major, minor;
    memcpy(&major, part, 8);
    memcpy(&minor, part + 8, 8);
    CHECK(major == v.rt_major && minor == v.rt_minor, "a 16-byte caller gets major and minor");
    size_t untouched = 0;
    for (size_t i = 16; i < sizeof part; i++) untouched += part[i] == 0xCD;
    CHECK(untouched == sizeof part - 16, "a 16-byte caller's bytes beyond 16 are untouched (%zu of %zu)", untouched, sizeof part - 16);
    memset(part, 0xCD, sizeof part);
    EXPECT(nrt_get_version((nrt_version_t *)(void *)part, sizeof part), NRT_SUCCESS);
    CHECK(part[sizeof(nrt_version_t)] == 0xCD && part[sizeof part - 1] == 0xCD, "nothing written past the struct");
    EXPECT(nrt_get_version(NULL, sizeof v), NRT_INVALID);
    EXPECT(nrt_get_version(&v, 0), NRT_INVALID);

    /* Core counts under each variable (nc = vnc x NEURON_LOGICAL_NC_CONFIG). */
    counts(NULL, NULL, NULL, NRT_SUCCESS, 1, 1, 1, 1);
    counts(NULL, "8", NULL, NRT_SUCCESS, 8, 8, 8, 8);
    counts(NULL, "8", "2", NRT_SUCCESS, 8, 8, 16, 16);
    counts("0-3", NULL, NULL, NRT_SUCCESS, 4, 4, 4, 4);
    counts("4-7", "2", NULL, NRT_SUCCESS, 4, 8, 4, 8); /* VISIBLE_CORES wins over NUM_CORES */
    counts("1,3,8-11", NULL, "2", NRT_SUCCESS, 6, 12, 12, 24);
    counts("0-1023", NULL, NULL, NRT_SUCCESS, 1024, 1024, 1024, 1024);
    counts("3-1", NULL, NULL, NRT_INVALID, 0, 0, 0, 0);
    counts("1024", NULL, NULL, NRT_INVALID, 0, 0, 0, 0);
    counts("a", NULL, NULL, NRT_INVALID, 0, 0, 0, 0);
    counts(NULL, "0", NULL, NRT_INVALID, 0, 0, 0, 0);
    counts(NULL, "-2", NULL, NRT_INVALID, 0, 0, 0, 0);
    counts(NULL, NULL, "3", NRT_INVALID, 0, 0, 0, 0);
    unsetenv("NEURON_RT_VISIBLE_CORES");
    unsetenv("NEURON_RT_NUM_CORES");
    unsetenv("NEURON_LOGICAL_NC_CONFIG");
    EXPECT(nrt_get_total_nc_count(NULL), NRT_INVALID);
    EXPECT(nrt_get_visible_nc_count(NULL), NRT_INVALID);
    EXPECT(nrt_get_total_vnc_count(NULL), NRT_INVALID);
    EXPECT(nrt_get_visible_vnc_count(NULL), NRT_INVALID);
}

int main(void) {
    test_begin("t_info");
    run_all(); /* before nrt_init */
    EXPECT(nrt_init(NRT_FRAMEWORK_TYPE_NO_FW, "1.0", "1.0"), NRT_SUCCESS);
    run_all();
    EXPECT(nrt_close(), NRT_SUCCESS);
    return test_end();
}
