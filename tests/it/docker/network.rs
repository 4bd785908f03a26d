//! A container whose network (and so IP) changes: the gateway follows the
//! engine's whole set and never keeps the old address. Moving a container from
//! one network to another passes through "on two networks, no rule to choose",
//! where it is skipped with that reason rather than guessed.

use super::front::{gateway, pool, serving, wait_state};
use super::SLOW;
use crate::support::docker::cmd;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_moved_to_another_network_is_served_on_its_new_ip_only() {
    let scope = scope!("gwnet");
    let body = "[[routes]]\nname = \"agents\"\nsplit = [{ pool = \"p\", weight = 1 }]\n";
    let gw = gateway(&scope, "[\"*\"]", body, None).await;
    let name = scope
        .agent("a", &[scope.label("pool", "p")], &["--no-healthcheck"], &[])
        .await;
    let state = wait_state(&gw, SLOW, "a serving", |s| serving(s, "p", 1)).await;
    let old = pool(&state, "p")[0].addr.clone();

    let other = format!("{}-other", scope.name);
    let (run, scoped) = (scope.run_label(), scope.scope_label());
    cmd(
        "docker",
        &[
            "network", "create", "--label", &run, "--label", &scoped, &other,
        ],
    )
    .await;
    cmd("docker", &["network", "connect", &other, &name]).await;
    let state = wait_state(&gw, SLOW, "a skipped: two networks, no rule", |s| {
        pool(s, "p").is_empty() && s.docker.as_ref().is_some_and(|d| d.skipped.len() == 1)
    })
    .await;
    let reason = &state.docker.as_ref().expect("docker state").skipped[0].reason;
    eprintln!("network change: while on two networks: {reason}");

    cmd("docker", &["network", "disconnect", &scope.name, &name]).await;
    let state = wait_state(&gw, SLOW, "a back on its new IP", |s| serving(s, "p", 1)).await;
    let new = &pool(&state, "p")[0].addr;
    let ip = cmd(
        "docker",
        &[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{other}\").IPAddress}}}}"),
            &name,
        ],
    )
    .await;
    eprintln!("network change: {old} -> {new}");
    assert_ne!(new, &old);
    assert!(new.starts_with(&format!("{}:", ip.trim())), "{new} vs {ip}");
    let reply = crate::support::get(gw.addr, "/", &[]).await;
    assert_eq!((reply.status.as_u16(), reply.agent()), (200, "a"));
    gw.stop().await;
}
