/* SPDX-License-Identifier: Apache-2.0 */
/* nrt-sendrecv: Runtime initialisation and host-memory tensors (the part of the Neuron runtime's nrt.h that nrt-sendrecv implements).
 * Generated from the Rust source by `make header` (cbindgen 0.29.4); do not edit. */

#ifndef NRT_H
#define NRT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "nrt/nrt_status.h"

/**
 * Framework that drives the runtime (`nrt_framework_type_t`); recorded, not used.
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

/**
 * A tensor (opaque; in the standalone library the pointer is a checked handle, in preload mode
 * it is the vendor runtime's own tensor).
 */
typedef struct nrt_tensor nrt_tensor;

typedef struct nrt_tensor nrt_tensor_t;

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * The number of physical cores on this host: without Neuron devices, the total of logical
 * cores (`nrt_get_total_vnc_count`) times `NEURON_LOGICAL_NC_CONFIG` (1 or 2, default 1). See
 * `nrt_get_visible_vnc_count` for where the numbers come from.
 *
 * Returns:
 * - `NRT_SUCCESS`: written.
 * - `NRT_INVALID`: `nc_count` is NULL, or a core variable is malformed (logged, naming it).
 */
NRT_STATUS nrt_get_total_nc_count(uint32_t *nc_count);

/**
 * The number of physical cores this process may use: the visible logical cores times
 * `NEURON_LOGICAL_NC_CONFIG`.
 *
 * Returns:
 * - `NRT_SUCCESS`: written.
 * - `NRT_INVALID`: `nc_count` is NULL, or a core variable is malformed (logged, naming it).
 */
NRT_STATUS nrt_get_visible_nc_count(uint32_t *nc_count);

/**
 * The number of logical cores on this host: the highest core of `NEURON_RT_VISIBLE_CORES` + 1,
 * else `NEURON_RT_NUM_CORES`, else 1.
 *
 * Returns:
 * - `NRT_SUCCESS`: written.
 * - `NRT_INVALID`: `nc_count` is NULL, or a core variable is malformed (logged, naming it).
 */
NRT_STATUS nrt_get_total_vnc_count(uint32_t *nc_count);

/**
 * The number of logical cores this process may use (the lncs it would pass to
 * `nrt_async_sendrecv_init`). Without Neuron devices it comes from the vendor's variables, read
 * at each call: `NEURON_RT_VISIBLE_CORES` (a list of cores and inclusive ranges, e.g. `0-3` or
 * `1,3,8-11`, each 0 to 1023: the distinct cores listed), else `NEURON_RT_NUM_CORES` (a count,
 * 1 to 1024), else 1.
 *
 * Returns:
 * - `NRT_SUCCESS`: written.
 * - `NRT_INVALID`: `nc_count` is NULL, or a core variable is malformed (logged, naming it).
 */
NRT_STATUS nrt_get_visible_vnc_count(uint32_t *nc_count);

/**
 * Initialises the runtime. Without Neuron devices this only records that it was called (which
 * `nrt_async_sendrecv_init` requires), re-reads `NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL` and raises
 * the soft open-file limit to the hard one. `fw_version` and `fal_version` are not read (NULL
 * allowed). A second call while initialised changes nothing. Tensor functions do not need it.
 *
 * Returns:
 * - `NRT_SUCCESS`: initialised (or already so).
 * - `NRT_INVALID`: `framework` is not a `nrt_framework_type_t` value (0 to 4).
 * - `NRT_FAILURE`: an internal error (logged).
 */
NRT_STATUS nrt_init(nrt_framework_type_t framework,
                    const char *fw_version,
                    const char *fal_version);

/**
 * Closes the runtime: every lnc still initialised is closed as by `nrt_async_sendrecv_close`
 * (what was unfinished is freed all the same: logged at level warn, not returned), so every
 * communicator and request handle becomes stale (`NRT_INVALID_HANDLE`). `nrt_init` must be called again before
 * `nrt_async_sendrecv_init`; an lnc whose close had failed may be initialised again. Tensors
 * are not affected.
 *
 * Returns:
 * - `NRT_SUCCESS`: closed (also when nothing was initialised).
 * - `NRT_FAILURE`: only for an internal error (logged).
 */
NRT_STATUS nrt_close(void);

/**
 * Allocates a tensor of `size` bytes of zeroed, page-aligned host memory and writes its handle
 * to `*tensor`. Every placement gets host memory and `vnc` is ignored (there are no Neuron
 * devices); `name` may be NULL (no name) and is copied. `size` 0 gives a valid, empty tensor.
 * Needs no `nrt_init`.
 *
 * Returns:
 * - `NRT_SUCCESS`: `*tensor` is the new tensor.
 * - `NRT_INVALID`: `tensor` is NULL; `tensor_placement` is not one of the three values.
 * - `NRT_FAIL_HOST_MEM_ALLOC`: the memory could not be mapped.
 * - `NRT_RESOURCE`: the tensor table is full.
 * - `NRT_FAILURE`: an internal error (logged).
 *
 * `*tensor` is left as it was after a failure. The caller owns the tensor and frees it with
 * `nrt_tensor_free`; its memory is released once the tensor, every slice of it and every
 * request posted on them are gone.
 */
NRT_STATUS nrt_tensor_allocate(nrt_tensor_placement_t tensor_placement,
                               int vnc,
                               size_t size,
                               const char *name,
                               nrt_tensor_t **tensor);

/**
 * Allocates a tensor without memory (size 0) and writes its handle to `*tensor`; give it memory
 * with `nrt_tensor_attach_buffer`. `name` may be NULL (no name) and is copied.
 *
 * Returns:
 * - `NRT_SUCCESS`: `*tensor` is the new tensor.
 * - `NRT_INVALID`: `tensor` is NULL.
 * - `NRT_RESOURCE`: the tensor table is full.
 * - `NRT_FAILURE`: an internal error (logged).
 *
 * `*tensor` is left as it was after a failure. The caller owns the tensor and frees it with
 * `nrt_tensor_free`.
 */
NRT_STATUS nrt_tensor_allocate_empty(const char *name, nrt_tensor_t **tensor);

/**
 * Makes `tensor` a view of the caller's `buffer` of `size` bytes, replacing the memory it had
 * (the handle stays the same; slices made and requests posted before keep the old memory).
 *
 * Returns:
 * - `NRT_SUCCESS`: the tensor now has size `size` and the address `buffer`.
 * - `NRT_INVALID_HANDLE`: `tensor` is NULL, stale or forged.
 * - `NRT_INVALID`: `buffer` is NULL and `size` is not 0.
 * - `NRT_FAILURE`: an internal error (logged).
 *
 * The buffer stays the caller's (the library never frees it) and must stay valid for reads and
 * writes of `size` bytes for as long as the tensor, a slice of it, or a request posted on them
 * uses it: until they are freed and every such request was reported done by
 * `nrt_async_sendrecv_test_request` (or its lnc closed).
 */
NRT_STATUS nrt_tensor_attach_buffer(nrt_tensor_t *tensor, void *buffer, size_t size);

/**
 * Creates a tensor viewing the `size` bytes at `offset` of `tensor_source` (sharing its memory,
 * no copy) and writes its handle to `*tensor_slice`. `name` may be NULL and is copied.
 *
 * Returns:
 * - `NRT_SUCCESS`: `*tensor_slice` is the new tensor.
 * - `NRT_INVALID_HANDLE`: `tensor_source` is NULL, stale or forged.
 * - `NRT_INVALID`: `tensor_slice` is NULL; `offset` + `size` is beyond the source's size
 *   (overflow-checked); the source has no memory.
 * - `NRT_RESOURCE`: the tensor table is full.
 * - `NRT_FAILURE`: an internal error (logged).
 *
 * `*tensor_slice` is left as it was after a failure. The slice is a tensor of its own, owned
 * by the caller and freed with `nrt_tensor_free`; it stays valid after the source is freed
 * (memory the library allocated lives on; an attached buffer must, by the caller's rule).
 */
NRT_STATUS nrt_tensor_allocate_slice(const nrt_tensor_t *tensor_source,
                                     size_t offset,
                                     size_t size,
                                     const char *name,
                                     nrt_tensor_t **tensor_slice);

/**
 * Frees the tensor `*tensor` and sets `*tensor` to NULL; the handle is stale afterwards.
 *
 * No status: `tensor` NULL or `*tensor` NULL is a no-op; a stale or forged `*tensor` (freed
 * twice, say) is set to NULL and logged, nothing else happens. The memory is released once no
 * slice of the tensor and no request posted on it uses it any more: a transfer in flight keeps
 * it. An attached buffer is never freed by the library.
 */
void nrt_tensor_free(nrt_tensor_t **tensor);

/**
 * Copies the `size` bytes at `offset` of `tensor` into `buf`.
 *
 * Returns:
 * - `NRT_SUCCESS`: copied.
 * - `NRT_INVALID_HANDLE`: `tensor` is NULL, stale or forged.
 * - `NRT_INVALID`: `buf` is NULL and `size` is not 0; `offset` + `size` is beyond the tensor's
 *   size (overflow-checked; a tensor without memory has size 0).
 * - `NRT_FAILURE`: an internal error (logged).
 *
 * `buf` must be valid for writes of `size` bytes. Bytes a pending receive is writing are
 * undefined until `nrt_async_sendrecv_test_request` reports it done.
 */
NRT_STATUS nrt_tensor_read(const nrt_tensor_t *tensor, void *buf, size_t offset, size_t size);

/**
 * Copies `size` bytes from `buf` into `tensor` at `offset`.
 *
 * Returns:
 * - `NRT_SUCCESS`: copied.
 * - `NRT_INVALID_HANDLE`: `tensor` is NULL, stale or forged.
 * - `NRT_INVALID`: `buf` is NULL and `size` is not 0; `offset` + `size` is beyond the tensor's
 *   size (overflow-checked; a tensor without memory has size 0).
 * - `NRT_FAILURE`: an internal error (logged).
 *
 * `buf` must be valid for reads of `size` bytes. Do not write a range that a pending send or
 * receive uses until `nrt_async_sendrecv_test_request` reports it done.
 */
NRT_STATUS nrt_tensor_write(nrt_tensor_t *tensor, const void *buf, size_t offset, size_t size);

/**
 * Returns the tensor's size in bytes (0 for a tensor without memory).
 *
 * No status: a NULL, stale or forged handle gives 0 (logged), as does an internal error.
 */
size_t nrt_tensor_get_size(const nrt_tensor_t *tensor);

/**
 * Returns the host address of the tensor's first byte (for an attached buffer, an address in
 * it). The address stays valid as long as the tensor's memory does (see `nrt_tensor_free`).
 *
 * No status: NULL for a tensor without memory, and for a NULL, stale or forged handle (logged)
 * or an internal error.
 */
void *nrt_tensor_get_va(const nrt_tensor_t *tensor);

/**
 * Copies `size` bytes from `src` at `src_offset` to `dst` at `dst_offset`. The ranges may
 * overlap (a tensor and its slice, or the same tensor).
 *
 * Returns:
 * - `NRT_SUCCESS`: copied.
 * - `NRT_INVALID_HANDLE`: `src` or `dst` is NULL, stale or forged.
 * - `NRT_INVALID`: a range is beyond its tensor's size (overflow-checked).
 * - `NRT_FAILURE`: an internal error (logged).
 */
NRT_STATUS nrt_tensor_copy(const nrt_tensor_t *src,
                           size_t src_offset,
                           nrt_tensor_t *dst,
                           size_t dst_offset,
                           size_t size);

/**
 * Sets the `size` bytes at `offset` of `tensor` to `value` (converted to unsigned char, as
 * memset does).
 *
 * Returns:
 * - `NRT_SUCCESS`: set.
 * - `NRT_INVALID_HANDLE`: `tensor` is NULL, stale or forged.
 * - `NRT_INVALID`: `offset` + `size` is beyond the tensor's size (overflow-checked).
 * - `NRT_FAILURE`: an internal error (logged).
 */
NRT_STATUS nrt_tensor_memset(nrt_tensor_t *tensor, uint64_t offset, int value, size_t size);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* NRT_H */
