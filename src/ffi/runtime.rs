//! `nrt_init` and `nrt_close`.

use super::guard;
use crate::status::NRT_STATUS;
use std::ffi::{c_char, c_int};

/// Framework that drives the runtime (`nrt_framework_type_t`); recorded, not used.
#[repr(C)]
#[allow(non_camel_case_types)]
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

/// Initialises the runtime. Without Neuron devices this only records that it was called; the
/// versions are accepted as given (NULL allowed). A second call is a successful no-op.
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

/// Closes the runtime: every lnc still initialised is closed and its handles die.
#[unsafe(no_mangle)]
pub extern "C" fn nrt_close() -> NRT_STATUS {
    guard("nrt_close", || {
        crate::runtime::nrt_close();
        Ok(())
    })
}
