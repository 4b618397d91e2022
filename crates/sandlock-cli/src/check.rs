//! `sandlock check`: the doctor report from the core, as text or JSON.

use clap::Args;

/// Flags of `sandlock check`.
#[derive(Debug, Args)]
#[command(after_help = "\
Each protection line says what enforces it on this kernel:
  landlock     the kernel itself (Landlock)
  seccomp      the seccomp filter (before Linux 6.10 it also keeps device ioctls in check,
               as the line explains)
  supervisor   the supervisor, standing in for a Landlock feature this kernel lacks
               (signal scoping before Linux 6.12, TCP ports before 6.7, truncate before 6.2)
  unavailable  nothing here: a policy that needs it fails closed unless best_effort

Environment:
  SANDLOCK_MAX_LANDLOCK_ABI=N   use Landlock ABI N at most (the supervisor stands in for the rest),
                                to enforce a fleet of mixed kernels the same way

Exit status: 0 every protection is enforced, 1 something is unavailable, 2 sandlock cannot run here.

Examples:
  sandlock check
  sandlock check --json | jq '.protections[] | {protection, mechanism}'
  SANDLOCK_MAX_LANDLOCK_ABI=2 sandlock check --no-live")]
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
