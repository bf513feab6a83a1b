//! --local: the receiver is this executable run again as a child process (--role recv). The
//! parent watches it while it runs, waits for it (bounded) at the end, and kills it when the
//! parent fails; the child also asks the kernel to kill it should the parent die.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::bench::Watch;
use crate::cli::RunArgs;
use crate::error::{Error, Result};
use crate::report::SideReport;

pub struct LocalChild {
    child: Option<Child>,
    pid: u32,
    report: PathBuf,
    last_check: Instant,
    /// The child exited with status 0 (then there is nothing left to watch).
    exited_ok: bool,
}

fn describe(st: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => st.to_string(),
    }
}

impl LocalChild {
    pub fn spawn(args: &RunArgs) -> Result<LocalChild> {
        let exe = std::env::current_exe().map_err(|e| Error::msg(format!("cannot find this executable: {e}")))?;
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let report = std::env::temp_dir().join(format!("nrt-sr-perf.{}.{nanos}.recv.json", std::process::id()));
        let child = Command::new(&exe)
            .args(args.child_args(&report, std::process::id()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Error::msg(format!("cannot start the receiver process {}: {e}", exe.display())))?;
        let pid = child.id();
        Ok(LocalChild { child: Some(child), pid, report, last_check: Instant::now(), exited_ok: false })
    }

    /// Waits (bounded) for the child to exit after a successful run and returns its report.
    pub fn finish(&mut self, timeout: Duration) -> Result<SideReport> {
        let deadline = Instant::now() + timeout;
        if !self.exited_ok {
            let child = self.child.as_mut().expect("child present");
            loop {
                match child.try_wait() {
                    Ok(Some(st)) if st.success() => break,
                    Ok(Some(st)) => {
                        self.child = None;
                        return Err(Error::msg(format!(
                            "the receiver process (pid {}) failed: {}",
                            self.pid,
                            describe(st)
                        )));
                    }
                    Ok(None) => {}
                    Err(e) => return Err(Error::msg(format!("waiting for the receiver process: {e}"))),
                }
                if Instant::now() >= deadline {
                    return Err(Error::msg(format!(
                        "the receiver process (pid {}) did not exit within {} ms after the run; killed",
                        self.pid,
                        timeout.as_millis()
                    )));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.child = None;
        self.exited_ok = true;
        let text = std::fs::read_to_string(&self.report)
            .map_err(|e| Error::msg(format!("reading the receiver's report {}: {e}", self.report.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::msg(format!("parsing the receiver's report {}: {e}", self.report.display())))
    }

    /// After a failure on our side: give the child a moment to finish on its own (it usually
    /// fails too and says why), then kill it. Returns what happened to it.
    pub fn abort(&mut self, grace: Duration) -> Option<String> {
        let mut child = self.child.take()?;
        let deadline = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(st)) => {
                    return Some(format!("the receiver process (pid {}) exited with {}", self.pid, describe(st)));
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                _ => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        Some(format!("the receiver process (pid {}) was killed", self.pid))
    }
}

impl Watch for LocalChild {
    fn sees_peer_exit(&self) -> bool {
        true
    }

    fn peer_exited(&self) -> bool {
        self.exited_ok
    }

    fn check(&mut self) -> Result<()> {
        if self.exited_ok || self.last_check.elapsed() < Duration::from_millis(20) {
            return Ok(());
        }
        self.last_check = Instant::now();
        let Some(child) = self.child.as_mut() else { return Ok(()) };
        match child.try_wait() {
            Ok(Some(st)) if st.success() => {
                self.exited_ok = true;
                Ok(())
            }
            Ok(Some(st)) => {
                self.child = None;
                Err(Error::msg(format!("the receiver process (pid {}) exited early with {}", self.pid, describe(st))))
            }
            Ok(None) => Ok(()),
            Err(e) => Err(Error::msg(format!("checking the receiver process: {e}"))),
        }
    }
}

impl Drop for LocalChild {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.report);
    }
}
