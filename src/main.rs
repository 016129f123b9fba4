//! netprobe: the command line. Parses arguments, runs one probe from `netprobe-probes`, renders its
//! report and turns the verdict into the exit code. Packets are built in the probes crate only.

mod arp;
mod cli;
mod conntrack;
mod demo;
mod dns;
mod doctor;
mod exit;
mod iptables;
mod output;
mod remote;
mod vxlan;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command};
use crate::exit::Exit;

/// The command line, named as it was called: `kubectl netprobe` when kubectl runs it as its plugin
/// (kubectl-netprobe on the PATH), so usage and errors show the command the user typed.
fn parse() -> Result<Cli, clap::Error> {
    let mut command = Cli::command();
    let called = std::env::args_os().next().map(std::path::PathBuf::from);
    if called.as_deref().and_then(|p| p.file_name()).is_some_and(|name| name == "kubectl-netprobe") {
        command = command.bin_name("kubectl netprobe");
    }
    command.try_get_matches().and_then(|matches| Cli::from_arg_matches(&matches))
}

/// Whether the arguments ask for JSON, read from the raw arguments: for a usage error, when clap
/// could not parse them.
fn asks_for_json() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    args.iter().enumerate().any(|(i, arg)| {
        matches!(arg.as_str(), "--json" | "-ojson" | "--output=json" | "-o=json")
            || (matches!(arg.as_str(), "-o" | "--output") && args.get(i + 1).is_some_and(|v| v == "json"))
    })
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        // --help and --version also arrive here, and are not errors.
        Err(err) if !err.use_stderr() => {
            let _ = err.print();
            return Exit::Healthy.into();
        }
        Err(err) => {
            let _ = err.print();
            if asks_for_json() {
                // clap's words, on the first line of its message, in the JSON error too.
                let text = err.to_string();
                let first = text.lines().next().unwrap_or_default().trim_start_matches("error: ");
                output::error_json(first, Exit::BadInput);
            }
            return Exit::BadInput.into();
        }
    };
    output::set_color(cli.color);
    let format = cli.format();
    let api = cli.api();
    let result = match cli.command {
        Command::Arp(args) => arp::run(args, &api, format),
        Command::Demo(args) => demo::run(args),
        Command::Completions { shell } => {
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "netprobe", &mut text);
            output::emit(&String::from_utf8_lossy(&text));
            Ok(Exit::Healthy)
        }
        Command::Vxlan(args) => vxlan::run(args, &api, format),
        Command::Agent(args) => vxlan::agent(args, &api),
        Command::Dns(args) => dns::run(args, &api, format),
        Command::Doctor(args) => doctor::run(args, &api, format),
        Command::Iptables(args) => iptables::run(args, format),
        Command::Conntrack(args) => conntrack::run(args, &api, format),
    };
    match result {
        Ok(exit) => exit.into(),
        Err(err) => output::probe_error(format, &err).into(),
    }
}
