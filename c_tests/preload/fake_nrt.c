/* SPDX-License-Identifier: Apache-2.0
 * A stand-in for the vendor's libnrt.so.1, for testing LD_PRELOAD mode without Neuron hardware.
 * Its tensors are opaque structures of its own; DEVICE tensors have no host address
 * (nrt_tensor_get_va returns NULL: only nrt_tensor_read/write reach them), HOST tensors do. Its own
 * nrt_async_sendrecv_* functions always fail, so a transfer that works proves ours were used.
 * Built with -I include, so its prototypes are checked against our headers. */
#include <nrt/nrt.h>
#include <nrt/nrt_async_sendrecv.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAGIC 0x46414b45u /* "FAKE" */

struct nrt_tensor {
    uint32_t magic;
    int device;
    size_t size;
    unsigned char *mem;
};

static int live(const nrt_tensor_t *t) { return t && t->magic == MAGIC; }

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
    free((*t)->mem);
    free(*t);
    *t = NULL;
}
NRT_STATUS nrt_tensor_read(const nrt_tensor_t *t, void *buf, size_t off, size_t size) {
    if (!live(t)) return NRT_INVALID_HANDLE;
    if (off > t->size || size > t->size - off || (!buf && size)) return NRT_INVALID;
    if (size) memcpy(buf, t->mem + off, size);
    return NRT_SUCCESS;
}
NRT_STATUS nrt_tensor_write(nrt_tensor_t *t, const void *buf, size_t off, size_t size) {
    if (!live(t)) return NRT_INVALID_HANDLE;
    if (off > t->size || size > t->size - off || (!buf && size)) return NRT_INVALID;
    if (size) memcpy(t->mem + off, buf, size);
    return NRT_SUCCESS;
}
size_t nrt_tensor_get_size(const nrt_tensor_t *t) { return live(t) ? t->size : 0; }
void *nrt_tensor_get_va(const nrt_tensor_t *t) { return live(t) && !t->device ? t->mem : NULL; }
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
