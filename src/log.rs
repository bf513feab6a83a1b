//! Logging to stderr at a level chosen by `NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL`.

use std::sync::Once;
use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Level {
    Off = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Warn as u8);
static INIT: Once = Once::new();

pub fn parse_level(s: &str) -> Option<Level> {
    Some(match s.trim().to_ascii_lowercase().as_str() {
        "off" | "none" | "0" => Level::Off,
        "error" | "1" => Level::Error,
        "warn" | "warning" | "2" => Level::Warn,
        "info" | "3" => Level::Info,
        "debug" | "trace" | "4" => Level::Debug,
        _ => return None,
    })
}

/// Reads the level from the environment (again: tests change it between inits).
pub fn reload() {
    if let Ok(v) = std::env::var("NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL")
        && let Some(l) = parse_level(&v)
    {
        LEVEL.store(l as u8, Ordering::Relaxed);
    }
}

pub fn enabled(l: Level) -> bool {
    INIT.call_once(reload);
    l as u8 <= LEVEL.load(Ordering::Relaxed)
}

pub fn emit(l: Level, args: std::fmt::Arguments<'_>) {
    if enabled(l) {
        let tag = match l {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
            Level::Off => return,
        };
        eprintln!("nrt-sendrecv {tag}: {args}");
    }
}

#[macro_export]
macro_rules! log_error { ($($t:tt)*) => { $crate::log::emit($crate::log::Level::Error, format_args!($($t)*)) } }
#[macro_export]
macro_rules! log_warn { ($($t:tt)*) => { $crate::log::emit($crate::log::Level::Warn, format_args!($($t)*)) } }
#[macro_export]
macro_rules! log_info { ($($t:tt)*) => { $crate::log::emit($crate::log::Level::Info, format_args!($($t)*)) } }
#[macro_export]
macro_rules! log_debug { ($($t:tt)*) => { $crate::log::emit($crate::log::Level::Debug, format_args!($($t)*)) } }
