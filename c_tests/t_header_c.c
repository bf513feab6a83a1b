/* The headers in C11 (-pedantic) and the ABI facts: enum values, sizes, and the function types
 * (assigned to pointers of the vendor's prototypes). Each header on its own and all six include
 * orders are compiled by run.sh (the t_header_order line), in C11 and C++11. */
#include <nrt/nrt_status.h>
#include <nrt/nrt.h>
#include <nrt/nrt_async_sendrecv.h>
#include <nrt/nrt_version.h>
#include <nrt/nrt_status.h> /* twice: include guards */
#include <stddef.h>
#include <stdio.h>

_Static_assert(sizeof(NRT_STATUS) == sizeof(int), "NRT_STATUS is int-sized");
_Static_assert(sizeof(nrt_tensor_placement_t) == sizeof(int), "placement is int-sized");
_Static_assert(sizeof(nrt_framework_type_t) == sizeof(int), "framework type is int-sized");

/* The vendor's prototypes, written out: a mismatch in any parameter fails to compile. */
static NRT_STATUS (*const p1)(int *) = nrt_async_sendrecv_get_max_num_communicators_per_lnc;
static NRT_STATUS (*const p2)(int *) = nrt_async_sendrecv_get_max_num_pending_request;
static NRT_STATUS (*const p3)(int) = nrt_async_sendrecv_init;
static NRT_STATUS (*const p4)(int) = nrt_async_sendrecv_close;
static NRT_STATUS (*const p5)(const char *, int, int, nrt_async_sendrecv_comm_t **) = nrt_async_sendrecv_connect;
static NRT_STATUS (*const p6)(const char *, int, int, nrt_async_sendrecv_comm_t **) = nrt_async_sendrecv_accept;
static NRT_STATUS (*const p7)(nrt_async_sendrecv_comm_t *, bool *) = nrt_async_sendrecv_test_comm;
static NRT_STATUS (*const p8)(nrt_tensor_t *, size_t, size_t, nrt_async_sendrecv_comm_t *, nrt_async_sendrecv_request_t **) = nrt_async_sendrecv_send_tensor;
static NRT_STATUS (*const p9)(nrt_tensor_t *, size_t, size_t, nrt_async_sendrecv_comm_t *, nrt_async_sendrecv_request_t **) = nrt_async_sendrecv_recv_tensor;
static NRT_STATUS (*const p10)(nrt_async_sendrecv_request_t *, bool *, size_t *) = nrt_async_sendrecv_test_request;
static NRT_STATUS (*const p11)(int) = nrt_async_sendrecv_flush;
static NRT_STATUS (*const q1)(nrt_framework_type_t, const char *, const char *) = nrt_init;
static NRT_STATUS (*const q2)(nrt_tensor_placement_t, int, size_t, const char *, nrt_tensor_t **) = nrt_tensor_allocate;
static NRT_STATUS (*const q3)(const char *, nrt_tensor_t **) = nrt_tensor_allocate_empty;
static NRT_STATUS (*const q4)(nrt_tensor_t *, void *, size_t) = nrt_tensor_attach_buffer;
static NRT_STATUS (*const q5)(const nrt_tensor_t *, size_t, size_t, const char *, nrt_tensor_t **) = nrt_tensor_allocate_slice;
static void (*const q6)(nrt_tensor_t **) = nrt_tensor_free;
static NRT_STATUS (*const q7)(const nrt_tensor_t *, void *, size_t, size_t) = nrt_tensor_read;
static NRT_STATUS (*const q8)(nrt_tensor_t *, const void *, size_t, size_t) = nrt_tensor_write;
static size_t (*const q9)(const nrt_tensor_t *) = nrt_tensor_get_size;
static void *(*const q10)(const nrt_tensor_t *) = nrt_tensor_get_va;
static NRT_STATUS (*const q11)(const nrt_tensor_t *, size_t, nrt_tensor_t *, size_t, size_t) = nrt_tensor_copy;
static NRT_STATUS (*const q12)(nrt_tensor_t *, uint64_t, int, size_t) = nrt_tensor_memset;
static const char *(*const r1)(NRT_STATUS) = nrt_get_status_as_str;
static NRT_STATUS (*const r2)(nrt_version_t *, size_t) = nrt_get_version;
static NRT_STATUS (*const r3)(uint32_t *) = nrt_get_total_nc_count;
static NRT_STATUS (*const r4)(uint32_t *) = nrt_get_visible_nc_count;
static NRT_STATUS (*const r5)(uint32_t *) = nrt_get_total_vnc_count;
static NRT_STATUS (*const r6)(uint32_t *) = nrt_get_visible_vnc_count;

/* nrt_version_t as the vendor lays it out. */
_Static_assert(RT_VERSION_DETAIL_LEN == 128 && GIT_HASH_LEN == 64, "nrt_version.h lengths");
_Static_assert(sizeof(nrt_version_t) == 4 * 8 + 128 + 64, "nrt_version_t size");
_Static_assert(offsetof(nrt_version_t, rt_detail) == 32 && offsetof(struct nrt_version, git_hash) == 160, "nrt_version_t layout");

int main(void) {
    int bad = 0;
#define V(name, val) bad += (int)(name) != (val) ? (printf("%s is %d, want %d\n", #name, (int)(name), (val)), 1) : 0
    V(NRT_SUCCESS, 0); V(NRT_FAILURE, 1); V(NRT_INVALID, 2); V(NRT_INVALID_HANDLE, 3); V(NRT_RESOURCE, 4);
    V(NRT_TIMEOUT, 5); V(NRT_HW_ERROR, 6); V(NRT_QUEUE_FULL, 7); V(NRT_LOAD_NOT_ENOUGH_NC, 9);
    V(NRT_UNSUPPORTED_NEFF_VERSION, 10); V(NRT_FAIL_HOST_MEM_ALLOC, 11); V(NRT_UNINITIALIZED, 13);
    V(NRT_CLOSED, 14); V(NRT_QUEUE_EMPTY, 15); V(NRT_EXEC_UNIT_UNRECOVERABLE, 101); V(NRT_EXEC_BAD_INPUT, 1002);
    V(NRT_EXEC_COMPLETED_WITH_NUM_ERR, 1003); V(NRT_EXEC_COMPLETED_WITH_ERR, 1004); V(NRT_EXEC_NC_BUSY, 1005);
    V(NRT_EXEC_OOB, 1006); V(NRT_COLL_PENDING, 1100); V(NRT_EXEC_HW_ERR_COLLECTIVES, 1200);
    V(NRT_EXEC_HW_ERR_HBM_UE, 1201); V(NRT_EXEC_HW_ERR_NC_UE, 1202); V(NRT_EXEC_HW_ERR_DMA_ABORT, 1203);
    V(NRT_EXEC_SW_NQ_OVERFLOW, 1204); V(NRT_EXEC_HW_ERR_REPAIRABLE_HBM_UE, 1205); V(NRT_NETWORK_PROXY_FAILURE, 1206);
    V(NRT_TENSOR_PLACEMENT_DEVICE, 0); V(NRT_TENSOR_PLACEMENT_HOST, 1); V(NRT_TENSOR_PLACEMENT_VIRTUAL, 2);
    V(NRT_FRAMEWORK_TYPE_INVALID, 0); V(NRT_FRAMEWORK_TYPE_NO_FW, 1); V(NRT_FRAMEWORK_TYPE_TENSORFLOW, 2);
    V(NRT_FRAMEWORK_TYPE_PYTORCH, 3); V(NRT_FRAMEWORK_TYPE_MXNET, 4);
    int n = 0;
#define NN(p) (bad += (p) == NULL, n++)
    NN(p1); NN(p2); NN(p3); NN(p4); NN(p5); NN(p6); NN(p7); NN(p8); NN(p9); NN(p10); NN(p11);
    NN(q1); NN(q2); NN(q3); NN(q4); NN(q5); NN(q6); NN(q7); NN(q8); NN(q9); NN(q10); NN(q11); NN(q12);
    NN(r1); NN(r2); NN(r3); NN(r4); NN(r5); NN(r6);
    printf("%s t_header_c (%d prototypes, enum values)\n", bad ? "FAIL" : "PASS", n);
    return bad != 0;
}
