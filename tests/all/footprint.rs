//! What an idle agent costs its machine: no thread wakes more than it has to.

use crate::common::{plugin, plugin_dir, sampler_ticks, thread_wakeups, thread_woke, wait_for, Agent};
use std::time::Duration;

/// Waits, reading /proc only (asking the agent anything would wake its threads), until `pid`'s
/// sampler thread has woken `n` more times: `n` of its ticks, the agent's own clock.
fn sampler_wakes(pid: u32, n: u64) {
    let woke = || thread_woke(pid, "sampler").expect("the sampler thread");
    let from = woke();
    wait_for(&format!("{n} more wake-ups of the sampler"), Duration::from_secs(120), || {
        (woke() >= from + n).then_some(())
    });
}

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
    let pid = agent.pid();
    // The epoch ticker runs on for 100 ms after the last call (metadata() at load): the window
    // opens once it has slept through two of the sampler's ticks.
    wait_for("the epoch thread asleep", Duration::from_secs(60), || {
        let n = thread_woke(pid, "plugin-epoch")?;
        sampler_wakes(pid, 2);
        (thread_woke(pid, "plugin-epoch")? == n).then_some(())
    });
    // Five of the sampler's wake-ups: the window is measured by the agent's own clock, not this
    // test's, so a loaded machine stretches it without making any thread look busier.
    let ticks = sampler_ticks(&agent).expect("agent_sampler_ticks_total in /metrics");
    let before = thread_wakeups(pid);
    sampler_wakes(pid, 5);
    let after = thread_wakeups(pid);
    let ticked = sampler_ticks(&agent).expect("agent_sampler_ticks_total in /metrics") - ticks;
    let table: Vec<(String, u64)> =
        after.iter().filter_map(|(thread, n)| Some((thread.1.clone(), n - before.get(thread)?))).collect();
    assert!(table.len() >= 5, "{table:?}");
    let intervals = table.iter().find(|(n, _)| n == "sampler").map(|(_, w)| *w).expect("the sampler");
    for (name, woke) in &table {
        // Three an interval: the once-a-second schedules, and a thread handing work to another.
        assert!(
            *woke <= 3 * intervals,
            "thread {name} woke {woke} times in {intervals} sampling intervals while idle: {table:?}"
        );
    }
    // Each time the sampler woke, it ticked.
    assert!(ticked + 1 >= intervals, "the sampler woke {intervals} times and ticked {ticked}: {table:?}");
}
