//! Command line.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

const ABOUT: &str = "Bandwidth and latency of the nrt_async_sendrecv C API (libnrt.so.1)";

const LONG_ABOUT: &str = "\
Bandwidth and latency of the nrt_async_sendrecv C API (libnrt.so.1), measured through the
exported C functions: a sender and a receiver move messages of each size in the sweep over C
communicator pairs.

Without a subcommand, `run` is assumed. Examples:
  nrt-sr-perf --local                                  both sides on this host (child process)
  nrt-sr-perf --role recv --peer 10.0.0.1              on host B (lnc 1)
  nrt-sr-perf --role send --peer 10.0.0.2              on host A (lnc 0); prints the table
  nrt-sr-perf plot --out cmp.png a.json b.json         compare saved runs";

const RUN_AFTER: &str = "\
Phases per size, in this order:
  warm-up   `--warmup` messages on every communicator (capped by --bytes-per-size); the
            sender fills each with a pattern that depends on (size, communicator, message) and
            the receiver checks every byte (a mismatch stops the run and names the first bad
            offset). Measured messages are NOT verified.
  bw        after an 8-byte ping-pong barrier, `window` sends (receives) in flight on each of
            the C communicators until `iters` messages per communicator completed; timed on the
            sender from the first post to the last completion. GB/s = 1e9 bytes/s over all
            communicators; Gbit/s = 8 x GB/s.
  lat       ping-pong on communicator 0 and a reverse (echo) communicator; half the round trip,
            p50 and p99 in microseconds; both sides spin on test_request.

Counts per size (both sides derive them from the same arguments, and check they agree):
  iters     = min(--iters, max(--min-iters, --bytes-per-size / size))
  lat iters = min(iters, 20000)
  warm-up   = min(--warmup, max(1, --bytes-per-size / size))
  window    = min(--window, pending-request limit, iters, 1 GiB / (size x comms)), at least 1

  tensors   = window per communicator, or with --footprint F: max(window, min(F, 1 GiB) /
              (size x comms)); message m uses tensor m % tensors of its communicator

Tensors are HOST tensors from nrt_tensor_allocate, reused for every message of a size (a
message smaller than its tensor is sent as a prefix). One communicator's window of 16 x 1 MiB
stays in the CPU cache while 64 communicators' 1 GiB does not: --footprint gives runs with
different communicator counts the same memory to move.

In the JSON, rss_bytes_per_comm is the RSS growth across creating the data communicators
(tensors excluded) divided by C, and cpu_s_per_gb the user+system CPU seconds of the bandwidth
phases divided by the GB moved; with --local both are the sum of the two processes (the
`_send`/`_recv` fields give each side).

Exit status: 0 success; 1 a measurement, verification or API error (the function and status
code are printed); 2 bad arguments; 3 the measurement succeeded but the plot could not be
written.

Environment: --transport sets NEURON_RT_ASYNC_SENDRECV_TRANSPORT and --port-base
NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT (lnc n listens on base + n); when
NEURON_RT_ASYNC_SENDRECV_CONNECT_TIMEOUT_MS is unset it is set to --connect-timeout-ms. Other
NEURON_RT_ASYNC_SENDRECV_* variables (TCP_STREAMS, LISTEN_ADDR, ...) are passed through.";

#[derive(Parser, Debug)]
#[command(name = "nrt-sr-perf", version, about = ABOUT, long_about = LONG_ABOUT, after_long_help = RUN_AFTER)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Measure (the default when no subcommand is given)
    #[command(after_long_help = RUN_AFTER)]
    Run(RunArgs),
    /// Draw one or more saved runs (--json files) in one PNG
    Plot(PlotArgs),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    Send,
    Recv,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    Auto,
    Tcp,
    Shm,
    Verbs,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Auto => "auto",
            Transport::Tcp => "tcp",
            Transport::Shm => "shm",
            Transport::Verbs => "verbs",
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Memory {
    /// nrt_tensor_allocate (ours: shared memory that a same-host peer maps)
    Own,
    /// Page-aligned buffers of this program, given by nrt_tensor_attach_buffer
    Attached,
}

impl Memory {
    pub fn as_str(self) -> &'static str {
        match self {
            Memory::Own => "own",
            Memory::Attached => "attached",
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Bw,
    Lat,
    Both,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Bw => "bw",
            Mode::Lat => "lat",
            Mode::Both => "both",
        }
    }
    pub fn bw(self) -> bool {
        self != Mode::Lat
    }
    pub fn lat(self) -> bool {
        self != Mode::Bw
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Poll {
    Spin,
    Yield,
}

impl Poll {
    pub fn as_str(self) -> &'static str {
        match self {
            Poll::Spin => "spin",
            Poll::Yield => "yield",
        }
    }
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    crate::params::parse_size(s)
}

fn parse_sizes_arg(s: &str) -> Result<String, String> {
    crate::params::parse_sizes(s).map(|_| s.to_string())
}

fn parse_ip(s: &str) -> Result<String, String> {
    s.parse::<std::net::IpAddr>().map(|_| s.to_string()).map_err(|_| format!("'{s}' is not an IPv4 or IPv6 address"))
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Run both roles on this host: the receiver is this executable started as a child process
    /// (--role recv, same options), the sender runs here
    #[arg(long, conflicts_with = "role")]
    pub local: bool,

    /// One side of a two-host run (start both with the same options)
    #[arg(long, value_enum)]
    pub role: Option<Role>,

    /// The other side's IP address
    #[arg(long, default_value = "127.0.0.1", value_parser = parse_ip)]
    pub peer: String,

    /// This side's logical core [default: 0 for send, 1 for recv]
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..=1023))]
    pub lnc: Option<i32>,

    /// The other side's logical core [default: 1 for send, 0 for recv]
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..=1023))]
    pub peer_lnc: Option<i32>,

    /// Message sizes: comma list with K/M/G suffixes (powers of 1024), and/or A:B for every
    /// power of two from A to B
    #[arg(long, default_value = "8:256M", value_parser = parse_sizes_arg)]
    pub sizes: String,

    /// Warm-up messages per size per communicator (verified byte by byte by the receiver;
    /// capped by --bytes-per-size; 0 turns warm-up and verification off)
    #[arg(long, default_value_t = 10)]
    pub warmup: u64,

    /// Measured messages per size per communicator (not verified; lowered for big sizes, see
    /// --bytes-per-size)
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub iters: u64,

    /// Byte budget per size per communicator: iters is lowered so that size x iters fits
    #[arg(long, default_value = "2G", value_parser = parse_size_arg)]
    pub bytes_per_size: u64,

    /// The budget never lowers iters below this
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    pub min_iters: u64,

    /// Requests in flight per communicator in the bandwidth phase (lowered for big sizes so that
    /// window x size x comms <= 1 GiB per side; the table shows the window used)
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub window: u64,

    /// Bytes of tensors per side the bandwidth phase cycles through (each communicator gets
    /// footprint / (size x comms), at least its window; capped at 1 GiB): gives runs with
    /// different communicator counts the same memory footprint. 0: one tensor per window slot
    #[arg(long, default_value = "0", value_parser = parse_size_arg)]
    pub footprint: u64,

    /// Communicator pairs used in the bandwidth phase
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub comms: u64,

    /// Sets NEURON_RT_ASYNC_SENDRECV_TRANSPORT (here and in the --local child) before init;
    /// without it the environment is left alone
    #[arg(long, value_enum)]
    pub transport: Option<Transport>,

    /// Where the tensors live
    #[arg(long, value_enum, default_value_t = Memory::Own)]
    pub memory: Memory,

    /// Byte offset of each message in the receiver's tensors in the warm-up and bandwidth
    /// phases (the sender's start at 0): shows what the distance between source and
    /// destination addresses costs a copy
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1 << 20))]
    pub recv_offset: u64,

    /// Phases to run
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    pub mode: Mode,

    /// How the bandwidth phase waits between unsuccessful polls (latency always spins)
    #[arg(long, value_enum, default_value_t = Poll::Spin)]
    pub poll: Poll,

    /// Sets NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT before init (lnc n listens on P + n)
    #[arg(long, value_name = "P")]
    pub port_base: Option<u16>,

    /// Deadline for connecting every communicator
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout_ms: u64,

    /// Deadline for any wait without progress (a request, the peer, the child's exit)
    #[arg(long, default_value_t = 120_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub op_timeout_ms: u64,

    /// Write the results as JSON
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Draw the results as a PNG (bandwidth and latency panels)
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,

    /// Name of this run (JSON, table header, plot legend) [default: "nrt <transport>"]
    #[arg(long)]
    pub label: Option<String>,

    /// No progress bar (it is drawn on stderr only when stderr is a terminal)
    #[arg(long)]
    pub no_progress: bool,

    /// No table and no progress bar (errors are still printed)
    #[arg(long)]
    pub quiet: bool,

    /// (internal) write this side's CPU/RSS/verification figures as JSON to PATH
    #[arg(long, hide = true, value_name = "PATH")]
    pub child_report: Option<PathBuf>,

    /// (internal) the --local parent's pid: exit with it
    #[arg(long, hide = true)]
    pub parent_pid: Option<u32>,

    /// (testing) the sender flips the byte at this offset (or the last byte of smaller
    /// messages) of warm-up message 0 on communicator 0, to show that verification catches it
    #[arg(long, hide = true, value_name = "OFFSET")]
    pub test_corrupt_byte: Option<u64>,
}

impl RunArgs {
    pub fn is_sender(&self) -> bool {
        self.local || self.role == Some(Role::Send)
    }

    pub fn role_name(&self) -> &'static str {
        if self.local {
            "local"
        } else if self.role == Some(Role::Recv) {
            "recv"
        } else {
            "send"
        }
    }

    pub fn lnc(&self) -> i32 {
        self.lnc.unwrap_or(if self.is_sender() { 0 } else { 1 })
    }

    pub fn peer_lnc(&self) -> i32 {
        self.peer_lnc.unwrap_or(if self.is_sender() { 1 } else { 0 })
    }

    pub fn transport_name(&self) -> String {
        match self.transport {
            Some(t) => t.as_str().to_string(),
            None => match std::env::var("NEURON_RT_ASYNC_SENDRECV_TRANSPORT") {
                Ok(v) if !v.is_empty() => v,
                _ => "default".to_string(),
            },
        }
    }

    pub fn label(&self) -> String {
        self.label.clone().unwrap_or_else(|| format!("nrt {}", self.transport_name()))
    }

    /// The arguments of the --local receiver: the same run, as `--role recv` towards us.
    pub fn child_args(&self, report: &Path, parent_pid: u32) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |k: &str, v: String| {
            a.push(k.into());
            a.push(v.into());
        };
        push("--role", "recv".into());
        push("--peer", self.peer.clone());
        push("--lnc", self.peer_lnc().to_string());
        push("--peer-lnc", self.lnc().to_string());
        push("--sizes", self.sizes.clone());
        push("--warmup", self.warmup.to_string());
        push("--iters", self.iters.to_string());
        push("--bytes-per-size", self.bytes_per_size.to_string());
        push("--min-iters", self.min_iters.to_string());
        push("--window", self.window.to_string());
        push("--footprint", self.footprint.to_string());
        push("--comms", self.comms.to_string());
        if let Some(t) = self.transport {
            push("--transport", t.as_str().into());
        }
        push("--memory", self.memory.as_str().into());
        push("--recv-offset", self.recv_offset.to_string());
        push("--mode", self.mode.as_str().into());
        push("--poll", self.poll.as_str().into());
        if let Some(p) = self.port_base {
            push("--port-base", p.to_string());
        }
        push("--connect-timeout-ms", self.connect_timeout_ms.to_string());
        push("--op-timeout-ms", self.op_timeout_ms.to_string());
        push("--label", self.label());
        push("--parent-pid", parent_pid.to_string());
        a.push("--child-report".into());
        a.push(report.as_os_str().to_owned());
        a.push("--no-progress".into());
        a.push("--quiet".into());
        a
    }
}

#[derive(Args, Debug, Clone)]
pub struct PlotArgs {
    /// The PNG to write
    #[arg(long, value_name = "FILE.png")]
    pub out: PathBuf,

    /// Title above the two panels
    #[arg(long)]
    pub title: Option<String>,

    /// Reference points: a JSON array of {"label", "size", "gbytes_per_s"} (bandwidth panel)
    /// or {"label", "size", "lat_us"} (latency panel)
    #[arg(long, value_name = "REFS.json")]
    pub refs: Option<PathBuf>,

    /// Runs written by --json (one line each; the legend is their label)
    #[arg(required = true, value_name = "RUN.json")]
    pub runs: Vec<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn default_subcommand_is_run() {
        let c = Cli::try_parse_from(["nrt-sr-perf", "--local", "--sizes", "8,4K"]).unwrap();
        assert!(c.command.is_none());
        assert!(c.run.local);
        assert_eq!(c.run.lnc(), 0);
        assert_eq!(c.run.peer_lnc(), 1);
        let c = Cli::try_parse_from(["nrt-sr-perf", "run", "--role", "recv"]).unwrap();
        match c.command {
            Some(Command::Run(r)) => {
                assert_eq!(r.lnc(), 1);
                assert_eq!(r.peer_lnc(), 0);
            }
            _ => panic!("expected run"),
        }
        let c = Cli::try_parse_from(["nrt-sr-perf", "plot", "--out", "x.png", "a.json"]).unwrap();
        assert!(matches!(c.command, Some(Command::Plot(_))));
    }

    #[test]
    fn rejects_bad_values() {
        assert!(Cli::try_parse_from(["nrt-sr-perf", "--local", "--sizes", "8X"]).is_err());
        assert!(Cli::try_parse_from(["nrt-sr-perf", "--local", "--window", "0"]).is_err());
        assert!(Cli::try_parse_from(["nrt-sr-perf", "--local", "--role", "send"]).is_err());
        assert!(Cli::try_parse_from(["nrt-sr-perf", "--role", "send", "--peer", "host"]).is_err());
        assert!(Cli::try_parse_from(["nrt-sr-perf", "--transport", "rdma"]).is_err());
        assert!(Cli::try_parse_from(["nrt-sr-perf", "plot", "--out", "x.png"]).is_err());
    }

    #[test]
    fn child_args_round_trip() {
        let c = Cli::try_parse_from([
            "nrt-sr-perf",
            "--local",
            "--sizes",
            "8,1M",
            "--comms",
            "3",
            "--transport",
            "tcp",
            "--port-base",
            "25000",
            "--memory",
            "attached",
            "--recv-offset",
            "16",
        ])
        .unwrap();
        let mut argv: Vec<OsString> = vec!["nrt-sr-perf".into()];
        argv.extend(c.run.child_args(Path::new("/tmp/r.json"), 42));
        let child = Cli::try_parse_from(argv).unwrap().run;
        assert_eq!(child.role, Some(Role::Recv));
        assert!(!child.is_sender());
        assert_eq!(child.lnc(), 1);
        assert_eq!(child.peer_lnc(), 0);
        assert_eq!(child.sizes, "8,1M");
        assert_eq!(child.comms, 3);
        assert_eq!(child.memory, Memory::Attached);
        assert_eq!(child.recv_offset, 16);
        assert_eq!(child.transport, Some(Transport::Tcp));
        assert_eq!(child.port_base, Some(25000));
        assert_eq!(child.parent_pid, Some(42));
        assert_eq!(child.label(), c.run.label());
        assert!(child.quiet);
    }
}
