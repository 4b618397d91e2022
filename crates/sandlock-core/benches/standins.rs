//! What the supervisor's stand-ins for Landlock features cost (the kernel-reach issue). Not a test:
//! each syscall the stand-ins decide is timed in a loop inside a sandbox where Landlock enforces the
//! rule (this kernel as it is) and where the supervisor does (the same kernel with Landlock capped
//! below the feature's ABI), beside the same loop unconfined, in alternating rounds of one run.
//! Results go to docs/perf/standins.md (or the path in SANDLOCK_BENCH_OUT).
//!
//! `cargo bench -p sandlock-core --bench standins` (or `scripts/bench.sh standins`).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fmt::Write as _;
use std::path::PathBuf;

use sandlock_core::{Command, KernelSupport, Policy, Preset, Sandbox};

const CALLS: usize = 2000;
const ROUNDS: usize = 7;

/// One measured syscall: Python that times `CALLS` of them and prints microseconds per call.
struct Case {
    name: &'static str,
    /// The Landlock ABI that enforces it natively (the stand-in runs with the ABI below it).
    abi: u32,
    setup: &'static str,
    call: &'static str,
    /// The policy allows binding (for `bind`).
    bind: bool,
}

const CASES: &[Case] = &[
    Case {
        name: "`kill(child, 0)`: a signal to another process of the sandbox",
        abi: 6,
        setup: "import subprocess; p = subprocess.Popen(['sleep', '60']); pid = p.pid",
        call: "os.kill(pid, 0)",
        bind: false,
    },
    Case {
        name: "`kill(getpid(), 0)`: a signal to itself (continued)",
        abi: 6,
        setup: "pid = os.getpid()",
        call: "os.kill(pid, 0)",
        bind: false,
    },
    Case {
        name: "`pidfd_open(child)` + `close`",
        abi: 6,
        setup: "import subprocess; p = subprocess.Popen(['sleep', '60']); pid = p.pid",
        call: "os.close(os.pidfd_open(pid))",
        bind: false,
    },
    Case {
        name: "`socket` + `bind(127.0.0.1:0)` + `close` (TCP)",
        abi: 4,
        setup: "import socket",
        call: "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.close()",
        bind: true,
    },
    Case {
        name: "`truncate(path)` of a writable file",
        abi: 3,
        setup: "path = os.path.join(os.environ['HOME'], 'f'); open(path, 'w').close()",
        call: "os.truncate(path, 0)",
        bind: false,
    },
    Case {
        name: "`prlimit(getpid(), NOFILE)` (decided by the supervisor on every kernel)",
        abi: 99,
        setup: "import resource; pid = os.getpid(); lim = resource.getrlimit(resource.RLIMIT_NOFILE)",
        call: "resource.prlimit(pid, resource.RLIMIT_NOFILE, lim)",
        bind: false,
    },
];

fn code(c: &Case) -> String {
    format!(
        "import os, time\n{}\nfor _ in range(50):\n    {}\nt0 = time.perf_counter()\nfor _ in range({CALLS}):\n    {}\nprint((time.perf_counter() - t0) / {CALLS} * 1e6)\n",
        c.setup, c.call, c.call
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn parse(out: &[u8]) -> f64 {
    String::from_utf8_lossy(out)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("bad output: {}", String::from_utf8_lossy(out)))
}

fn main() {
    let ws = tempfile::tempdir().unwrap();
    let k = KernelSupport::detect();
    let mut md = String::new();
    writeln!(
        md,
        "# What the stand-ins for Landlock features cost\n\n\
         Produced by `scripts/bench.sh standins` (`cargo bench -p sandlock-core --bench standins`, \
         source: `crates/sandlock-core/benches/standins.rs`). Kernel {}, Landlock ABI {}, {} CPUs, \
         uid {}. Each row times {CALLS} calls in a Python loop, in {ROUNDS} alternating rounds \
         (median): unconfined, in a sandbox where Landlock enforces the rule (this kernel as it \
         is), and in one where the supervisor stands in for it (Landlock capped below the \
         feature's ABI, as on an older kernel). Only runs on kernels without the feature pay the \
         stand-in's cost, and only for these syscalls.\n",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        k.landlock_abi,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        // SAFETY: geteuid takes no arguments.
        unsafe { libc::geteuid() },
    )
    .unwrap();
    writeln!(
        md,
        "| syscall | unconfined | Landlock | stand-in | stand-in vs unconfined |\n|---|---|---|---|---|"
    )
    .unwrap();
    for c in CASES {
        let mut policy = Policy {
            presets: vec![Preset::System],
            fs_writable: vec![ws.path().to_path_buf()],
            ..Policy::default()
        };
        if c.bind {
            policy.net_allow_bind.push("0".into());
        }
        let native = Sandbox::with_kernel_support(policy.clone(), k).unwrap();
        let standin = (c.abi <= k.landlock_abi).then(|| {
            Sandbox::with_kernel_support(policy, k.limit_landlock_abi(c.abi - 1)).unwrap()
        });
        let script = code(c);
        let (mut bare, mut ll, mut si) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let o = std::process::Command::new("python3")
                .args(["-c", &script])
                .env("HOME", ws.path())
                .output()
                .unwrap();
            bare.push(parse(&o.stdout));
            let o = native
                .run(Command::new(["python3", "-c", &script]))
                .unwrap();
            ll.push(parse(&o.stdout));
            if let Some(s) = &standin {
                let o = s.run(Command::new(["python3", "-c", &script])).unwrap();
                si.push(parse(&o.stdout));
            }
        }
        let (b, l) = (median(bare), median(ll));
        let (s, ratio) = if si.is_empty() {
            (
                "(same as Landlock: no Landlock feature covers it)".to_string(),
                format!("{:.1}x", l / b),
            )
        } else {
            let s = median(si);
            (
                format!("{s:.1} µs"),
                format!("{:.1}x (+{:.1} µs)", s / b, s - b),
            )
        };
        let line = format!("| {} | {b:.1} µs | {l:.1} µs | {s} | {ratio} |", c.name);
        println!("{line}");
        writeln!(md, "{line}").unwrap();
    }
    let out = std::env::var("SANDLOCK_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/perf/standins.md")
        });
    std::fs::write(&out, md).unwrap();
    println!("wrote {}", out.display());
}
