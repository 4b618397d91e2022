//! `sandlock`: run a command confined by Landlock and seccomp, check what this machine supports, or
//! serve sandboxed code execution over MCP.

mod check;
mod run;
mod signals;

use clap::{Parser, Subcommand};

/// Run untrusted code confined by Landlock and seccomp: no root, no namespaces, no containers.
#[derive(Debug, Parser)]
#[command(name = "sandlock", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a command in a sandbox: sandlock run [FLAGS] -- CMD [ARGS]...
    Run(Box<run::RunArgs>),
    /// Report what this kernel and environment let sandlock enforce.
    Check(check::CheckArgs),
    /// Serve sandboxed code execution over MCP (Streamable HTTP or stdio), one workspace per session.
    Mcp(Box<sandlock_mcp::McpArgs>),
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { run::EXIT_SANDBOX } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let code = match cli.command {
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
