//! Runs handed to a child that confined itself ahead of time (`spawn::pool`): each must be
//! confined and set up exactly as a child started for the run, and the waiting child must hold
//! nothing of the host's.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};

use sandlock_core::{Command, Error, Policy, Sandbox, Stage, Stdio};

use super::support::{Ws, out, policy};

/// The pids of the children the calling thread has made.
fn my_children() -> Option<Vec<i32>> {
    let s = std::fs::read_to_string("/proc/thread-self/children").ok()?;
    Some(
        s.split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
    )
}

/// The descriptor numbers process `pid` holds.
fn fds_of(pid: i32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// [`my_children`], or `None` after saying why `what` is skipped.
fn children_or_skip(what: &str) -> Option<Vec<i32>> {
    let c = my_children();
    if c.is_none() {
        eprintln!("SKIP {what}: this kernel has no /proc/<pid>/task/<tid>/children");
    }
    c
}

/// The one child this thread made since `before` (a sandbox's waiting child).
fn new_child(before: &[i32]) -> i32 {
    let new: Vec<i32> = my_children()
        .expect("children")
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(
        new.len(),
        1,
        "one waiting child made by this thread: {new:?}"
    );
    new[0]
}

/// The system preset, a workspace, and `/proc` (so that a run can report on itself).
fn with_proc(ws: &Ws) -> Policy {
    let mut p = policy(ws);
    p.fs_readable.push("/proc".into());
    p
}

/// A sandbox that has run twice, and so keeps a confined child waiting.
fn warmed(ws: &Ws) -> Sandbox {
    let sb = Sandbox::new(with_proc(ws)).expect("policy");
    assert_eq!(sb.waiting_children(), 0, "a new sandbox keeps no child");
    sb.run(Command::new(["/bin/true"])).expect("first run");
    assert_eq!(sb.waiting_children(), 0, "one run keeps no child");
    sb.run(Command::new(["/bin/true"])).expect("second run");
    assert_eq!(
        sb.waiting_children(),
        1,
        "from the second run on, one waits"
    );
    sb
}

/// What a run sees of its own confinement.
const SELF_REPORT: &str = "grep -E '^(NoNewPrivs|Seccomp|CapInh|CapPrm|CapEff|CapBnd|CapAmb):' /proc/self/status; \
     touch /etc/sandlock-waiting-probe 2>/dev/null && echo etc-writable || echo etc-refused; \
     touch \"$WS/ok\" && echo ws-writable; \
     cat /proc/1/environ >/dev/null 2>&1 && echo pid1-readable || echo pid1-refused; \
     ls /proc/self/fd | sort -n | tr '\\n' ' '; echo; \
     ps -o pid= -o pgid= -o sid= -p $$ | awk '{print ($1==$2 && $1==$3) ? \"leader\" : \"not-leader\"}'";

#[test]
fn a_handed_run_is_confined_exactly_as_a_fresh_one() {
    let ws = Ws::new();
    let report = |sb: &Sandbox| {
        let o = sb
            .run(
                Command::new(["/bin/sh", "-c", SELF_REPORT])
                    .env("WS", ws.path().display().to_string()),
            )
            .expect("run");
        assert_eq!(
            o.exit_code,
            Some(0),
            "stderr: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        out(&o)
    };
    // The control: a first run, whose child is started for it.
    let fresh = Sandbox::new(with_proc(&ws)).expect("policy");
    let direct = report(&fresh);
    let sb = warmed(&ws);
    for _ in 0..3 {
        assert_eq!(sb.waiting_children(), 1);
        let handed = report(&sb);
        assert_eq!(handed, direct, "a handed run differs from a fresh one");
    }
    assert!(direct.contains("NoNewPrivs:\t1"), "{direct}");
    assert!(direct.contains("Seccomp:\t2"), "{direct}");
    assert!(direct.contains("CapEff:\t0000000000000000"), "{direct}");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert!(direct.contains("CapBnd:\t0000000000000000"), "{direct}");
    }
    assert!(direct.contains("etc-refused"), "{direct}");
    assert!(direct.contains("ws-writable"), "{direct}");
    assert!(direct.contains("leader"), "{direct}");
    assert!(!direct.contains("not-leader"), "{direct}");
    assert!(
        direct.contains("\n0 1 2 3 \n") || direct.contains("\n0 1 2 3\n"),
        "only stdio (and ls's own directory) open: {direct}"
    );
}

#[test]
fn a_handed_run_gets_its_own_command_environment_stdin_directory_and_descriptors() {
    let ws = Ws::new();
    let sb = warmed(&ws);
    let here = std::env::current_dir().expect("cwd");
    for i in 0..3 {
        assert_eq!(sb.waiting_children(), 1, "run {i}");
        let passed = ws.join(&format!("passed{i}"));
        std::fs::write(&passed, format!("passed {i}\n")).expect("write");
        let file = std::fs::File::open(&passed).expect("open");
        let mut cmd = Command::new([
            "/bin/sh",
            "-c",
            "echo \"$FOO\"; cat; echo; pwd; cat <&5; echo \"$0\"",
            &format!("arg{i}"),
        ])
        .env("FOO", format!("value {i}"))
        .stdin(Stdio::Bytes(format!("input {i}").into_bytes()))
        .pass_fd(OwnedFd::from(file), 5);
        // Every other run sets its own directory; the others start where the host is.
        let dir = if i % 2 == 0 {
            ws.path().to_path_buf()
        } else {
            here.clone()
        };
        if i % 2 == 0 {
            cmd = cmd.cwd(ws.path());
        }
        let o = sb.run(cmd).expect("run");
        assert_eq!(
            o.exit_code,
            Some(0),
            "stderr: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            out(&o),
            format!(
                "value {i}\ninput {i}\n{}\npassed {i}\narg{i}",
                dir.display()
            ),
            "run {i}"
        );
    }
}

#[test]
fn a_failed_exec_in_a_handed_run_is_reported_and_the_next_run_works() {
    let ws = Ws::new();
    let expect_enoent = |r: Result<sandlock_core::Outcome, Error>| match r {
        Err(e) => {
            assert_eq!(e.stage(), Some(Stage::Execve), "{e}");
            assert_eq!(e.errno(), Some(libc::ENOENT), "{e}");
            e.to_string()
        }
        Ok(o) => panic!("a missing program ran: {o:?}"),
    };
    let fresh = Sandbox::new(with_proc(&ws)).expect("policy");
    let direct = expect_enoent(fresh.run(Command::new([ws.s("missing").as_str()])));
    let sb = warmed(&ws);
    let handed = expect_enoent(sb.run(Command::new([ws.s("missing").as_str()])));
    assert_eq!(handed, direct);
    // The pool made the next child while that one failed; it runs.
    assert_eq!(sb.waiting_children(), 1);
    let o = sb.run(Command::new(["/bin/echo", "after"])).expect("run");
    assert_eq!(out(&o), "after");
}

#[test]
fn a_waiting_child_holds_nothing_of_the_host_and_ends_with_its_sandbox() {
    let Some(before) = children_or_skip("waiting child's descriptors") else {
        return;
    };
    let ws = Ws::new();
    // A pipe the host holds while the waiting child is made.
    let (r, mut w) = std::io::pipe().expect("pipe");
    let sb = warmed(&ws);
    let pid = new_child(&before);

    // Once it waits (asleep in recvmsg; it may still be confining itself a moment after the run
    // that made it returned), it is confined and holds only its socket to the pool.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let status = loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        if status.contains("State:\tS") && status.contains("Seccomp:\t2") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "it never settled: {status}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(status.contains("Seccomp:\t2"), "{status}");
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    let fds = fds_of(pid);
    assert_eq!(fds.len(), 1, "only its socket: {fds:?}");
    let target = std::fs::read_link(format!("/proc/{pid}/fd/{}", fds[0])).expect("link");
    assert!(
        target.to_string_lossy().starts_with("socket:"),
        "{target:?}"
    );

    // So a pipe's reader sees end of file once the host closes its end (control: not before).
    w.write_all(b"x").expect("write");
    let mut pfd = libc::pollfd {
        fd: r.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let mut buf = [0u8; 8];
    let n = std::io::Read::read(&mut &r, &mut buf).expect("read");
    assert_eq!(n, 1);
    // SAFETY: poll on one pollfd on our stack.
    assert_eq!(
        unsafe { libc::poll(&mut pfd, 1, 100) },
        0,
        "readable while the writer is open"
    );
    drop(w);
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::poll(&mut pfd, 1, 5000) },
        1,
        "no end of file: someone holds the writer"
    );
    assert_eq!(std::io::Read::read(&mut &r, &mut buf).expect("read"), 0);

    drop(sb);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the waiting child outlived its sandbox"
    );
}

#[test]
fn no_sandbox_can_read_a_waiting_childs_memory() {
    let Some(before) = children_or_skip("waiting child's memory") else {
        return;
    };
    let ws = Ws::new();
    let sb = warmed(&ws);
    let pid = new_child(&before);
    // The waiting child shares this process's memory (its environ is this process's). Control
    // from the host (same user, unconfined): readable.
    let host = std::fs::read(format!("/proc/{pid}/environ")).expect("the host reads it");
    assert!(!host.is_empty());
    // Another sandbox (a fresh one, with /proc readable) tries its memory and its environ; the
    // control inside is its own.
    let other = Sandbox::new(with_proc(&ws)).expect("policy");
    let probe = format!(
        "import os\n\
         for path in ['/proc/{pid}/environ', '/proc/{pid}/mem', '/proc/self/environ']:\n\
         \x20   try:\n\
         \x20       with open(path, 'rb') as f:\n\
         \x20           f.read(16)\n\
         \x20       print(path.split('/')[2], path.split('/')[3], 'read')\n\
         \x20   except OSError as e:\n\
         \x20       print(path.split('/')[2], path.split('/')[3], 'refused', e.errno)\n"
    );
    let o = other
        .run(Command::new(["python3", "-c", probe.as_str()]))
        .expect("run");
    let text = out(&o);
    assert!(
        text.contains(&format!("{pid} environ refused")),
        "another sandbox read the waiting child's environ: {text}"
    );
    assert!(
        text.contains(&format!("{pid} mem refused")),
        "another sandbox opened the waiting child's memory: {text}"
    );
    assert!(text.contains("self environ read"), "control: {text}");
    drop(sb);
}

#[test]
fn a_passed_descriptor_on_the_waiting_childs_socket_number_still_reports_a_failed_exec() {
    let Some(before) = children_or_skip("waiting child's socket number") else {
        return;
    };
    let ws = Ws::new();
    let sb = warmed(&ws);
    let pid = new_child(&before);
    // While it settles it may still hold the ruleset too; the socket is the one that stays.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut sock = fds_of(pid);
    while sock.len() != 1 {
        assert!(std::time::Instant::now() < deadline, "{sock:?}");
        std::thread::sleep(std::time::Duration::from_millis(1));
        sock = fds_of(pid);
    }
    let target = sock[0];
    assert!(target >= 3, "{target}");
    let null = std::fs::File::open("/dev/null").expect("null");
    let r = sb.run(Command::new([ws.s("missing").as_str()]).pass_fd(OwnedFd::from(null), target));
    match r {
        Err(e) => {
            assert_eq!(e.stage(), Some(Stage::Execve), "{e}");
            assert_eq!(e.errno(), Some(libc::ENOENT), "{e}");
        }
        Ok(o) => panic!("the failure went into the passed descriptor: {o:?}"),
    }
    // Control: the same descriptor number with a program that exists runs and sees it.
    let null = std::fs::File::open("/dev/null").expect("null");
    let o = sb
        .run(
            Command::new([
                "/bin/sh",
                "-c",
                &format!("test -e /dev/fd/{target} && echo there"),
            ])
            .pass_fd(OwnedFd::from(null), target),
        )
        .expect("run");
    assert_eq!(out(&o), "there");
}

#[test]
fn signals_sent_to_a_waiting_child_do_not_reach_its_run() {
    let Some(before) = children_or_skip("signals to a waiting child") else {
        return;
    };
    let ws = Ws::new();
    let sb = warmed(&ws);
    let pid = new_child(&before);
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // Blocked while it waits, so pending (control: the signal did arrive).
    let pending = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("ShdPnd:\t").map(str::to_string))
        .expect("ShdPnd");
    let bits = u64::from_str_radix(pending.trim(), 16).expect("hex");
    assert_ne!(
        bits & (1 << (libc::SIGTERM - 1)),
        0,
        "SIGTERM not pending: {pending}"
    );
    let o = sb
        .run(Command::new(["/bin/sh", "-c", "sleep 0.2; echo alive"]))
        .expect("run");
    assert_eq!(o.exit_code, Some(0), "{o:?}");
    assert_eq!(out(&o), "alive");
}

#[test]
fn a_waiting_child_serves_only_the_thread_that_made_it() {
    let ws = Ws::new();
    let sb = warmed(&ws);
    std::thread::scope(|s| {
        s.spawn(|| {
            // This thread's first run starts directly, and it makes a child of its own.
            let o = sb.run(Command::new(["/bin/echo", "other"])).expect("run");
            assert_eq!(out(&o), "other");
        });
    });
    assert_eq!(sb.waiting_children(), 2, "one per thread");
    let o = sb.run(Command::new(["/bin/echo", "maker"])).expect("run");
    assert_eq!(out(&o), "maker");
    assert_eq!(sb.waiting_children(), 2);
}

#[test]
fn a_policy_that_denies_a_syscall_of_the_hand_over_keeps_no_child_waiting() {
    let ws = Ws::new();
    let mut p = with_proc(&ws);
    p.extra_deny_syscalls = vec!["fchdir".into()];
    let sb = Sandbox::new(p).expect("policy");
    for i in 0..3 {
        let o = sb.run(Command::new(["/bin/echo", "ran"])).expect("run");
        assert_eq!(out(&o), "ran", "run {i}");
        assert_eq!(sb.waiting_children(), 0, "run {i}");
    }
    // Control: a denied syscall the hand-over does not use keeps the pool.
    let mut p = with_proc(&ws);
    p.extra_deny_syscalls = vec!["flock".into()];
    let sb = Sandbox::new(p).expect("policy");
    for _ in 0..2 {
        sb.run(Command::new(["/bin/true"])).expect("run");
    }
    assert_eq!(sb.waiting_children(), 1);
}

#[test]
fn children_of_ended_threads_make_room_and_the_pool_stays_bounded() {
    let ws = Ws::new();
    let sb = warmed(&ws);
    for t in 0..10 {
        std::thread::scope(|s| {
            s.spawn(|| {
                let o = sb.run(Command::new(["/bin/echo", "t"])).expect("run");
                assert_eq!(out(&o), "t");
            });
        });
        let n = sb.waiting_children();
        assert!(n <= 8, "after thread {t}: {n} waiting");
        // Until the cap, each thread leaves one; at the cap, an ended thread's child makes room.
        assert_eq!(n, (t + 2).min(8), "after thread {t}");
    }
    // This thread's own child was kept (its maker is alive) and serves it.
    let o = sb.run(Command::new(["/bin/echo", "main"])).expect("run");
    assert_eq!(out(&o), "main");
    assert_eq!(sb.waiting_children(), 8);
}
