//! Leaks: after many runs the host's open fds, threads and zombie children are unchanged. A test
//! binary of its own, so that no other test's threads and descriptors blur the counts.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Mutex;
use std::time::Duration;

/// The tests here measure the whole process; they take turns.
static SERIAL: Mutex<()> = Mutex::new(());

use sandlock_core::{ByteSize, Command, Policy, Preset, Sandbox, Seconds, Stdio};

/// Counts of the host's own resources that a run must not leak.
fn host_resources() -> (usize, usize, usize) {
    let fds = std::fs::read_dir("/proc/self/fd").unwrap().count();
    let threads = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let me = std::process::id().to_string();
    let zombies = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|s| {
            let rest = &s[s.rfind(')').unwrap_or(0) + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.first() == Some(&"Z") && f.get(1) == Some(&me.as_str())
        })
        .count();
    (fds, threads, zombies)
}

/// CI runs 1,000 iterations; set SANDLOCK_LEAK_RUNS=10000 for the full count (the benchmark
/// script does).
#[test]
fn repeated_runs_leak_no_fds_threads_or_zombies() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let runs: usize = std::env::var("SANDLOCK_LEAK_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let ws = tempfile::tempdir().unwrap();
    let sb = Sandbox::new(Policy {
        presets: vec![Preset::System],
        fs_writable: vec![ws.path().to_path_buf()],
        max_processes: Some(8),
        max_memory: Some(ByteSize(256 << 20)),
        max_disk: Some(ByteSize(64 << 20)),
        timeout: Some(Seconds(Duration::from_secs(10))),
        ..Policy::default()
    })
    .unwrap();
    // Warm up lazily created host state (caches) before the baseline.
    for _ in 0..5 {
        sb.run(Command::new(["/bin/true"])).unwrap();
    }
    let before = host_resources();
    for i in 0..runs {
        let cmd = if i % 2 == 0 {
            Command::new(["/bin/sh", "-c", "echo x; /bin/true & wait"])
        } else {
            Command::new(["/bin/true"]).stdin(Stdio::Bytes(b"input".to_vec()))
        };
        let o = sb.run(cmd).unwrap();
        assert!(o.success(), "run {i}: {o:?}");
    }
    let after = host_resources();
    eprintln!("{runs} runs: (fds, threads, zombies) before {before:?}, after {after:?}");
    assert_eq!(
        before, after,
        "(fds, threads, zombie children) changed over {runs} runs"
    );
}

/// Mappings of this process that look like a child stack: 128 KiB read-write right above a
/// 4 KiB guard page.
fn child_stacks() -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let spans: Vec<(u64, u64, bool, bool)> = maps
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (lo, hi) = f.next()?.split_once('-')?;
            let perms = f.next()?;
            let (lo, hi) = (
                u64::from_str_radix(lo, 16).ok()?,
                u64::from_str_radix(hi, 16).ok()?,
            );
            Some((lo, hi, perms.starts_with("---p"), perms.starts_with("rw-p")))
        })
        .collect();
    spans
        .windows(2)
        .filter(|w| {
            let ((glo, ghi, guard, _), (lo, hi, _, rw)) = (w[0], w[1]);
            guard && rw && ghi - glo == 4096 && ghi == lo && hi - lo == 128 << 10
        })
        .count()
}

/// A thread keeps its child stack from one run to the next; one that ends leaves none behind.
#[test]
fn threads_that_ran_sandboxes_leave_no_child_stack_behind() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sb = Sandbox::new(Policy {
        presets: vec![Preset::System],
        ..Policy::default()
    })
    .unwrap();
    let before = child_stacks();
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    for _ in 0..3 {
                        assert!(sb.run(Command::new(["/bin/true"])).unwrap().success());
                    }
                    child_stacks()
                })
            })
            .collect();
        let seen: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(
            seen.iter().all(|&n| n >= 1),
            "a thread that ran sandboxes kept no stack: {seen:?}"
        );
    });
    // The sandbox's own stacks (its waiting child's, and a spare) go with it.
    drop(sb);
    // A test that ran before may still be unmapping its thread's stack: fewer is fine, more leak.
    let after = child_stacks();
    assert!(
        after <= before,
        "stacks of ended threads are still mapped: {after}, {before} before"
    );
}

/// Peak memory is the sandbox's, not the host's: a CLONE_VM child inherits the host's high-water
/// mark at exec, which must not show up in the outcome. In this binary because it inflates the
/// host on purpose.
#[test]
fn peak_memory_reports_the_sandbox_not_the_host() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ws = tempfile::tempdir().unwrap();
    let sb = Sandbox::new(Policy {
        presets: vec![Preset::System],
        fs_writable: vec![ws.path().to_path_buf()],
        ..Policy::default()
    })
    .unwrap();
    let mut hog = vec![0u8; 512 << 20];
    for i in (0..hog.len()).step_by(4096) {
        hog[i] = 1;
    }
    let o = sb.run(Command::new(["/bin/true"])).unwrap();
    assert!(
        o.peak_memory < 64 << 20,
        "a no-op reported {} bytes",
        o.peak_memory
    );
    let o = sb
        .run(Command::new([
            "python3",
            "-c",
            "import time\nb = bytearray(200 << 20)\ntime.sleep(0.3)",
        ]))
        .unwrap();
    assert!(o.success());
    assert!(
        o.peak_memory >= 200 << 20,
        "peak {} for a 200 MiB allocation",
        o.peak_memory
    );
    std::hint::black_box(&hog);
}

/// A host that ignores SIGCHLD has its children reaped by the kernel; the outcome must still be
/// right (Linux 6.15 keeps the exit status in the pidfd) and nothing may fail.
#[test]
fn host_ignoring_sigchld_still_gets_outcomes() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sb = Sandbox::new(Policy {
        presets: vec![Preset::System],
        ..Policy::default()
    })
    .unwrap();
    // SAFETY: process-wide disposition change, undone below; the tests here take turns.
    let old = unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    let o = sb.run(Command::new(["/bin/sh", "-c", "exit 3"]));
    // SAFETY: restores the disposition saved above.
    unsafe { libc::signal(libc::SIGCHLD, old) };
    let o = o.unwrap();
    let (major, minor) = kernel_version();
    if (major, minor) >= (6, 15) {
        assert_eq!(o.exit_code, Some(3), "{o:?}");
    } else {
        assert!(
            o.detail
                .as_deref()
                .unwrap_or("")
                .contains("exit status unavailable"),
            "{o:?}"
        );
    }
}

fn kernel_version() -> (u32, u32) {
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = r.trim().split(['.', '-']).map(|x| x.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}
