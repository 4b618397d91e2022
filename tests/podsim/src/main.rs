//! The `podsim` command: run a command as a restricted Kubernetes pod would (see the crate docs
//! of the `podsim` library and tests/podsim/README.md).

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use podsim::error::{EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, Error, Result};
use podsim::{bpf, errno, mounts, preflight, privileges, probe, seccomp};

const USAGE: &str = "\
usage: podsim [--uid N] [--gid N] [--rw PATH]... [--fresh-tmp] [--keep-root-writable] [-v] -- CMD [ARGS...]
       podsim probe [--json]
       podsim verdicts [--json] [--install-filter]

Runs CMD as a Kubernetes pod under Pod Security Standard \"restricted\" with seccompProfile
RuntimeDefault and readOnlyRootFilesystem would: private mount namespace, read-only mounts except
/tmp, /dev/shm, /dev, /proc and --rw paths, uid/gid 1000 without capabilities, no_new_privs, and
containerd's RuntimeDefault seccomp filter. Must start as root.

  --uid N, --gid N        identity to become (default 1000/1000)
  --rw PATH               keep PATH writable (repeatable; must exist)
  --fresh-tmp             mount an empty tmpfs on /tmp instead of keeping the host's /tmp
  --keep-root-writable    skip the read-only root (everything else still applies)
  -v, --verbose           print what was set up to stderr

  probe [--json]          report uid, capabilities, filesystem and syscall behaviour
                          (run as `podsim -- podsim probe`, and bare for the difference)
  verdicts [--json]       report what the installed filters answer for every known syscall,
                          without running any; --install-filter adds the RuntimeDefault filter
                          first (works without root)";

/// Parsed command line for a run.
#[derive(Debug)]
struct Run {
    uid: libc::uid_t,
    gid: libc::gid_t,
    plan: mounts::Plan,
    verbose: bool,
    command: Vec<OsString>,
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let result = match args.first().and_then(|a| a.to_str()) {
        Some("probe") => probe(&args[1..]),
        Some("verdicts") => verdicts(&args[1..]),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => parse(&args).and_then(run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podsim: {e}");
            ExitCode::from(u8::try_from(e.status()).unwrap_or(1))
        }
    }
}

fn usage_error(message: impl Into<String>) -> Error {
    Error::msg(message).hint("see podsim --help")
}

fn parse(args: &[OsString]) -> Result<Run> {
    let mut run = Run {
        uid: 1000,
        gid: 1000,
        plan: mounts::Plan::default(),
        verbose: false,
        command: Vec::new(),
    };
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let text = arg.to_string_lossy();
        let (flag, inline) = match text.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(OsString::from(value))),
            _ => (text.as_ref(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| rest.next().cloned())
                .ok_or_else(|| usage_error(format!("{name} needs a value")))
        };
        match flag {
            "--" => {
                run.command = rest.cloned().collect();
                break;
            }
            "--uid" => run.uid = number(&value("--uid")?, "--uid")?,
            "--gid" => run.gid = number(&value("--gid")?, "--gid")?,
            "--rw" => {
                let path = value("--rw")?;
                let absolute = std::fs::canonicalize(&path).map_err(|e| {
                    Error::sys(
                        format!("--rw {}", path.to_string_lossy()),
                        e.raw_os_error().unwrap_or(0),
                    )
                    .hint("the path must exist before podsim starts")
                })?;
                run.plan.rw.push(absolute);
            }
            "--fresh-tmp" => run.plan.fresh_tmp = true,
            "--keep-root-writable" => run.plan.keep_root_writable = true,
            // Not in --help: forces the pre-5.12 code path so that tests can cover it.
            "--legacy-remount" => run.plan.legacy_remount = true,
            "-v" | "--verbose" => run.verbose = true,
            _ if flag.starts_with('-') => {
                return Err(usage_error(format!("unknown option {flag}")));
            }
            _ => {
                run.command = std::iter::once(arg).chain(rest).cloned().collect();
                break;
            }
        }
    }
    if run.command.is_empty() {
        return Err(usage_error("no command given"));
    }
    Ok(run)
}

fn number(value: &OsStr, flag: &str) -> Result<u32> {
    value
        .to_str()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| usage_error(format!("{flag} takes a number, not {value:?}")))
}

fn run(run: Run) -> Result<()> {
    let verbose = run.verbose;
    let mut log = |line: String| {
        if verbose {
            eprintln!("podsim: {line}");
        }
    };
    let command = run.command[0].as_os_str();
    // Looked up while still root, only to explain later why the new uid cannot run it.
    let as_root = preflight::resolve(command);

    mounts::apply(&run.plan, &mut log)?;
    privileges::drop_to(run.uid, run.gid, &mut log)?;
    seccomp::set_no_new_privs()?;
    log("no_new_privs: set".into());
    let filter = bpf::runtime_default()?;
    seccomp::install(&filter, 0)?;
    log(format!(
        "seccomp: RuntimeDefault for a container without capabilities ({} BPF instructions): \
         unlisted syscalls EPERM, clone3 ENOSYS, foreign ABIs EPERM",
        filter.len()
    ));

    let cwd =
        std::env::current_dir().map_err(|e| Error::sys("getcwd", e.raw_os_error().unwrap_or(0)))?;
    preflight::working_directory(&cwd, run.uid)?;
    let program = preflight::program(command, as_root.as_deref(), run.uid)?;
    if let Some(old) = preflight::home_fallback() {
        log(format!(
            "HOME=/tmp (HOME={} is not accessible to uid {})",
            old.to_string_lossy(),
            run.uid
        ));
    }
    log(format!("exec {}", program.display()));

    let error = Command::new(&program)
        .arg0(command)
        .args(&run.command[1..])
        .exec();
    let code = error.raw_os_error().unwrap_or(0);
    Err(
        Error::sys(format!("execve({})", program.display()), code).exit_code(
            if code == libc::ENOENT {
                EXIT_NOT_FOUND
            } else {
                EXIT_CANNOT_EXECUTE
            },
        ),
    )
}

fn flags(args: &[OsString], known: &[&str]) -> Result<Vec<String>> {
    args.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .map(|a| {
            if known.contains(&a.as_str()) {
                Ok(a)
            } else {
                Err(usage_error(format!("unknown argument {a}")))
            }
        })
        .collect()
}

fn probe(args: &[OsString]) -> Result<()> {
    let json = !flags(args, &["--json"])?.is_empty();
    let checks = probe::run();
    if json {
        println!("{}", probe::to_json(&checks));
    } else {
        print!("{}", probe::to_text(&checks));
    }
    Ok(())
}

fn verdicts(args: &[OsString]) -> Result<()> {
    let flags = flags(args, &["--json", "--install-filter"])?;
    let filter = if flags.iter().any(|f| f == "--install-filter") {
        Some(bpf::runtime_default()?)
    } else {
        None
    };
    let verdicts = seccomp::verdicts(filter.as_deref())?;
    if flags.iter().any(|f| f == "--json") {
        let fields: Vec<String> = verdicts
            .iter()
            .map(|v| format!("\"{}\":\"{}\"", v.name, errno::name(v.errno)))
            .collect();
        println!("{{{}}}", fields.join(","));
    } else {
        for v in &verdicts {
            println!("{:<26} {:>4} {}", v.name, v.nr, errno::name(v.errno));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse;
    use std::ffi::OsString;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn options_stop_at_double_dash() {
        let run = parse(&args(&[
            "--uid", "1234", "--gid=99", "-v", "--", "sh", "-v",
        ]));
        let run = run.map_err(|e| e.to_string());
        let run = run.as_ref();
        assert_eq!(run.map(|r| (r.uid, r.gid, r.verbose)), Ok((1234, 99, true)));
        assert_eq!(run.map(|r| r.command.clone()), Ok(args(&["sh", "-v"])));
    }

    #[test]
    fn unknown_options_and_missing_command_are_usage_errors() {
        assert!(parse(&args(&["--nope", "--", "true"])).is_err());
        assert!(parse(&args(&["--fresh-tmp"])).is_err());
    }
}
