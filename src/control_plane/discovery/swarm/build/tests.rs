//! Report and set building over real engine answers (`tests/fixtures/swarm`,
//! captured by `scripts/swarm-fixtures.sh`) and small variations of them.

use super::*;
use crate::control_plane::discovery::swarm::fixture;

fn parse<T: serde::de::DeserializeOwned>(name: &str) -> T {
    serde_json::from_str(&fixture(name)).unwrap()
}

const CTX: Context<'static> = Context {
    prefix: "sluicegate",
    network: Some("sgfix"),
};

fn service<'a>(r: &'a SwarmReport, name: &str) -> &'a ServiceReport {
    r.services
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name}"))
}

#[test]
fn running_tasks_of_labelled_services_become_backends_at_their_task_ip() {
    let services: Vec<Service> = parse("services.json");
    let tasks: Vec<Task> = parse("tasks.json");
    let nodes: Vec<Node> = parse("nodes.json");
    let report = build(&services, &tasks, &[], &nodes, &CTX);
    let set = report.set();
    // Service label `sluicegate.pool=agent-blue` beats the container label.
    let blue = set.pool("agent-blue");
    assert_eq!(blue.len(), 2, "{set:?}");
    for b in blue {
        assert_eq!(b.addr.port(), 8080);
        assert!(
            b.addr.ip().to_string().starts_with("10.77.9."),
            "{}",
            b.addr
        );
        assert_eq!(b.weight, 2);
        assert_eq!(b.health_path.as_deref(), Some("/health"));
        assert!(
            b.container_name.starts_with("shop_blue."),
            "{}",
            b.container_name
        );
        assert!(!b.draining && b.docker_healthy);
    }
    // Never the VIP: services.json gives shop_blue the VIP 10.77.9.2.
    assert!(blue.iter().all(|b| b.addr.ip().to_string() != "10.77.9.2"));
    assert!(set.pool("from-container").is_empty());
    // `sluicegate.enable=true` names the pool after the service, stack prefix off.
    assert_eq!(set.pool("green").len(), 1);
    // The unlabelled service is listed but gives nothing and is not "skipped".
    let plain = service(&report, "plain");
    assert!(!plain.labelled && plain.tasks.is_empty());
    // A bad label skips the service, with the label named.
    assert_eq!(set.skipped.len(), 1, "{:?}", set.skipped);
    let reason = set.skipped[0].reason.to_string();
    assert_eq!(&*set.skipped[0].container_name, "shop_bad");
    assert!(reason.contains("label sluicegate.pool"), "{reason}");
    assert_eq!(set.len(), 3);
}

#[test]
fn a_task_the_orchestrator_stops_drains_while_it_still_runs_then_goes() {
    let services: Vec<Service> = parse("services.json");
    let nodes: Vec<Node> = parse("nodes.json");
    let before = build(
        &services,
        &parse::<Vec<Task>>("tasks.json"),
        &[],
        &nodes,
        &CTX,
    );
    // Scaled 2 -> 1: the running list lost one blue task; the engine still runs it
    // (desired state "remove") while its container has not stopped.
    let after_tasks: Vec<Task> = parse("tasks_scaled.json");
    let stopping: Task = parse("task_stopping.json");
    let after = build(
        &services,
        &after_tasks,
        std::slice::from_ref(&stopping),
        &nodes,
        &CTX,
    );
    let (b, a) = (before.set(), after.set());
    assert_eq!(
        b.pool("agent-blue").iter().filter(|b| b.draining).count(),
        0
    );
    let blue = a.pool("agent-blue");
    assert_eq!(blue.len(), 2);
    let drained: Vec<_> = blue.iter().filter(|b| b.draining).collect();
    assert_eq!(drained.len(), 1);
    assert_eq!(&*drained[0].container_id, stopping.id.as_str());
    let row = service(&after, "shop_blue")
        .tasks
        .iter()
        .find(|t| t.id == stopping.id)
        .expect("listed");
    assert_eq!(row.reason.as_deref(), Some("desired state remove"));
    // Once the container stopped, the task is gone from the set.
    let mut stopped = stopping;
    stopped.status.state = "shutdown".into();
    let gone = build(&services, &after_tasks, &[stopped], &nodes, &CTX).set();
    assert_eq!(gone.pool("agent-blue").len(), 1);
}

#[test]
fn a_drained_or_down_node_takes_its_tasks_out_of_rotation_at_once() {
    let services: Vec<Service> = parse("services.json");
    let tasks: Vec<Task> = parse("tasks.json");
    let drained: Vec<Node> = parse("nodes_drain.json");
    let set = build(&services, &tasks, &[], &drained, &CTX).set();
    assert_eq!(set.len(), 3);
    assert!(set.pools.values().flatten().all(|b| b.draining), "{set:?}");
    let mut down: Vec<Node> = parse("nodes.json");
    down[0].status.state = "down".into();
    let report = build(&services, &tasks, &[], &down, &CTX);
    assert!(report.set().pools.values().flatten().all(|b| b.draining));
    let reason = service(&report, "shop_green").tasks[0].reason.clone();
    assert_eq!(reason.as_deref(), Some("node vm is down"));
    // Swarm gave up on them (rescheduled elsewhere): dropped, nothing to drain.
    let given_up: Vec<Task> = tasks
        .iter()
        .cloned()
        .map(|mut t| {
            t.desired_state = "shutdown".into();
            t
        })
        .collect();
    assert!(build(&services, &[], &given_up, &down, &CTX)
        .set()
        .is_empty());
}

#[test]
fn starting_tasks_wait_and_unknown_nodes_do_not_drain() {
    let services: Vec<Service> = parse("services.json");
    let mut tasks: Vec<Task> = parse("tasks.json");
    for t in &mut tasks {
        t.status.state = "starting".into();
    }
    let report = build(&services, &tasks, &[], &[], &CTX);
    assert!(report.set().is_empty());
    let row = &service(&report, "shop_green").tasks[0];
    assert_eq!(row.role, TaskRole::Waiting);
    assert!(row.reason.as_deref().unwrap_or("").contains("starting"));
    // A manager that just restarted lists nodes as `unknown`: no mass drain.
    let mut nodes: Vec<Node> = parse("nodes.json");
    nodes[0].status.state = "unknown".into();
    let set = build(
        &services,
        &parse::<Vec<Task>>("tasks.json"),
        &[],
        &nodes,
        &CTX,
    )
    .set();
    assert!(set.pools.values().flatten().all(|b| !b.draining));
}

#[test]
fn network_rules_name_the_problem() {
    let services: Vec<Service> = parse("services.json");
    let tasks: Vec<Task> = parse("tasks.json");
    let other = Context {
        prefix: "sluicegate",
        network: Some("front"),
    };
    let set = build(&services, &tasks, &[], &[], &other).set();
    assert!(set.is_empty());
    let reason = set.skipped[1].reason.to_string();
    assert!(
        reason.contains("no address on network \"front\" (from [discovery.swarm].network); the task is on: sgfix"),
        "{reason}"
    );
    // Stack-prefixed names match: "sgfix" written as "<stack>_sgfix" would too.
    let none = Context {
        prefix: "sluicegate",
        network: None,
    };
    assert_eq!(build(&services, &tasks, &[], &[], &none).set().len(), 3);
}

#[test]
fn service_labels_win_over_container_labels_key_by_key() {
    let services: Vec<Service> = parse("services.json");
    let blue = services
        .iter()
        .find(|s| s.spec.name == "shop_blue")
        .unwrap();
    let labels = effective_labels(blue);
    assert_eq!(labels["sluicegate.pool"], "agent-blue");
    assert_eq!(labels["sluicegate.port"], "8080");
    assert_eq!(short_name(blue), "blue");
}

#[test]
fn port_comes_from_the_label_else_the_single_published_target_port() {
    let mut services: Vec<Service> = parse("services.json");
    let tasks: Vec<Task> = parse("tasks.json");
    let green = services
        .iter_mut()
        .find(|s| s.spec.name == "shop_green")
        .unwrap();
    green
        .spec
        .task_template
        .container_spec
        .labels
        .remove("sluicegate.port");
    let r = build(&services, &tasks, &[], &[], &CTX);
    let skip = service(&r, "shop_green")
        .skipped
        .clone()
        .unwrap_or_default();
    assert!(skip.contains("publishes no port"), "{skip}");
    let green = services
        .iter_mut()
        .find(|s| s.spec.name == "shop_green")
        .unwrap();
    green.spec.endpoint_spec = Some(
        crate::control_plane::discovery::swarm::model::EndpointSpec {
            ports: vec![crate::control_plane::discovery::swarm::model::PortConfig {
                protocol: Some("tcp".into()),
                target_port: Some(9000),
            }],
        },
    );
    let set = build(&services, &tasks, &[], &[], &CTX).set();
    assert_eq!(set.pool("green")[0].addr.port(), 9000);
}

#[test]
fn equal_answers_give_equal_sets_and_the_report_survives_json() {
    let services: Vec<Service> = parse("services.json");
    let tasks: Vec<Task> = parse("tasks.json");
    let nodes: Vec<Node> = parse("nodes.json");
    let a = build(&services, &tasks, &[], &nodes, &CTX);
    let mut reversed = tasks.clone();
    reversed.reverse();
    let b = build(&services, &reversed, &[], &nodes, &CTX);
    assert_eq!(a, b);
    assert_eq!(a.set(), b.set());
    let json = serde_json::to_string(&a).unwrap();
    let back: SwarmReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back.set(), a.set());
}

/// 20 services × 10 tasks made from the captured answers: the work of one
/// unchanged read (parse the three lists, build, derive the set, compare).
/// Run with `--ignored --nocapture` to see the time per read.
#[test]
#[ignore = "a measurement, not a check"]
fn cost_of_an_unchanged_read_with_20_services_of_10_tasks() {
    let one: Vec<Service> = parse("services.json");
    let blue = one.iter().find(|s| s.spec.name == "shop_blue").unwrap();
    let task: Task = parse::<Vec<Task>>("tasks.json")
        .into_iter()
        .find(|t| t.service_id == blue.id)
        .unwrap();
    let mut services = Vec::new();
    let mut tasks = Vec::new();
    for s in 0..20 {
        let mut svc = blue.clone();
        svc.id = format!("svc{s}");
        svc.spec.name = format!("shop_s{s}");
        svc.spec
            .labels
            .insert("sluicegate.pool".into(), format!("pool{s}"));
        services.push(svc);
        for t in 0..10 {
            let mut task = task.clone();
            task.id = format!("task{s}x{t}");
            task.service_id = format!("svc{s}");
            task.slot = t + 1;
            task.networks_attachments[0].addresses = vec![format!("10.77.{s}.{}/16", t + 2)];
            tasks.push(task);
        }
    }
    let nodes: Vec<Node> = parse("nodes.json");
    // The answers as the engine sends them, so parsing is counted too.
    let to_json = |tasks: &[Task]| {
        let mut v: Vec<serde_json::Value> = serde_json::from_str(&fixture("tasks.json")).unwrap();
        let template = v.remove(0);
        let list: Vec<serde_json::Value> = tasks
            .iter()
            .map(|t| {
                let mut j = template.clone();
                j["ID"] = t.id.clone().into();
                j["ServiceID"] = t.service_id.clone().into();
                j["Slot"] = t.slot.into();
                j["NetworksAttachments"][0]["Addresses"] =
                    serde_json::json!(t.networks_attachments[0].addresses);
                j
            })
            .collect();
        serde_json::to_string(&list).unwrap()
    };
    let tasks_json = to_json(&tasks);
    let services_json = {
        let mut v: Vec<serde_json::Value> =
            serde_json::from_str(&fixture("services.json")).unwrap();
        let template = v.remove(0);
        let list: Vec<serde_json::Value> = services
            .iter()
            .map(|s| {
                let mut j = template.clone();
                j["ID"] = s.id.clone().into();
                j["Spec"]["Name"] = s.spec.name.clone().into();
                j["Spec"]["Labels"] = serde_json::json!(s.spec.labels);
                j["Spec"]["TaskTemplate"]["ContainerSpec"]["Labels"] =
                    serde_json::json!(s.spec.task_template.container_spec.labels);
                j
            })
            .collect();
        serde_json::to_string(&list).unwrap()
    };
    let nodes_json = fixture("nodes.json");
    let first = build(&services, &tasks, &[], &nodes, &CTX).set();
    assert_eq!(first.len(), 200);
    let rounds = 200u32;
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        let s: Vec<Service> = serde_json::from_str(&services_json).unwrap();
        let t: Vec<Task> = serde_json::from_str(&tasks_json).unwrap();
        let n: Vec<Node> = serde_json::from_str(&nodes_json).unwrap();
        let set = build(&s, &t, &[], &n, &CTX).set();
        assert!(
            set == first,
            "an unchanged read gives an equal set: nothing is published"
        );
    }
    let per = started.elapsed() / rounds;
    println!(
        "one read of 20 services x 10 tasks ({} + {} bytes): {per:?}",
        services_json.len(),
        tasks_json.len()
    );
}

#[test]
fn mirror_labels_of_a_service_reach_its_backends_through_the_report() {
    let mut services: Vec<Service> = parse("services.json");
    let tasks: Vec<Task> = parse("tasks.json");
    let nodes: Vec<Node> = parse("nodes.json");
    let blue = services
        .iter_mut()
        .find(|s| s.spec.name == "shop_blue")
        .unwrap();
    blue.spec
        .labels
        .insert("sluicegate.mirror.route".into(), "agents".into());
    blue.spec
        .labels
        .insert("sluicegate.mirror.percent".into(), "20".into());
    let report = build(&services, &tasks, &[], &nodes, &CTX);
    // Workers read the manager's report as JSON: the mirror goes with it.
    let json = serde_json::to_string(&report).unwrap();
    let back: SwarmReport = serde_json::from_str(&json).unwrap();
    let set = back.set();
    let blue = set.pool("agent-blue");
    assert_eq!(blue.len(), 2, "{set:?}");
    for b in blue {
        let m = b.mirror.as_ref().expect("mirror label");
        assert_eq!((&*m.route, m.percent), ("agents", 20));
    }
    assert!(set.pool("green").iter().all(|b| b.mirror.is_none()));
}
