//! nrt-sr-perf: bandwidth and latency of the nrt_async_sendrecv C API, measured through the
//! exported functions of libnrt.so.1. See `nrt-sr-perf --help` and `nrt-sr-perf run --help`.

mod bench;
mod cli;
mod error;
mod ffi;
mod local;
mod params;
mod pattern;
mod plot;
mod progress;
mod report;
mod stats;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, error::ErrorKind};

use bench::{NoWatch, Outcome, Sink};
use cli::{Cli, Command, PlotArgs, RunArgs};
use params::SizePlan;
use progress::Progress;
use report::{RunReport, SideReport, SizeResult};

const EXIT_FAILURE: u8 = 1;
const EXIT_PLOT_FAILED: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Plot(p)) => plot_cmd(&p),
        Some(Command::Run(r)) => run_cmd(r),
        None => run_cmd(cli.run),
    }
}

/// Prints a usage error the way clap does and exits with status 2.
fn usage_error(kind: ErrorKind, msg: String) -> ! {
    Cli::command().error(kind, msg).exit()
}

struct TableSink<'a> {
    print: bool,
    header: String,
    progress: &'a Progress,
}

impl Sink for TableSink<'_> {
    fn start(&mut self, _plans: &[SizePlan]) {
        if self.print {
            self.progress.suspend(|| {
                println!("{}", self.header);
                println!("{}", report::column_header());
            });
        }
    }

    fn size_done(&mut self, r: &SizeResult) {
        if self.print {
            self.progress.suspend(|| println!("{}", report::row(r)));
        }
    }
}

fn setup_env(args: &RunArgs) {
    if let Some(t) = args.transport {
        ffi::set_env("NEURON_RT_ASYNC_SENDRECV_TRANSPORT", t.as_str());
    }
    if let Some(p) = args.port_base {
        ffi::set_env("NEURON_RT_ASYNC_SENDRECV_BOOTSTRAP_PORT", &p.to_string());
    }
    if std::env::var_os("NEURON_RT_ASYNC_SENDRECV_CONNECT_TIMEOUT_MS").is_none() {
        ffi::set_env("NEURON_RT_ASYNC_SENDRECV_CONNECT_TIMEOUT_MS", &args.connect_timeout_ms.to_string());
    }
}

fn run_cmd(args: RunArgs) -> ExitCode {
    if !args.local && args.role.is_none() {
        usage_error(
            ErrorKind::MissingRequiredArgument,
            "one of --local (both sides on this host) or --role send|recv (one side of a two-host run) is required"
                .into(),
        );
    }
    if args.local && args.lnc() == args.peer_lnc() {
        usage_error(
            ErrorKind::ArgumentConflict,
            format!(
                "--local needs two different logical cores (--lnc {} and --peer-lnc {})",
                args.lnc(),
                args.peer_lnc()
            ),
        );
    }
    let sizes = match params::parse_sizes(&args.sizes) {
        Ok(s) => s,
        Err(e) => usage_error(ErrorKind::ValueValidation, e),
    };
    if let Err(e) = bench::check_memory(&sizes, args.comms) {
        usage_error(ErrorKind::ValueValidation, e);
    }
    let tag = if args.is_sender() { "send" } else { "recv" };
    if let Some(pp) = args.parent_pid
        && !ffi::die_with_parent(pp)
    {
        eprintln!("nrt-sr-perf [{tag}]: error: the --local parent (pid {pp}) is gone");
        return ExitCode::from(EXIT_FAILURE);
    }
    // Still single-threaded here: nothing has started a thread yet.
    setup_env(&args);

    let rules = params::Rules {
        iters: args.iters,
        min_iters: args.min_iters,
        bytes_per_size: args.bytes_per_size,
        warmup: args.warmup,
        window: args.window,
        comms: args.comms,
        max_pending: u64::MAX,
        footprint: args.footprint,
    };
    let progress = Progress::new(!args.quiet && !args.no_progress, sizes.len());
    let mut sink =
        TableSink { print: !args.quiet && args.is_sender(), header: header_line(&args), progress: &progress };

    let (outcome, child_report) = if args.local {
        let mut child = match local::LocalChild::spawn(&args) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("nrt-sr-perf [{tag}]: error: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        match bench::run_side(&args, rules, &sizes, &mut child, &progress, &mut sink) {
            Ok(out) => match child.finish(Duration::from_millis(args.op_timeout_ms)) {
                Ok(rep) => (out, Some(rep)),
                Err(e) => {
                    progress.finish();
                    eprintln!("nrt-sr-perf [{tag}]: error: {e}");
                    return ExitCode::from(EXIT_FAILURE);
                }
            },
            Err(e) => {
                progress.finish();
                eprintln!("nrt-sr-perf [{tag}]: error: {e}");
                if let Some(what) = child.abort(Duration::from_secs(2)) {
                    eprintln!("nrt-sr-perf [{tag}]: {what}");
                }
                return ExitCode::from(EXIT_FAILURE);
            }
        }
    } else {
        match bench::run_side(&args, rules, &sizes, &mut NoWatch, &progress, &mut sink) {
            Ok(out) => (out, None),
            Err(e) => {
                progress.finish();
                eprintln!("nrt-sr-perf [{tag}]: error: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        }
    };
    progress.finish();

    if let Some(path) = &args.child_report {
        let side = SideReport {
            cpu_s: outcome.cpu_s,
            bw_bytes: outcome.bw_bytes,
            rss_bytes_per_comm: outcome.rss_bytes_per_comm,
            verified_messages: outcome.verified_messages,
        };
        let text = serde_json::to_string(&side).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("nrt-sr-perf [{tag}]: error: writing {}: {e}", path.display());
            return ExitCode::from(EXIT_FAILURE);
        }
    }

    let rep = build_report(&args, &outcome, child_report.as_ref());
    if !args.quiet {
        if args.is_sender() {
            println!("{}", report::footer(&rep));
        } else {
            println!("{}", header_line(&args));
            println!("# receiver: {} sizes done", rep.results.len());
            println!("{}", report::footer(&rep));
        }
    }
    if let Some(path) = &args.json {
        let text = match serde_json::to_string_pretty(&rep) {
            Ok(t) => t + "\n",
            Err(e) => {
                eprintln!("nrt-sr-perf [{tag}]: error: encoding the JSON report: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("nrt-sr-perf [{tag}]: error: writing {}: {e}", path.display());
            return ExitCode::from(EXIT_FAILURE);
        }
    }
    if rep.verified_messages != outcome.expected_verified {
        eprintln!(
            "nrt-sr-perf [{tag}]: error: the receiver verified {} warm-up messages, expected {}",
            rep.verified_messages, outcome.expected_verified
        );
        return ExitCode::from(EXIT_FAILURE);
    }
    if let Some(path) = &args.plot {
        if let Err(e) = plot_run(&rep, path) {
            eprintln!("nrt-sr-perf [{tag}]: error: plot not written (the measurement itself succeeded): {e}");
            return ExitCode::from(EXIT_PLOT_FAILED);
        }
        if !args.quiet {
            println!("# plot: {}", path.display());
        }
    }
    ExitCode::SUCCESS
}

fn header_line(args: &RunArgs) -> String {
    format!(
        "# nrt-sr-perf: label \"{}\", transport {}, comms {}, window {}, poll {}, mode {}, role {}",
        args.label(),
        args.transport_name(),
        args.comms,
        args.window,
        args.poll.as_str(),
        args.mode.as_str(),
        args.role_name()
    )
}

fn per_gb(cpu_s: f64, bytes: u64) -> Option<f64> {
    if bytes == 0 { None } else { Some(cpu_s / (bytes as f64 / 1e9)) }
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn build_report(args: &RunArgs, out: &Outcome, child: Option<&SideReport>) -> RunReport {
    let own_rss = finite(out.rss_bytes_per_comm);
    let own_cpu = per_gb(out.cpu_s, out.bw_bytes);
    let (rss, rss_send, rss_recv, cpu, cpu_send, cpu_recv) = match child {
        Some(c) => {
            let c_rss = finite(c.rss_bytes_per_comm);
            let c_cpu = per_gb(c.cpu_s, out.bw_bytes);
            let sum = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(x, y)| x + y);
            (sum(own_rss, c_rss), own_rss, c_rss, sum(own_cpu, c_cpu), own_cpu, c_cpu)
        }
        None if args.is_sender() => (own_rss, own_rss, None, own_cpu, own_cpu, None),
        None => (own_rss, None, own_rss, own_cpu, None, own_cpu),
    };
    RunReport {
        tool: "nrt-sr-perf".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        label: args.label(),
        transport: args.transport_name(),
        role: args.role_name().into(),
        mode: args.mode.as_str().into(),
        comms: args.comms,
        window: args.window,
        footprint: args.footprint,
        poll: args.poll.as_str().into(),
        memory: args.memory.as_str().into(),
        recv_offset: args.recv_offset,
        host: report::host_info(),
        verified: out.expected_verified > 0 && out.verified_messages == out.expected_verified,
        verified_messages: out.verified_messages,
        rss_bytes_per_comm: rss,
        cpu_s_per_gb: cpu,
        rss_bytes_per_comm_send: rss_send,
        rss_bytes_per_comm_recv: rss_recv,
        cpu_s_per_gb_send: cpu_send,
        cpu_s_per_gb_recv: cpu_recv,
        results: out.results.clone(),
    }
}

fn plot_run(rep: &RunReport, path: &Path) -> Result<(), String> {
    let v = serde_json::to_value(rep).map_err(|e| e.to_string())?;
    let s = plot::series_from_json(&v, &rep.label)?;
    let title = format!(
        "nrt-sr-perf \"{}\": transport {}, {} comm(s), window {} | {}, {} CPUs",
        rep.label, rep.transport, rep.comms, rep.window, rep.host.cpu_model, rep.host.cpus
    );
    plot::draw(path, &title, &[s], &[])
}

fn plot_cmd(p: &PlotArgs) -> ExitCode {
    let fail = |e: String| {
        eprintln!("nrt-sr-perf plot: error: {e}");
        ExitCode::from(EXIT_FAILURE)
    };
    let mut runs = Vec::with_capacity(p.runs.len());
    for path in &p.runs {
        match plot::load_run(path) {
            Ok(s) => runs.push(s),
            Err(e) => return fail(e),
        }
    }
    let refs = match &p.refs {
        Some(path) => match plot::load_refs(path) {
            Ok(r) => r,
            Err(e) => return fail(e),
        },
        None => Vec::new(),
    };
    let title = p.title.clone().unwrap_or_else(|| "nrt-sr-perf".to_string());
    if let Err(e) = plot::draw(&p.out, &title, &runs, &refs) {
        return fail(e);
    }
    println!("nrt-sr-perf plot: wrote {}", p.out.display());
    ExitCode::SUCCESS
}
