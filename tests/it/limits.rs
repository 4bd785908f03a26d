//! Protection of the agents (`docs/limits.md`): the retry budget, with real
//! gateways and echo agents on 127.0.0.1.

use crate::support::{agents, backends, get, TestGateway};

/// Three agents that all answer 503 behind a route with `retries = 2` and
/// `retry_on_status = [503]`, under `pool_extra`; sends `n` requests and returns
/// what the agents saw in total, checking each client got the agents' 503.
async fn agents_seen_for(n: u64, pool_extra: &str) -> u64 {
    let a = agents("sick", "v1", 3).await;
    for agent in &a {
        agent.set_failing(Some(503));
    }
    let toml = format!(
        "[[pools]]\nname = \"p\"\nbackends = {}\n{pool_extra}\n[[routes]]\nname = \"all\"\nsplit = [{{ pool = \"p\", weight = 1 }}]\nretries = 2\nretry_on_status = [503]\n",
        backends(&a)
    );
    let gw = TestGateway::start(&toml).await;
    for _ in 0..n {
        let r = get(gw.addr, "/", &[]).await;
        assert_eq!(r.status, 503);
        assert_eq!(r.error(), "", "the agent's own 503, not the gateway's");
    }
    let seen = a.iter().map(|agent| agent.requests()).sum();
    eprintln!("{n} client requests, agents saw {seen} ({pool_extra:?})");
    seen
}

#[tokio::test]
async fn without_a_budget_retries_triple_the_load_on_a_sick_pool() {
    let n = 200;
    let seen = agents_seen_for(n, "").await;
    assert_eq!(seen, 3 * n, "each request tried on all three agents");
}

#[tokio::test]
async fn a_retry_budget_keeps_a_sick_pool_near_its_request_rate() {
    let n = 500;
    let seen = agents_seen_for(n, "retry_budget = { percent = 20, min_per_second = 1 }").await;
    // 20 % of the requests, plus the floor: 1 a second over the 10 s window
    // (the test takes well under 10 s, so the floor counts once).
    let floor = 10;
    let bound = n + n * 20 / 100 + floor;
    assert!(
        seen <= bound,
        "agents saw {seen} for {n} requests (bound {bound})"
    );
    assert!(seen > n + n / 10, "the budget still allows retries: {seen}");
}
