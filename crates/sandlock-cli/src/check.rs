//! `sandlock check`: the doctor report from the core, as text or JSON.

use clap::Args;

/// Flags of `sandlock check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Skip the live test (running /bin/true in a sandbox).
    #[arg(long = "no-live")]
    no_live: bool,
}

/// Prints the report; exits 0 when everything is enforced, 1 when something is missing, 2 when
/// sandlock cannot run here at all.
pub fn run(a: CheckArgs) -> i32 {
    let report = sandlock_core::check::report(!a.no_live);
    if a.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("sandlock: cannot encode the report: {e}");
                return 2;
            }
        }
    } else {
        println!("{report}");
    }
    match (&report.live_test, report.not_enforced.is_empty()) {
        (Some(t), _) if !t.ok => 2,
        (_, true) => 0,
        (_, false) => 1,
    }
}
