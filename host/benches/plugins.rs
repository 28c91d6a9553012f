//! Plugin runtime figures for docs/benchmarks.md. Run with:
//!
//!     scripts/build-plugins && cargo bench -p agent --bench plugins
//!
//! Prints one line per figure. Uses the real components in target/plugins and
//! target/test-plugins.

use agent::config::{Config, PluginSettings};
use agent::plugins::loader;
use agent::plugins::registry::Registry;
use agent::plugins::sandbox::Grants;
use agent::plugins::types::{Bounds, Capacity, PolicyContext, Window};
use agent::plugins::worker::{Call, Instance, Limits};
use agent::plugins::{Kind, Runtime};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn wasm(dir: &str, name: &str) -> PathBuf {
    let p = root().join("target").join(dir).join(format!("{name}.wasm"));
    assert!(p.exists(), "{} missing: run scripts/build-plugins first", p.display());
    p
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn context(points: usize) -> PolicyContext {
    PolicyContext {
        group: "web".into(),
        now_ms: 1_700_000_000_000,
        current: Capacity { replicas: 4, ready: 4, tier: 0, tier_name: String::new() },
        bounds: Bounds { min_replicas: 1, max_replicas: 20, max_tier: 0 },
        windows: vec![Window {
            metric: "system.cpu.utilization".into(),
            labels: vec![],
            length_ms: points as u64 * 1000,
            timestamps_ms: (0..points).map(|i| i as i64 * 1000).collect(),
            values: (0..points).map(|i| 0.5 + (i % 7) as f64 / 20.0).collect(),
        }],
        params: r#"{"target": 0.6}"#.into(),
    }
}

/// Microseconds per evaluation through `handle`: the median and the fastest of 7 rounds of
/// 20 000 calls (one burst of noise on this machine skews a single long loop).
async fn through_handle(handle: &agent::plugins::worker::PluginHandle, ctx: &PolicyContext) -> (f64, f64) {
    let mut rounds = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        for _ in 0..20_000 {
            std::hint::black_box(handle.evaluate(ctx.clone()).await.unwrap());
        }
        rounds.push(t.elapsed().as_secs_f64() * 1e6 / 20_000.0);
    }
    rounds.sort_by(f64::total_cmp);
    (rounds[3], rounds[0])
}

fn main() {
    let rss_start = rss_kib();
    let tokio = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    tokio.block_on(async {
        let cache_dir = tempfile::tempdir().unwrap();
        let rt = Runtime::new(Some(cache_dir.path())).unwrap();

        println!("## compile and load (per plugin; median of 5)");
        for (dir, name) in [("plugins", "target-tracking"), ("plugins", "http-json"), ("plugins", "ledger"), ("test-plugins", "rogue-policy")] {
            let bytes = std::fs::read(wasm(dir, name)).unwrap();
            let mut cold = Vec::new();
            let mut cached = Vec::new();
            for i in 0..5 {
                let hash = format!("{name}-{i}");
                let t = Instant::now();
                loader::component(&rt, std::path::Path::new("bench.wasm"), &hash, bytes.clone()).await.unwrap();
                cold.push(t.elapsed());
                let t = Instant::now();
                let (_, origin) = loader::component(&rt, std::path::Path::new("bench.wasm"), &hash, bytes.clone()).await.unwrap();
                cached.push(t.elapsed());
                assert_eq!(origin, agent::plugins::cache::Origin::Cached);
            }
            cold.sort();
            cached.sort();
            println!(
                "{name:16} {:>7} KiB  compile {:>7.1} ms   cached load {:>6.2} ms",
                bytes.len() / 1024,
                cold[2].as_secs_f64() * 1e3,
                cached[2].as_secs_f64() * 1e3
            );
        }

        trust_checks();

        let prepared = loader::prepare(&rt, &wasm("plugins", "target-tracking")).await.unwrap();
        let grants = Arc::new(Grants::new("bench", PluginSettings::default(), None, None));
        let limits = Limits::for_kind(Kind::Policy, &grants.settings);

        println!("\n## instantiate (fresh store + instance, target-tracking)");
        let n = 2000;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(Instance::new(&rt, &prepared.pre, grants.clone(), &limits).await.unwrap());
        }
        println!("instantiate      {:>7.1} µs", t.elapsed().as_secs_f64() * 1e6 / n as f64);

        println!("\n## one policy evaluation, 60-point window");
        let mut instance = Instance::new(&rt, &prepared.pre, grants.clone(), &limits).await.unwrap();
        let ctx = context(60);
        for _ in 0..1000 {
            instance.call(Call::Evaluate(ctx.clone()), &limits).await.unwrap().unwrap();
        }
        let n = 200_000;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(instance.call(Call::Evaluate(ctx.clone()), &limits).await.unwrap().unwrap());
        }
        println!("direct call      {:>7.2} µs  (instance owned by the caller; includes cloning the context)", t.elapsed().as_secs_f64() * 1e6 / n as f64);
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(ctx.clone());
        }
        println!("  of which clone {:>7.2} µs", t.elapsed().as_secs_f64() * 1e6 / n as f64);
        {
            // The floor: the generated async binding alone, no limits armed, no timeout, no
            // conversion (so this block, and the sync one below, speak the generated types).
            use agent::plugins::bindings as wire;
            let agent::plugins::loader::Pre::Policy(pre) = &prepared.pre else { unreachable!() };
            let ctx = wire::PolicyContext::from(ctx.clone());
            let mut store = wasmtime::Store::new(&rt.engine, agent::plugins::sandbox::HostState::new(grants.clone(), Kind::Policy));
            store.set_epoch_deadline(u64::MAX / 2);
            let bound = pre.instantiate_async(&mut store).await.unwrap();
            let t = Instant::now();
            for _ in 0..n {
                std::hint::black_box(bound.elastic_plugin_policy().call_evaluate(&mut store, &ctx).await.unwrap().unwrap());
            }
            println!("bare async call  {:>7.2} µs  (bindgen call_evaluate only)", t.elapsed().as_secs_f64() * 1e6 / n as f64);
            let empty = wire::PolicyContext::from(context(0));
            let t = Instant::now();
            for _ in 0..n {
                let _ = std::hint::black_box(bound.elastic_plugin_policy().call_evaluate(&mut store, &empty).await.unwrap());
            }
            println!("  empty window   {:>7.2} µs  (same call, no points)", t.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
        {
            // The runtime alone: rogue-policy with no params does no work but count the points.
            let rogue = loader::prepare(&rt, &wasm("test-plugins", "rogue-policy")).await.unwrap();
            let mut instance = Instance::new(&rt, &rogue.pre, grants.clone(), &limits).await.unwrap();
            let mut bare = context(60);
            bare.params = String::new();
            let t = Instant::now();
            for _ in 0..n {
                let r = instance.call(Call::Evaluate(bare.clone()), &limits).await.unwrap().unwrap();
                std::hint::black_box(r);
            }
            println!("no-work policy   {:>7.2} µs  (60 points in, a recommendation out, limits armed: the runtime's cost)", t.elapsed().as_secs_f64() * 1e6 / n as f64);

            // The same component called synchronously (sync WASI linker, typed func): the floor
            // a sync path for policies could reach.
            let bytes = std::fs::read(wasm("test-plugins", "rogue-policy")).unwrap();
            let component = wasmtime::component::Component::new(&rt.engine, &bytes).unwrap();
            let mut linker = wasmtime::component::Linker::new(&rt.engine);
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
            agent::plugins::host_linker(&mut linker).unwrap();
            let mut store = wasmtime::Store::new(&rt.engine, agent::plugins::sandbox::HostState::new(grants.clone(), Kind::Policy));
            store.set_epoch_deadline(u64::MAX / 2);
            let instance = linker.instantiate(&mut store, &component).unwrap();
            let iface = instance.get_export_index(&mut store, None, "elastic:plugin/policy@0.1.0").unwrap();
            let func = instance.get_export_index(&mut store, Some(&iface), "evaluate").unwrap();
            use agent::plugins::bindings as wire;
            type Res = Result<wire::Recommendation, wire::PluginError>;
            let evaluate = instance.get_typed_func::<(&wire::PolicyContext,), (Res,)>(&mut store, &func).unwrap();
            let bare = wire::PolicyContext::from(bare);
            let t = Instant::now();
            for _ in 0..n {
                let (r,) = evaluate.call(&mut store, (&bare,)).unwrap();
                std::hint::black_box(r.unwrap());
            }
            println!("  called sync    {:>7.2} µs  (same component, sync typed call: the floor without async)", t.elapsed().as_secs_f64() * 1e6 / n as f64);
        }

        let dir = tempfile::tempdir().unwrap();
        for (d, name) in [("plugins", "target-tracking"), ("plugins", "http-json"), ("plugins", "ledger")] {
            std::fs::copy(wasm(d, name), dir.path().join(format!("{name}.wasm"))).unwrap();
        }
        let data = tempfile::tempdir().unwrap();
        let store = agent::store::Store::open(data.path()).unwrap();
        let registry_rt = Runtime::new(Some(&data.path().join("cache"))).unwrap();
        let registry = Registry::new(registry_rt, Arc::new(Config::defaults()), Some(store), dir.path());
        registry.reconcile().await;
        let handle = registry.get("target-tracking").unwrap();
        for _ in 0..1000 {
            handle.evaluate(ctx.clone()).await.unwrap();
        }
        let (median, fastest) = through_handle(&handle, &ctx).await;
        println!("as the scaler    {median:>7.2} µs  (target-tracking through PluginHandle::evaluate, as a group's loop calls it; median of 7 rounds, fastest {fastest:.2})");
        {
            // The runtime's share of that path: the no-work policy through its handle.
            std::fs::copy(wasm("test-plugins", "rogue-policy"), dir.path().join("rogue-policy.wasm")).unwrap();
            registry.reconcile().await;
            let rogue = registry.get("rogue-policy").unwrap();
            let mut bare = context(60);
            bare.params = String::new();
            for _ in 0..1000 {
                rogue.evaluate(bare.clone()).await.unwrap();
            }
            let (median, fastest) = through_handle(&rogue, &bare).await;
            println!("  no-work policy {median:>7.2} µs  (the same path, a policy that does no work: the runtime's cost as the scaler pays it; median of 7, fastest {fastest:.2})");
        }
        registry.get("ledger").unwrap().describe(agent::plugins::types::Group { name: "g".into(), params: String::new() }, u32::MAX).await.unwrap();
        println!("\n## memory");
        println!("process RSS      {:>7} KiB at start, {} KiB with all 3 plugins loaded and instantiated", rss_start, rss_kib());

        println!("\n## runaway loop vs its CPU deadline (rogue-policy `spin`, cpu_limit 100ms; 10 runs)");
        let rogue_dir = tempfile::tempdir().unwrap();
        std::fs::copy(wasm("test-plugins", "rogue-policy"), rogue_dir.path().join("rogue-policy.wasm")).unwrap();
        let config = Config::parse("[plugins.rogue-policy]\ncpu_limit = \"100ms\"\n", Path::new("bench.toml")).unwrap();
        let rogue_reg = Registry::new(Runtime::new(None).unwrap(), Arc::new(config), None, rogue_dir.path());
        rogue_reg.reconcile().await;
        let rogue = rogue_reg.get("rogue-policy").unwrap();
        let mut spin_ctx = context(0);
        spin_ctx.params = r#"{"mode":"spin"}"#.into();
        let mut stops = Vec::new();
        for _ in 0..10 {
            let t = Instant::now();
            assert!(rogue.evaluate(spin_ctx.clone()).await.is_err());
            stops.push(t.elapsed());
            tokio::time::sleep(Duration::from_secs(5)).await; // let quarantine pass
        }
        stops.sort();
        println!("stopped after    p50 {:.1} ms, max {:.1} ms (deadline 100 ms, tick 5 ms)", percentile(&stops, 0.5).as_secs_f64() * 1e3, stops[9].as_secs_f64() * 1e3);

        // What tests/all/sandbox.rs no longer times: how another plugin fares while one spins.
        println!("\n## another plugin while one spins (rogue-policy `spin` to its 1.5 s CPU limit; target-tracking evaluated back to back meanwhile)");
        let both_dir = tempfile::tempdir().unwrap();
        for (d, name) in [("test-plugins", "rogue-policy"), ("plugins", "target-tracking")] {
            std::fs::copy(wasm(d, name), both_dir.path().join(format!("{name}.wasm"))).unwrap();
        }
        let config = Config::parse("[plugins.rogue-policy]\ncpu_limit = \"1500ms\"\ntimeout = \"5s\"\n", Path::new("bench.toml")).unwrap();
        let both = Registry::new(Runtime::new(None).unwrap(), Arc::new(config), None, both_dir.path());
        both.reconcile().await;
        let (runaway, good) = (both.get("rogue-policy").unwrap(), both.get("target-tracking").unwrap());
        good.evaluate(ctx.clone()).await.unwrap(); // linked and instantiated before the spin
        let spin = spin_ctx.clone();
        let started = Instant::now();
        let spinning = tokio::spawn(async move { runaway.evaluate(spin).await });
        let mut during = Vec::new();
        while !spinning.is_finished() {
            let t = Instant::now();
            std::hint::black_box(good.evaluate(ctx.clone()).await.unwrap());
            during.push(t.elapsed());
        }
        let spun = started.elapsed();
        assert!(spinning.await.unwrap().is_err(), "the spin ends at its CPU limit");
        during.sort();
        if during.is_empty() {
            println!("evaluations      none finished during the {:.0} ms spin", spun.as_secs_f64() * 1e3);
        } else {
            println!(
                "evaluations      {} during the {:.0} ms spin; each p50 {:.1} µs, p99 {:.1} µs, max {:.1} ms",
                during.len(),
                spun.as_secs_f64() * 1e3,
                percentile(&during, 0.5).as_secs_f64() * 1e6,
                percentile(&during, 0.99).as_secs_f64() * 1e6,
                during[during.len() - 1].as_secs_f64() * 1e3
            );
        }

        println!("\n## hot swap (write new version → running; watcher, 100 ms quiet period, compile; 10 runs)");
        registry.watch().unwrap();
        let file = dir.path().join("target-tracking.wasm");
        let original = std::fs::read(&file).unwrap();
        let mut swaps = Vec::new();
        for i in 0..10u8 {
            let mut bytes = original.clone();
            bytes.extend_from_slice(&[0, 5, 3, b'v', b'e', b'r', i]);
            let before = handle.status().sha256;
            let tmp = dir.path().join("tt.partial");
            std::fs::write(&tmp, &bytes).unwrap();
            let t = Instant::now();
            std::fs::rename(&tmp, &file).unwrap();
            while handle.status().sha256 == before {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            swaps.push(t.elapsed());
        }
        swaps.sort();
        println!("swap latency     p50 {:.0} ms, max {:.0} ms", percentile(&swaps, 0.5).as_secs_f64() * 1e3, swaps[9].as_secs_f64() * 1e3);

        println!(
            "\n## Rust vs Python vs JavaScript: the same target-tracking rule (target-tracking, py-target-tracking, js-target-tracking)"
        );
        for name in ["target-tracking", "py-target-tracking", "js-target-tracking"] {
            let path = wasm("plugins", name);
            let bytes = std::fs::read(&path).unwrap();
            let runs = 3;
            let mut compile = Vec::new();
            for i in 0..runs {
                let t = Instant::now();
                loader::component(&rt, std::path::Path::new("bench.wasm"), &format!("lang-{name}-{i}"), bytes.clone()).await.unwrap();
                compile.push(t.elapsed());
            }
            compile.sort();
            // Loaded again: from the compile cache, as at every start after the first.
            let t = Instant::now();
            let (_, origin) = loader::component(&rt, std::path::Path::new("bench.wasm"), &format!("lang-{name}-0"), bytes.clone()).await.unwrap();
            let cached = t.elapsed();
            assert_eq!(origin, agent::plugins::cache::Origin::Cached);
            let prepared = loader::prepare(&rt, &path).await.unwrap();
            let interpreted = name.starts_with("py-") || name.starts_with("js-");
            let n = if interpreted { 200 } else { 2000 };
            let t = Instant::now();
            for _ in 0..n {
                std::hint::black_box(Instance::new(&rt, &prepared.pre, grants.clone(), &limits).await.unwrap());
            }
            let instantiate = t.elapsed().as_secs_f64() * 1e6 / n as f64;
            let before = rss_kib();
            let mut held = Vec::new();
            for _ in 0..20 {
                let mut i = Instance::new(&rt, &prepared.pre, grants.clone(), &limits).await.unwrap();
                i.call(Call::Evaluate(ctx.clone()), &limits).await.unwrap().unwrap();
                held.push(i);
            }
            let per_instance = (rss_kib().saturating_sub(before)) / 20;
            let mut instance = held.pop().unwrap();
            let n = if interpreted { 5_000 } else { 100_000 };
            let t = Instant::now();
            for _ in 0..n {
                std::hint::black_box(instance.call(Call::Evaluate(ctx.clone()), &limits).await.unwrap().unwrap());
            }
            let call = t.elapsed().as_secs_f64() * 1e6 / n as f64;
            println!(
                "{name:18} {:>6} KiB  compile {:>7.1} ms  cached load {:>6.2} ms  instantiate {:>7.1} µs  evaluate {:>6.2} µs  RSS/instance {:>5} KiB",
                bytes.len() / 1024,
                compile[runs / 2].as_secs_f64() * 1e3,
                cached.as_secs_f64() * 1e3,
                instantiate,
                call,
                per_instance
            );
        }
    });
}

/// What binding checks add to loading a file: its SHA-256 (computed for every file anyway, the
/// compile cache's key; a pin is then a string comparison) and an Ed25519 signature's
/// verification, by size of file. Median of 9.
fn trust_checks() {
    use agent::plugins::signature;
    println!("\n## trust checks at load (median of 9)");
    let seed = [7u8; 32];
    let public = signature::public_key(&seed).unwrap();
    let key = agent::config::TrustedKey { id: agent::keys::key_id(&public), public, source: "bench".into() };
    let trust = agent::config::TrustSpec { keys: vec![key.clone()], require_signature: true };
    for (dir, name) in
        [("plugins", "target-tracking"), ("plugins", "openstack"), ("plugins", "py-target-tracking")]
    {
        let signed = signature::sign(&std::fs::read(wasm(dir, name)).unwrap(), &seed).unwrap();
        let median = |f: &dyn Fn()| {
            let mut runs: Vec<Duration> = (0..9)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed()
                })
                .collect();
            runs.sort();
            runs[4]
        };
        let hash = agent::plugins::cache::content_hash(&signed);
        let binding = agent::config::Binding {
            name: name.into(),
            file: format!("{name}.wasm"),
            sha256: Some(hash.clone()),
            signer: Some(key.id.clone()),
        };
        let digest = median(&|| {
            std::hint::black_box(agent::plugins::cache::content_hash(&signed));
        });
        let admit = median(&|| {
            signature::admit(&signed, &hash, Some(&binding), &trust).unwrap();
        });
        println!(
            "{name:18} {:>6} KiB  sha256 {:>7.2} ms (every file, already)  pin + signature check {:>7.2} ms",
            signed.len() / 1024,
            digest.as_secs_f64() * 1e3,
            admit.as_secs_f64() * 1e3
        );
    }
}
