//! `sluicegate ctl rollout …` through the real binary: start, status (one and all),
//! pause, promote, and the errors of a bad start.

use crate::admin_cli::{cli, text};
use crate::support::live::{config_text, LiveGateway};
use crate::support::{agents, backends};

#[tokio::test]
async fn ctl_rollout_starts_shows_steers_and_refuses() {
    let (b, g) = (
        agents("blue", "v1", 1).await,
        agents("green", "v2", 1).await,
    );
    let body = format!(
        "[[pools]]\nname = \"blue\"\nbackends = {}\n[[pools]]\nname = \"green\"\nbackends = {}\n\
         [[routes]]\nname = \"agents\"\nsplit = [{{ pool = \"blue\", weight = 100 }}, {{ pool = \"green\", weight = 0 }}]\n",
        backends(&b),
        backends(&g)
    );
    let gw = LiveGateway::start(&config_text(&body, "", "")).await;
    let url = format!("http://{}", gw.admin);
    let ctl = |args: &[&str]| {
        let mut all = vec![
            "ctl".to_owned(),
            "--admin".into(),
            url.clone(),
            "rollout".into(),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        all
    };
    let run = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = cli(&refs, &[]).await;
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };

    let (ok, out, err) = run(ctl(&[
        "start",
        "agents",
        "--to",
        "green",
        "--steps",
        "10,100",
        "--step-interval",
        "1m",
        "--max-p99",
        "500ms",
        "--on-restart",
        "rollback",
    ]))
    .await;
    assert!(ok, "{err}");
    assert!(
        out.starts_with("rollout agents-1  route agents  blue -> green  running  step 1/2 (10%)"),
        "{out}"
    );
    assert!(
        out.contains("gate: error rate <= 1.00%, p99 <= 500ms"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("1 ") && l.contains("10%") && l.contains("measuring")),
        "{out}"
    );

    let (ok, out, _) = run(ctl(&["pause", "agents-1"])).await;
    assert!(ok && out.contains("  paused  "), "{out}");
    let (ok, out, _) = run(ctl(&["status"])).await;
    assert!(
        ok && out.contains("agents-1") && out.contains("paused"),
        "{out}"
    );
    assert!(
        out.contains("totals: 0 succeeded, 0 rolled back, 0 aborted"),
        "{out}"
    );

    let (ok, _, err) = run(ctl(&["start", "agents", "--to", "green"])).await;
    assert!(
        !ok && err.contains("409 Conflict: route: rollout agents-1 is paused"),
        "{err}"
    );
    let (ok, _, err) = run(ctl(&[
        "start",
        "agents",
        "--to",
        "green",
        "--on-low-traffic",
        "maybe",
    ]))
    .await;
    assert!(!ok && err.contains("maybe"), "{err}");

    let (ok, out, _) = run(ctl(&["promote", "agents-1"])).await;
    assert!(ok && out.contains("succeeded  step 2/2 (100%)"), "{out}");
    assert!(
        out.contains("promote: promoted by the operator at step 10%"),
        "{out}"
    );
    // --watch on a finished rollout prints it once and returns.
    let (ok, out, _) = run(ctl(&["status", "agents-1", "--watch"])).await;
    assert!(
        ok && out.contains("rollout agents-1 ended: succeeded"),
        "{out}"
    );
}

/// `rollout start … --watch` with its output in a pipe (not a terminal), over a
/// rollout of about 10 s: one line per change (the header, each step started and
/// judged, the end), never the step table again and again.
#[tokio::test]
async fn ctl_rollout_watch_into_a_pipe_prints_one_line_per_change() {
    let (b, g) = (
        agents("blue", "v1", 1).await,
        agents("green", "v2", 1).await,
    );
    let body = format!(
        "[[pools]]\nname = \"blue\"\nbackends = {}\n[[pools]]\nname = \"green\"\nbackends = {}\n\
         [[routes]]\nname = \"agents\"\nsplit = [{{ pool = \"blue\", weight = 100 }}, {{ pool = \"green\", weight = 0 }}]\n",
        backends(&b),
        backends(&g)
    );
    let gw = LiveGateway::start(&config_text(&body, "", "")).await;
    let url = format!("http://{}", gw.admin);
    let mut cmd = tokio::process::Command::new(crate::admin_cli::BIN);
    cmd.args([
        "ctl",
        "--admin",
        &url,
        "rollout",
        "start",
        "agents",
        "--to",
        "green",
        "--steps",
        "25,50,100",
        "--step-interval",
        "4s",
        "--min-requests",
        "0",
        "--watch",
    ])
    .env_remove("SLUICEGATE_ADMIN_TOKEN")
    .env_remove("SLUICEGATE_ADMIN");
    // `output()` gives the child a pipe for stdout: not a terminal.
    let out = tokio::time::timeout(std::time::Duration::from_secs(40), cmd.output())
        .await
        .expect("the rollout ends within 40 s")
        .expect("cli ran");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0]
            .starts_with("rollout agents-1  route agents  blue -> green  running  step 1/3 (25%)"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("STEP  WEIGHT") && !stdout.contains("gate: "),
        "a table in the pipe: {stdout}"
    );
    let mut seen = std::collections::HashSet::new();
    for line in &lines {
        assert!(seen.insert(*line), "{line:?} printed twice: {stdout}");
    }
    let expected = [
        "step 1/3: 25% started",
        "step 1/3: 25% passed after ",
        "step 2/3: 50% started",
        "step 2/3: 50% passed after ",
        "step 3/3: 100% started",
        "rollout agents-1 succeeded",
        "rollout agents-1 ended: succeeded",
    ];
    let mut at = 0;
    for want in expected {
        let found = lines[at..]
            .iter()
            .position(|l| l.starts_with(want))
            .unwrap_or_else(|| panic!("no {want:?} after line {at}: {stdout}"));
        at += found + 1;
    }
    // Header, 3 starts, 3 verdicts, the phase change, the end: nothing per poll.
    assert!(lines.len() <= 10, "{} lines: {stdout}", lines.len());
}
