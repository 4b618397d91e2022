//! The cgroup v2 backend, against the real kernel: a run gets its own cgroup (and every process it
//! starts is in it), the cgroup is removed afterwards, `require` fails closed with the stage and a
//! hint when a cgroup or a controller is missing, and `auto` falls back to the supervisor.
//!
//! Whether cgroups should work here is worked out independently of the code under test (our own
//! cgroup v2 directory, writable by us), so that a backend that always failed could not pass as
//! "unavailable". Parts that need a controller this machine does not offer to child cgroups are
//! skipped with the reason printed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sandlock_core::{ByteSize, CgroupMode, Command, Error, Reason, Sandbox, Seconds, Stage};

use super::support::*;

/// Our own cgroup v2 directory, if this process can see one.
fn own_cgroup_dir() -> Option<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?.to_string();
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if !right.starts_with("cgroup2 ") {
            return None;
        }
        let f: Vec<&str> = left.split_whitespace().collect();
        let rel = path.strip_prefix(f.get(3)?.trim_end_matches('/'))?;
        let d = PathBuf::from(f.get(4)?).join(rel.trim_start_matches('/'));
        d.is_dir().then_some(d)
    })
}

/// Whether we can create a cgroup in `dir` and move a process into it, found out by doing it
/// (a scratch cgroup and a shell that joins it), not by the rules the code under test applies.
fn can_join(dir: &std::path::Path) -> bool {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let scratch = dir.join(format!("cgroup-join-probe-{}-{n}", std::process::id()));
    if std::fs::create_dir(&scratch).is_err() {
        return false;
    }
    let procs = scratch.join("cgroup.procs");
    let out = std::process::Command::new("/bin/sh")
        .args(["-c", "echo 0 > \"$1\" && cat /proc/self/cgroup", "sh"])
        .arg(&procs)
        .output();
    let _ = std::fs::remove_dir(&scratch);
    let name = scratch.file_name().unwrap().to_string_lossy().into_owned();
    out.is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(&name))
}

fn usable() -> Option<PathBuf> {
    own_cgroup_dir().filter(|d| can_join(d))
}

/// A usable cgroup directory, or a printed skip naming `what` needed one.
fn usable_or_skip(what: &str) -> Option<PathBuf> {
    let found = usable();
    if found.is_none() {
        skip(
            what,
            "no cgroup v2 directory this process can create and join",
        );
    }
    found
}

/// A usable cgroup directory that offers `controller` to child cgroups, or a printed skip.
pub(super) fn offering(controller: &str) -> Option<PathBuf> {
    let found = usable().filter(|d| controllers(d).iter().any(|c| c == controller));
    if found.is_none() {
        skip(
            &format!("{controller} controller"),
            &format!(
                "no cgroup v2 directory this process can join offers the {controller} controller \
                 here (on the development VM it is bound to the cgroup v1 hierarchy)"
            ),
        );
    }
    found
}

fn controllers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("cgroup.subtree_control"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn cgroup_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_default()
        .to_string()
}

fn sandbox_error(e: Error) -> sandlock_core::SandboxError {
    match e {
        Error::Sandbox(s) => s,
        other => panic!("expected a sandbox error, got {other}"),
    }
}

#[test]
fn each_run_gets_its_own_cgroup_which_holds_every_process_and_is_removed() {
    let ws = Ws::new();
    let mut p = policy(&ws);
    p.cgroup = CgroupMode::Require;
    let Some(dir) = usable() else {
        // Fail closed: no cgroup, no run, and the error says where and what to do. (Here the
        // oracle found no cgroup this process can create and join.)
        let e = sandbox_error(
            Sandbox::new(p)
                .err()
                .expect("require without a cgroup must fail"),
        );
        assert_eq!(e.stage, Stage::Cgroup, "{e}");
        assert!(e.hint.contains("cgroup = \"auto\""), "{e}");
        skip(
            "cgroup membership",
            "no writable cgroup v2 directory here (read-only or not delegated)",
        );
        return;
    };
    let own = cgroup_of(std::process::id() as i32);
    let r = Sandbox::new(p)
        .unwrap()
        .spawn(Command::new([
            "/bin/sh",
            "-c",
            "sleep 5 & sleep 5 & echo started; wait",
        ]))
        .unwrap();
    let pid = r.pid();
    // The main process and both background jobs are in the run's cgroup, not ours.
    let t0 = Instant::now();
    let cg = loop {
        let members: Vec<i32> = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect();
        if members.len() == 2 {
            let cg = cgroup_of(pid);
            for m in members {
                assert_eq!(
                    cgroup_of(m),
                    cg,
                    "a child of the sandbox is outside its cgroup"
                );
            }
            break cg;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the jobs did not start"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_ne!(cg, own, "the run is in the host's cgroup");
    let name = cg.rsplit('/').next().unwrap().to_string();
    assert!(name.starts_with("sandlock-"), "{cg}");
    let on_disk = dir.join(&name);
    assert!(on_disk.is_dir(), "{}", on_disk.display());
    let mut r = r;
    r.kill(Reason::Signaled, "the test is done");
    let o = r.wait().unwrap();
    assert_eq!(o.reason, Reason::Signaled, "{o:?}");
    // Everything in it is gone, and so is the directory.
    assert!(!on_disk.exists(), "{} was left behind", on_disk.display());

    // Control: with cgroups off the run stays in the host's cgroup.
    let mut p = policy(&ws);
    p.cgroup = CgroupMode::Off;
    let r = Sandbox::new(p)
        .unwrap()
        .spawn(Command::new(["/bin/sleep", "5"]))
        .unwrap();
    assert_eq!(cgroup_of(r.pid()), own);
    let mut r = r;
    r.kill(Reason::Signaled, "the test is done");
    r.wait().unwrap();
}

#[test]
fn cpu_time_comes_from_the_cgroup_and_counts_orphans_that_already_exited() {
    let ws = Ws::new();
    if usable().is_none() {
        skip(
            "cgroup cpu.stat",
            "no cgroup v2 directory this process can create and join",
        );
        return;
    }
    // Orphans (nobody waits for them, so no rusage reaches us) each burn 40 ms of their own CPU
    // time and exit; only the cgroup's cpu.stat sees all of them. They count CPU, not wall time,
    // and the main shell waits for each one's marker, so a loaded machine (which gives each orphan
    // a smaller share of a CPU) cannot make them burn less.
    let burn = "for i in 1 2 3 4 5 6 7 8; do (python3 -c 'import sys, time\n\
                while time.process_time() < 0.04: pass\n\
                open(sys.argv[1], \"w\").close()' \"$HOME/burnt.$i\" &); sleep 0.06; done; \
                n=0; while [ $(ls \"$HOME\"/burnt.* 2>/dev/null | wc -l) -lt 8 ] && [ $n -lt 1500 ]; do \
                sleep 0.02; n=$((n+1)); done; rm -f \"$HOME\"/burnt.*; sleep 0.05";
    let run = |mode: CgroupMode| {
        let mut p = policy(&ws);
        p.cgroup = mode;
        let o = sh(&p, burn);
        ok(&o);
        o.cpu_time
    };
    let with = run(CgroupMode::Require);
    let without = run(CgroupMode::Off);
    assert!(
        with >= Duration::from_millis(250),
        "cpu_time {with:?} misses the orphans (without a cgroup: {without:?})"
    );
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "NOTE orphans' CPU: {with:?} from cpu.stat, {without:?} from sampling alone"
    );
}

#[test]
fn abandoned_run_cgroups_are_removed_and_held_ones_are_not() {
    let Some(dir) = usable_or_skip("stale cgroups") else {
        return;
    };
    use std::os::fd::AsRawFd;
    // One left by a host that is gone (nobody holds its lock), one held by a live host. Other
    // tests clean up concurrently, so the held one may vanish before it is locked: then again.
    let gone = dir.join("sandlock-0-00000000deadbeef-0");
    let held = dir.join("sandlock-0-00000000deadbeef-1");
    let lock = loop {
        let _ = std::fs::create_dir(&held);
        let Ok(f) = std::fs::File::open(&held) else {
            continue;
        };
        // SAFETY: flock on a descriptor we own.
        assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
        if held.exists() {
            break f;
        }
    };
    std::fs::create_dir(&gone).unwrap();
    let ws = Ws::new();
    let mut p = policy(&ws);
    p.cgroup = CgroupMode::Require;
    ok(&sh(&p, "true"));
    let (gone_exists, held_exists) = (gone.exists(), held.exists());
    drop(lock);
    let _ = std::fs::remove_dir(&held);
    let _ = std::fs::remove_dir(&gone);
    assert!(!gone_exists, "an abandoned cgroup was left");
    assert!(held_exists, "a cgroup another host holds was removed");
}

#[test]
fn require_fails_closed_when_a_limit_has_no_controller_and_auto_falls_back() {
    let ws = Ws::new();
    let mut p = policy(&ws);
    p.cgroup = CgroupMode::Require;
    p.max_memory = Some(ByteSize(64 << 20));
    let offered = usable().map(|d| controllers(&d)).unwrap_or_default();
    if offered.iter().any(|c| c == "memory") {
        skip(
            "require without a memory controller",
            "this machine offers the memory controller; memory_max_is_enforced_by_the_kernel covers it",
        );
    } else {
        let e = sandbox_error(Sandbox::new(p.clone()).err().expect("must fail closed"));
        assert_eq!(e.stage, Stage::Cgroup, "{e}");
        assert!(
            e.to_string().contains("memory controller") || e.to_string().contains("no usable"),
            "{e}"
        );
    }
    // Control: the same limits with cgroup = "auto" run, enforced by the supervisor.
    p.cgroup = CgroupMode::Auto;
    let o = sh(&p, "echo ok");
    ok(&o);
    if !offered.iter().any(|c| c == "memory") {
        assert_eq!(o.limit_mechanism, sandlock_core::LimitMechanism::Supervisor);
        assert!(o.kernel_limits.is_empty());
    }
}

#[test]
fn a_cgroup_parent_that_is_not_cgroup2_is_refused_by_require_and_ignored_by_auto() {
    let ws = Ws::new();
    let mut p = policy(&ws);
    p.cgroup = CgroupMode::Require;
    p.cgroup_parent = Some(ws.path().to_path_buf());
    let e = sandbox_error(Sandbox::new(p.clone()).err().expect("must fail closed"));
    assert_eq!(e.stage, Stage::Cgroup);
    assert!(e.to_string().contains("not a cgroup v2 directory"), "{e}");
    p.cgroup = CgroupMode::Auto;
    p.max_memory = Some(ByteSize(64 << 20));
    ok(&sh(&p, "true"));
    // A parent that does not exist is a policy error naming the field.
    p.cgroup_parent = Some(ws.join("missing"));
    let e = Sandbox::new(p).err().expect("missing parent");
    assert!(e.to_string().contains("cgroup_parent"), "{e}");
}

#[test]
fn memory_max_is_enforced_by_the_kernel() {
    let ws = Ws::new();
    let Some(dir) = offering("memory") else {
        return;
    };
    let mut p = policy(&ws);
    p.cgroup = CgroupMode::Require;
    p.max_memory = Some(ByteSize(128 << 20));
    p.timeout = Some(Seconds(Duration::from_secs(60)));
    let o = py(&p, "b = bytearray(2 << 30)\nprint(len(b))");
    assert_eq!(o.reason, Reason::Memory, "{o:?} ({})", dir.display());
    assert_eq!(o.kernel_limits, vec!["memory.max".to_string()]);
    assert_eq!(o.limit_mechanism, sandlock_core::LimitMechanism::CgroupV2);
    // memory.peak also counts page cache the interpreter read in: some slack over the cap.
    assert!(
        o.peak_memory <= (128 << 20) + (32 << 20),
        "peak {}",
        o.peak_memory
    );
    // Control: under the cap.
    let o = py(&p, "b = bytearray(32 << 20)\nprint(len(b) >> 20)");
    ok(&o);
    assert_eq!(out(&o), "32");
}

#[test]
fn pids_max_is_enforced_by_the_kernel() {
    let ws = Ws::new();
    if offering("pids").is_none() {
        return;
    }
    let mut p = policy(&ws);
    p.cgroup = CgroupMode::Require;
    p.max_threads = Some(16);
    p.timeout = Some(Seconds(Duration::from_secs(60)));
    let o = py(
        &p,
        "import threading, time\nfor i in range(200): threading.Thread(target=time.sleep, args=(5,)).start()",
    );
    assert_eq!(o.reason, Reason::Processes, "{o:?}");
    assert_eq!(o.kernel_limits, vec!["pids.max".to_string()]);
    // Control: under the cap.
    ok(&py(
        &p,
        "import threading\nts=[threading.Thread(target=print) for i in range(4)]\n[t.start() for t in ts]\n[t.join() for t in ts]",
    ));
}

#[test]
fn many_runs_leave_no_cgroup_behind() {
    let Some(dir) = usable_or_skip("cgroup leaks") else {
        return;
    };
    let ours = || {
        let prefix = format!("sandlock-{}-", std::process::id());
        std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .count()
    };
    let ws = Ws::new();
    let mut p = policy(&ws);
    p.cgroup = CgroupMode::Require;
    let sb = Sandbox::new(p).unwrap();
    ok(&sb.run(Command::new(["/bin/true"])).unwrap());
    for _ in 0..100 {
        let o = sb
            .run(Command::new(["/bin/sh", "-c", "sleep 10 & echo"]))
            .unwrap();
        ok(&o);
    }
    // Other tests run sandboxes (and their cgroups) concurrently in this process: wait for ours.
    let t0 = Instant::now();
    while ours() > 0 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ours(), 0, "run cgroups were left in {}", dir.display());
}

#[test]
fn max_processes_alone_gets_a_kernel_backstop_of_64_tasks_per_process() {
    let ws = Ws::new();
    if offering("pids").is_none() {
        return;
    }
    let mut p = policy(&ws);
    p.cgroup = CgroupMode::Require;
    p.max_processes = Some(4);
    p.timeout = Some(Seconds(Duration::from_secs(60)));
    // One process, so never over max_processes, but 300 threads: over the 4 x 64 = 256 tasks
    // that pids.max allows.
    let o = py(
        &p,
        "import threading, time\nfor i in range(300): threading.Thread(target=time.sleep, args=(5,)).start()",
    );
    assert_eq!(o.reason, Reason::Processes, "{o:?}");
    assert_eq!(o.kernel_limits, vec!["pids.max".to_string()]);
    let detail = o.detail.unwrap_or_default();
    assert!(
        detail.contains("pids.max=256, the backstop for max_processes=4"),
        "{detail}"
    );
    // Control: 100 threads in one process stay under the backstop.
    ok(&py(
        &p,
        "import threading, time\nts=[threading.Thread(target=time.sleep, args=(0.2,)) for i in range(100)]\n[t.start() for t in ts]\n[t.join() for t in ts]\nprint('ok')",
    ));
}
