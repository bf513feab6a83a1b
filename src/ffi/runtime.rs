//! `nrt_init` and `nrt_close`.

use super::guard;
use crate::status::NRT_STATUS;
use std::ffi::{c_char, c_int};

/// Framework that drives the runtime (`nrt_framework_type_t`); recorded, not used.
#[repr(C)]
#[allow(non_camel_case_types)]
#[allow(dead_code)] // declared for the generated header
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum nrt_framework_type_t {
    NRT_FRAMEWORK_TYPE_INVALID = 0,
    NRT_FRAMEWORK_TYPE_NO_FW = 1,
    NRT_FRAMEWORK_TYPE_TENSORFLOW = 2,
    NRT_FRAMEWORK_TYPE_PYTORCH = 3,
    NRT_FRAMEWORK_TYPE_MXNET = 4,
}

/// The framework argument as it arrives: any int a caller passes is safe to receive.
/// (Exported as `nrt_framework_type_t` in the header.)
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct FrameworkArg(pub c_int);

/// Initialises the runtime. Without Neuron devices this only records that it was called (which
/// `nrt_async_sendrecv_init` requires), re-reads `NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL` and raises
/// the soft open-file limit to the hard one. `fw_version` and `fal_version` are not read (NULL
/// allowed). A second call while initialised changes nothing. Tensor functions do not need it.
///
/// Returns:
/// - `NRT_SUCCESS`: initialised (or already so).
/// - `NRT_INVALID`: `framework` is not a `nrt_framework_type_t` value (0 to 4).
/// - `NRT_FAILURE`: an internal error (logged).
#[unsafe(no_mangle)]
pub extern "C" fn nrt_init(framework: FrameworkArg, fw_version: *const c_char, fal_version: *const c_char) -> NRT_STATUS {
    let _ = (fw_version, fal_version);
    guard("nrt_init", || {
        if !(0..=4).contains(&framework.0) {
            return Err(crate::status::Error::invalid(format!("framework type {} is not an nrt_framework_type_t", framework.0)));
        }
        crate::runtime::nrt_init();
        Ok(())
    })
}

/// Closes the runtime: every lnc still initialised is closed as by `nrt_async_sendrecv_close`
/// (what was unfinished is freed all the same: logged at level warn, not returned), so every
/// communicator and request handle becomes stale (`NRT_INVALID_HANDLE`). `nrt_init` must be called again before
/// `nrt_async_sendrecv_init`; an lnc whose close had failed may be initialised again. Tensors
/// are not affected.
///
/// Returns:
/// - `NRT_SUCCESS`: closed (also when nothing was initialised).
/// - `NRT_FAILURE`: only for an internal error (logged).
#[unsafe(no_mangle)]
pub extern "C" fn nrt_close() -> NRT_STATUS {
    guard("nrt_close", || {
        crate::runtime::nrt_close();
        Ok(())
    })
}
