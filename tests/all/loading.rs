//! Loading: every kind of bad file gets one clear line, and every other plugin still loads.
//! Drives the real binary (`agent plugins list`, `agent plugins inspect`).

use crate::common::{agent_cli, fixture, plugin, plugin_dir};

#[test]
fn each_bad_file_gets_one_line_naming_the_file_and_the_remedy_and_the_rest_load() {
    let good = plugin("target-tracking");
    let dir = plugin_dir(&[&good, &plugin("ledger"), &fixture("future-policy"), &fixture("net-policy")]);
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes).unwrap();
    write("notes.wasm", b"this is a text file");
    write("core.wasm", b"\0asm\x01\0\0\0");
    let whole = std::fs::read(&good).unwrap();
    write("truncated.wasm", &whole[..whole.len() / 2]);
    write("empty-component.wasm", b"\0asm\x0d\0\x01\0");
    write("zz-duplicate.wasm", &whole); // same plugin name as target-tracking.wasm: nothing binds it
    write("ignored.txt", b"not a .wasm, not looked at");

    let (code, out, err) = agent_cli(&["plugins", "list", "--plugins", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "a failed file makes `plugins list` exit 1\n{out}\n{err}");
    let line = |file: &str| {
        let first = |l: &str| l.split_whitespace().next().unwrap_or("").ends_with(&format!("/{file}"));
        let lines: Vec<&str> = out.lines().filter(|l| first(l)).collect();
        assert_eq!(lines.len(), 1, "one line for {file} in:\n{out}");
        lines[0].to_string()
    };
    let columns = |file: &str| line(file).split_whitespace().skip(1).map(String::from).collect::<Vec<_>>();
    assert_eq!(
        out.lines().next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["FILE", "NAME", "KIND", "VERSION", "STATE"]
    );
    // Two files declaring a name nothing refers to: the first to load keeps it.
    let (kept, refused) = match line("target-tracking.wasm").ends_with(" ok") {
        true => ("target-tracking.wasm", "zz-duplicate.wasm"),
        false => ("zz-duplicate.wasm", "target-tracking.wasm"),
    };
    assert_eq!(columns(kept), ["target-tracking", "policy", "0.1.0", "ok"]);
    assert!(line(refused).contains("claims plugin name `target-tracking`"), "{}", line(refused));
    assert_eq!(columns("ledger.wasm"), ["ledger", "backend", "0.1.0", "ok"]);
    assert!(line("notes.wasm").contains("not a WebAssembly file"));
    assert!(
        line("core.wasm").contains("core WebAssembly module, not a component; build it for `wasm32-wasip2`")
    );
    assert!(line("truncated.wasm").contains("truncated or malformed"));
    assert!(line("empty-component.wasm").contains("exports none of elastic:plugin/source"));
    assert!(line("future-policy.wasm").contains("built against contract elastic:plugin@0.2.0"));
    assert!(
        line("net-policy.wasm").contains("imports `wasi:http/")
            && line("net-policy.wasm").contains("policies may not use the network")
    );
    assert!(!out.contains("ignored.txt"));
    assert_eq!(out.lines().count(), 10, "a header and a line per file:\n{out}");
}

#[test]
fn inspect_reports_kind_contract_metadata_config_keys_and_imports() {
    let (code, out, err) =
        agent_cli(&["plugins", "inspect", "--json", plugin("http-json").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["kind"], "source");
    assert_eq!(v["name"], "http-json");
    assert_eq!(v["contract"], "elastic:plugin@0.1.4");
    let keys: Vec<&str> =
        v["config_keys"].as_array().unwrap().iter().map(|k| k["name"].as_str().unwrap()).collect();
    assert_eq!(keys, ["url", "metrics", "labels", "each"]);
    let imports = v["imports"].as_array().unwrap();
    assert!(imports.iter().any(|i| i.as_str().unwrap().starts_with("wasi:http/outgoing-handler@0.2")));

    let (code, out, _) = agent_cli(&["plugins", "inspect", plugin("target-tracking").to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.starts_with("policy target-tracking 0.1.0 — "), "{out}");
    assert!(out.contains("target (required):"));
    assert!(!out.contains("wasi:http"), "a policy imports no network: {out}");
    assert!(!out.contains("volumes:"), "{out}");

    // A backend that grows volumes says so; one that does not, does not.
    let inspect = |name: &str| {
        let (code, out, err) = agent_cli(&["plugins", "inspect", "--json", plugin(name).to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    assert_eq!(inspect("openstack")["volumes"], true);
    assert_eq!(inspect("ledger")["volumes"], true);
    assert_eq!(inspect("local-replicas")["volumes"], false);
    let (_, out, _) = agent_cli(&["plugins", "inspect", plugin("ledger").to_str().unwrap()]);
    assert!(out.contains("volumes:   grows volumes (storage groups, contract 0.1.3)"), "{out}");
}

#[test]
fn inspect_of_a_bad_file_is_one_error_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.wasm");
    std::fs::write(&file, b"\0asm\x01\0\0\0").unwrap();
    let (code, out, err) = agent_cli(&["plugins", "inspect", file.to_str().unwrap()]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with(&format!("error: {}: is a core WebAssembly module", file.display())), "{err}");
}
