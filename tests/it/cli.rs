//! The binary's offline commands.

use std::process::Command;

#[test]
fn check_prints_the_resolved_table_for_the_example_config() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluicegate"))
        .args([
            "check",
            "-c",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/routes.toml"),
        ])
        .output()
        .expect("run check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let testers = stdout.find("1. canary-testers").expect(&stdout);
    let agents = stdout.find("2. agents").expect(&stdout);
    assert!(testers < agents);
    assert!(stdout.contains("agent-blue=90 (90.0%)"), "{stdout}");
}

#[test]
fn check_lists_every_error_with_its_key_path_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.toml");
    std::fs::write(
        &path,
        r#"
[listen]
http = "0.0.0.0:8080"
[[pools]]
name = "blue"
balance = "fastest"
backends = [{ addr = "127.0.0.1:9001", weight = 0 }]
[[routes]]
name = "r"
split = [{ pool = "gren", weight = 1 }]
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluicegate"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for path in [
        "pools[0].balance",
        "pools[0].backends[0].weight",
        "routes[0].split[0].pool",
    ] {
        assert!(stderr.contains(path), "missing {path} in:\n{stderr}");
    }
    assert!(stderr.starts_with("sluicegate: "), "{stderr}");
}

#[test]
fn check_names_a_missing_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluicegate"))
        .args(["check", "-c", "/nonexistent/routes.toml"])
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/routes.toml"), "{stderr}");
}
