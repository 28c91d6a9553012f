//! What an idle agent costs its machine: no thread wakes more than it has to.

use crate::common::{plugin, plugin_dir, thread_wakeups, wait_for, Agent};
use std::time::Duration;

#[test]
fn an_idle_agent_wakes_no_thread_more_than_its_schedule_needs() {
    // Plugins loaded (a source among them), no group, sampling every second, nobody asking the
    // API anything: the sampler and the store writer wake once a second, the rest only for them.
    // What this catches: a loop polling every 100 ms (10 a second), the epoch ticker ticking
    // with no guest running (200 a second), the folder watcher reacting to its own reads.
    let dir = plugin_dir(&[&plugin("target-tracking"), &plugin("ledger"), &plugin("http-json")]);
    let agent = Agent::start(dir.path(), "[agent]\nsample_interval = \"1s\"\n");
    wait_for("plugins loaded", Duration::from_secs(30), || {
        (agent.status()["plugins_settled"] == true).then_some(())
    });
    // The epoch ticker runs on for 100 ms after the last call (metadata() at load).
    std::thread::sleep(Duration::from_millis(500));
    let before = thread_wakeups(agent.pid());
    let seconds = 5;
    std::thread::sleep(Duration::from_secs(seconds));
    let after = thread_wakeups(agent.pid());
    let table: Vec<(String, u64)> =
        after.iter().filter_map(|(thread, n)| Some((thread.1.clone(), n - before.get(thread)?))).collect();
    assert!(table.len() >= 5, "{table:?}");
    for (name, woke) in &table {
        // Three a second: the once-a-second schedules, and a thread handing work to another.
        assert!(*woke <= 3 * seconds, "thread {name} woke {woke} times in {seconds} s while idle: {table:?}");
    }
    let sampler = table.iter().find(|(n, _)| n == "sampler").map(|(_, w)| *w);
    assert!(sampler.is_some_and(|w| w >= seconds - 1), "the sampler ticks every second: {table:?}");
}
