/* SPDX-License-Identifier: Apache-2.0 */
/* nrt-sendrecv: Status codes returned by every nrt_* function.
 * Generated from the Rust source by `make header` (cbindgen 0.29.4); do not edit. */

#ifndef NRT_STATUS_H
#define NRT_STATUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/**
 * Status codes returned by every `nrt_*` function (values fixed by the vendor ABI).
 */
typedef enum NRT_STATUS {
  NRT_SUCCESS = 0,
  NRT_FAILURE = 1,
  NRT_INVALID = 2,
  NRT_INVALID_HANDLE = 3,
  NRT_RESOURCE = 4,
  NRT_TIMEOUT = 5,
  NRT_HW_ERROR = 6,
  NRT_QUEUE_FULL = 7,
  NRT_LOAD_NOT_ENOUGH_NC = 9,
  NRT_UNSUPPORTED_NEFF_VERSION = 10,
  NRT_FAIL_HOST_MEM_ALLOC = 11,
  NRT_UNINITIALIZED = 13,
  NRT_CLOSED = 14,
  NRT_QUEUE_EMPTY = 15,
  NRT_EXEC_UNIT_UNRECOVERABLE = 101,
  NRT_EXEC_BAD_INPUT = 1002,
  NRT_EXEC_COMPLETED_WITH_NUM_ERR = 1003,
  NRT_EXEC_COMPLETED_WITH_ERR = 1004,
  NRT_EXEC_NC_BUSY = 1005,
  NRT_EXEC_OOB = 1006,
  NRT_COLL_PENDING = 1100,
  NRT_EXEC_HW_ERR_COLLECTIVES = 1200,
  NRT_EXEC_HW_ERR_HBM_UE = 1201,
  NRT_EXEC_HW_ERR_NC_UE = 1202,
  NRT_EXEC_HW_ERR_DMA_ABORT = 1203,
  NRT_EXEC_SW_NQ_OVERFLOW = 1204,
  NRT_EXEC_HW_ERR_REPAIRABLE_HBM_UE = 1205,
  NRT_NETWORK_PROXY_FAILURE = 1206,
} NRT_STATUS;

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * The name of a status code, e.g. `"NRT_TIMEOUT"` for 5: a static string, never freed by the
 * caller. A value that is not an `NRT_STATUS` gives `"NRT_UNKNOWN_STATUS"`; never NULL.
 */
const char *nrt_get_status_as_str(NRT_STATUS status);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* NRT_STATUS_H */
