//! Limits: each one contains its bomb, lets a control under the limit succeed, keeps the host
//! usable meanwhile, and reports the right reason.

use std::time::{Duration, Instant};

use sandlock_core::{ByteSize, Command, Outcome, Policy, Reason, Sandbox, Seconds};

use super::support::*;

fn with(ws: &Ws, f: impl FnOnce(&mut Policy)) -> Policy {
    let mut p = policy(ws);
    f(&mut p);
    p
}

/// Live processes in process group `pgid` (zombies excluded).
fn group_alive(pgid: i32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                let rest = &s[s.rfind(')').unwrap_or(0) + 2..];
                let f: Vec<&str> = rest.split_whitespace().collect();
                f.first() != Some(&"Z") && f.get(2).and_then(|g| g.parse().ok()) == Some(pgid)
            })
        })
        .count()
}

/// Waits briefly for killed processes to finish dying.
fn assert_group_gone(pgid: i32) {
    let t0 = Instant::now();
    while group_alive(pgid) > 0 && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(group_alive(pgid), 0, "processes of the sandbox survived");
}

fn run_tracked(p: &Policy, argv: &[&str]) -> (Outcome, i32, Duration) {
    let t0 = Instant::now();
    let r = Sandbox::new(p.clone())
        .unwrap()
        .spawn(Command::new(argv.iter().copied()))
        .unwrap();
    let pgid = r.pid();
    let o = r.wait().unwrap();
    (o, pgid, t0.elapsed())
}

/// The host can still start processes and other sandboxes can still run.
fn host_stays_usable(ws: &Ws) {
    let s = std::process::Command::new("/bin/true")
        .status()
        .expect("host spawn");
    assert!(s.success());
    ok(&run(&policy(ws), &["/bin/echo", "sibling"]));
}

#[test]
fn timeout_kills_the_whole_tree_including_daemons() {
    let ws = Ws::new();
    let p = with(&ws, |p| {
        p.timeout = Some(Seconds(Duration::from_millis(800)))
    });
    let script = r#"
import os, subprocess, time
subprocess.Popen(['sleep', '100'])
subprocess.Popen(['sleep', '100'], start_new_session=True)
if os.fork() == 0:            # a daemon: double fork and setsid
    os.setsid()
    if os.fork() == 0:
        time.sleep(100)
    os._exit(0)
time.sleep(100)
"#;
    let (o, pgid, took) = run_tracked(&p, &["python3", "-c", script]);
    assert_eq!(o.reason, Reason::Timeout, "{o:?}");
    assert_eq!(o.signal, Some(libc::SIGKILL));
    assert!(
        took < Duration::from_millis(800 + 600),
        "returned {took:?} after start"
    );
    assert_group_gone(pgid);
    // Control: a tree that finishes in time (a child process, waited for) exits normally. A shell,
    // not Python, so that it also starts well within the 800 ms on an emulated CPU.
    let o = sh(&p, "sleep 0.1 & wait");
    ok(&o);
}

#[test]
fn background_job_holding_stdout_does_not_hang_the_run() {
    let ws = Ws::new();
    let (o, pgid, took) = run_tracked(&policy(&ws), &["/bin/sh", "-c", "sleep 100 & echo started"]);
    ok(&o);
    assert_eq!(out(&o), "started");
    assert!(
        took < Duration::from_secs(5),
        "run waited for the background job: {took:?}"
    );
    assert_group_gone(pgid);
}

#[test]
fn fork_bomb_is_contained_by_max_processes() {
    // On a real CPU the bomb is over within half a second even without autogroup scheduling (the
    // Debian 6.1 kernel's configuration), whose absence lets the bomb's processes take the CPU
    // from the supervisor one by one. Under qemu TCG the same run took 9 to 15 s as root, with
    // pids.max as the kernel's backstop, and without a cgroup (uid 1000 in the pod harness) it
    // did not end within five minutes: the emulated machine spends its time forking. There the
    // bound is relaxed, and the run without a kernel backstop is left to real CPUs.
    let mut bound = Duration::from_secs(10);
    if let Some(cpu) = emulated_cpu() {
        if super::cgroup::offering("pids").is_none() {
            skip(
                "fork bomb without a cgroup",
                &format!(
                    "the CPU is emulated ({cpu}); without pids.max the emulated machine forks \
                     for minutes before the supervisor's next sample, while on a real CPU the \
                     same run ends in 0.4 s (docs/limits.md)"
                ),
            );
            return;
        }
        bound = Duration::from_secs(60);
    }
    let ws = Ws::new();
    let p = with(&ws, |p| {
        p.max_processes = Some(32);
        p.timeout = Some(Seconds(Duration::from_secs(30)));
    });
    let bomb = std::thread::spawn(move || {
        let (o, pgid, took) = run_tracked(
            &p,
            &["python3", "-c", "import os\nwhile True:\n    os.fork()"],
        );
        (o, pgid, took)
    });
    std::thread::sleep(Duration::from_millis(100));
    host_stays_usable(&ws);
    let (o, pgid, took) = bomb.join().unwrap();
    assert_eq!(o.reason, Reason::Processes, "{o:?}");
    assert!(
        o.detail
            .as_deref()
            .unwrap_or("")
            .contains("max_processes=32"),
        "{:?}",
        o.detail
    );
    assert!(took < bound, "{took:?}");
    assert_group_gone(pgid);
}

/// Two threads that keep both CPUs busy while `f` runs, as a loaded machine does.
fn under_load<T>(f: impl FnOnce() -> T) -> T {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hogs: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                x
            })
        })
        .collect();
    let r = f();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in hogs {
        let _ = h.join();
    }
    r
}

#[test]
fn pipelines_never_fail_to_fork() {
    // dash catches SIGCHLD without SA_RESTART; here the first child exits while the shell forks
    // the second. When process creation waited for the supervisor, that fork failed with EINTR
    // ("Cannot fork") in a few percent of runs under load (issue 13's flake).
    let ws = Ws::new();
    let p = with(&ws, |p| {
        p.max_processes = Some(64);
        p.max_threads = Some(1024);
        p.max_memory = Some(ByteSize(512 << 20));
    });
    let sb = Sandbox::new(p.clone()).unwrap();
    let failures = under_load(|| {
        (0..300)
            .filter(|_| {
                let o = sb
                    .run(Command::new([
                        "/bin/sh",
                        "-c",
                        "head -c 1000 /dev/zero | tr '\\0' x",
                    ]))
                    .unwrap();
                !(o.success() && o.stdout.len() == 1000)
            })
            .count()
    });
    assert_eq!(failures, 0, "pipelines that failed");
    // The same with Python: a SIGCHLD handler, a child exiting during each next fork.
    let code = r#"
import os, signal, errno
signal.signal(signal.SIGCHLD, lambda *a: None)
failed = 0
for i in range(500):
    try:
        a = os.fork()
        if a == 0:
            os._exit(0)
        b = os.fork()
        if b == 0:
            os._exit(0)
        os.waitpid(b, 0)
        os.waitpid(a, 0)
    except OSError as e:
        failed += 1
print(failed)
"#;
    let o = under_load(|| py(&p, code));
    ok(&o);
    assert_eq!(out(&o), "0", "forks that failed");
}

#[test]
fn processes_under_the_cap_succeed() {
    let ws = Ws::new();
    let p = with(&ws, |p| p.max_processes = Some(32));
    let o = py(
        &p,
        "import subprocess\nps = [subprocess.Popen(['sleep', '0.2']) for _ in range(20)]\nprint(sum(q.wait() for q in ps))",
    );
    ok(&o);
    assert_eq!(out(&o), "0");
}

#[test]
fn memory_bomb_is_contained_by_max_memory() {
    let ws = Ws::new();
    let p = with(&ws, |p| {
        p.max_memory = Some(ByteSize(256 << 20));
        p.timeout = Some(Seconds(Duration::from_secs(60)));
    });
    let bomb = {
        let p = p.clone();
        std::thread::spawn(move || {
            run_tracked(
                &p,
                &["python3", "-c", "b = bytearray(4 << 30)\nprint(len(b))"],
            )
        })
    };
    host_stays_usable(&ws);
    let (o, pgid, _) = bomb.join().unwrap();
    assert_eq!(o.reason, Reason::Memory, "{o:?}");
    assert!(o.peak_memory >= 256 << 20, "peak {}", o.peak_memory);
    assert!(
        o.peak_memory < 2 << 30,
        "the cap let it reach {} bytes",
        o.peak_memory
    );
    assert_group_gone(pgid);
    // Control: 64 MiB under a 256 MiB cap.
    let o = py(&p, "b = bytearray(64 << 20)\nprint(len(b) >> 20)");
    ok(&o);
    assert_eq!(out(&o), "64");
}

#[test]
fn memory_split_across_processes_counts_together() {
    let ws = Ws::new();
    let p = with(&ws, |p| {
        p.max_memory = Some(ByteSize(256 << 20));
        p.timeout = Some(Seconds(Duration::from_secs(60)));
    });
    let code = r#"
import os, time
for _ in range(4):
    if os.fork() == 0:
        b = bytearray(100 << 20)
        time.sleep(30)
        os._exit(0)
time.sleep(30)
"#;
    let (o, _, _) = run_tracked(&p, &["python3", "-c", code]);
    assert_eq!(o.reason, Reason::Memory, "{o:?}");
}

#[test]
fn cpu_bomb_is_contained_by_max_cpu() {
    let ws = Ws::new();
    let p = with(&ws, |p| {
        p.max_cpu = Some(Seconds(Duration::from_millis(700)));
        p.timeout = Some(Seconds(Duration::from_secs(30)));
    });
    let (o, pgid, took) = run_tracked(&p, &["python3", "-c", "while True: pass"]);
    assert_eq!(o.reason, Reason::Cpu, "{o:?}");
    assert!(o.cpu_time >= Duration::from_millis(700), "{:?}", o.cpu_time);
    assert!(took < Duration::from_secs(10));
    assert_group_gone(pgid);
    ok(&py(&p, "sum(range(10**5))"));
}

#[test]
fn output_flood_is_truncated_and_bounded() {
    let ws = Ws::new();
    let p = with(&ws, |p| p.max_output = Some(ByteSize(1 << 20)));
    // 10 GiB if nothing stopped it.
    let code = "import sys\nchunk = b'x' * 65536\nfor _ in range(163840):\n    sys.stdout.buffer.write(chunk)";
    let (o, pgid, took) = run_tracked(&p, &["python3", "-c", code]);
    assert_eq!(o.reason, Reason::Output, "{o:?}");
    assert!(o.stdout_truncated);
    assert_eq!(o.stdout.len(), 1 << 20);
    assert!(took < Duration::from_secs(10));
    assert_group_gone(pgid);
    // Control: output under the cap is complete and not flagged.
    let o = py(&p, "print('y' * 100000)");
    ok(&o);
    assert!(!o.stdout_truncated);
    assert_eq!(o.stdout.len(), 100001);
}

#[test]
fn stderr_flood_is_truncated_too() {
    let ws = Ws::new();
    let p = with(&ws, |p| p.max_output = Some(ByteSize(64 << 10)));
    let o = py(
        &p,
        "import sys\nwhile True:\n    sys.stderr.write('e' * 4096)",
    );
    assert_eq!(o.reason, Reason::Output);
    assert!(o.stderr_truncated && !o.stdout_truncated);
    assert_eq!(o.stderr.len(), 64 << 10);
}

#[test]
fn disk_fill_is_contained_by_max_disk() {
    let ws = Ws::new();
    let p = with(&ws, |p| {
        p.max_disk = Some(ByteSize(8 << 20));
        p.timeout = Some(Seconds(Duration::from_secs(30)));
    });
    let code = format!(
        "import os\nfor i in range(1000):\n    with open(os.path.join({:?}, 'f%d' % i), 'wb') as f:\n        f.write(b'z' * (1 << 20))",
        ws.s("")
    );
    let (o, pgid, _) = run_tracked(&p, &["python3", "-c", &code]);
    assert_eq!(o.reason, Reason::Disk, "{o:?}");
    let used: u64 = std::fs::read_dir(ws.path())
        .unwrap()
        .flatten()
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    assert!(used < 64 << 20, "the workspace grew to {used} bytes");
    assert_group_gone(pgid);
    // One big file stops at the cap as well.
    let ws2 = Ws::new();
    let p2 = with(&ws2, |p| p.max_disk = Some(ByteSize(4 << 20)));
    let o = py(
        &p2,
        &format!("open({:?}, 'wb').write(b'z' * (32 << 20))", ws2.s("big")),
    );
    assert_eq!(o.reason, Reason::Disk, "{o:?}");
    assert!(std::fs::metadata(ws2.join("big")).unwrap().len() <= (4 << 20) + 1);
    // Control: writing under the cap works.
    let ws3 = Ws::new();
    let p3 = with(&ws3, |p| p.max_disk = Some(ByteSize(8 << 20)));
    ok(&py(
        &p3,
        &format!("open({:?}, 'wb').write(b'z' * (2 << 20))", ws3.s("ok")),
    ));
}

#[test]
fn file_size_cap_stops_a_single_file() {
    let ws = Ws::new();
    let p = with(&ws, |p| p.max_file_size = Some(ByteSize(1 << 20)));
    let of = format!("of={}", ws.s("f"));
    let o = run(
        &p,
        &["dd", "if=/dev/zero", &of, "bs=1M", "count=4", "status=none"],
    );
    assert_eq!(o.reason, Reason::Disk, "{o:?}");
    assert_eq!(o.signal, Some(libc::SIGXFSZ));
    assert_eq!(std::fs::metadata(ws.join("f")).unwrap().len(), 1 << 20);
    ok(&sh(
        &p,
        &format!(
            "dd if=/dev/zero of={} bs=1K count=10 2>/dev/null",
            ws.s("g")
        ),
    ));
}

#[test]
fn open_files_cap_limits_descriptors() {
    let ws = Ws::new();
    let p = with(&ws, |p| p.max_open_files = Some(16));
    let code = "import errno\nfs = []\ntry:\n    for _ in range(100): fs.append(open('/dev/null'))\nexcept OSError as e:\n    print(errno.errorcode[e.errno], len(fs))";
    let o = py(&p, code);
    ok(&o);
    assert!(out(&o).starts_with("EMFILE"), "{}", out(&o));
    let o = py(
        &p,
        "fs = [open('/dev/null') for _ in range(5)]\nprint(len(fs))",
    );
    ok(&o);
}

#[test]
fn thread_bomb_is_contained_by_max_threads() {
    let ws = Ws::new();
    let p = with(&ws, |p| {
        p.max_threads = Some(64);
        p.timeout = Some(Seconds(Duration::from_secs(30)));
    });
    let bomb = "import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()";
    let (o, pgid, _) = run_tracked(&p, &["python3", "-c", bomb]);
    assert_eq!(o.reason, Reason::Processes, "{o:?}");
    assert!(
        o.detail.as_deref().unwrap_or("").contains("max_threads=64"),
        "{:?}",
        o.detail
    );
    assert_group_gone(pgid);
    // Control: a thread pool under the cap works, and max_processes alone does not count threads.
    let pool = "from concurrent.futures import ThreadPoolExecutor\nwith ThreadPoolExecutor(16) as ex:\n    print(sum(ex.map(lambda x: x, range(100))))";
    ok(&py(&p, pool));
    let procs_only = with(&ws, |p| p.max_processes = Some(4));
    ok(&py(&procs_only, pool));
}

#[test]
fn disk_cap_passed_just_before_exit_still_ends_the_run_with_disk() {
    // `head` passes the cap and is stopped by RLIMIT_FSIZE; the shell exits 0 at once. When the
    // supervisor handles the exit before the inotify events (they arrive in the same epoll
    // wake-up), only the final check at the end of the run sees the cap passed. That ordering is
    // a race, lost now and then under load (it failed a CI run under podsim), so this repeats.
    let ws = Ws::new();
    let p = with(&ws, |p| p.max_disk = Some(ByteSize(1 << 20)));
    for i in 0..20 {
        let f = ws.s(&format!("f{i}"));
        let o = sh(
            &p,
            &format!("head -c 2M /dev/zero > {f} 2>/dev/null; exit 0"),
        );
        // Seen during the run, the shell is killed; seen only at the end, it exited 0. Either
        // way the run passed the cap.
        assert_eq!(o.reason, Reason::Disk, "{o:?}");
        assert!(matches!(o.exit_code, None | Some(0)), "{o:?}");
        std::fs::remove_file(ws.join(&format!("f{i}"))).unwrap();
    }
    // Control: under the cap, the same shape of command is an ordinary exit.
    let o = sh(
        &p,
        &format!("head -c 512K /dev/zero > {}; exit 0", ws.s("small")),
    );
    ok(&o);
}

#[test]
fn workspace_already_over_max_disk_can_shrink_but_not_grow() {
    let ws = Ws::new();
    std::fs::write(ws.join("big"), vec![7u8; 3 << 20]).unwrap();
    let p = with(&ws, |p| p.max_disk = Some(ByteSize(1 << 20)));
    let o = sh(&p, &format!("head -c 2M /dev/zero > {}", ws.s("more")));
    assert_eq!(o.reason, Reason::Disk, "{o:?}");
    // Control: cleaning up is a run like any other, and it is not stopped.
    let o = sh(
        &p,
        &format!("rm -f {} {}; echo cleaned", ws.s("big"), ws.s("more")),
    );
    ok(&o);
    assert_eq!(out(&o), "cleaned");
    assert!(!ws.join("big").exists());
}
