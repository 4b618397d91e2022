//! What a filesystem view costs (issue 14). Not a test: the same workloads run in a sandbox
//! without a view (the baseline), with a mount (`fs_mount`), with a private `/tmp` and in a
//! copy-on-write work directory (`workdir`), in alternating rounds of one run, plus unconfined
//! for reference. Results go to docs/perf/fsview.md (or the path in SANDLOCK_BENCH_OUT).
//!
//! `cargo bench -p sandlock-core --bench fsview` (or `scripts/bench.sh fsview`).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sandlock_core::{Command, CommitMode, Policy, Preset, Sandbox};

const ROUNDS: usize = 9;
const STARTS: usize = 20;
const FILES: usize = 500;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Python that creates, writes, stats, lists, reads and removes `FILES` files in `dir`, and prints
/// the microseconds per file.
fn file_loop(dir: &str) -> String {
    format!(
        "import os, time\n\
         d = {dir:?}\n\
         os.makedirs(d, exist_ok=True); os.chdir(d)\n\
         t0 = time.perf_counter()\n\
         for i in range({FILES}):\n    \
             with open('f%d' % i, 'w') as f: f.write('x' * 100)\n\
         for i in range({FILES}):\n    \
             os.stat('f%d' % i); os.path.exists('g%d' % i)\n\
         names = os.listdir('.')\n\
         for i in range({FILES}):\n    \
             with open(os.path.join(d, 'f%d' % i)) as f: f.read()\n\
         for i in range({FILES}):\n    \
             os.rename('f%d' % i, 'h%d' % i); os.unlink('h%d' % i)\n\
         print((time.perf_counter() - t0) / {FILES} * 1e6)\n"
    )
}

/// Wall time of one run of `argv` in `sb`, in milliseconds; its stdout.
fn timed(sb: &Sandbox, argv: &[&str]) -> (f64, String) {
    let t0 = Instant::now();
    let o = sb.run(Command::new(argv.iter().copied())).unwrap();
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    assert!(
        o.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (ms, String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Python that appends to the `FILES` files `old*` of the working directory and writes `FILES`
/// new ones: what a run leaves for a commit.
fn leave_changes() -> String {
    format!(
        "for i in range({FILES}):\n    \
             open('old%d' % i, 'a').write('+')\n    \
             open('new%d' % i, 'w').write('x' * 100)\n"
    )
}

/// A fresh directory under `base` holding `FILES` files `old*`.
fn fresh(base: &Path, n: &mut usize) -> PathBuf {
    *n += 1;
    let d = base.join(format!("round{n}"));
    std::fs::create_dir(&d).unwrap();
    for i in 0..FILES {
        std::fs::write(d.join(format!("old{i}")), "x".repeat(100)).unwrap();
    }
    d
}

/// The first field of /proc/loadavg.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}

fn per_file(out: &str) -> f64 {
    out.parse().unwrap_or_else(|_| panic!("bad output: {out}"))
}

fn main() {
    let base = tempfile::Builder::new()
        .prefix("sandlock-bench-")
        .tempdir()
        .unwrap();
    let load_before = load();
    let ws = base.path().join("ws");
    let host = base.path().join("host");
    let work = base.path().join("work");
    let rounds = base.path().join("rounds");
    for d in [&ws, &host, &work, &rounds] {
        std::fs::create_dir_all(d).unwrap();
    }
    let plain = Policy {
        presets: vec![Preset::System],
        fs_writable: vec![ws.clone()],
        ..Policy::default()
    };
    let mut mount = plain.clone();
    mount
        .fs_mount
        .insert("/mnt/data".into(), host.display().to_string());
    let mut private = plain.clone();
    private.private_tmp = true;
    let cow = |dir: &Path, commit: CommitMode| Policy {
        presets: vec![Preset::System],
        workdir: Some(dir.to_path_buf()),
        cwd: Some(dir.to_path_buf()),
        commit,
        ..Policy::default()
    };
    let workdir = cow(&work, CommitMode::OnSuccess);
    let (plain, mount, private, workdir) = (
        Sandbox::new(plain).unwrap(),
        Sandbox::new(mount).unwrap(),
        Sandbox::new(private).unwrap(),
        Sandbox::new(workdir).unwrap(),
    );
    let wsd = ws.join("loop").display().to_string();

    // (name, sandbox or unconfined, argv)
    type Row<'a> = (&'a str, Option<&'a Sandbox>, Vec<String>);
    let starts: Vec<Row> = vec![
        ("unconfined", None, vec![]),
        ("no view (baseline)", Some(&plain), vec![]),
        ("`fs_mount` /mnt/data", Some(&mount), vec![]),
        ("`private_tmp`", Some(&private), vec![]),
        ("`workdir` (nothing changed)", Some(&workdir), vec![]),
    ];
    let loops: Vec<Row> = vec![
        ("unconfined, in a directory", None, vec![wsd.clone()]),
        (
            "no view, in the workspace (baseline)",
            Some(&plain),
            vec![wsd.clone()],
        ),
        (
            "`fs_mount`, in the workspace (outside the mount: left to the kernel)",
            Some(&mount),
            vec![wsd.clone()],
        ),
        (
            "`fs_mount`, in /mnt/data (carried out by the supervisor)",
            Some(&mount),
            vec!["/mnt/data/loop".into()],
        ),
        (
            "`private_tmp`, in the workspace (under the host's /tmp: shown at its own path)",
            Some(&private),
            vec![wsd.clone()],
        ),
        (
            "`private_tmp`, in /tmp (carried out by the supervisor)",
            Some(&private),
            vec!["/tmp/loop".into()],
        ),
        (
            "`workdir`, in the work directory (copy-on-write, carried out by the supervisor)",
            Some(&workdir),
            vec![work.join("loop").display().to_string()],
        ),
    ];
    // (name, the policy for a fresh directory)
    type Leave<'a> = (&'a str, Box<dyn Fn(&Path) -> Policy + 'a>);
    let leaves: Vec<Leave> = vec![
        (
            "no view, the directory writable (baseline)",
            Box::new(|d: &Path| Policy {
                presets: vec![Preset::System],
                fs_writable: vec![d.to_path_buf()],
                cwd: Some(d.to_path_buf()),
                ..Policy::default()
            }),
        ),
        (
            "`workdir`, committed (listed, then applied file by file)",
            Box::new(|d: &Path| cow(d, CommitMode::OnSuccess)),
        ),
        (
            "`workdir`, a dry run (listed, then discarded)",
            Box::new(|d: &Path| cow(d, CommitMode::Never)),
        ),
    ];

    let mut start_ms: Vec<Vec<f64>> = vec![Vec::new(); starts.len()];
    let mut loop_us: Vec<Vec<f64>> = vec![Vec::new(); loops.len()];
    let mut leave_ms: Vec<Vec<f64>> = vec![Vec::new(); leaves.len()];
    let mut made = 0;
    let leave = leave_changes();
    for _ in 0..ROUNDS {
        for (i, (_, policy)) in leaves.iter().enumerate() {
            let d = fresh(&rounds, &mut made);
            let sb = Sandbox::new(policy(&d)).unwrap();
            let (ms, _) = timed(&sb, &["python3", "-c", &leave]);
            leave_ms[i].push(ms);
            let changed = std::fs::read_to_string(d.join("old0")).unwrap().len() > 100;
            assert_eq!(changed, i < 2, "{}", leaves[i].0);
            std::fs::remove_dir_all(&d).unwrap();
        }
        for (i, (_, sb, _)) in starts.iter().enumerate() {
            let mut total = 0.0;
            for _ in 0..STARTS {
                total += match sb {
                    Some(sb) => timed(sb, &["python3", "-c", "pass"]).0,
                    None => {
                        let t0 = Instant::now();
                        let o = std::process::Command::new("/usr/bin/python3")
                            .args(["-c", "pass"])
                            .output()
                            .unwrap();
                        assert!(o.status.success());
                        t0.elapsed().as_secs_f64() * 1e3
                    }
                };
            }
            start_ms[i].push(total / STARTS as f64);
        }
        for (i, (_, sb, dir)) in loops.iter().enumerate() {
            let code = file_loop(&dir[0]);
            let us = match sb {
                Some(sb) => per_file(&timed(sb, &["python3", "-c", &code]).1),
                None => {
                    let o = std::process::Command::new("/usr/bin/python3")
                        .args(["-c", &code])
                        .output()
                        .unwrap();
                    per_file(String::from_utf8_lossy(&o.stdout).trim())
                }
            };
            loop_us[i].push(us);
        }
    }

    let mut md = String::new();
    writeln!(
        md,
        "# What a filesystem view costs\n\n\
         Produced by `scripts/bench.sh fsview` (`cargo bench -p sandlock-core --bench fsview`, \
         source: `crates/sandlock-core/benches/fsview.rs`). Kernel {}, {} CPUs, uid {}, load \
         average {load_before} before and {} after (the machine is shared). Medians of {ROUNDS} \
         alternating rounds; every ratio is against the sandbox without a view, measured in the \
         same rounds. A policy without a view (`fs_mount`, `private_tmp`, `workdir`) keeps the \
         filter it had before views existed (no path syscall reaches the supervisor), so the \
         baseline is what every other sandbox still costs.\n",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        // SAFETY: geteuid takes no arguments.
        unsafe { libc::geteuid() },
        load(),
    )
    .unwrap();
    writeln!(
        md,
        "## `python3 -c pass`, wall time of a whole run (mean of {STARTS} runs per round)\n\n\
         | sandbox | ms per run | vs no view |\n|---|---|---|"
    )
    .unwrap();
    let base_start = median(start_ms[1].clone());
    for (i, (name, _, _)) in starts.iter().enumerate() {
        let m = median(start_ms[i].clone());
        let line = format!("| {name} | {m:.1} | {:.2}x |", m / base_start);
        println!("{line}");
        writeln!(md, "{line}").unwrap();
    }
    writeln!(
        md,
        "\n## A file-heavy loop: per file, create and write, stat twice, list, read, rename and \
         remove ({FILES} files per run, Python)\n\n\
         | where | µs per file | vs no view |\n|---|---|---|"
    )
    .unwrap();
    let base_loop = median(loop_us[1].clone());
    for (i, (name, _, _)) in loops.iter().enumerate() {
        let m = median(loop_us[i].clone());
        let line = format!("| {name} | {m:.1} | {:.2}x |", m / base_loop);
        println!("{line}");
        writeln!(md, "{line}").unwrap();
    }
    writeln!(
        md,
        "\n## A run that leaves changes: {FILES} files appended to and {FILES} new ones, wall time \
         of the whole run (the work directory's listing and commit included)\n\n\
         | sandbox | ms per run | vs no view |\n|---|---|---|"
    )
    .unwrap();
    let base_leave = median(leave_ms[0].clone());
    for (i, (name, _)) in leaves.iter().enumerate() {
        let m = median(leave_ms[i].clone());
        let line = format!("| {name} | {m:.1} | {:.2}x |", m / base_leave);
        println!("{line}");
        writeln!(md, "{line}").unwrap();
    }
    let out = std::env::var("SANDLOCK_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/perf/fsview.md")
        });
    std::fs::write(&out, md).unwrap();
    println!("wrote {}", out.display());
}
