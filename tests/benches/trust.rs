//! What a plugin that makes the host work for it costs the agent: a policy whose every call
//! makes a million `host.log` calls (each refused by the log budget after a burst), evaluated
//! every second with the default limits (a policy's `cpu_limit` is 100 ms: 10 % of a core at one
//! call a second). The agent's CPU over 10 s, against a policy that does nothing.
//!
//!     cargo bench -p e2e --bench trust                      # this tree's release agent
//!     AGENT_BIN=/path/to/old/agent cargo bench -p e2e --bench trust   # another build, same fixtures

#[allow(dead_code)]
#[path = "../all/common.rs"]
mod common;

use common::{cpu_seconds, fixture, plugin, plugin_dir, wait_for, Agent};
use std::time::Duration;

fn config(mode: &str) -> String {
    format!(
        "[[group]]\nname = \"g\"\ninterval = \"1s\"\nmetrics = [{{ name = \"system.memory.utilization\", window = \"5s\" }}]\n\
         policy = \"rogue-policy\"\npolicy_config = {{ mode = \"{mode}\" }}\nbackend = \"ledger\"\nmin = 1\nmax = 10\n"
    )
}

/// % of a core the agent used over 10 s, after 5 s of warm-up; and the plugin's faults.
fn measure(mode: &str) -> (f64, serde_json::Value) {
    let dir = plugin_dir(&[&fixture("rogue-policy"), &plugin("ledger")]);
    let agent = Agent::start(dir.path(), &config(mode));
    wait_for("the first evaluation", Duration::from_secs(30), || {
        agent.plugin("rogue-policy").filter(|p| p["calls"].as_u64() > Some(0))
    });
    std::thread::sleep(Duration::from_secs(5));
    let before = cpu_seconds(agent.pid());
    std::thread::sleep(Duration::from_secs(10));
    let used = cpu_seconds(agent.pid()) - before;
    (used / 10.0 * 100.0, agent.plugin("rogue-policy").unwrap())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if std::env::var_os("AGENT_BIN").is_none() {
        common::use_release_agent();
    }
    println!("agent: {}", std::env::var("AGENT_BIN").unwrap());
    let (idle, _) = measure("ok");
    println!("a policy that does nothing, every 1 s      agent CPU {idle:5.1} % of a core");
    let (burn, status) = measure("host-burn");
    println!(
        "a million host.log calls a call, every 1 s  agent CPU {burn:5.1} % of a core  (the plugin's share: 100 ms × 1/s = 10 %; bound 25 %)"
    );
    println!(
        "  the burner: {} calls, {} faults, last fault: {}, state {}, cpu_ns_total {}",
        status["calls"], status["faults"], status["last_fault"], status["state"], status["cpu_ns_total"]
    );
}
