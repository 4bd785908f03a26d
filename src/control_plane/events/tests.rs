use super::*;

fn added(n: u16) -> EventKind {
    EventKind::BackendAdded {
        pool: "p".into(),
        addr: SocketAddr::from(([127, 0, 0, 1], n)),
        by: By::Api,
    }
}

fn seq_of(next: Option<Next>) -> u64 {
    match next {
        Some(Next::Event(e)) => e.seq,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test]
async fn events_are_numbered_and_delivered_in_order() {
    let hub = EventHub::new();
    let mut sub = hub.subscribe(None);
    for n in 1..=3 {
        hub.emit(added(n));
    }
    for want in 1..=3 {
        assert_eq!(seq_of(sub.next().await), want);
    }
    assert_eq!(hub.last_seq(), 3);
}

#[tokio::test]
async fn resume_replays_what_came_after_the_last_id_without_repeats() {
    let hub = EventHub::new();
    for n in 1..=5 {
        hub.emit(added(n));
    }
    let mut sub = hub.subscribe(Some(3));
    hub.emit(added(6));
    assert_eq!(seq_of(sub.next().await), 4);
    assert_eq!(seq_of(sub.next().await), 5);
    assert_eq!(seq_of(sub.next().await), 6);
}

#[tokio::test]
async fn resume_from_before_the_history_reports_the_gap() {
    let hub = EventHub::new();
    for n in 0..(HISTORY as u64 + 10) {
        hub.emit(added(n as u16));
    }
    let mut sub = hub.subscribe(Some(2));
    assert_eq!(sub.next().await, Some(Next::Gap(8)));
    assert_eq!(seq_of(sub.next().await), 11);
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_dropped_and_the_producer_never_waits() {
    let hub = EventHub::new();
    let mut slow = hub.subscribe(None);
    // Emitting never waits for the subscriber that does not read.
    for n in 0..(BUFFER as u64 * 3) {
        hub.emit(added(n as u16));
    }
    match slow.next().await {
        Some(Next::Dropped(missed)) => assert!(missed >= BUFFER as u64),
        other => panic!("expected dropped, got {other:?}"),
    }
    assert_eq!(slow.next().await, None);
    // Others subscribing now are not affected.
    let mut fresh = hub.subscribe(None);
    hub.emit(added(1));
    assert_eq!(seq_of(fresh.next().await), BUFFER as u64 * 3 + 1);
}

#[test]
fn an_event_is_typed_json_with_its_sequence_as_the_sse_id() {
    let hub = EventHub::new();
    hub.emit(EventKind::SplitChanged {
        route: "web".into(),
        split: vec![PoolWeight {
            pool: "blue".into(),
            weight: 90,
        }],
        by: By::Api,
    });
    let event = lock(&hub.inner.history).ring[0].clone();
    let text = sse_message(&event);
    assert!(
        text.starts_with("id: 1\nevent: split_changed\ndata: {"),
        "{text}"
    );
    assert!(text.ends_with("\n\n"));
    let data: Value =
        serde_json::from_str(text.lines().nth(2).unwrap().trim_start_matches("data: ")).unwrap();
    assert_eq!(data["type"], "split_changed");
    assert_eq!(data["seq"], 1);
    assert_eq!(data["by"], "api");
    assert_eq!(data["split"][0]["pool"], "blue");
}
