//! Criterion benches for the per-request decisions (route `find` and backend `pick`)
//! and for the snapshot rebuild that a config or discovery change costs.
//!
//! `cargo bench --bench hot_path` (results in target/criterion); one group with e.g.
//! `cargo bench --bench hot_path -- rebuild`. Whole-proxy load is measured with
//! ../shared/bench/compare-proxies.sh (see benches/proxy/candidate.sh).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderValue, Method};
use sluicegate::config::spec::{
    AdminSpec, BackendSpec, Balance, HashKey, HostMatch, ListenSpec, MatchSpec, PoolName, PoolSpec,
    RouteName, RouteSpec, Spec, SplitSpec, Timeouts, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_STREAM_CLOSE_DELAY,
};
use sluicegate::testing::control_plane::controller::Controller;
use sluicegate::testing::data_plane::backend::{Backend, BackendState};
use sluicegate::testing::data_plane::balance::{key_hash, Balancer};
use sluicegate::testing::data_plane::route::RequestView;
use sluicegate::testing::data_plane::snapshot::Snapshot;

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
            upgrades: Default::default(),
            retry_on_status: Box::default(),
            limits: Default::default(),
            pause: None,
            maintenance: None,
            mirror: None,
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
        upgrades: Default::default(),
        retry_on_status: Box::default(),
        limits: Default::default(),
        pause: None,
        maintenance: None,
        mirror: None,
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
            http1_fast_path: true,
        },
        admin: None,
        pools: vec![PoolSpec {
            name: pool,
            balance: Balance::RoundRobin,
            backends: vec![],
            tls: None,
            protocol: Default::default(),
            h2: Default::default(),
            health: Default::default(),
            limits: Default::default(),
        }],
        routes,
        log: Default::default(),
        discovery: Default::default(),
        cluster: None,
        maintenance: Default::default(),
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

/// `pools` pools of `per_pool` backends each (the four policies in turn, weights
/// 1..=3), and one host route per pool plus a default route over the first pool.
fn spec_with_pools(pools: usize, per_pool: usize, metrics: bool) -> Spec {
    let policies = [
        Balance::RoundRobin,
        Balance::LeastConn,
        Balance::P2c,
        Balance::Hash(HashKey::ClientIp),
    ];
    let mut spec = spec_with_routes(1);
    spec.pools = (0..pools)
        .map(|p| PoolSpec {
            name: PoolName(Arc::from(format!("pool-{p}"))),
            balance: policies[p % policies.len()].clone(),
            backends: (0..per_pool)
                .map(|i| BackendSpec {
                    addr: format!("10.{}.{}.{}:8080", p % 250, i / 250, i % 250 + 1)
                        .parse()
                        .expect("addr"),
                    weight: 1 + (i % 3) as u32,
                    backup: false,
                    draining: false,
                    source: Default::default(),
                    container: None,
                })
                .collect(),
            tls: None,
            protocol: Default::default(),
            h2: Default::default(),
            health: Default::default(),
            limits: Default::default(),
        })
        .collect();
    let default = spec
        .routes
        .pop()
        .expect("spec_with_routes(1) has the default route");
    spec.routes = spec
        .pools
        .iter()
        .enumerate()
        .map(|(p, pool)| RouteSpec {
            name: RouteName(Arc::from(format!("r{p}"))),
            matcher: MatchSpec {
                host: HostMatch::Exact(format!("svc-{p}.agents.local")),
                path_prefix: "/".into(),
                headers: vec![],
                methods: vec![],
            },
            split: vec![SplitSpec {
                pool: pool.name.clone(),
                weight: 1,
            }],
            ..default.clone()
        })
        .collect();
    spec.routes.push(RouteSpec {
        split: vec![SplitSpec {
            pool: spec.pools[0].name.clone(),
            weight: 1,
        }],
        ..default
    });
    // An [admin] listener is what turns metrics on: every backend then registers its
    // series (per route of its pool) with the Prometheus recorder, as in production.
    spec.admin = metrics.then(|| AdminSpec {
        listen: "127.0.0.1:0".parse().expect("addr"),
        token_env: None,
        state_file: None,
        allowed_hosts: Vec::new(),
    });
    spec
}

/// A config reload (or discovery update) of 10 000 backends in 100 pools, the way the
/// controller task does it: `Controller::apply` builds the next snapshot from the
/// previous one (every backend's state is looked up and carried over), publishes it
/// and drops the old one. Setup clones the spec outside the timing.
///
/// In `100x100` and `100x100_metrics` the pools' backends stay the same (what most
/// reloads look like: one pool or one split changes), so the hash pools keep their
/// rings; `100x100_all_changed` alternates two specs that differ in one weight of
/// every pool, so every ring is built again each time.
fn bench_rebuild(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _enter = rt.enter();
    let mut group = c.benchmark_group("rebuild");
    group.sample_size(20);
    for (name, metrics) in [("100x100", false), ("100x100_metrics", true)] {
        let registrar = if metrics {
            sluicegate::testing::metrics::Exporter::build()
                .expect("metrics recorder")
                .registrar()
        } else {
            sluicegate::testing::metrics::Registrar::off()
        };
        let spec = spec_with_pools(100, 100, metrics);
        let mut controller = Controller::with_metrics(spec.clone(), registrar);
        group.bench_function(name, |b| {
            b.iter_batched(
                || spec.clone(),
                |spec| controller.apply(spec),
                BatchSize::LargeInput,
            )
        });
    }
    let spec = spec_with_pools(100, 100, false);
    let mut other = spec.clone();
    for pool in &mut other.pools {
        pool.backends[0].weight += 1;
    }
    let mut controller = Controller::new(spec.clone());
    let mut flip = false;
    group.bench_function("100x100_all_changed", |b| {
        b.iter_batched(
            || {
                flip = !flip;
                if flip {
                    other.clone()
                } else {
                    spec.clone()
                }
            },
            |spec| controller.apply(spec),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_pick, bench_find, bench_rebuild);
criterion_main!(benches);
