//! The sandbox's process group: how the supervisor finds, measures and kills every process of a
//! sandbox without namespaces or cgroups.
//!
//! The child starts a new session and process group (its pgid is its pid), and the seccomp filter
//! turns `setsid`/`setpgid` into no-ops, so every descendant, including ones that double-fork or
//! "daemonize", stays in that group. The supervisor does not reap the main process until it has
//! killed the group, so the group's id cannot be reused while we might still signal it.

use std::collections::BTreeSet;
use std::io::Read;
use std::time::{Duration, Instant};

/// `kill(-pgid, SIGKILL)`: every process of the sandbox at once.
pub(crate) fn kill(pgid: libc::pid_t) {
    // SAFETY: kill takes integers. The group id is the pid of our own unreaped child, so it cannot
    // name another group.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// One live member of the group, as `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) pid: libc::pid_t,
    /// Resident set in bytes.
    pub(crate) rss: u64,
    /// User plus system CPU time, in clock ticks.
    pub(crate) cpu_ticks: u64,
    /// Threads of the process (at least 1).
    pub(crate) threads: u32,
}

/// How often the whole of `/proc` is rescanned for members, to catch processes whose parent
/// exited before we read its `children` list, when the tree is sampled at the usual pace.
const FULL_SCAN_EVERY: Duration = Duration::from_millis(500);
/// A tree sampled more slowly than usual (an idle fork server, once a second) is rescanned once
/// in this many samples instead: a full scan reads every process of the host, about 2.5 ms of CPU
/// with 110 processes, which a server keeping hundreds of idle sandboxes would otherwise pay once
/// a second for each of them.
const FULL_SCAN_SAMPLES: u32 = 10;

/// The members of one sandbox, tracked incrementally so that a sample costs O(sandbox), not
/// O(host): each sample reads the members it knows and the `children` lists of their threads (which
/// is how it finds new processes), and a full scan of `/proc` runs only now and then, to catch
/// processes whose parent exited before they were seen (orphans are reparented outside the tree).
pub(crate) struct Tree {
    pgid: libc::pid_t,
    known: BTreeSet<libc::pid_t>,
    last_full: Instant,
    full_every: Duration,
}

impl Tree {
    /// A tree that is, at `start`, exactly its main process: the first full scan of `/proc` can
    /// wait its turn, so short runs never pay for one.
    pub(crate) fn new(pgid: libc::pid_t, start: Instant) -> Tree {
        Tree {
            pgid,
            known: BTreeSet::from([pgid]),
            last_full: start,
            full_every: FULL_SCAN_EVERY,
        }
    }

    /// Adapts the full scans to a tree sampled every `every`: every [`FULL_SCAN_EVERY`] at the
    /// usual pace, and once in [`FULL_SCAN_SAMPLES`] samples when sampling is slower than that.
    pub(crate) fn set_sample_every(&mut self, every: Duration) {
        self.full_every = FULL_SCAN_EVERY.max(every.saturating_mul(FULL_SCAN_SAMPLES));
    }

    /// The live members now, or, once more processes or threads than `cap` allows have been seen,
    /// [`Sample::Over`] at once. The cap bounds the work of a sample by the cap instead of by the
    /// tree: a fork bomb grows faster than a supervisor sharing the CPU with it can list it, so a
    /// sample that had to see every member would fall further behind with each one.
    pub(crate) fn sample(&mut self, now: Instant, cap: Cap) -> Sample {
        if now.duration_since(self.last_full) >= self.full_every {
            return self.full_scan(now, cap);
        }
        let mut buf = Vec::with_capacity(512);
        let mut live: Vec<Member> = Vec::with_capacity(self.known.len());
        let mut queue: Vec<libc::pid_t> = self.known.iter().copied().collect();
        let mut seen: BTreeSet<libc::pid_t> = self.known.clone();
        let mut count = Count::default();
        while let Some(pid) = queue.pop() {
            let Some(m) = stat(pid, self.pgid, &mut buf) else {
                continue;
            };
            if let Some(over) = count.add(&m, cap) {
                return over;
            }
            for child in children(pid, m.threads) {
                if seen.insert(child) {
                    queue.push(child);
                }
            }
            live.push(m);
        }
        self.known = live.iter().map(|m| m.pid).collect();
        Sample::Members(live)
    }

    /// The live members, from a scan of all of `/proc` (exact, and O(host)); bounded by `cap` as
    /// [`Tree::sample`] is.
    pub(crate) fn full_scan(&mut self, now: Instant, cap: Cap) -> Sample {
        self.last_full = now;
        let sample = members(self.pgid, cap);
        if let Sample::Members(live) = &sample {
            self.known = live.iter().map(|m| m.pid).collect();
        }
        sample
    }
}

/// The process and thread caps a sample stops at (`None`: uncapped).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cap {
    pub(crate) processes: Option<u32>,
    pub(crate) threads: Option<u32>,
}

/// What a sample found.
#[derive(Debug)]
pub(crate) enum Sample {
    /// Every live member.
    Members(Vec<Member>),
    /// More processes or threads than the cap, counted until the count passed it (so the number
    /// is a lower bound): the sample stopped there.
    Over {
        /// Processes counted.
        processes: u32,
        /// Threads counted.
        threads: u32,
    },
}

/// Processes and threads counted so far in one sample.
#[derive(Default)]
struct Count {
    processes: u32,
    threads: u32,
}

impl Count {
    /// Counts `m`; [`Sample::Over`] once the count is over `cap`.
    fn add(&mut self, m: &Member, cap: Cap) -> Option<Sample> {
        self.processes += 1;
        self.threads = self.threads.saturating_add(m.threads);
        let over = cap.processes.is_some_and(|c| self.processes > c)
            || cap.threads.is_some_and(|c| self.threads > c);
        over.then_some(Sample::Over {
            processes: self.processes,
            threads: self.threads,
        })
    }
}

/// The children of process `pid`, from the `children` list of each of its threads (a child is
/// listed under the thread that created it).
fn children(pid: libc::pid_t, threads: u32) -> Vec<libc::pid_t> {
    let mut buf = Vec::new();
    let mut read = |tid: &str, out: &mut Vec<libc::pid_t>| {
        if read_proc(&format!("/proc/{pid}/task/{tid}/children"), &mut buf).is_some() {
            out.extend(
                buf.split(u8::is_ascii_whitespace)
                    .filter_map(|p| std::str::from_utf8(p).ok()?.parse::<libc::pid_t>().ok()),
            );
        }
    };
    let mut out = Vec::new();
    if threads <= 1 {
        read(&pid.to_string(), &mut out);
    } else if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            if let Some(tid) = t.file_name().to_str() {
                read(tid, &mut out);
            }
        }
    }
    out
}

/// The pids of the live members of process group `pgid` (a scan of all of `/proc`).
pub(crate) fn member_pids(pgid: libc::pid_t) -> Vec<libc::pid_t> {
    match members(pgid, Cap::default()) {
        Sample::Members(m) => m.into_iter().map(|m| m.pid).collect(),
        Sample::Over { .. } => Vec::new(),
    }
}

/// Waits up to `limit` for the last live process of group `pgid` (killed already) to be gone;
/// whether it is. A process killed in the middle of a system call finishes that call first.
pub(crate) fn wait_empty(pgid: libc::pid_t, limit: Duration) -> bool {
    let t0 = Instant::now();
    loop {
        if member_pids(pgid).is_empty() {
            return true;
        }
        if t0.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The live (non-zombie) members of process group `pgid`, up to `cap`.
fn members(pgid: libc::pid_t, cap: Cap) -> Sample {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Sample::Members(out);
    };
    let mut buf = Vec::with_capacity(512);
    let mut count = Count::default();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<libc::pid_t>().ok()) else {
            continue;
        };
        if let Some(m) = stat(pid, pgid, &mut buf) {
            if let Some(over) = count.add(&m, cap) {
                return over;
            }
            out.push(m);
        }
    }
    Sample::Members(out)
}

fn stat(pid: libc::pid_t, pgid: libc::pid_t, buf: &mut Vec<u8>) -> Option<Member> {
    read_proc(&format!("/proc/{pid}/stat"), buf)?;
    parse_stat(pid, buf, pgid)
}

/// Reads a small `/proc` file whole into `buf`. `read_to_end` on a `File` first asks for its size
/// and position (a `statx` and an `lseek`, useless here: procfs files report size 0), which would
/// add two syscalls to every file of every sample, the one at the start of each run included.
fn read_proc(path: &str, buf: &mut Vec<u8>) -> Option<()> {
    let mut f = std::fs::File::open(path).ok()?;
    buf.clear();
    let mut chunk = [0u8; 1024];
    loop {
        match f.read(&mut chunk) {
            Ok(0) => return Some(()),
            Ok(n) => buf.extend_from_slice(chunk.get(..n)?),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Parses the fields we need from `/proc/<pid>/stat`; the command name may contain spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_stat(pid: libc::pid_t, text: &[u8], pgid: libc::pid_t) -> Option<Member> {
    let close = text.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(text.get(close + 2..)?).ok()?;
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // After the name: state(3) ppid(4) pgrp(5) ... utime(14) stime(15) ... rss(24), numbered as in proc(5).
    let field = |n: usize| f.get(n - 3).copied();
    if matches!(field(3)?, "Z" | "X") {
        return None;
    }
    if field(5)?.parse::<libc::pid_t>().ok()? != pgid {
        return None;
    }
    let utime: u64 = field(14)?.parse().ok()?;
    let stime: u64 = field(15)?.parse().ok()?;
    let threads: u32 = field(20)?.parse().ok()?;
    let rss_pages: u64 = field(24)?.parse().ok()?;
    Some(Member {
        pid,
        rss: rss_pages.saturating_mul(page_size()),
        cpu_ticks: utime + stime,
        threads,
    })
}

fn page_size() -> u64 {
    // SAFETY: sysconf takes an integer.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}

/// Clock ticks per second, for converting `/proc` CPU times.
pub(crate) fn ticks_per_second() -> u64 {
    // SAFETY: sysconf takes an integer.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_finds_new_children_without_a_full_scan() {
        use std::os::unix::process::CommandExt;
        let t0 = Instant::now();
        let mut parent = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = parent.id() as libc::pid_t;
        let mut tree = Tree::new(pgid, t0);
        let mut n = 0;
        for _ in 0..100 {
            if let Sample::Members(m) = tree.sample(t0, Cap::default()) {
                n = m.len();
            }
            if n == 3 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = parent.kill();
        // SAFETY: kill takes integers; the group is the one we just started.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = parent.wait();
        assert_eq!(n, 3, "the shell and its two sleeps");
    }

    #[test]
    fn an_orphan_is_found_by_the_full_scan_whose_pace_follows_the_sampling() {
        use std::os::unix::process::CommandExt;
        let t0 = Instant::now();
        // The subshell starts a sleep and exits: the sleep is reparented out of the tree, so no
        // `children` list shows it, and only a scan of all of /proc finds it.
        let mut parent = std::process::Command::new("sh")
            .args(["-c", "(sleep 30 &); exec sleep 30"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = parent.id() as libc::pid_t;
        let count = |s: Sample| match s {
            Sample::Members(m) => m.len(),
            Sample::Over { .. } => usize::MAX,
        };
        let mut settled = false;
        for _ in 0..200 {
            if count(members(pgid, Cap::default())) == 2 {
                settled = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut usual = Tree::new(pgid, t0);
        let seen_usual = (
            count(usual.sample(at(100), Cap::default())),
            count(usual.sample(at(600), Cap::default())),
        );
        let mut slow = Tree::new(pgid, t0);
        slow.set_sample_every(Duration::from_secs(1));
        let seen_slow = (
            count(slow.sample(at(600), Cap::default())),
            count(slow.sample(at(10_000), Cap::default())),
        );
        let _ = parent.kill();
        // SAFETY: kill takes integers; the group is the one we just started.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = parent.wait();
        assert!(settled, "the orphaned sleep and the main sleep");
        // At the usual pace a full scan comes after 500 ms; sampled once a second, after 10 samples.
        assert_eq!(seen_usual, (1, 2));
        assert_eq!(seen_slow, (1, 2));
    }

    #[test]
    fn stat_with_spaces_and_parens_in_the_name_parses() {
        let line = b"4242 (evil ) name) S 1 777 777 0 -1 4194560 100 0 0 0 12 34 0 0 20 0 1 0 100 1000000 250 18446744073709551615";
        let m = parse_stat(4242, line, 777).unwrap();
        assert_eq!(m.cpu_ticks, 46);
        assert_eq!(m.threads, 1);
        assert_eq!(m.rss, 250 * page_size());
        assert!(parse_stat(4242, line, 778).is_none());
        let zombie = b"4242 (x) Z 1 777 777 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 100 0 0 0";
        assert!(parse_stat(4242, zombie, 777).is_none());
    }

    #[test]
    fn our_own_group_contains_us() {
        // SAFETY: getpgrp/getpid take no arguments.
        let (pgid, me) = unsafe { (libc::getpgrp(), libc::getpid()) };
        let Sample::Members(all) = members(pgid, Cap::default()) else {
            panic!("an uncapped scan is never over");
        };
        assert!(all.iter().any(|m| m.pid == me));
    }

    #[test]
    fn a_sample_stops_once_the_tree_is_over_its_cap() {
        use std::os::unix::process::CommandExt;
        let t0 = Instant::now();
        let mut parent = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & sleep 30 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = parent.id() as libc::pid_t;
        let mut tree = Tree::new(pgid, t0);
        let cap = |processes| Cap {
            processes: Some(processes),
            threads: None,
        };
        let mut found = None;
        for _ in 0..100 {
            if let Sample::Members(m) = tree.sample(t0, Cap::default()) {
                if m.len() == 4 {
                    found = Some((tree.sample(t0, cap(2)), tree.sample(t0, cap(4))));
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = parent.kill();
        // SAFETY: kill takes integers; the group is the one we just started.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = parent.wait();
        let (over, under) = found.expect("the shell and its three sleeps");
        assert!(
            matches!(over, Sample::Over { processes: 3, .. }),
            "stops at the third process of four: {over:?}"
        );
        assert!(
            matches!(under, Sample::Members(ref m) if m.len() == 4),
            "{under:?}"
        );
    }
}
