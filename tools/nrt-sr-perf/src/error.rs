//! The tool's error: a message for the user (the API function and status code included when an
//! nrt call failed).

use std::fmt;

use crate::ffi::NrtError;

#[derive(Debug)]
pub struct Error {
    pub msg: String,
    /// Set when the cause is a non-success NRT_STATUS.
    pub nrt: Option<NrtError>,
}

impl Error {
    pub fn msg(msg: impl Into<String>) -> Error {
        Error { msg: msg.into(), nrt: None }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

impl From<NrtError> for Error {
    fn from(e: NrtError) -> Error {
        Error { msg: e.to_string(), nrt: Some(e) }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Adds "while ..." context to an nrt error.
pub trait Context<T> {
    fn ctx<F: FnOnce() -> String>(self, what: F) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, NrtError> {
    fn ctx<F: FnOnce() -> String>(self, what: F) -> Result<T> {
        self.map_err(|e| Error { msg: format!("{e} ({})", what()), nrt: Some(e) })
    }
}

impl<T> Context<T> for Result<T> {
    fn ctx<F: FnOnce() -> String>(self, what: F) -> Result<T> {
        self.map_err(|e| Error { msg: format!("{} ({})", e.msg, what()), nrt: e.nrt })
    }
}
