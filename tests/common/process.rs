//! The `keyward` binary as a process: `serve` waited on until it names its
//! ports, and the admin CLI run against it.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::Duration,
};

use serde_json::Value;

/// The `keyward` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_keyward");

/// A running `keyward serve` process.
#[derive(Debug)]
pub struct Serve {
    pub child: Child,
    /// `http://` URL of its gRPC listener.
    pub grpc: String,
    /// `http://` URL of its HTTP listener.
    pub http: String,
    /// What it logged before its "keyward serving" line.
    pub startup_log: Vec<String>,
    pub log: mpsc::Receiver<String>,
}

/// `keyward serve` on ports the OS picks, with no master key in the environment.
pub fn serve_command(data_dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "serve",
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
    ])
    .arg("--data-dir")
    .arg(data_dir)
    .env_remove("KEYWARD_MASTER_KEY");
    cmd
}

/// Starts `keyward serve` on ports chosen by the OS and waits for its
/// "keyward serving" line, which names them.
pub fn serve(data_dir: &Path, extra_env: &[(&str, &str)]) -> Result<Serve, String> {
    let mut cmd = serve_command(data_dir);
    cmd.env_remove("KEYWARD_DATABASE_URL");
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    spawn_serve(cmd)
}

/// Spawns `cmd` (a `keyward serve` command) and waits for its "keyward
/// serving" line; `Err` holds the exit status and what it printed otherwise.
pub fn spawn_serve(mut cmd: Command) -> Result<Serve, String> {
    cmd.env("KEYWARD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn keyward serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                if line.contains("keyward serving") {
                    let field = |name: &str| {
                        line.split_whitespace()
                            .find_map(|w| w.strip_prefix(&format!("{name}=")))
                            .map(str::to_string)
                            .expect("address in the serving line")
                    };
                    return Ok(Serve {
                        grpc: format!("http://{}", field("grpc")),
                        http: format!("http://{}", field("http")),
                        child,
                        startup_log: std::mem::take(&mut seen),
                        log: rx,
                    });
                }
                seen.push(line);
            }
            Err(_) => {
                let status = child.wait().expect("wait");
                return Err(format!("exited {status}: {}", seen.join("\n")));
            }
        }
    }
}

/// Sends SIGTERM to `child` and waits for it to exit.
pub fn sigterm(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    child.wait().expect("wait")
}

impl Serve {
    pub fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = sigterm(&mut self.child);
        let log = self.log.try_iter().collect();
        (status, log)
    }
}

/// A test that fails before `terminate` must not leave its server running.
impl Drop for Serve {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn cli(data_dir: &Path, endpoint: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--endpoint", endpoint])
        .args(args)
        .env_remove("KEYWARD_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keyward");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("keyward output")
}

/// [`cli`] run again every 50 ms until it succeeds or 2 s have passed (what
/// another replica's change may take to show); the last run's output.
pub fn cli_within_two_seconds(data_dir: &Path, endpoint: &str, args: &[&str]) -> Output {
    let started = std::time::Instant::now();
    loop {
        let out = cli(data_dir, endpoint, args, None);
        if out.status.success() || started.elapsed() > Duration::from_secs(2) {
            return out;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "command failed: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).expect("utf-8")
}

pub fn json_out(o: &Output) -> Value {
    serde_json::from_str(&stdout(o)).expect("JSON output")
}

impl Serve {
    /// Waits for the process to exit by itself (after a signal already sent).
    pub fn terminate_waited(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = self.child.wait().expect("wait");
        let log = self.log.try_iter().collect();
        (status, log)
    }
}

/// A spawned process whose standard error is read line by line.
pub struct Logged {
    child: Child,
    log: mpsc::Receiver<String>,
}

impl Logged {
    /// Starts reading `child`'s standard error (spawned with it piped).
    pub fn new(mut child: Child) -> Self {
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, log }
    }

    /// The first line (from here on) that `wanted` accepts; panics with what
    /// was printed if none comes within 60 s.
    pub fn line_where(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        let mut seen = Vec::new();
        loop {
            match self.log.recv_timeout(Duration::from_secs(60)) {
                Ok(line) if wanted(&line) => return line,
                Ok(line) => seen.push(line),
                Err(_) => panic!("no such line; printed:\n{}", seen.join("\n")),
            }
        }
    }

    /// SIGTERM, then its exit status and the lines not yet read.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = sigterm(&mut self.child);
        let log = self.log.iter().collect();
        (status, log)
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
