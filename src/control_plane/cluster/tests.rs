//! The document (round trip, bounds, formats, expiry times across clocks) and
//! the in-memory store's compare-and-set.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::doc::{Clocks, ClusterDoc, DocError, MAX_DOC};
use super::memory::MemoryStore;
use super::{ClusterStore, StoreError};
use crate::control_plane::config::spec::PoolName;
use crate::control_plane::overrides::Overrides;

const FILE: &str = r#"
[listen]
http = "127.0.0.1:0"
[[pools]]
name = "blue"
backends = [{ addr = "127.0.0.1:9001" }]
[[pools]]
name = "green"
[[routes]]
name = "agents"
split = [{ pool = "blue", weight = 100 }, { pool = "green", weight = 0 }]
"#;

fn overrides(now: Instant) -> Overrides {
    let spec = crate::control_plane::config::parse(FILE).expect("valid");
    let mut o = Overrides::default();
    let split = crate::control_plane::config::validate::validate_split(
        &[("blue".to_owned(), 90), ("green".to_owned(), 10)],
        &["blue", "green"],
    )
    .expect("valid split");
    o.set_split(spec.routes[0].name.clone(), split);
    let key = (
        PoolName("green".into()),
        "127.0.0.1:9100".parse().expect("addr"),
    );
    o.register(key.clone(), 2, Some(Duration::from_secs(30)), now);
    o.set_drain(
        (
            PoolName("blue".into()),
            "127.0.0.1:9001".parse().expect("addr"),
        ),
        true,
    );
    o
}

#[test]
fn a_document_round_trips_and_keeps_expiry_times_across_clocks() {
    let spec = crate::control_plane::config::parse(FILE).expect("valid");
    let now = Instant::now();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let written = Clocks { now, wall };
    let o = overrides(now);
    let doc = ClusterDoc::of(&o, 7, "replica-1", written);
    let text = doc.encode().expect("encodes");
    let back = ClusterDoc::decode(&text).expect("decodes");
    assert_eq!(back, doc);
    assert_eq!(back.expires[0].at_ms, 1_800_000_030_000);

    // Another replica reads it 10 s later (its own monotonic clock, same wall
    // time): 20 s are left.
    let later = Clocks {
        now: now + Duration::from_secs(500),
        wall: wall + Duration::from_secs(10),
    };
    let (restored, skipped) = back.restore(&spec, later);
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(restored.splits(), o.splits());
    assert_eq!(restored.drains(), o.drains());
    let reg = restored.backends().values().next().expect("registered");
    assert_eq!(reg.expires, Some(later.now + Duration::from_secs(20)));
    // Read after the expiry: due at once.
    let late = Clocks {
        now: now + Duration::from_secs(500),
        wall: wall + Duration::from_secs(60),
    };
    let (restored, _) = back.restore(&spec, late);
    assert_eq!(restored.next_expiry(), Some(late.now));
}

#[test]
fn bad_values_are_named() {
    assert!(matches!(
        ClusterDoc::decode("not json"),
        Err(DocError::Malformed(_))
    ));
    assert_eq!(
        ClusterDoc::decode(r#"{"format": 3}"#),
        Err(DocError::Format { found: 3 })
    );
    assert!(matches!(
        ClusterDoc::decode(r#"{"format": 1, "seq": 1}"#),
        Err(DocError::Malformed(_))
    ));
    let huge = format!("{{\"format\": 1, \"pad\": \"{}\"}}", "x".repeat(MAX_DOC));
    assert_eq!(
        ClusterDoc::decode(&huge),
        Err(DocError::TooLarge { len: huge.len() })
    );
}

#[test]
fn a_document_larger_than_the_bound_is_not_written() {
    let now = Instant::now();
    let mut o = Overrides::default();
    for i in 0..20_000u32 {
        let port = 10_000 + (i % 50_000) as u16;
        let ip = format!("10.{}.{}.1:{port}", i / 256, i % 256);
        o.register(
            (PoolName("green".into()), ip.parse().expect("addr")),
            1,
            None,
            now,
        );
    }
    let doc = ClusterDoc::of(&o, 1, "r", Clocks::now());
    assert!(matches!(doc.encode(), Err(DocError::TooLarge { .. })));
}

#[test]
fn only_changes_and_renewals_due_need_a_write() {
    let clocks = Clocks::now();
    let o = overrides(clocks.now);
    let doc = ClusterDoc::of(&o, 1, "r", clocks);
    assert!(!doc.needs_write(&o, clocks), "nothing changed");
    // A heartbeat 5 s later: 25 s of 30 left in the store, no write.
    let soon = Clocks {
        now: clocks.now + Duration::from_secs(5),
        wall: clocks.wall + Duration::from_secs(5),
    };
    let mut renewed = o.clone();
    let key = renewed.backends().keys().next().expect("one").clone();
    renewed.register(key.clone(), 2, Some(Duration::from_secs(30)), soon.now);
    assert!(!doc.needs_write(&renewed, soon));
    // 16 s later: under half the TTL left in the store, write.
    let later = Clocks {
        now: clocks.now + Duration::from_secs(16),
        wall: clocks.wall + Duration::from_secs(16),
    };
    renewed.register(key, 2, Some(Duration::from_secs(30)), later.now);
    assert!(doc.needs_write(&renewed, later));
    // Any other change: write.
    let mut drained = o.clone();
    drained.set_drain(
        (
            PoolName("blue".into()),
            "127.0.0.1:9001".parse().expect("addr"),
        ),
        false,
    );
    assert!(doc.needs_write(&drained, clocks));
}

#[tokio::test]
async fn the_memory_store_is_a_compare_and_set() {
    let store = MemoryStore::new();
    let first = store.read().await.expect("up");
    assert_eq!(first.value, None);
    let v2 = store
        .write(first.version, "a".into())
        .await
        .expect("written")
        .expect("confirmed");
    assert_eq!(
        store.write(first.version, "b".into()).await,
        Err(StoreError::Conflict {
            expected: first.version
        })
    );
    assert_eq!(store.read().await.expect("up").value.as_deref(), Some("a"));
    store.set_down(true);
    assert!(matches!(
        store.read().await,
        Err(StoreError::Unreachable(_))
    ));
    assert!(matches!(
        store.write(v2, "c".into()).await,
        Err(StoreError::Unreachable(_))
    ));
    store.set_down(false);
    assert_eq!(store.writes(), 1);
}

/// Two gateways in this process sharing a memory store; the second reads the
/// first through `[cluster].peers`: its state lists both replicas with the state
/// version each serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_lists_its_peers_with_the_version_they_serve() {
    use std::sync::Arc;

    use crate::gateway::{Gateway, Options};

    let store = MemoryStore::new();
    let config = |peers: &str| {
        format!(
            "[listen]\nhttp = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[cluster]\nstore = \"swarm\"\nservice = \"gw\"\npoll_interval = \"50ms\"\n{peers}\n{}",
            &FILE[FILE.find("[[pools]]").expect("pools")..]
        )
    };
    let bind = |text: String, id: &str| {
        let identity = super::Identity {
            id: id.to_owned(),
            node: format!("node-{id}"),
        };
        let shared: Arc<dyn ClusterStore> = Arc::new(store.clone());
        let spec = crate::control_plane::config::parse(&text).expect("valid");
        Gateway::bind_with_cluster(spec, Options::default(), shared, identity)
    };
    let a = bind(config(""), "a").await.expect("bind a");
    let a_admin = a.admin_addr().expect("admin");
    let a_control = a.control();
    let peers = format!("peers = [\"http://{a_admin}\"]");
    let b = bind(config(&peers), "b").await.expect("bind b");
    let b_control = b.control();
    let stop = tokio_util::sync::CancellationToken::new();
    let (sa, sb) = (stop.clone(), stop.clone());
    let ta = tokio::spawn(a.serve(async move { sa.cancelled().await }, Duration::from_secs(1)));
    let tb = tokio::spawn(b.serve(async move { sb.cancelled().await }, Duration::from_secs(1)));

    a_control
        .change(crate::control_plane::controller::task::Change::SetSplit {
            route: "agents".to_owned(),
            weights: vec![("blue".to_owned(), 60), ("green".to_owned(), 40)],
        })
        .await
        .expect("written");
    let deadline = Instant::now() + Duration::from_secs(10);
    let view = loop {
        let state = b_control.state().await.expect("state");
        let view = state.cluster.expect("cluster");
        let a_seen = view.replicas.iter().find(|r| r.id == "a");
        if view.serving == 1 && a_seen.is_some_and(|r| r.serving == Some(1)) {
            break view;
        }
        assert!(Instant::now() < deadline, "{view:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(view.replicas[0].id, "b", "itself first: {view:?}");
    let a_view = &view.replicas[1];
    assert_eq!(a_view.node, "node-a");
    assert!(
        a_view.last_seen.is_some() && a_view.error.is_none(),
        "{a_view:?}"
    );
    stop.cancel();
    let _ = ta.await;
    let _ = tb.await;
}
