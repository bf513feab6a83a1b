/* SPDX-License-Identifier: Apache-2.0 */
/* nrt-sendrecv: Asynchronous tensor send/receive between logical cores (nrt_async_sendrecv_*).
 * Generated from the Rust source by `make header` (cbindgen 0.29.4); do not edit. */

#ifndef NRT_ASYNC_SENDRECV_H
#define NRT_ASYNC_SENDRECV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "nrt/nrt.h"

/**
 * A communicator (opaque; the pointer is a checked handle, never dereferenced).
 *
 * Made by `nrt_async_sendrecv_connect` or `nrt_async_sendrecv_accept` and owned by the library:
 * there is no call that frees one alone. Its handle stays valid, also after the connection
 * failed, until `nrt_async_sendrecv_close` of its lnc or `nrt_close`; after that it is stale and
 * every call given it returns `NRT_INVALID_HANDLE`.
 */
typedef struct nrt_async_sendrecv_comm nrt_async_sendrecv_comm;

/**
 * A posted send or receive (opaque; the pointer is a checked handle, never dereferenced).
 *
 * Made by `nrt_async_sendrecv_send_tensor` or `nrt_async_sendrecv_recv_tensor` and owned by the
 * library: it is freed when `nrt_async_sendrecv_test_request` reports its end (`*done` true,
 * success or failure), or by `nrt_async_sendrecv_close` of its lnc or `nrt_close`. After that
 * the handle is stale (`NRT_INVALID_HANDLE`). There is no call that cancels a request.
 */
typedef struct nrt_async_sendrecv_request nrt_async_sendrecv_request;

typedef struct nrt_async_sendrecv_comm nrt_async_sendrecv_comm_t;

typedef struct nrt_async_sendrecv_request nrt_async_sendrecv_request_t;

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * Writes to `*num` how many communicators one lnc may hold: 128, `connect` and `accept`
 * together, counted since the lnc's `nrt_async_sendrecv_init` (a failed communicator keeps its
 * place until the lnc is closed). Needs no initialisation.
 *
 * Returns:
 * - `NRT_SUCCESS`: `*num` is written.
 * - `NRT_INVALID`: `num` is NULL.
 * - `NRT_FAILURE`: an internal error (logged).
 *
 * `num` must be NULL or point to writable storage for one int; it is not kept.
 */
NRT_STATUS nrt_async_sendrecv_get_max_num_communicators_per_lnc(int *num);

/**
 * Writes to `*num` how many requests one communicator may have posted and not yet reported
 * done by `nrt_async_sendrecv_test_request`: 128. Needs no initialisation.
 *
 * Returns:
 * - `NRT_SUCCESS`: `*num` is written.
 * - `NRT_INVALID`: `num` is NULL.
 * - `NRT_FAILURE`: an internal error (logged).
 *
 * `num` must be NULL or point to writable storage for one int; it is not kept.
 */
NRT_STATUS nrt_async_sendrecv_get_max_num_pending_request(int *num);

/**
 * Starts send/receive on logical core `lnc`: reads the `NEURON_RT_ASYNC_SENDRECV_*` settings
 * from the environment, listens on TCP port `NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT` + `lnc`
 * and starts the lnc's progress thread.
 *
 * Returns:
 * - `NRT_SUCCESS`: the lnc is ready for `connect` and `accept`.
 * - `NRT_INVALID`: `lnc` is outside 0..=1023; the lnc is already initialised; an environment
 *   setting is malformed (named in the log); the port number would exceed 65535.
 * - `NRT_UNINITIALIZED`: `nrt_init` has not been called (not checked by the LD_PRELOAD
 *   library, where `nrt_init` is the vendor's).
 * - `NRT_RESOURCE`: the port is taken (named in the log); no epoll/eventfd descriptor or
 *   thread could be created.
 * - `NRT_FAILURE`: the previous `nrt_async_sendrecv_close` of this lnc returned an error (until
 *   `nrt_close` and `nrt_init`); listening failed for another reason; the kernel gave no random
 *   numbers (`getrandom` refused); an internal error (logged).
 */
NRT_STATUS nrt_async_sendrecv_init(int lnc);

/**
 * Closes logical core `lnc`: stops its progress thread and closes and frees every communicator
 * and request of it, finished or not. Their handles become stale (`NRT_INVALID_HANDLE`); the
 * pending requests are abandoned without a report, and once this returns the library no longer
 * touches their tensors' memory. Tensors themselves are not freed.
 *
 * Returns:
 * - `NRT_SUCCESS`: closed; everything had finished.
 * - `NRT_FAILURE`: closed and freed all the same, but a communicator had never finished its
 *   set-up or a request was not complete (counts in the log); until `nrt_close` and `nrt_init`,
 *   `nrt_async_sendrecv_init` of this lnc then returns `NRT_FAILURE`. Also an internal error.
 * - `NRT_INVALID`: `lnc` is outside 0..=1023.
 * - `NRT_UNINITIALIZED`: the lnc is not initialised (also a second close); nothing happens.
 */
NRT_STATUS nrt_async_sendrecv_close(int lnc);

/**
 * Creates a send communicator from `lnc` to (`peer_ip`, `peer_lnc`) and writes its handle to
 * `*send_comm`. Returns at once: the connection is set up in the background; poll
 * `nrt_async_sendrecv_test_comm` until `*done`, which also reports set-up failures. The k-th
 * `connect` of one lnc to a peer lnc pairs with that peer's k-th matching `accept`.
 *
 * `peer_ip`: an IPv4 or IPv6 address (brackets allowed) or a host name, resolved here (which
 * may block); the string is read during the call only.
 *
 * Returns:
 * - `NRT_SUCCESS`: `*send_comm` is the new communicator (set-up still running).
 * - `NRT_INVALID`: `send_comm` or `peer_ip` is NULL; `lnc` or `peer_lnc` is outside 0..=1023;
 *   `peer_ip` is not an address and does not resolve; the peer's port would exceed 65535.
 * - `NRT_UNINITIALIZED`: `lnc` is not initialised.
 * - `NRT_RESOURCE`: the lnc already holds 128 communicators; a handle table is full.
 * - `NRT_FAILURE`: an internal error (logged).
 *
 * When `send_comm` is not NULL, `*send_comm` is NULL after any failure. The communicator
 * belongs to the library (see `nrt_async_sendrecv_comm`): valid until its lnc is closed.
 */
NRT_STATUS nrt_async_sendrecv_connect(const char *peer_ip,
                                      int peer_lnc,
                                      int lnc,
                                      nrt_async_sendrecv_comm_t **send_comm);

/**
 * Creates a receive communicator on `lnc` for the connection from (`peer_ip`, `peer_lnc`) and
 * writes its handle to `*recv_comm`. Returns at once: the peer's matching `connect` (the k-th
 * `accept` pairs with the peer's k-th `connect` to this lnc), earlier or later, completes it in
 * the background; poll `nrt_async_sendrecv_test_comm` until `*done`.
 *
 * `peer_ip`: the address the connection must come from, as an IPv4 or IPv6 address (brackets
 * allowed) or a host name, resolved here (which may block); read during the call only.
 * Connections from elsewhere never pair (the accept then ends in `NRT_TIMEOUT`).
 *
 * Returns:
 * - `NRT_SUCCESS`: `*recv_comm` is the new communicator (set-up still running).
 * - `NRT_INVALID`: `recv_comm` or `peer_ip` is NULL; `lnc` or `peer_lnc` is outside 0..=1023;
 *   `peer_ip` is not an address and does not resolve.
 * - `NRT_UNINITIALIZED`: `lnc` is not initialised.
 * - `NRT_RESOURCE`: the lnc already holds 128 communicators; a handle table is full.
 * - `NRT_FAILURE`: an internal error (logged).
 *
 * When `recv_comm` is not NULL, `*recv_comm` is NULL after any failure. The communicator
 * belongs to the library (see `nrt_async_sendrecv_comm`): valid until its lnc is closed.
 */
NRT_STATUS nrt_async_sendrecv_accept(const char *peer_ip,
                                     int peer_lnc,
                                     int lnc,
                                     nrt_async_sendrecv_comm_t **recv_comm);

/**
 * Polls a communicator's connection set-up: `*done` becomes true once it is connected, and
 * then stays true (a connection that fails later shows it on posts and requests).
 *
 * Returns:
 * - `NRT_SUCCESS`: `*done` is true when connected, false while set-up is still running.
 * - `NRT_INVALID_HANDLE`: `comm` is NULL, stale (its lnc was closed) or forged; `*done` is
 *   not written.
 * - `NRT_INVALID`: `done` is NULL.
 * - `NRT_TIMEOUT`: no connection within `NEURON_RT_ASYNC_SENDRECV_CONNECT_TIMEOUT_MS` (no
 *   matching peer call, or a connection from another address); every later call says so again.
 * - `NRT_FAILURE`: set-up failed (the peer refused the handshake: wrong lnc, other protocol
 *   version, authentication, a required transport unavailable; with
 *   `NEURON_RT_ASYNC_SENDRECV_AUTH_SECRET`, the peer did not prove the secret, or one side has
 *   none; the connection broke; the kernel gave no random numbers); every later call says so
 *   again. Also an internal error (logged).
 * - `NRT_RESOURCE`: set-up ran out of a resource (a thread, a shared-memory channel, RDMA
 *   device resources); every later call says so again.
 *
 * On a failure `*done` is false when `done` is not NULL. A failed communicator stays valid
 * until its lnc is closed (its place among the lnc's 128 too).
 */
NRT_STATUS nrt_async_sendrecv_test_comm(nrt_async_sendrecv_comm_t *comm, bool *done);

/**
 * Posts a non-blocking send of the `length` bytes at `offset` of `tensor` on `send_comm` and
 * writes the request's handle to `*request`; poll it with `nrt_async_sendrecv_test_request`.
 * Sends pair with the peer's receives in posting order, per communicator. `length` 0 is a
 * valid message.
 *
 * Returns:
 * - `NRT_SUCCESS`: posted; `*request` is the new request. (A transport error while posting
 *   fails the communicator; the request then reports it.)
 * - `NRT_INVALID`: `request` is NULL; `offset` + `length` is beyond the tensor's size
 *   (overflow-checked; a tensor without memory has size 0); `send_comm` is a receive
 *   communicator; its set-up has not finished (poll `nrt_async_sendrecv_test_comm`); `length`
 *   exceeds the transport's message limit (2^48 bytes; 512 GiB over libfabric).
 * - `NRT_INVALID_HANDLE`: `send_comm` or `tensor` is NULL, stale or forged.
 * - `NRT_RESOURCE`: 128 requests of this communicator are posted and not yet reported done.
 * - `NRT_FAILURE`: the communicator failed earlier (set-up failed, the peer went away, a
 *   request timed out); in the LD_PRELOAD library, the vendor's `nrt_tensor_*` functions
 *   were not found; an internal error (logged).
 *
 * When `request` is not NULL, `*request` is NULL after any failure. The tensor stays the
 * caller's; the library keeps memory it allocated alive until the request ends, even if the
 * tensor is freed meanwhile, but a buffer given by `nrt_tensor_attach_buffer` (or, with the
 * LD_PRELOAD library, the vendor's tensor) must stay valid, and the range must not be
 * written, until `nrt_async_sendrecv_test_request` reports the request's end (or the lnc is
 * closed). The request belongs to the library (see `nrt_async_sendrecv_request`).
 */
NRT_STATUS nrt_async_sendrecv_send_tensor(nrt_tensor_t *tensor,
                                          size_t offset,
                                          size_t length,
                                          nrt_async_sendrecv_comm_t *send_comm,
                                          nrt_async_sendrecv_request_t **request);

/**
 * Posts a non-blocking receive of at most `length` bytes into `tensor` at `offset` on
 * `recv_comm` and writes the request's handle to `*request`; poll it with
 * `nrt_async_sendrecv_test_request`, whose `*size` gives the bytes received. Receives pair with
 * the peer's sends in posting order, per communicator; a receive shorter than its send fails
 * (both requests end with `NRT_FAILURE`, nothing is written).
 *
 * Returns:
 * - `NRT_SUCCESS`: posted; `*request` is the new request. (A transport error while posting
 *   fails the communicator; the request then reports it.)
 * - `NRT_INVALID`: `request` is NULL; `offset` + `length` is beyond the tensor's size
 *   (overflow-checked; a tensor without memory has size 0); `recv_comm` is a send
 *   communicator; its set-up has not finished (poll `nrt_async_sendrecv_test_comm`); `length`
 *   exceeds the transport's message limit (2^48 bytes; 512 GiB over libfabric).
 * - `NRT_INVALID_HANDLE`: `recv_comm` or `tensor` is NULL, stale or forged.
 * - `NRT_RESOURCE`: 128 requests of this communicator are posted and not yet reported done.
 * - `NRT_FAILURE`: the communicator failed earlier (set-up failed, the peer went away, a
 *   request timed out); in the LD_PRELOAD library, the vendor's `nrt_tensor_*` functions
 *   were not found; an internal error (logged).
 *
 * When `request` is not NULL, `*request` is NULL after any failure. The tensor stays the
 * caller's; the library keeps memory it allocated alive until the request ends, even if the
 * tensor is freed meanwhile, but a buffer given by `nrt_tensor_attach_buffer` (or, with the
 * LD_PRELOAD library, the vendor's tensor) must stay valid, and the range must not be read or
 * written, until `nrt_async_sendrecv_test_request` reports the request's end (or the lnc is
 * closed). The request belongs to the library (see `nrt_async_sendrecv_request`).
 */
NRT_STATUS nrt_async_sendrecv_recv_tensor(nrt_tensor_t *tensor,
                                          size_t offset,
                                          size_t length,
                                          nrt_async_sendrecv_comm_t *recv_comm,
                                          nrt_async_sendrecv_request_t **request);

/**
 * Polls a request (and moves its bytes on the caller's thread). Once it reports the request's
 * end, `*done` true with success or failure, the request is freed and its handle is stale:
 * testing it again returns `NRT_INVALID_HANDLE`.
 *
 * Returns:
 * - `NRT_SUCCESS`: `*done` false: still pending (`*size` 0). `*done` true: complete, `*size`
 *   is the bytes moved (for a receive, the length of the matching send).
 * - `NRT_INVALID_HANDLE`: `request` is NULL (nothing written), stale (already reported, or
 *   its lnc closed) or forged (`*done` false, `*size` 0).
 * - `NRT_INVALID`: `done` or `size` is NULL; the request is not tested, nothing written.
 * - `NRT_FAILURE`, with `*done` true: the request failed: the peer went away or broke the
 *   protocol, a receive was shorter than its matching send (both fail), the communicator
 *   failed. With `*done` false: an internal error (logged); the request stays valid.
 * - `NRT_TIMEOUT`, with `*done` true: the request was not complete within
 *   `NEURON_RT_ASYNC_SENDRECV_REQUEST_TIMEOUT_MS` of its posting (0: no deadline); the
 *   communicator fails (FIFO pairing is lost): its other pending requests end with
 *   `NRT_TIMEOUT` too, later posts on it return `NRT_FAILURE`.
 * - `NRT_RESOURCE`, with `*done` true: the transport found no memory for it (a shared-memory
 *   staging buffer; an RDMA memory registration, which fails the communicator too).
 * - `NRT_CLOSED`, with `*done` true: its lnc was being closed at the same time.
 * - with `*done` true, any other status that failed the request's communicator (e.g.
 *   `NRT_INVALID` for an RDMA registration of device memory, in the LD_PRELOAD library).
 *
 * A request that ended with an error has `*done` true and `*size` 0 and is freed like a
 * successful one. Once `*done` is true the tensor range may be used and freed again.
 */
NRT_STATUS nrt_async_sendrecv_test_request(nrt_async_sendrecv_request_t *request,
                                           bool *done,
                                           size_t *size);

/**
 * After it returns, the bytes of every receive on `lnc` that `nrt_async_sendrecv_test_request`
 * already reported done are visible to every thread (a full fence), and acknowledgements the
 * caller's polls left queued are sent. It does not wait for pending requests.
 *
 * Returns:
 * - `NRT_SUCCESS`.
 * - `NRT_INVALID`: `lnc` is outside 0..=1023.
 * - `NRT_UNINITIALIZED`: `lnc` is not initialised.
 * - `NRT_FAILURE`: an internal error (logged).
 */
NRT_STATUS nrt_async_sendrecv_flush(int lnc);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* NRT_ASYNC_SENDRECV_H */
