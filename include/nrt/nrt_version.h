/* SPDX-License-Identifier: Apache-2.0 */
/* nrt-sendrecv: The runtime's version (nrt_get_version): nrt-sendrecv's own.
 * Generated from the Rust source by `make header` (cbindgen 0.29.4); do not edit. */

#ifndef NRT_VERSION_H
#define NRT_VERSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "nrt/nrt_status.h"
#define RT_VERSION_DETAIL_LEN 128
#define GIT_HASH_LEN 64

/**
 * The runtime's version (`nrt/nrt_version.h`).
 */
typedef struct nrt_version {
  uint64_t rt_major;
  uint64_t rt_minor;
  uint64_t rt_patch;
  uint64_t rt_maintenance;
  char rt_detail[RT_VERSION_DETAIL_LEN];
  char git_hash[GIT_HASH_LEN];
} nrt_version_t;

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * Fills `*ver` with this library's version, `size` bytes of it at most (a caller built against
 * a shorter `nrt_version_t` passes its own size; more than `sizeof(nrt_version_t)` fills the
 * whole struct and leaves the rest alone). `rt_major.rt_minor.rt_patch` is nrt-sendrecv's own
 * version (not the Neuron runtime's), `rt_maintenance` 0, `rt_detail` says what the library is,
 * and `git_hash` is empty (not recorded at build time).
 *
 * Returns:
 * - `NRT_SUCCESS`: filled.
 * - `NRT_INVALID`: `ver` is NULL or `size` is 0.
 */
NRT_STATUS nrt_get_version(nrt_version_t *ver, size_t size);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* NRT_VERSION_H */
