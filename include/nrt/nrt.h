/* SPDX-License-Identifier: Apache-2.0 */
/* nrt-sendrecv: Runtime initialisation and host-memory tensors (the part of the Neuron runtime's nrt.h that nrt-sendrecv implements).
 * Generated from the Rust source by `make header` (cbindgen 0.29.4); do not edit. */

#ifndef NRT_H
#define NRT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "nrt/nrt_status.h"

/*
 Framework that drives the runtime (`nrt_framework_type_t`); recorded, not used.
 */
typedef enum nrt_framework_type_t {
  NRT_FRAMEWORK_TYPE_INVALID = 0,
  NRT_FRAMEWORK_TYPE_NO_FW = 1,
  NRT_FRAMEWORK_TYPE_TENSORFLOW = 2,
  NRT_FRAMEWORK_TYPE_PYTORCH = 3,
  NRT_FRAMEWORK_TYPE_MXNET = 4,
} nrt_framework_type_t;

typedef enum nrt_tensor_placement_t {
  NRT_TENSOR_PLACEMENT_DEVICE = 0,
  NRT_TENSOR_PLACEMENT_HOST = 1,
  NRT_TENSOR_PLACEMENT_VIRTUAL = 2,
} nrt_tensor_placement_t;

/*
 A tensor (opaque; in the standalone library the pointer is a checked handle, in preload mode
 it is the vendor runtime's own tensor).
 */
typedef struct nrt_tensor nrt_tensor;

typedef struct nrt_tensor nrt_tensor_t;

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/*
 Initialises the runtime. Without Neuron devices this only records that it was called; the
 versions are accepted as given (NULL allowed). A second call is a successful no-op.
 */
NRT_STATUS nrt_init(nrt_framework_type_t framework,
                    const char *fw_version,
                    const char *fal_version);

/*
 Closes the runtime: every lnc still initialised is closed and its handles die.
 */
NRT_STATUS nrt_close(void);

/*
 Allocates `size` bytes of zeroed host memory (every placement, `vnc` ignored: no devices).
 */
NRT_STATUS nrt_tensor_allocate(nrt_tensor_placement_t tensor_placement,
                               int vnc,
                               size_t size,
                               const char *name,
                               nrt_tensor_t **tensor);

/*
 Allocates a tensor with no memory; give it some with `nrt_tensor_attach_buffer`.
 */
NRT_STATUS nrt_tensor_allocate_empty(const char *name, nrt_tensor_t **tensor);

/*
 Makes the tensor a view of the caller's buffer (which must outlive its use by the tensor).
 */
NRT_STATUS nrt_tensor_attach_buffer(nrt_tensor_t *tensor, void *buffer, size_t size);

/*
 A new tensor viewing `size` bytes of `source` from `offset` (sharing its memory).
 */
NRT_STATUS nrt_tensor_allocate_slice(const nrt_tensor_t *tensor_source,
                                     size_t offset,
                                     size_t size,
                                     const char *name,
                                     nrt_tensor_t **tensor_slice);

/*
 Frees the tensor and sets `*tensor` to NULL; NULL and stale handles are ignored (logged).
 */
void nrt_tensor_free(nrt_tensor_t **tensor);

/*
 Copies `size` bytes at `offset` of the tensor into `buf`.
 */
NRT_STATUS nrt_tensor_read(const nrt_tensor_t *tensor, void *buf, size_t offset, size_t size);

/*
 Copies `size` bytes from `buf` into the tensor at `offset`.
 */
NRT_STATUS nrt_tensor_write(nrt_tensor_t *tensor, const void *buf, size_t offset, size_t size);

/*
 The tensor's size in bytes; 0 for a bad handle (logged).
 */
size_t nrt_tensor_get_size(const nrt_tensor_t *tensor);

/*
 The host address of the tensor's first byte; NULL for a bad handle (logged) or no memory.
 */
void *nrt_tensor_get_va(const nrt_tensor_t *tensor);

/*
 Copies `size` bytes between tensors (overlap allowed).
 */
NRT_STATUS nrt_tensor_copy(const nrt_tensor_t *src,
                           size_t src_offset,
                           nrt_tensor_t *dst,
                           size_t dst_offset,
                           size_t size);

/*
 Sets `size` bytes at `offset` to `value` (converted to unsigned char, as memset does).
 */
NRT_STATUS nrt_tensor_memset(nrt_tensor_t *tensor, uint64_t offset, int value, size_t size);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* NRT_H */
