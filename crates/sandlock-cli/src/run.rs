//! `sandlock run`: flags (and an optional TOML profile) become a core [`Policy`]; the command runs
//! with the terminal passed through; the exit status mirrors the command's.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use sandlock_core::{Command, Outcome, Policy, Reason, Running, Sandbox, Stdio};
use serde_json::{Value, json};

/// Exit status for sandlock's own failures (bad flag, bad policy, cannot confine).
pub const EXIT_SANDBOX: i32 = 125;
/// Exit status when the timeout killed the command (as GNU `timeout`).
pub const EXIT_TIMEOUT: i32 = 124;
/// Exit status when another limit ended the run (128 + SIGKILL).
pub const EXIT_LIMIT: i32 = 137;

/// Flags of `sandlock run`.
#[derive(Debug, Args)]
#[command(after_long_help = RUN_EXAMPLES)]
pub struct RunArgs {
    /// Readable (and executable) path; repeat for more.
    #[arg(short = 'r', long = "fs-read", value_name = "PATH")]
    fs_read: Vec<PathBuf>,
    /// Writable path (read, write, create, delete); repeat for more.
    #[arg(short = 'w', long = "fs-write", value_name = "PATH")]
    fs_write: Vec<PathBuf>,
    /// Add a built-in path set: `system` (/usr, /lib*, /bin, the needed files of /etc, harmless
    /// devices). Without it, nothing outside -r/-w is readable, not even /usr.
    #[arg(short = 'p', long = "preset", value_name = "NAME")]
    preset: Vec<String>,
    /// Working directory of the command (default: the current one).
    #[arg(long, value_name = "DIR")]
    cwd: Option<PathBuf>,
    /// Set an environment variable (the host's environment is not inherited).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Pass a host environment variable through unchanged.
    #[arg(long = "pass-env", value_name = "NAME")]
    pass_env: Vec<String>,
    /// Allow outgoing TCP: HOST[:PORT], HOST a name, an IP, a CIDR or * (":443" = any host),
    /// PORT a port, LOW-HIGH or * (none = every port). Allowed names resolve inside the sandbox;
    /// other names do not.
    #[arg(long = "net-allow", value_name = "HOST[:PORT]")]
    net_allow: Vec<String>,
    /// Refuse outgoing TCP to HOST[:PORT] (same form); wins over --net-allow. Alone, every other
    /// destination is allowed (e.g. --net-deny 169.254.169.254 --net-deny 10.0.0.0/8).
    #[arg(long = "net-deny", value_name = "HOST[:PORT]")]
    net_deny: Vec<String>,
    /// Allow binding TCP ports: `PORT` or `LOW-HIGH` (0 = an ephemeral port).
    #[arg(long = "net-allow-bind", value_name = "PORTS")]
    net_allow_bind: Vec<String>,
    /// Allow HTTP requests "METHOD HOST[:PORT][/PATH]", each part a glob (* = any run of
    /// characters), e.g. "GET api.example.com/v1/*" or "* *.pypi.org". Without a port: 80 and
    /// 443. Connections to those ports of the hosts named go through sandlock's proxy, which
    /// answers any other request with 403 before it leaves; the hosts resolve inside the sandbox.
    /// HTTPS is intercepted: the sandbox must trust the CA (--http-inject-ca, or --http-ca-out).
    #[arg(long = "http-allow", value_name = "RULE")]
    http_allow: Vec<String>,
    /// Refuse HTTP requests "METHOD HOST[:PORT][/PATH]"; wins over --http-allow. Alone, every
    /// other request to the hosts named is allowed.
    #[arg(long = "http-deny", value_name = "RULE")]
    http_deny: Vec<String>,
    /// Add a credential to the requests the HTTP rules let through: "METHOD HOST[:PORT][/PATH]
    /// bearer NAME" (Authorization: Bearer) or "... header HEADER-NAME NAME", NAME given by
    /// --credential. The sandbox never sees it. Over plain HTTP the outcome warns.
    #[arg(long = "http-auth", value_name = "RULE")]
    http_auth: Vec<String>,
    /// A secret for --http-auth: NAME=env:VAR (from sandlock's environment) or NAME=file:PATH,
    /// read once before the command starts.
    #[arg(long = "credential", value_name = "NAME=SOURCE")]
    credential: Vec<String>,
    /// Write the certificate of the sandbox's HTTPS CA (PEM) to FILE, for programs that take
    /// extra CAs from a file (NODE_EXTRA_CA_CERTS, SSL_CERT_FILE, REQUESTS_CA_BUNDLE, curl
    /// --cacert). Put it where the sandbox can read it.
    #[arg(long = "http-ca-out", value_name = "FILE")]
    http_ca_out: Option<PathBuf>,
    /// Make the trust bundle at BUNDLE (e.g. /etc/ssl/certs/ca-certificates.crt) show, inside
    /// the sandbox only, the host's certificates plus the sandbox's HTTPS CA, so that curl,
    /// Python, pip and OpenSSL programs trust the interception without SSL_CERT_FILE. The host's
    /// file is not changed; the sandbox cannot write the one it sees. Needs --http-allow or
    /// --http-deny.
    #[arg(long = "http-inject-ca", value_name = "BUNDLE")]
    http_inject_ca: Option<PathBuf>,
    /// Verify upstream HTTPS servers against the CAs in this PEM file instead of the host's
    /// trust store.
    #[arg(long = "http-upstream-ca", value_name = "FILE")]
    http_upstream_ca: Option<PathBuf>,
    /// Mount HOST (an existing directory) at VIRT inside the sandbox, Docker-style but without
    /// root: paths under VIRT (which need not exist on the host) are served from HOST, read-write,
    /// or read-only with `:ro`. Repeatable; the longest VIRT wins. HOST is granted to the sandbox;
    /// a -r/-w path that contains VIRT is refused (it would grant the real one), a -r/-w path
    /// beneath VIRT is shown at its own path. See docs/fsview.md.
    #[arg(long = "fs-mount", value_name = "VIRT:HOST[:ro]")]
    fs_mount: Vec<String>,
    /// Give the run a fresh, empty /tmp and /var/tmp of its own, created when it starts and removed
    /// when it ends (in the host's TMPDIR or /tmp): sandboxes never see each other's temporary
    /// files, nor the host's. TMPDIR is set to /tmp.
    #[arg(long = "private-tmp")]
    private_tmp: bool,
    /// Make DIR copy-on-write: the command sees it as it is, but what it changes there goes to a
    /// private layer, applied to DIR when the run ends as --commit says (each file renamed into
    /// place; if applying fails midway, sandlock says what was and was not applied and keeps the
    /// layer). DIR is granted read-only; do not also pass it to -r or -w.
    #[arg(long, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// When --workdir's changes are applied: on-success (the command exited 0; the default),
    /// always, or never.
    #[arg(long, value_name = "WHEN", value_parser = ["never", "on-success", "always"])]
    commit: Option<String>,
    /// Run, then list what the command changed in the work directory (--workdir, or else the
    /// working directory) as `A`, `M` or `D` and the path, and discard it all.
    #[arg(long = "dry-run")]
    dry_run: bool,
    /// With --dry-run: capture the command's output and print the outcome (its changes included)
    /// as JSON on stdout.
    #[arg(long, requires = "dry_run")]
    json: bool,
    /// Refuse another syscall with EPERM, by name.
    #[arg(long = "deny-syscall", value_name = "NAME")]
    deny_syscall: Vec<String>,
    /// Wall-clock limit (seconds, or e.g. 500ms, 2m); the whole process tree is killed.
    #[arg(short = 't', long, value_name = "SECS")]
    timeout: Option<String>,
    /// Memory limit for all processes together (e.g. 512M, 2G).
    #[arg(short = 'm', long = "max-memory", value_name = "SIZE")]
    max_memory: Option<String>,
    /// Limit on live processes of the sandbox (not per uid).
    #[arg(short = 'P', long = "max-processes", value_name = "N")]
    max_processes: Option<String>,
    /// Limit on live threads of the sandbox, all processes together.
    #[arg(long = "max-threads", value_name = "N")]
    max_threads: Option<String>,
    /// CPU time limit for all processes together.
    #[arg(long = "max-cpu", value_name = "SECS")]
    max_cpu: Option<String>,
    /// Cap on stdout and on stderr, each (default 16M; applies when output is captured or forwarded).
    #[arg(long = "max-output", value_name = "SIZE")]
    max_output: Option<String>,
    /// Largest file the command may write.
    #[arg(long = "max-file-size", value_name = "SIZE")]
    max_file_size: Option<String>,
    /// Most open files per process.
    #[arg(long = "max-open-files", value_name = "N")]
    max_open_files: Option<String>,
    /// Cap on the bytes stored under the writable directories.
    #[arg(long = "max-disk", value_name = "SIZE")]
    max_disk: Option<String>,
    /// Give the run its own cgroup v2 so the kernel enforces --max-memory (memory.max) and
    /// --max-threads (pids.max): `auto` where a delegated, writable cgroup offers the controller,
    /// `require` (fail if it cannot), `off`. The supervisor enforces every limit either way.
    #[arg(long, value_name = "MODE", value_parser = ["auto", "require", "off"])]
    cgroup: Option<String>,
    /// Delegated cgroup v2 directory to create the runs' cgroups in (default: our own cgroup).
    #[arg(long = "cgroup-parent", value_name = "DIR")]
    cgroup_parent: Option<PathBuf>,
    /// Run even if the kernel lacks a protection; what was not enforced is reported.
    #[arg(long = "best-effort")]
    best_effort: bool,
    /// Read a TOML profile (policy field names); flags add to its lists and override its values.
    #[arg(long, value_name = "FILE.toml")]
    profile: Option<PathBuf>,
    /// Write the outcome as JSON to FILE (`-` for standard error) when the run ends.
    #[arg(long = "status-json", value_name = "FILE")]
    status_json: Option<PathBuf>,
    /// Print the resolved policy as JSON and exit without running anything.
    #[arg(long = "print-policy")]
    print_policy: bool,
    /// Do not print a line on stderr when a limit ends the run.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// The command and its arguments.
    #[arg(
        last = true,
        required_unless_present = "print_policy",
        value_name = "CMD"
    )]
    command: Vec<OsString>,
}

const RUN_EXAMPLES: &str = "\
Examples:
  sandlock run -p system -- python3 -c 'print(42)'
  sandlock run -p system -w ./work --cwd ./work -m 512M -t 30 -- python3 job.py
  sandlock run -p system --net-allow example.com:443 -- curl -sI https://example.com
  sandlock run -p system --net-deny 169.254.169.254 --net-deny 10.0.0.0/8 -- python3 job.py
  sandlock run -p system -w ./work --http-allow 'GET pypi.org/simple/*' \\
      --http-allow 'GET files.pythonhosted.org/packages/*' \\
      --http-ca-out ./work/ca.pem -e PIP_CERT=./work/ca.pem -- pip download requests
  sandlock run -p system --http-allow 'GET example.com/*' \\
      --http-inject-ca /etc/ssl/certs/ca-certificates.crt -- curl -s https://example.com/
  sandlock run -p system -w ./work --http-allow 'POST api.example.com/v1/*' \\
      --credential token=env:API_TOKEN --http-auth 'POST api.example.com/v1/* bearer token' \\
      --http-ca-out ./work/ca.pem -e SSL_CERT_FILE=./work/ca.pem -- python3 agent.py
  sandlock run --profile agent.toml --status-json - -- node script.js
  sandlock run -p system --private-tmp --fs-mount /mnt/data:./data -- python3 /mnt/data/job.py
  sandlock run -p system --dry-run -- make install       # what would it change here?
  sandlock run -p system --workdir ./repo --commit on-success -- ./migrate.sh

Exit status: the command's own, or 128+N if signal N killed it. sandlock's own: 124 timeout,
125 sandlock failed (bad flag, bad policy, cannot confine), 126 the program cannot be executed,
127 the program was not found. Other limits (memory, processes, cpu, output, disk) kill the tree
with SIGKILL: 137.";

/// Builds the policy: profile first, then flags on top.
pub fn policy(a: &RunArgs) -> anyhow::Result<Policy> {
    let base = match &a.profile {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("--profile {}: cannot read it", p.display()))?;
            Policy::from_toml_str(&text)
                .map_err(|e| anyhow::anyhow!("--profile {}: {e}", p.display()))?
        }
        None => Policy::default(),
    };
    let mut v = serde_json::to_value(&base)?;
    let obj = v
        .as_object_mut()
        .context("policy did not serialize to an object")?;
    let mut extend = |field: &str, items: Vec<Value>| {
        if items.is_empty() {
            return;
        }
        let list = obj.entry(field).or_insert_with(|| json!([]));
        if let Value::Array(l) = list {
            l.extend(items);
        } else {
            *list = Value::Array(items);
        }
    };
    let strs = |v: &[String]| v.iter().map(|s| json!(s)).collect::<Vec<_>>();
    let paths = |v: &[PathBuf]| v.iter().map(|p| json!(p)).collect::<Vec<_>>();
    extend("fs_readable", paths(&a.fs_read));
    extend("fs_writable", paths(&a.fs_write));
    extend("presets", strs(&a.preset));
    extend("pass_env", strs(&a.pass_env));
    extend("net_allow", strs(&a.net_allow));
    extend("net_deny", strs(&a.net_deny));
    extend("net_allow_bind", strs(&a.net_allow_bind));
    extend("http_allow", strs(&a.http_allow));
    extend("http_deny", strs(&a.http_deny));
    extend("http_auth", strs(&a.http_auth));
    extend("extra_deny_syscalls", strs(&a.deny_syscall));
    let obj = v
        .as_object_mut()
        .context("policy did not serialize to an object")?;
    if let Some(c) = &a.cwd {
        obj.insert("cwd".into(), json!(c));
    }
    if let Some(m) = &a.cgroup {
        obj.insert("cgroup".into(), json!(m));
    }
    if let Some(p) = &a.cgroup_parent {
        obj.insert("cgroup_parent".into(), json!(p));
    }
    for (field, value) in [
        ("http_ca_out", &a.http_ca_out),
        ("http_inject_ca", &a.http_inject_ca),
        ("http_upstream_ca", &a.http_upstream_ca),
    ] {
        if let Some(p) = value {
            obj.insert(field.into(), json!(p));
        }
    }
    if !a.credential.is_empty() {
        let creds = obj.entry("credentials").or_insert_with(|| json!({}));
        for kv in &a.credential {
            let (k, val) = kv.split_once('=').with_context(|| {
                format!("--credential {kv:?}: write NAME=env:VARIABLE or NAME=file:PATH")
            })?;
            creds[k] = json!(val);
        }
    }
    if !a.env.is_empty() {
        let env = obj.entry("env").or_insert_with(|| json!({}));
        for kv in &a.env {
            let (k, val) = kv
                .split_once('=')
                .with_context(|| format!("--env {kv:?}: write KEY=VALUE"))?;
            env[k] = json!(val);
        }
    }
    for (field, value) in [
        ("timeout", &a.timeout),
        ("max_memory", &a.max_memory),
        ("max_cpu", &a.max_cpu),
        ("max_output", &a.max_output),
        ("max_file_size", &a.max_file_size),
        ("max_disk", &a.max_disk),
    ] {
        if let Some(s) = value {
            obj.insert(field.into(), json!(s));
        }
    }
    for (field, value) in [
        ("max_processes", &a.max_processes),
        ("max_threads", &a.max_threads),
        ("max_open_files", &a.max_open_files),
    ] {
        if let Some(s) = value {
            let n: i64 = s
                .parse()
                .map_err(|_| anyhow::anyhow!("--{}: {s:?}: not a number", flag_of(field)))?;
            obj.insert(field.into(), json!(n));
        }
    }
    if a.best_effort {
        obj.insert("best_effort".into(), json!(true));
    }
    if a.private_tmp {
        obj.insert("private_tmp".into(), json!(true));
    }
    if let Some(w) = &a.workdir {
        obj.insert("workdir".into(), json!(w));
    }
    if let Some(c) = &a.commit {
        obj.insert("commit".into(), json!(c));
    }
    if a.dry_run {
        // A dry run of the working directory unless a work directory is given.
        if obj.get("workdir").is_none_or(Value::is_null) {
            let here = match obj.get("cwd").and_then(Value::as_str) {
                Some(c) => PathBuf::from(c),
                None => std::env::current_dir().context("cannot read the current directory")?,
            };
            obj.insert("workdir".into(), json!(here));
        }
        obj.insert("commit".into(), json!("never"));
    }
    if !a.fs_mount.is_empty() {
        let table = obj.entry("fs_mount").or_insert_with(|| json!({}));
        for m in &a.fs_mount {
            let (virt, host) = m
                .split_once(':')
                .filter(|(v, h)| !v.is_empty() && !h.is_empty())
                .with_context(|| {
                    format!(
                        "--fs-mount {m:?}: write VIRT:HOST or VIRT:HOST:ro (e.g. /mnt/data:./data)"
                    )
                })?;
            table[virt] = json!(host);
        }
    }
    Policy::from_json_value(v).map_err(|e| {
        let flag = flag_of(e.field.split(['[', '.']).next().unwrap_or(""));
        anyhow::anyhow!(
            "{}{e}",
            if flag.is_empty() {
                String::new()
            } else {
                format!("--{flag} ")
            }
        )
    })
}

fn flag_of(field: &str) -> &'static str {
    match field {
        "fs_readable" => "fs-read",
        "fs_writable" => "fs-write",
        "presets" => "preset",
        "cwd" => "cwd",
        "env" => "env",
        "pass_env" => "pass-env",
        "net_allow" => "net-allow",
        "net_deny" => "net-deny",
        "net_allow_bind" => "net-allow-bind",
        "http_allow" => "http-allow",
        "http_deny" => "http-deny",
        "http_auth" => "http-auth",
        "credentials" => "credential",
        "http_ca_out" => "http-ca-out",
        "http_inject_ca" => "http-inject-ca",
        "http_upstream_ca" => "http-upstream-ca",
        "extra_deny_syscalls" => "deny-syscall",
        "timeout" => "timeout",
        "max_memory" => "max-memory",
        "max_processes" => "max-processes",
        "max_threads" => "max-threads",
        "max_cpu" => "max-cpu",
        "max_output" => "max-output",
        "max_file_size" => "max-file-size",
        "max_open_files" => "max-open-files",
        "max_disk" => "max-disk",
        "cgroup" => "cgroup",
        "cgroup_parent" => "cgroup-parent",
        "fs_mount" => "fs-mount",
        "private_tmp" => "private-tmp",
        "workdir" => "workdir",
        "commit" => "commit",
        _ => "",
    }
}

/// Runs the command; returns the exit status for the process.
/// sandlock's own failures map to 126 (cannot execute) and 127 (not found) through
/// [`Outcome::exit_status`].
pub fn run(a: RunArgs) -> i32 {
    let policy = match policy(&a) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sandlock: {e:#}");
            return EXIT_SANDBOX;
        }
    };
    if a.print_policy {
        match serde_json::to_string_pretty(&policy) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("sandlock: {e}"),
        }
        return 0;
    }
    let output = match (a.json, a.max_output.is_some()) {
        (true, _) => Output::Kept,
        (false, true) => Output::Forwarded,
        (false, false) => Output::Terminal,
    };
    let outcome = match execute(policy, a.command, output) {
        Ok(o) => o,
        Err(sandlock_core::Error::Policy(p)) => {
            let flag = flag_of(p.field.split(['[', '.']).next().unwrap_or(""));
            eprintln!("sandlock: --{flag} ({p})");
            return EXIT_SANDBOX;
        }
        Err(e) => Outcome::from_error(&e),
    };
    report(&outcome, a.status_json.as_deref(), a.quiet);
    if a.dry_run {
        if a.json {
            match serde_json::to_string_pretty(&outcome) {
                Ok(t) => println!("{t}"),
                Err(e) => eprintln!("sandlock: cannot encode the outcome: {e}"),
            }
        } else {
            for c in &outcome.changes {
                println!(
                    "{} {}{}",
                    c.kind.letter(),
                    c.path.display(),
                    if c.dir { "/" } else { "" }
                );
            }
        }
    }
    if let Some(e) = outcome
        .commit
        .as_ref()
        .and_then(|c| c.error.as_ref().map(|e| (c, e)))
    {
        let (c, e) = e;
        eprintln!(
            "sandlock: applying the work directory's changes stopped at {e}: {} applied, {} not \
             applied{}",
            c.applied.len(),
            c.not_applied.len(),
            c.kept
                .as_ref()
                .map(|k| format!("; everything the command wrote is kept in {}", k.display()))
                .unwrap_or_default()
        );
        for n in &c.not_applied {
            eprintln!(
                "sandlock:   not applied: {} {}",
                n.kind.letter(),
                n.path.display()
            );
        }
        return EXIT_SANDBOX;
    }
    match outcome.reason {
        Reason::Timeout => EXIT_TIMEOUT,
        // Any other limit: the documented 137, even if the command happened to exit first.
        r if r.is_limit() => EXIT_LIMIT,
        _ => outcome.exit_status(),
    }
}

/// A thread that writes chunks to one of our standard streams, so that a slow reader (a paused
/// terminal, a full pipe) never stalls the supervision loop: timeouts and limits keep running, and
/// what waits is bounded by `max_output`.
struct Writer {
    tx: std::sync::mpsc::Sender<Vec<u8>>,
    handle: std::thread::JoinHandle<()>,
}

impl Writer {
    fn new(fd: i32) -> Writer {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let handle = std::thread::spawn(move || {
            use std::io::Write;
            let mut out: Box<dyn Write> = if fd == 1 {
                Box::new(std::io::stdout().lock())
            } else {
                Box::new(std::io::stderr().lock())
            };
            for chunk in rx {
                // A reader that went away gets nothing more; the run goes on regardless.
                if out.write_all(&chunk).and_then(|()| out.flush()).is_err() {
                    break;
                }
            }
        });
        Writer { tx, handle }
    }

    fn send(&self, chunk: Vec<u8>) {
        if !chunk.is_empty() {
            let _ = self.tx.send(chunk);
        }
    }

    fn finish(self) {
        drop(self.tx);
        let _ = self.handle.join();
    }
}

/// Where the command's output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    /// The terminal itself (colours, line buffering, isatty).
    Terminal,
    /// Through sandlock, so that --max-output holds.
    Forwarded,
    /// Kept in the outcome (--json prints it).
    Kept,
}

fn execute(
    policy: Policy,
    argv: Vec<OsString>,
    output: Output,
) -> Result<Outcome, sandlock_core::Error> {
    let capped = output == Output::Forwarded;
    let sandbox = Sandbox::new(policy)?;
    // Blocked before the spawn, so that an interrupt arriving meanwhile is forwarded, not lost.
    let signals = crate::signals::SignalFd::new(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP]);
    // With an explicit --max-output the output goes through sandlock so the cap can hold;
    // otherwise the command gets the terminal itself (colours, line buffering, isatty).
    let (stdout, stderr) = if output == Output::Terminal {
        (Stdio::Inherit, Stdio::Inherit)
    } else {
        (Stdio::Capture, Stdio::Capture)
    };
    let cmd = Command::new(argv)
        .stdin(Stdio::Inherit)
        .stdout(stdout)
        .stderr(stderr);
    let running = sandbox.spawn(cmd)?;
    let writers = capped.then(|| (Writer::new(1), Writer::new(2)));
    let result = supervise(running, signals, writers.as_ref());
    let outcome = match (result, writers) {
        (Ok(mut o), Some((out, err))) => {
            out.send(std::mem::take(&mut o.stdout));
            err.send(std::mem::take(&mut o.stderr));
            out.finish();
            err.finish();
            o
        }
        (r, _) => r?,
    };
    Ok(outcome)
}

/// Drives the run while forwarding SIGINT, SIGTERM and SIGHUP to the whole sandbox: the first one
/// is passed on, a second one kills the tree.
fn supervise(
    mut running: Running,
    signals: Option<crate::signals::SignalFd>,
    writers: Option<&(Writer, Writer)>,
) -> Result<Outcome, sandlock_core::SandboxError> {
    let mut received = 0;
    loop {
        let wait = running
            .next_wakeup()
            .map(|t| t.saturating_duration_since(std::time::Instant::now()));
        let mut fds = vec![libc::pollfd {
            fd: running.fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(s) = &signals {
            fds.push(libc::pollfd {
                fd: s.fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if let Some(l) = running.listener_fd() {
            fds.push(libc::pollfd {
                fd: l,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let ms = wait.map_or(-1, |d| d.as_millis().min(i32::MAX as u128) as i32 + 1);
        // SAFETY: poll reads and writes the `fds` array of the given length.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        // Only when it has something: this loop turns once per connect the sandbox makes.
        let signalled = signals.is_some() && fds[1].revents & libc::POLLIN != 0;
        if let (Some(s), true) = (&signals, signalled) {
            while let Some(sig) = s.read() {
                received += 1;
                if received == 1 {
                    running.signal(sig);
                } else {
                    running.kill(Reason::Signaled, "killed after a second interrupt");
                }
            }
        }
        let done = running.step(Some(Duration::ZERO))?;
        if let Some((out, err)) = writers {
            out.send(running.take_stdout());
            err.send(running.take_stderr());
        }
        if done {
            return Ok(running.into_outcome());
        }
    }
}

fn report(o: &Outcome, status_json: Option<&std::path::Path>, quiet: bool) {
    if o.reason == Reason::SandboxError || (o.reason.is_limit() && !quiet) {
        if let Some(d) = &o.detail {
            eprintln!("sandlock: {d}");
        }
    }
    for w in &o.warnings {
        eprintln!("sandlock: warning: {w}");
    }
    if !o.not_enforced.is_empty() && !quiet {
        let list: Vec<&str> = o.not_enforced.iter().map(|p| p.as_str()).collect();
        eprintln!("sandlock: best effort: not enforced: {}", list.join(", "));
    }
    if let Some(path) = status_json {
        let text = match serde_json::to_string_pretty(o) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("sandlock: cannot encode the outcome: {e}");
                return;
            }
        };
        if path.as_os_str() == "-" {
            eprintln!("{text}");
        } else if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("sandlock: --status-json {}: {e}", path.display());
        }
    }
}
