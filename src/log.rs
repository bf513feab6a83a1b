//! Logging to stderr at a level chosen by `NEURON_RT_ASYNC_SENDRECV_LOG_LEVEL`, and a rate
//! limit ([`Limiter`]) for the lines a remote party can cause.

use parking_lot::Mutex;
use std::sync::Once;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

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
    #[cfg(test)]
    capture::record(l, &args);
    if enabled(l) {
        let tag = match l {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
            Level::Off => return,
        };
        // One write per line: two processes logging to one file or pipe (a forked peer, the
        // demo) then never cut into each other's lines, as `eprintln!`'s several writes did.
        let line = format!("nrt-sendrecv {tag}: {args}\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
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
#[macro_export]
macro_rules! log_warn_limited { ($lim:expr, $($t:tt)*) => { $lim.emit($crate::log::Level::Warn, format_args!($($t)*)) } }

/// Lines a [`Limiter`] writes in full per interval; the rest are counted.
pub const LIMIT_BURST: u32 = 8;
/// A [`Limiter`]'s interval.
pub const LIMIT_INTERVAL: Duration = Duration::from_secs(10);

/// A rate limit for the warnings a remote party can cause (one per rejected connection, say),
/// one per lnc: the first `LIMIT_BURST` of each `LIMIT_INTERVAL` are written in full, the others
/// counted, and the count is written as one line when the interval has passed (at the next such
/// warning or the next [`Limiter::tick`]) or the lnc closes ([`Limiter::finish`]). A flood of
/// junk connections then writes a few lines every interval, whatever its rate.
pub struct Limiter {
    /// Whose lines these are ("lnc 3"), and what they are about ("incoming connections"), for
    /// the count's line.
    who: String,
    what: &'static str,
    st: Mutex<LimitState>,
}

struct LimitState {
    since: Option<Instant>,
    shown: u32,
    left_out: u64,
}

impl Limiter {
    pub fn new(who: String, what: &'static str) -> Limiter {
        Limiter { who, what, st: Mutex::new(LimitState { since: None, shown: 0, left_out: 0 }) }
    }

    /// Writes the line, or counts it when this interval's lines are spent.
    pub fn emit(&self, l: Level, args: std::fmt::Arguments<'_>) {
        let now = Instant::now();
        let mut st = self.st.lock();
        if st.since.is_none_or(|t| now.duration_since(t) >= LIMIT_INTERVAL) {
            self.summary(&mut st, now);
            st.since = Some(now);
        }
        if st.shown < LIMIT_BURST {
            st.shown += 1;
            drop(st);
            emit(l, args);
        } else {
            st.left_out += 1;
        }
    }

    /// Called often (the lnc's progress loop): writes the count once the interval has passed.
    pub fn tick(&self) {
        let now = Instant::now();
        let mut st = self.st.lock();
        if st.since.is_some_and(|t| now.duration_since(t) >= LIMIT_INTERVAL) {
            self.summary(&mut st, now);
            st.since = None;
        }
    }

    /// The lnc closes: writes what is counted.
    pub fn finish(&self) {
        let mut st = self.st.lock();
        self.summary(&mut st, Instant::now());
        st.since = None;
    }

    fn summary(&self, st: &mut LimitState, now: Instant) {
        if st.left_out > 0 {
            let secs = st.since.map_or(0.0, |t| now.duration_since(t).as_secs_f64());
            emit(
                Level::Warn,
                format_args!(
                    "{}: {} more warning(s) about {} left out in the last {secs:.1} s (at most {LIMIT_BURST} per {} s are written)",
                    self.who,
                    st.left_out,
                    self.what,
                    LIMIT_INTERVAL.as_secs()
                ),
            );
        }
        st.shown = 0;
        st.left_out = 0;
    }
}

/// Tests: the lines emitted (whatever the level lets through to stderr) that contain a given
/// text, collected while a [`capture::Capture`] lives.
#[cfg(test)]
pub mod capture {
    use super::Level;
    use parking_lot::Mutex;

    static CAPTURES: Mutex<Vec<(u64, String, Vec<String>)>> = Mutex::new(Vec::new());
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    pub struct Capture(u64);

    /// Collects the lines that contain `filter`, as "LEVEL text".
    pub fn start(filter: &str) -> Capture {
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        CAPTURES.lock().push((id, filter.to_string(), Vec::new()));
        Capture(id)
    }

    impl Capture {
        pub fn lines(&self) -> Vec<String> {
            CAPTURES.lock().iter().find(|c| c.0 == self.0).map(|c| c.2.clone()).unwrap_or_default()
        }
    }

    impl Drop for Capture {
        fn drop(&mut self) {
            CAPTURES.lock().retain(|c| c.0 != self.0);
        }
    }

    pub(super) fn record(l: Level, args: &std::fmt::Arguments<'_>) {
        let mut caps = CAPTURES.lock();
        if caps.is_empty() {
            return;
        }
        let line = format!("{l:?} {args}");
        for c in caps.iter_mut().filter(|c| line.contains(&c.1)) {
            c.2.push(line.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limiter_writes_a_few_lines_then_their_count() {
        let cap = capture::start("limiter-test-7:");
        let lim = Limiter::new("limiter-test-7".into(), "tests");
        for i in 0..1000 {
            crate::log_warn_limited!(lim, "limiter-test-7: rejected connection {i}");
        }
        lim.tick(); // the interval has not passed: no count yet
        assert_eq!(cap.lines().len(), LIMIT_BURST as usize);
        lim.finish();
        let lines = cap.lines();
        assert_eq!(lines.len(), LIMIT_BURST as usize + 1, "{lines:?}");
        assert!(lines[..LIMIT_BURST as usize].iter().enumerate().all(|(i, l)| l.ends_with(&format!("connection {i}"))));
        assert!(lines.last().unwrap().contains(&format!("{} more warning(s)", 1000 - LIMIT_BURST)), "{lines:?}");
        // Nothing left out: no count line; the next interval writes in full again.
        lim.finish();
        crate::log_warn_limited!(lim, "limiter-test-7: one more");
        assert_eq!(cap.lines().len(), LIMIT_BURST as usize + 2);
    }
}
