//! Fork safety: many threads spawning while others allocate. Every run must succeed and nothing may
//! hang; the test has its own deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sandlock_core::{Command, Sandbox};

use super::support::*;

const SPAWNERS: usize = 16;
const RUNS_EACH: usize = 200;
const ALLOCATORS: usize = 4;
const DEADLINE: Duration = Duration::from_secs(300);

#[test]
fn sixteen_threads_spawning_while_four_allocate() {
    let ws = Ws::new();
    let sb = Arc::new(Sandbox::new(policy(&ws)).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));

    // A watchdog: a hang must fail the test, not stall CI.
    let watchdog_stop = stop.clone();
    let watchdog_done = done.clone();
    std::thread::spawn(move || {
        let t0 = Instant::now();
        while !watchdog_stop.load(Ordering::Relaxed) {
            if t0.elapsed() > DEADLINE {
                eprintln!(
                    "stress test hung: {} of {} runs done after {:?}",
                    watchdog_done.load(Ordering::Relaxed),
                    SPAWNERS * RUNS_EACH,
                    DEADLINE
                );
                std::process::abort();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });

    let allocators: Vec<_> = (0..ALLOCATORS)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut keep: Vec<Vec<u8>> = Vec::new();
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    keep.push(vec![(n % 251) as u8; 1024 + (n * 37 + i) % 65536]);
                    if keep.len() > 64 {
                        keep.drain(..32);
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();

    let t0 = Instant::now();
    let spawners: Vec<_> = (0..SPAWNERS)
        .map(|t| {
            let sb = sb.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                for i in 0..RUNS_EACH {
                    let o = sb
                        .run(Command::new(["/bin/echo", &format!("{t}-{i}")]))
                        .unwrap_or_else(|e| panic!("run {t}-{i} failed: {e}"));
                    assert!(o.success(), "run {t}-{i}: {:?}", o.reason);
                    assert_eq!(o.stdout, format!("{t}-{i}\n").as_bytes());
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for s in spawners {
        s.join().expect("a spawner thread panicked");
    }
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let allocs: usize = allocators.into_iter().map(|a| a.join().unwrap()).sum();
    assert_eq!(done.load(Ordering::Relaxed), SPAWNERS * RUNS_EACH);
    eprintln!(
        "{} runs in {elapsed:?} ({:.0}/s) while {ALLOCATORS} threads made {allocs} allocations",
        SPAWNERS * RUNS_EACH,
        (SPAWNERS * RUNS_EACH) as f64 / elapsed.as_secs_f64()
    );
}
