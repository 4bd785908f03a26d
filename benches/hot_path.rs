//! Criterion benches for the per-request decisions: route `find` and backend `pick`.
//!
//! `cargo bench --bench hot_path` (results in target/criterion). Whole-proxy load is
//! measured with ../shared/bench/compare-proxies.sh (see benches/proxy/candidate.sh).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderValue, Method};
use sluicegate::backend::{Backend, BackendState};
use sluicegate::balance::{key_hash, Balancer};
use sluicegate::config::spec::{
    Balance, HashKey, HostMatch, ListenSpec, MatchSpec, PoolName, PoolSpec, RouteName, RouteSpec,
    Spec, SplitSpec, Timeouts, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_STREAM_CLOSE_DELAY,
};
use sluicegate::route::RequestView;
use sluicegate::snapshot::Snapshot;

fn backends(n: usize) -> Vec<Backend> {
    (0..n)
        .map(|i| {
            let addr = format!("127.0.{}.{}:8080", i / 250, i % 250 + 1)
                .parse()
                .expect("addr");
            Backend {
                addr,
                weight: 1 + (i % 3) as u32,
                backup: false,
                state: Arc::new(BackendState::new(addr)),
                metrics: Default::default(),
            }
        })
        .collect()
}

fn bench_pick(c: &mut Criterion) {
    let policies = [
        ("round_robin", Balance::RoundRobin),
        ("least_conn", Balance::LeastConn),
        ("p2c", Balance::P2c),
        ("hash", Balance::Hash(HashKey::ClientIp)),
    ];
    let mut group = c.benchmark_group("pick");
    for (name, policy) in &policies {
        for n in [1usize, 10, 1000] {
            let set = backends(n);
            let balancer = Balancer::build(policy, &set);
            let mut k = 0u64;
            group.bench_with_input(BenchmarkId::new(*name, n), &n, |b, _| {
                b.iter(|| {
                    k = k.wrapping_add(1);
                    let key = Some(key_hash(&k.to_le_bytes()));
                    black_box(balancer.pick(&set, key, |i| set[i].state.is_eligible()))
                })
            });
        }
    }
    group.finish();
}

fn spec_with_routes(n: usize) -> Spec {
    let pool = PoolName(Arc::from("p"));
    let mut routes: Vec<RouteSpec> = (0..n.saturating_sub(1))
        .map(|i| RouteSpec {
            name: RouteName(Arc::from(format!("r{i}"))),
            matcher: MatchSpec {
                host: HostMatch::Exact(format!("host-{i}.agents.local")),
                path_prefix: format!("/svc{}", i % 7),
                headers: vec![],
                methods: vec![],
            },
            split: vec![SplitSpec {
                pool: pool.clone(),
                weight: 1,
            }],
            sticky: None,
            retries: 0,
            timeouts: Timeouts::default(),
            max_request_body: None,
        })
        .collect();
    routes.push(RouteSpec {
        name: RouteName(Arc::from("default")),
        matcher: MatchSpec {
            path_prefix: "/".into(),
            ..MatchSpec::default()
        },
        split: vec![SplitSpec {
            pool: pool.clone(),
            weight: 1,
        }],
        sticky: None,
        retries: 0,
        timeouts: Timeouts::default(),
        max_request_body: None,
    });
    Spec {
        listen: ListenSpec {
            http: "127.0.0.1:0".parse().expect("addr"),
            max_connections: None,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            https: None,
            redirect_https: None,
            stream_close_delay: DEFAULT_STREAM_CLOSE_DELAY,
            client: Default::default(),
        },
        admin: None,
        pools: vec![PoolSpec {
            name: pool,
            balance: Balance::RoundRobin,
            backends: vec![],
            tls: None,
            health: Default::default(),
        }],
        routes,
        log: Default::default(),
        discovery: Default::default(),
        tls: None,
    }
}

fn bench_find(c: &mut Criterion) {
    let mut group = c.benchmark_group("find");
    let mut headers = HeaderMap::new();
    headers.insert("accept", HeaderValue::from_static("*/*"));
    for n in [1usize, 10, 1000] {
        let snapshot = Snapshot::build(Arc::new(spec_with_routes(n)), |_, b| {
            Arc::new(BackendState::new(b.addr))
        });
        // A host in the middle of the table (or the default route for n = 1).
        let host = format!("host-{}.agents.local", n / 2);
        let path = format!("/svc{}/run", (n / 2) % 7);
        group.bench_with_input(BenchmarkId::new("routes", n), &n, |b, _| {
            b.iter(|| {
                let view = RequestView {
                    host: Some(&host),
                    path: &path,
                    method: &Method::GET,
                    headers: &headers,
                };
                black_box(snapshot.find(&view).map(|r| r.retries))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_pick, bench_find);
criterion_main!(benches);
