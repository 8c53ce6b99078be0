//! `kubectl-prewarm`: the prewarm client as a kubectl plugin (`kubectl prewarm task list`).

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use prewarm_cli::PluginCli;

fn main() -> ExitCode {
    let cli = PluginCli::parse();
    prewarm_cli::run(cli.command, PluginCli::command, "kubectl-prewarm")
}
