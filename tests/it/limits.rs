//! Protection of the agents (`docs/limits.md`): the retry budget and rate limits, with real
//! gateways and echo agents on 127.0.0.1.

use std::time::{Duration, Instant};

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

/// One client floods a route limited to 50 requests a second (burst 5) for 10 s;
/// another, behind the same trusted proxy, sends 10 a second. The first gets
/// 200s at the configured rate (±10 %) and 429s with `Retry-After`; the second
/// is never refused.
#[tokio::test]
async fn a_client_over_its_rate_gets_429_at_the_rate_and_others_are_unaffected() {
    let a = agents("rated", "v1", 1).await;
    let toml = format!(
        "[[pools]]\nname = \"p\"\nbackends = {}\n[[routes]]\nname = \"all\"\nsplit = [{{ pool = \"p\", weight = 1 }}]\nrate_limit = {{ rate = 50, burst = 5, key = \"client_ip\", trusted_proxies = [\"127.0.0.0/8\"] }}\n",
        backends(&a)
    );
    let gw = TestGateway::start(&toml).await;
    let addr = gw.addr;
    let run = Duration::from_secs(10);
    let started = Instant::now();
    let calm = tokio::spawn(async move {
        let mut refused = 0;
        let mut sent = 0;
        while started.elapsed() < run {
            let r = get(addr, "/", &[("x-forwarded-for", "2.2.2.2")]).await;
            sent += 1;
            if r.status != 200 {
                refused += 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (sent, refused)
    });
    let (mut ok, mut limited) = (0u64, 0u64);
    while started.elapsed() < run {
        let r = get(addr, "/", &[("x-forwarded-for", "9.9.9.9, 1.1.1.1")]).await;
        match r.status.as_u16() {
            200 => ok += 1,
            429 => {
                limited += 1;
                assert_eq!(r.error(), "rate_limited");
                assert_eq!(
                    r.headers.get("retry-after").and_then(|v| v.to_str().ok()),
                    Some("1")
                );
            }
            other => panic!("unexpected {other}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (calm_sent, calm_refused) = calm.await.expect("calm client");
    let expected = 5.0 + 50.0 * elapsed;
    eprintln!(
        "flooding client: {ok} answered, {limited} refused in {elapsed:.2}s (expected {expected:.0}); calm client: {calm_sent} sent, {calm_refused} refused"
    );
    assert!(
        limited > ok,
        "the flood was mostly refused: {ok} ok, {limited} limited"
    );
    let ratio = ok as f64 / expected;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "{ok} answered, {expected:.0} expected"
    );
    assert_eq!(calm_refused, 0, "the other client is unaffected");
    assert!(calm_sent >= 50);
}
