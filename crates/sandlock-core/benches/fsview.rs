//! What a filesystem view costs (issue 14). Not a test: the same workloads run in a sandbox
//! without a view (the baseline), with a mount (`fs_mount`), and with a private `/tmp`, in
//! alternating rounds of one run, plus unconfined for reference. Results go to
//! docs/perf/fsview.md (or the path in SANDLOCK_BENCH_OUT).
//!
//! `cargo bench -p sandlock-core --bench fsview` (or `scripts/bench.sh fsview`).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sandlock_core::{Command, Policy, Preset, Sandbox};

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

fn per_file(out: &str) -> f64 {
    out.parse().unwrap_or_else(|_| panic!("bad output: {out}"))
}

fn main() {
    let base = tempfile::Builder::new()
        .prefix("sandlock-bench-")
        .tempdir()
        .unwrap();
    let ws = base.path().join("ws");
    let host = base.path().join("host");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::create_dir_all(&host).unwrap();
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
    let (plain, mount, private) = (
        Sandbox::new(plain).unwrap(),
        Sandbox::new(mount).unwrap(),
        Sandbox::new(private).unwrap(),
    );
    let wsd = ws.join("loop").display().to_string();

    // (name, sandbox or unconfined, argv)
    type Row<'a> = (&'a str, Option<&'a Sandbox>, Vec<String>);
    let starts: Vec<Row> = vec![
        ("unconfined", None, vec![]),
        ("no view (baseline)", Some(&plain), vec![]),
        ("`fs_mount` /mnt/data", Some(&mount), vec![]),
        ("`private_tmp`", Some(&private), vec![]),
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
    ];

    let mut start_ms: Vec<Vec<f64>> = vec![Vec::new(); starts.len()];
    let mut loop_us: Vec<Vec<f64>> = vec![Vec::new(); loops.len()];
    for _ in 0..ROUNDS {
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
         source: `crates/sandlock-core/benches/fsview.rs`). Kernel {}, {} CPUs, uid {}. Medians of \
         {ROUNDS} alternating rounds; every ratio is against the sandbox without a view, measured \
         in the same rounds. A policy without `fs_mount` or `private_tmp` keeps the filter it had \
         before views existed (no path syscall reaches the supervisor), so the baseline is what \
         every other sandbox still costs.\n",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        // SAFETY: geteuid takes no arguments.
        unsafe { libc::geteuid() },
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
    let out = std::env::var("SANDLOCK_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/perf/fsview.md")
        });
    std::fs::write(&out, md).unwrap();
    println!("wrote {}", out.display());
}
