//! Prometheus metrics, written in the text exposition format by hand (a handful of series does
//! not need a metrics library).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the call-duration histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Counters and histograms of tool calls.
#[derive(Default)]
pub struct Metrics {
    calls: Mutex<BTreeMap<(String, String), u64>>,
    durations: Mutex<BTreeMap<String, Histogram>>,
    misrouted: Mutex<BTreeMap<&'static str, u64>>,
}

/// Gauges read at scrape time.
pub struct Gauges {
    /// Sandboxes running now.
    pub active_sandboxes: usize,
    /// Calls waiting for a slot.
    pub queue_depth: usize,
    /// Workspaces alive.
    pub workspaces: usize,
    /// Python fork servers alive (at most one per workspace).
    pub fork_servers: usize,
    /// Background commands running.
    pub background_commands: usize,
    /// Persistent Python interpreters alive (at most one per workspace).
    pub python_persistent: usize,
    /// The pool of ready workspaces.
    pub pool: crate::pool::PoolStats,
    /// Whether the server is draining for shutdown.
    pub draining: bool,
}

impl Metrics {
    /// Records one finished call of `tool` whose outcome is `outcome` (`exited`, `timeout`,
    /// `busy`, `error`, ...).
    pub fn record(&self, tool: &str, outcome: &str, took: Duration) {
        if let Ok(mut c) = self.calls.lock() {
            *c.entry((tool.to_string(), outcome.to_string()))
                .or_insert(0) += 1;
        }
        if let Ok(mut d) = self.durations.lock() {
            let h = d.entry(tool.to_string()).or_default();
            let s = took.as_secs_f64();
            for (i, b) in BUCKETS.iter().enumerate() {
                if s <= *b {
                    h.counts[i] += 1;
                }
            }
            h.count += 1;
            h.sum += s;
        }
    }

    /// Counts a request that carried an id another replica minted: `kind` is `session` (an
    /// `Mcp-Session-Id`) or `workspace` (a workspace handle).
    pub fn misrouted(&self, kind: &'static str) {
        if let Ok(mut m) = self.misrouted.lock() {
            *m.entry(kind).or_insert(0) += 1;
        }
    }

    /// The exposition text.
    pub fn render(&self, g: &Gauges) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# HELP sandlock_mcp_calls_total Tool calls by tool and outcome (the run's reason: exited, \
             timeout, memory, ...; or busy, shutting_down, invalid, cancelled; file and command \
             tools: ok, error; a background command started: background).\n\
             # TYPE sandlock_mcp_calls_total counter"
        );
        if let Ok(c) = self.calls.lock() {
            for ((tool, outcome), n) in c.iter() {
                let _ = writeln!(
                    o,
                    "sandlock_mcp_calls_total{{tool=\"{tool}\",outcome=\"{outcome}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            o,
            "# HELP sandlock_mcp_call_duration_seconds Tool call duration, queueing included.\n\
             # TYPE sandlock_mcp_call_duration_seconds histogram"
        );
        if let Ok(d) = self.durations.lock() {
            for (tool, h) in d.iter() {
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        o,
                        "sandlock_mcp_call_duration_seconds_bucket{{tool=\"{tool}\",le=\"{b}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    o,
                    "sandlock_mcp_call_duration_seconds_bucket{{tool=\"{tool}\",le=\"+Inf\"}} {}\n\
                     sandlock_mcp_call_duration_seconds_sum{{tool=\"{tool}\"}} {}\n\
                     sandlock_mcp_call_duration_seconds_count{{tool=\"{tool}\"}} {}",
                    h.count, h.sum, h.count
                );
            }
        }
        let _ = writeln!(
            o,
            "# HELP sandlock_mcp_misrouted_total Requests that carried a session id or workspace \
             handle of another replica (the proxy does not route by the id's prefix, or the \
             owner is down).\n\
             # TYPE sandlock_mcp_misrouted_total counter"
        );
        if let Ok(m) = self.misrouted.lock() {
            for kind in ["session", "workspace"] {
                let n = m.get(kind).copied().unwrap_or(0);
                let _ = writeln!(o, "sandlock_mcp_misrouted_total{{id=\"{kind}\"}} {n}");
            }
        }
        let gauges = [
            (
                "sandlock_mcp_active_sandboxes",
                "Sandboxed runs in progress.",
                g.active_sandboxes,
            ),
            (
                "sandlock_mcp_queue_depth",
                "Calls waiting for a free run slot.",
                g.queue_depth,
            ),
            (
                "sandlock_mcp_workspaces",
                "Workspace directories alive.",
                g.workspaces,
            ),
            (
                "sandlock_mcp_fork_servers",
                "Python fork servers alive (at most one per workspace; see --python-start).",
                g.fork_servers,
            ),
            (
                "sandlock_mcp_background_commands",
                "Background commands running (execute_shell with background=true).",
                g.background_commands,
            ),
            (
                "sandlock_mcp_python_persistent",
                "Persistent Python interpreters alive (execute_python with persistent: true; at \
                 most one per workspace).",
                g.python_persistent,
            ),
            (
                "sandlock_mcp_draining",
                "1 while the server shuts down.",
                usize::from(g.draining),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let p = &g.pool;
        let _ = writeln!(
            o,
            "# HELP sandlock_mcp_python_pool_ready Ready workspaces in the pool (each with its Python \
             fork server started), out of sandlock_mcp_python_pool_size.\n\
             # TYPE sandlock_mcp_python_pool_ready gauge\n\
             sandlock_mcp_python_pool_ready {}\n\
             # HELP sandlock_mcp_python_pool_size How many ready workspaces the pool holds when full \
             (--python-pool).\n\
             # TYPE sandlock_mcp_python_pool_size gauge\n\
             sandlock_mcp_python_pool_size {}\n\
             # HELP sandlock_mcp_python_pool_claims_total New workspaces, by whether the pool had a \
             ready one (ready) or not (empty).\n\
             # TYPE sandlock_mcp_python_pool_claims_total counter\n\
             sandlock_mcp_python_pool_claims_total{{result=\"ready\"}} {}\n\
             sandlock_mcp_python_pool_claims_total{{result=\"empty\"}} {}",
            p.ready, p.target, p.hits, p.misses
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_counters_histogram_and_gauges() {
        let m = Metrics::default();
        m.record("execute_python", "exited", Duration::from_millis(20));
        m.record("execute_python", "timeout", Duration::from_secs(3));
        m.misrouted("workspace");
        let t = m.render(&Gauges {
            active_sandboxes: 2,
            queue_depth: 1,
            workspaces: 3,
            fork_servers: 4,
            background_commands: 5,
            python_persistent: 6,
            pool: crate::pool::PoolStats {
                ready: 1,
                target: 2,
                hits: 7,
                misses: 3,
            },
            draining: false,
        });
        assert!(
            t.contains("sandlock_mcp_calls_total{tool=\"execute_python\",outcome=\"exited\"} 1")
        );
        assert!(t.contains(
            "sandlock_mcp_call_duration_seconds_bucket{tool=\"execute_python\",le=\"0.025\"} 1"
        ));
        assert!(t.contains(
            "sandlock_mcp_call_duration_seconds_bucket{tool=\"execute_python\",le=\"5\"} 2"
        ));
        assert!(t.contains("sandlock_mcp_call_duration_seconds_count{tool=\"execute_python\"} 2"));
        assert!(t.contains("sandlock_mcp_active_sandboxes 2"));
        assert!(t.contains("sandlock_mcp_queue_depth 1"));
        assert!(t.contains("sandlock_mcp_fork_servers 4"));
        assert!(t.contains("sandlock_mcp_background_commands 5"));
        assert!(t.contains("sandlock_mcp_misrouted_total{id=\"workspace\"} 1"));
        assert!(t.contains("sandlock_mcp_misrouted_total{id=\"session\"} 0"));
        assert!(t.contains("sandlock_mcp_python_persistent 6"));
        assert!(t.contains("sandlock_mcp_python_pool_ready 1\n"));
        assert!(t.contains("sandlock_mcp_python_pool_size 2\n"));
        assert!(t.contains("sandlock_mcp_python_pool_claims_total{result=\"ready\"} 7\n"));
        assert!(t.contains("sandlock_mcp_python_pool_claims_total{result=\"empty\"} 3\n"));
    }
}
