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
