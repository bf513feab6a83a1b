/* SPDX-License-Identifier: Apache-2.0 */
/* nrt-sendrecv: Asynchronous tensor send/receive between logical cores (nrt_async_sendrecv_*).
 * Generated from the Rust source by `make header` (cbindgen 0.29.4); do not edit. */

#ifndef NRT_ASYNC_SENDRECV_H
#define NRT_ASYNC_SENDRECV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "nrt/nrt.h"

/*
 A communicator (opaque; the pointer is a checked handle).
 */
typedef struct nrt_async_sendrecv_comm nrt_async_sendrecv_comm;

/*
 A posted send or receive (opaque; the pointer is a checked handle).
 */
typedef struct nrt_async_sendrecv_request nrt_async_sendrecv_request;

typedef struct nrt_async_sendrecv_comm nrt_async_sendrecv_comm_t;

typedef struct nrt_async_sendrecv_request nrt_async_sendrecv_request_t;

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/*
 How many communicators one lnc may hold (connect and accept together, counted since init).
 */
NRT_STATUS nrt_async_sendrecv_get_max_num_communicators_per_lnc(int *num);

/*
 How many requests one communicator may have posted and not yet reported done.
 */
NRT_STATUS nrt_async_sendrecv_get_max_num_pending_request(int *num);

/*
 Starts send/receive on logical core `lnc`: binds its port, starts its progress thread.
 */
NRT_STATUS nrt_async_sendrecv_init(int lnc);

/*
 Tears down every communicator and request of `lnc`; an error when some were unfinished.
 */
NRT_STATUS nrt_async_sendrecv_close(int lnc);

/*
 Creates a send communicator towards (`peer_ip`, `peer_lnc`); set-up runs in the background.
 */
NRT_STATUS nrt_async_sendrecv_connect(const char *peer_ip,
                                      int peer_lnc,
                                      int lnc,
                                      nrt_async_sendrecv_comm_t **send_comm);

/*
 Creates the receive communicator matching the peer's connect; set-up runs in the background.
 */
NRT_STATUS nrt_async_sendrecv_accept(const char *peer_ip,
                                     int peer_lnc,
                                     int lnc,
                                     nrt_async_sendrecv_comm_t **recv_comm);

/*
 Polls connection set-up: `*done` becomes true once the communicator is connected.
 */
NRT_STATUS nrt_async_sendrecv_test_comm(nrt_async_sendrecv_comm_t *comm, bool *done);

/*
 Posts a non-blocking send of `length` bytes at `offset` of `tensor`.
 */
NRT_STATUS nrt_async_sendrecv_send_tensor(nrt_tensor_t *tensor,
                                          size_t offset,
                                          size_t length,
                                          nrt_async_sendrecv_comm_t *send_comm,
                                          nrt_async_sendrecv_request_t **request);

/*
 Posts a non-blocking receive of at most `length` bytes into `tensor` at `offset`.
 */
NRT_STATUS nrt_async_sendrecv_recv_tensor(nrt_tensor_t *tensor,
                                          size_t offset,
                                          size_t length,
                                          nrt_async_sendrecv_comm_t *recv_comm,
                                          nrt_async_sendrecv_request_t **request);

/*
 Polls a request. Once `*done` is true (success or failure) the request is freed.
 */
NRT_STATUS nrt_async_sendrecv_test_request(nrt_async_sendrecv_request_t *request,
                                           bool *done,
                                           size_t *size);

/*
 After it returns, every receive on `lnc` already reported done is fully in memory.
 */
NRT_STATUS nrt_async_sendrecv_flush(int lnc);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* NRT_ASYNC_SENDRECV_H */
