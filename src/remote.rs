//! A command run on a node's agent, through the API server, for a caller outside the cluster
//! (`kubectl netprobe doctor`, `arp --all-services` from a laptop): the agent runs the same
//! command there and this prints what it printed, exits as it exited, and says on which node it
//! ran.

use netprobe_agent::client::{run_on_node, OnNode};
use netprobe_k8s::ApiConfig;
use netprobe_probes::Error;

use crate::exit::Exit;
use crate::output::{self, Format};

pub fn run(api: &ApiConfig, on: OnNode, mut argv: Vec<String>, format: Format) -> Result<Exit, Error> {
    let token = crate::vxlan::token(None)?;
    let format = match format {
        Format::Json => "json",
        Format::Table => "table",
    };
    let color = if output::color_enabled() { "always" } else { "never" };
    argv.extend(["-o", format, "--color", color].map(String::from));
    let answer = run_on_node(api, &token, on, argv)?;
    output::emit(&answer.stdout);
    eprint!("{}", answer.stderr);
    eprintln!(
        "netprobe: ran on node {} (its agent, through the API server): netprobe {}",
        answer.node.as_deref().unwrap_or("?"),
        answer.argv.join(" ")
    );
    Ok(Exit::from_code(answer.exit_code))
}
