//! `NRT_STATUS`, the status codes of the vendor's `nrt/nrt_status.h`, and our one error type.

use std::fmt;

/// Status codes returned by every `nrt_*` function (values fixed by the vendor ABI).
#[repr(C)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NRT_STATUS {
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
}

/// Why an operation failed: the status the caller sees and a message for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub status: NRT_STATUS,
    pub msg: String,
}

impl Error {
    pub fn new(status: NRT_STATUS, msg: impl Into<String>) -> Self {
        Error { status, msg: msg.into() }
    }
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::new(NRT_STATUS::NRT_INVALID, msg)
    }
    pub fn handle(msg: impl Into<String>) -> Self {
        Self::new(NRT_STATUS::NRT_INVALID_HANDLE, msg)
    }
    pub fn failure(msg: impl Into<String>) -> Self {
        Self::new(NRT_STATUS::NRT_FAILURE, msg)
    }
    pub fn resource(msg: impl Into<String>) -> Self {
        Self::new(NRT_STATUS::NRT_RESOURCE, msg)
    }
    pub fn uninit(msg: impl Into<String>) -> Self {
        Self::new(NRT_STATUS::NRT_UNINITIALIZED, msg)
    }
    pub fn timeout(msg: impl Into<String>) -> Self {
        Self::new(NRT_STATUS::NRT_TIMEOUT, msg)
    }
    /// An OS error: keeps the errno text in the message.
    pub fn io(status: NRT_STATUS, what: &str, e: &std::io::Error) -> Self {
        Self::new(status, format!("{what}: {e} (errno {})", e.raw_os_error().unwrap_or(0)))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.status, self.msg)
    }
}

pub type Result<T> = std::result::Result<T, Error>;
