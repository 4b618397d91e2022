//! `sandlock`: run a command confined by Landlock and seccomp, check what this machine supports, or
//! serve sandboxed code execution over MCP.

mod check;
mod run;
mod signals;

use clap::{Args, Command, FromArgMatches, Subcommand};

/// See Cargo.toml: musl's allocator unmaps pages as soon as they empty.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// The subcommands, as parsed from [`cli`]'s matches (their help lines are there).
#[derive(Debug, Subcommand)]
enum Cmd {
    /// `sandlock run`.
    Run(Box<run::RunArgs>),
    /// `sandlock check`.
    Check(check::CheckArgs),
    /// `sandlock mcp`.
    Mcp(Box<sandlock_mcp::McpArgs>),
}

/// The command line. Each subcommand's arguments are built only when that subcommand is parsed
/// (or its help shown): building all of them, the MCP server's many flags included, took a
/// `sandlock run` longer than parsing its own (docs/perf/startup.md). The subcommands' help
/// lines are set again after their arguments, whose derived `Args` would replace them with the
/// structs' own doc comments.
fn cli() -> Command {
    Command::new("sandlock")
        .version(env!("CARGO_PKG_VERSION"))
        .about(env!("CARGO_PKG_DESCRIPTION"))
        .propagate_version(true)
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(
            Command::new("run")
                .about(RUN)
                .defer(|c| run::RunArgs::augment_args(c).about(RUN).long_about(None)),
        )
        .subcommand(Command::new("check").about(CHECK).defer(|c| {
            check::CheckArgs::augment_args(c)
                .about(CHECK)
                .long_about(None)
        }))
        .subcommand(Command::new("mcp").about(MCP).defer(|c| {
            sandlock_mcp::McpArgs::augment_args(c)
                .about(MCP)
                .long_about(None)
        }))
}

const RUN: &str = "Run a command in a sandbox: sandlock run [FLAGS] -- CMD [ARGS]...";
const CHECK: &str = "Report what this kernel and environment let sandlock enforce";
const MCP: &str =
    "Serve sandboxed code execution over MCP (Streamable HTTP or stdio), one workspace per session";

fn main() {
    let cmd = match cli()
        .try_get_matches()
        .and_then(|m| Cmd::from_arg_matches(&m))
    {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { run::EXIT_SANDBOX } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let code = match cmd {
        Cmd::Run(a) => run::run(*a),
        Cmd::Check(a) => check::run(a),
        Cmd::Mcp(a) => match sandlock_mcp::run(*a) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("sandlock mcp: {e:#}");
                run::EXIT_SANDBOX
            }
        },
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        let mut cmd = cli();
        cmd.build();
        for sub in cmd.get_subcommands_mut() {
            sub.build();
        }
        cmd.debug_assert();
    }

    #[test]
    fn each_subcommand_parses_into_its_arguments() {
        let parse = |argv: &[&str]| Cmd::from_arg_matches(&cli().try_get_matches_from(argv)?);
        assert!(matches!(
            parse(&["sandlock", "run", "-p", "system", "--", "/bin/true"]),
            Ok(Cmd::Run(_))
        ));
        assert!(matches!(
            parse(&["sandlock", "check", "--no-live"]),
            Ok(Cmd::Check(_))
        ));
        assert!(matches!(
            parse(&["sandlock", "mcp", "--transport", "stdio"]),
            Ok(Cmd::Mcp(_))
        ));
        assert!(parse(&["sandlock", "frobnicate"]).is_err());
    }
}
