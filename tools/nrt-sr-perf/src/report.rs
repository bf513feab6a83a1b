//! The run report: JSON (written by --json, read back by `plot`), the table, host facts.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::params::human_size;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Host {
    pub cpus: u64,
    pub cpu_model: String,
    pub kernel: String,
    pub hostname: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SizeResult {
    pub size: u64,
    /// Measured messages per communicator in the bandwidth phase.
    pub iters: u64,
    /// Requests in flight per communicator actually used.
    pub window: u64,
    pub gbytes_per_s: Option<f64>,
    pub gbits_per_s: Option<f64>,
    pub msgs_per_s: Option<f64>,
    pub lat_p50_us: Option<f64>,
    pub lat_p99_us: Option<f64>,
    /// Measured ping-pongs (null when the latency phase did not run).
    #[serde(default)]
    pub lat_iters: Option<u64>,
    /// Warm-up messages per communicator (verified by the receiver).
    #[serde(default)]
    pub warmup: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RunReport {
    pub tool: String,
    pub version: String,
    pub label: String,
    pub transport: String,
    pub role: String,
    pub mode: String,
    pub comms: u64,
    pub window: u64,
    /// --footprint: bytes of tensors per side the bandwidth phase cycled through (0: one per
    /// window slot).
    #[serde(default)]
    pub footprint: u64,
    pub poll: String,
    /// `own` (nrt_tensor_allocate) or `attached` (--memory).
    #[serde(default = "own")]
    pub memory: String,
    /// The receiver's byte offset of each message in its tensors (--recv-offset).
    #[serde(default)]
    pub recv_offset: u64,
    pub host: Host,
    pub verified: bool,
    pub verified_messages: u64,
    pub rss_bytes_per_comm: Option<f64>,
    pub cpu_s_per_gb: Option<f64>,
    pub rss_bytes_per_comm_send: Option<f64>,
    pub rss_bytes_per_comm_recv: Option<f64>,
    pub cpu_s_per_gb_send: Option<f64>,
    pub cpu_s_per_gb_recv: Option<f64>,
    pub results: Vec<SizeResult>,
}

/// What the --local receiver hands back to its parent (--child-report).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SideReport {
    pub cpu_s: f64,
    pub bw_bytes: u64,
    pub rss_bytes_per_comm: f64,
    pub verified_messages: u64,
}

pub fn host_info() -> Host {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name") || l.starts_with("Model") || l.starts_with("cpu model"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let cpus = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1);
    let mut kernel = read("/proc/sys/kernel/osrelease");
    if kernel.is_empty() {
        kernel = "unknown".into();
    }
    let mut hostname = read("/proc/sys/kernel/hostname");
    if hostname.is_empty() {
        hostname = "unknown".into();
    }
    Host { cpus, cpu_model, kernel, hostname }
}

/// Resident set size of this process in bytes (/proc/self/statm).
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * crate::ffi::page_size())
}

fn opt(v: Option<f64>, prec: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.prec$}"),
        _ => "-".to_string(),
    }
}

/// GB/s with three significant digits below 0.1, three decimals above.
fn gbs(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() && x > 0.0 && x < 0.1 => {
            let digits = (2 - x.log10().floor() as i32).clamp(3, 9) as usize;
            format!("{x:.digits$}")
        }
        other => opt(other, 3),
    }
}

#[cfg(test)]
pub fn header_line(r: &RunReport) -> String {
    format!(
        "# nrt-sr-perf: label \"{}\", transport {}, comms {}, window {}, poll {}, mode {}, role {}",
        r.label, r.transport, r.comms, r.window, r.poll, r.mode, r.role
    )
}

pub const COLUMNS: [&str; 8] = ["size", "GB/s", "Gbit/s", "p50 us", "p99 us", "msgs/s", "iters", "window"];

pub fn column_header() -> String {
    let c = COLUMNS;
    format!("{:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>7} {:>6}", c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7])
}

pub fn row(s: &SizeResult) -> String {
    format!(
        "{:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>7} {:>6}",
        human_size(s.size),
        gbs(s.gbytes_per_s),
        opt(s.gbits_per_s, 2),
        opt(s.lat_p50_us, 2),
        opt(s.lat_p99_us, 2),
        opt(s.msgs_per_s, 0),
        s.iters,
        s.window
    )
}

/// The closing lines: verification, RSS and CPU figures.
pub fn footer(r: &RunReport) -> String {
    let mut out = String::new();
    if r.verified {
        let _ = writeln!(
            out,
            "# verified: every byte of {} warm-up messages (measured messages are not checked)",
            r.verified_messages
        );
    } else {
        let _ = writeln!(out, "# verified: no (no warm-up messages were checked)");
    }
    let kib = |v: Option<f64>| v.map(|x| format!("{:.1} KiB", x / 1024.0)).unwrap_or_else(|| "-".into());
    let cpu = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into());
    if r.role == "local" {
        let _ = writeln!(
            out,
            "# RSS per communicator pair: {} (send side {}, recv side {})",
            kib(r.rss_bytes_per_comm),
            kib(r.rss_bytes_per_comm_send),
            kib(r.rss_bytes_per_comm_recv)
        );
        let _ = write!(
            out,
            "# CPU seconds per GB (bandwidth phases, both processes): {} (send {}, recv {})",
            cpu(r.cpu_s_per_gb),
            cpu(r.cpu_s_per_gb_send),
            cpu(r.cpu_s_per_gb_recv)
        );
    } else {
        let _ = writeln!(out, "# RSS per communicator ({} side): {}", r.role, kib(r.rss_bytes_per_comm));
        let _ = write!(out, "# CPU seconds per GB (bandwidth phases, this side): {}", cpu(r.cpu_s_per_gb));
    }
    out
}

#[cfg(test)]
pub fn table(r: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", header_line(r));
    let _ = writeln!(out, "{}", column_header());
    for s in &r.results {
        let _ = writeln!(out, "{}", row(s));
    }
    out.push_str(&footer(r));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample() -> RunReport {
        RunReport {
            tool: "nrt-sr-perf".into(),
            version: "0.1.0".into(),
            label: "nrt tcp".into(),
            transport: "tcp".into(),
            role: "local".into(),
            mode: "both".into(),
            comms: 1,
            window: 16,
            footprint: 0,
            poll: "spin".into(),
            memory: "attached".into(),
            recv_offset: 16,
            host: Host { cpus: 2, cpu_model: "x".into(), kernel: "6.1".into(), hostname: "h".into() },
            verified: true,
            verified_messages: 40,
            rss_bytes_per_comm: Some(1024.0),
            cpu_s_per_gb: Some(0.5),
            rss_bytes_per_comm_send: Some(512.0),
            rss_bytes_per_comm_recv: Some(512.0),
            cpu_s_per_gb_send: Some(0.25),
            cpu_s_per_gb_recv: Some(0.25),
            results: vec![
                SizeResult {
                    size: 8,
                    iters: 200,
                    window: 16,
                    gbytes_per_s: Some(0.01234),
                    gbits_per_s: Some(0.0987),
                    msgs_per_s: Some(1_542_500.0),
                    lat_p50_us: Some(12.5),
                    lat_p99_us: Some(30.25),
                    lat_iters: Some(200),
                    warmup: 10,
                },
                SizeResult {
                    size: 64 << 20,
                    iters: 32,
                    window: 16,
                    gbytes_per_s: Some(3.5),
                    gbits_per_s: Some(28.0),
                    msgs_per_s: Some(52.1),
                    lat_p50_us: None,
                    lat_p99_us: None,
                    lat_iters: None,
                    warmup: 10,
                },
            ],
        }
    }

    #[test]
    fn json_shape() {
        let v = serde_json::to_value(sample()).unwrap();
        for k in [
            "tool",
            "label",
            "transport",
            "role",
            "comms",
            "window",
            "poll",
            "memory",
            "recv_offset",
            "host",
            "verified",
            "rss_bytes_per_comm",
            "cpu_s_per_gb",
            "results",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["tool"], "nrt-sr-perf");
        assert_eq!((v["memory"].as_str(), v["recv_offset"].as_u64()), (Some("attached"), Some(16)));
        for k in ["cpus", "cpu_model", "kernel", "hostname"] {
            assert!(v["host"].get(k).is_some(), "missing host.{k}");
        }
        let r = &v["results"][1];
        for k in ["size", "iters", "window", "gbytes_per_s", "gbits_per_s", "msgs_per_s", "lat_p50_us", "lat_p99_us"] {
            assert!(r.get(k).is_some(), "missing results[].{k}");
        }
        assert!(r["lat_p50_us"].is_null());
        assert_eq!(r["size"], 64 << 20);
        // Round trip (the plot subcommand reads it back).
        let back: RunReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn table_aligned() {
        let t = table(&sample());
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains("transport tcp") && lines[0].contains("comms 1") && lines[0].contains("window 16"));
        assert_eq!(lines[1].len(), lines[2].len());
        assert_eq!(lines[2].len(), lines[3].len());
        assert!(lines[2].trim_start().starts_with("8 B"));
        assert!(lines[2].contains("0.0123"));
        assert!(lines[3].contains("64 MiB") && lines[3].contains("3.500") && lines[3].contains(" - "));
    }
}

fn own() -> String {
    "own".into()
}
