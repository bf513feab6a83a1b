/* SPDX-License-Identifier: Apache-2.0
 * A stand-in for the vendor's libnrt.so.1, for testing LD_PRELOAD mode without Neuron hardware.
 * Its tensors are opaque structures of its own; DEVICE tensors have no host address
 * (nrt_tensor_get_va returns NULL: only nrt_tensor_read/write reach them), HOST tensors do. Its own
 * nrt_async_sendrecv_* functions always fail, so a transfer that works proves ours were used.
 * Built with -I include, so its prototypes are checked against our headers.
 *
 * nrt_tensor_get_device_allocation_info succeeds for DEVICE tensors only (as the vendor's does
 * for device memory). FAKE_NRT_MAP_HBM stands in for the vendor's NEURON_RT_MAP_HBM (HBM mapped
 * into the process): with it DEVICE tensors have a virtual address too:
 *   FAKE_NRT_MAP_HBM=1      the address of their bytes (host memory standing in for mapped HBM);
 *   FAKE_NRT_MAP_HBM=guard  an address range of the same size without any access (PROT_NONE):
 *                           whoever loads or stores through it crashes; the bytes are still
 *                           reached through nrt_tensor_read/write.
 * fake_nrt_device_copies() counts nrt_tensor_read/write calls on DEVICE tensors (the stand-in's
 * own; not a vendor function), so a test can tell that device memory was staged. */
#define _DEFAULT_SOURCE
#include <nrt/nrt.h>
#include <nrt/nrt_async_sendrecv.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define MAGIC 0x46414b45u /* "FAKE" */

struct nrt_tensor {
    uint32_t magic;
    int device;
    size_t size;
    unsigned char *mem;
    /* What nrt_tensor_get_va returns for a DEVICE tensor (FAKE_NRT_MAP_HBM), else NULL; `guard`:
     * a PROT_NONE mapping of `guard_len` bytes, unmapped on free. */
    void *va;
    size_t guard_len;
};

/* The vendor's nrt_tensor_device_allocation_info_t (public nrt.h; not in our headers). */
typedef struct nrt_tensor_device_allocation_info {
    uint64_t physical_address;
    size_t size;
    int hbm_index;
} nrt_tensor_device_allocation_info_t;
NRT_STATUS nrt_tensor_get_device_allocation_info(const nrt_tensor_t *t, nrt_tensor_device_allocation_info_t *info);
size_t fake_nrt_device_copies(void);

static atomic_size_t device_copies;

static int live(const nrt_tensor_t *t) { return t && t->magic == MAGIC; }

/* FAKE_NRT_MAP_HBM: 0 unset (or "0"), 1 the bytes' address, 2 "guard". */
static int map_hbm(void) {
    const char *v = getenv("FAKE_NRT_MAP_HBM");
    if (!v || !*v || strcmp(v, "0") == 0) return 0;
    return strcmp(v, "guard") == 0 ? 2 : 1;
}

NRT_STATUS nrt_init(nrt_framework_type_t framework, const char *fw_version, const char *fal_version) {
    (void)framework; (void)fw_version; (void)fal_version;
    return NRT_SUCCESS;
}
NRT_STATUS nrt_close(void) { return NRT_SUCCESS; }

NRT_STATUS nrt_tensor_allocate(nrt_tensor_placement_t placement, int vnc, size_t size, const char *name, nrt_tensor_t **t) {
    (void)vnc; (void)name;
    if (!t) return NRT_INVALID;
    struct nrt_tensor *x = calloc(1, sizeof *x);
    if (!x) return NRT_RESOURCE;
    x->mem = calloc(1, size ? size : 1);
    if (!x->mem) { free(x); return NRT_RESOURCE; }
    x->magic = MAGIC;
    x->device = placement == NRT_TENSOR_PLACEMENT_DEVICE;
    x->size = size;
    int hbm = x->device ? map_hbm() : 0;
    if (hbm == 1) x->va = x->mem;
    if (hbm == 2) {
        x->guard_len = size ? size : 1;
        x->va = mmap(NULL, x->guard_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (x->va == MAP_FAILED) { free(x->mem); free(x); return NRT_RESOURCE; }
    }
    *t = x;
    return NRT_SUCCESS;
}
NRT_STATUS nrt_tensor_allocate_empty(const char *name, nrt_tensor_t **t) { (void)name; (void)t; return NRT_FAILURE; }
NRT_STATUS nrt_tensor_attach_buffer(nrt_tensor_t *t, void *b, size_t s) { (void)t; (void)b; (void)s; return NRT_FAILURE; }
NRT_STATUS nrt_tensor_allocate_slice(const nrt_tensor_t *s, size_t o, size_t z, const char *n, nrt_tensor_t **t) {
    (void)s; (void)o; (void)z; (void)n; (void)t; return NRT_FAILURE;
}
void nrt_tensor_free(nrt_tensor_t **t) {
    if (!t || !live(*t)) return;
    (*t)->magic = 0;
    if ((*t)->guard_len) munmap((*t)->va, (*t)->guard_len);
    free((*t)->mem);
    free(*t);
    *t = NULL;
}
NRT_STATUS nrt_tensor_read(const nrt_tensor_t *t, void *buf, size_t off, size_t size) {
    if (!live(t)) return NRT_INVALID_HANDLE;
    if (off > t->size || size > t->size - off || (!buf && size)) return NRT_INVALID;
    if (size) memcpy(buf, t->mem + off, size);
    if (t->device) atomic_fetch_add(&device_copies, 1);
    return NRT_SUCCESS;
}
NRT_STATUS nrt_tensor_write(nrt_tensor_t *t, const void *buf, size_t off, size_t size) {
    if (!live(t)) return NRT_INVALID_HANDLE;
    if (off > t->size || size > t->size - off || (!buf && size)) return NRT_INVALID;
    if (size) memcpy(t->mem + off, buf, size);
    if (t->device) atomic_fetch_add(&device_copies, 1);
    return NRT_SUCCESS;
}
size_t nrt_tensor_get_size(const nrt_tensor_t *t) { return live(t) ? t->size : 0; }
void *nrt_tensor_get_va(const nrt_tensor_t *t) {
    if (!live(t)) return NULL;
    return t->device ? t->va : t->mem;
}
NRT_STATUS nrt_tensor_get_device_allocation_info(const nrt_tensor_t *t, nrt_tensor_device_allocation_info_t *info) {
    if (!live(t) || !info) return NRT_INVALID;
    if (!t->device) return NRT_INVALID; /* host memory: no device allocation */
    info->physical_address = 0x1000000000ull + (uint64_t)(uintptr_t)t->mem % 0x100000000ull;
    info->size = t->size;
    info->hbm_index = 0;
    return NRT_SUCCESS;
}
size_t fake_nrt_device_copies(void) { return atomic_load(&device_copies); }
NRT_STATUS nrt_tensor_copy(const nrt_tensor_t *s, size_t so, nrt_tensor_t *d, size_t dof, size_t n) {
    (void)s; (void)so; (void)d; (void)dof; (void)n; return NRT_FAILURE;
}
NRT_STATUS nrt_tensor_memset(nrt_tensor_t *t, uint64_t o, int v, size_t n) { (void)t; (void)o; (void)v; (void)n; return NRT_FAILURE; }

/* The vendor's send/receive: always fails here. */
NRT_STATUS nrt_async_sendrecv_get_max_num_communicators_per_lnc(int *n) { (void)n; return NRT_FAILURE; }
NRT_STATUS nrt_async_sendrecv_get_max_num_pending_request(int *n) { (void)n; return NRT_FAILURE; }
NRT_STATUS nrt_async_sendrecv_init(int lnc) { (void)lnc; return NRT_FAILURE; }
NRT_STATUS nrt_async_sendrecv_close(int lnc) { (void)lnc; return NRT_FAILURE; }
NRT_STATUS nrt_async_sendrecv_connect(const char *ip, int pl, int l, nrt_async_sendrecv_comm_t **c) { (void)ip; (void)pl; (void)l; (void)c; return NRT_FAILURE; }
NRT_STATUS nrt_async_sendrecv_accept(const char *ip, int pl, int l, nrt_async_sendrecv_comm_t **c) { (void)ip; (void)pl; (void)l; (void)c; return NRT_FAILURE; }
NRT_STATUS nrt_async_sendrecv_test_comm(nrt_async_sendrecv_comm_t *c, bool *d) { (void)c; (void)d; return NRT_FAILURE; }
NRT_STATUS nrt_async_sendrecv_send_tensor(nrt_tensor_t *t, size_t o, size_t l, nrt_async_sendrecv_comm_t *c, nrt_async_sendrecv_request_t **r) {
    (void)t; (void)o; (void)l; (void)c; (void)r; return NRT_FAILURE;
}
NRT_STATUS nrt_async_sendrecv_recv_tensor(nrt_tensor_t *t, size_t o, size_t l, nrt_async_sendrecv_comm_t *c, nrt_async_sendrecv_request_t **r) {
    (void)t; (void)o; (void)l; (void)c; (void)r; return NRT_FAILURE;
}
NRT_STATUS nrt_async_sendrecv_test_request(nrt_async_sendrecv_request_t *r, bool *d, size_t *s) { (void)r; (void)d; (void)s; return NRT_FAILURE; }
NRT_STATUS nrt_async_sendrecv_flush(int lnc) { (void)lnc; return NRT_FAILURE; }
