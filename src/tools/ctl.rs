//! `sluicegate ctl`, `plan` and `health`: the admin API from the command line.
//!
//! Each command is one or two admin requests and a rendering of the answer as text
//! an operator reads at a glance (tables, `+/-/~` plans). Errors come back as
//! [`CtlError`], which the binary prints as `sluicegate: …` with a non-zero exit.
//! The wire types are the gateway's own (`controller::state_view`, `plan`), so the client
//! and the server cannot disagree about the JSON.

pub(crate) mod client;
pub mod deploy;
pub mod rollout;
pub mod watch;

use std::fmt::Write;
use std::path::Path;

use http::Method;
use serde_json::Value;

use crate::control_plane::config::spec::Source;
use crate::control_plane::controller::state_view::{BackendView, SplitView, StateView};
use crate::control_plane::plan::Plan;
pub use client::{AdminClient, CtlError};

/// `ctl status`: routes with their splits, then pools with their backends.
pub async fn status(client: &AdminClient) -> Result<String, CtlError> {
    let view: StateView = client.json(Method::GET, "/api/v1/state", None).await?;
    Ok(render_status(&view))
}

/// `ctl split ROUTE POOL=W…`: sets the route's whole split; `reset` returns it to
/// the file's split instead.
pub async fn split(
    client: &AdminClient,
    route: &str,
    assignments: &[String],
    reset: bool,
) -> Result<String, CtlError> {
    let path = format!("/api/v1/routes/{}/split", client::segment(route));
    let answer: Value = if reset {
        if !assignments.is_empty() {
            return Err(CtlError::Usage("--reset takes no POOL=WEIGHT".into()));
        }
        client.json(Method::DELETE, &path, None).await?
    } else {
        let body = split_body(assignments)?;
        client
            .json(Method::PUT, &path, Some(("application/json", body)))
            .await?
    };
    let split: Vec<SplitView> = serde_json::from_value(answer["split"].clone())
        .map_err(|e| CtlError::BadAnswer(e.to_string()))?;
    let source = answer["split_source"].as_str().unwrap_or("?");
    Ok(format!(
        "route {route}: {} (source {source}); live now\n",
        show_split(&split)
    ))
}

/// `ctl drain|undrain POOL ADDR`.
pub async fn drain(
    client: &AdminClient,
    pool: &str,
    addr: &str,
    drain: bool,
) -> Result<String, CtlError> {
    let verb = if drain { "drain" } else { "undrain" };
    let path = format!(
        "/api/v1/pools/{}/backends/{}/{verb}",
        client::segment(pool),
        client::segment(addr)
    );
    let b: BackendView = client.json(Method::POST, &path, None).await?;
    Ok(if drain {
        format!(
            "{pool} {addr}: draining, {} in flight (safe to stop at 0: watch `sluicegate ctl status`)\n",
            b.inflight
        )
    } else {
        format!("{pool} {addr}: back in rotation\n")
    })
}

/// `ctl pause ROUTE [--max D] [--max-queued N]` (`Some`) or `ctl resume ROUTE`.
pub async fn pause(
    client: &AdminClient,
    route: &str,
    pause: Option<(String, Option<i64>)>,
) -> Result<String, CtlError> {
    let base = format!("/api/v1/routes/{}", client::segment(route));
    match pause {
        Some((max, max_queued)) => {
            let mut body = serde_json::json!({ "max": max });
            if let Some(n) = max_queued {
                body["max_queued"] = n.into();
            }
            let body = body.to_string().into_bytes();
            let answer: Value = client
                .json(
                    Method::POST,
                    &format!("{base}/pause"),
                    Some(("application/json", body)),
                )
                .await?;
            let p = &answer["paused"];
            Ok(format!(
                "route {route}: paused; new requests wait (at most {} each, {} at once) until `sluicegate ctl resume {route}`\n",
                p["max"].as_str().unwrap_or("?"),
                p["max_queued"]
            ))
        }
        None => {
            let _: Value = client
                .json(Method::POST, &format!("{base}/resume"), None)
                .await?;
            Ok(format!("route {route}: resumed; waiting requests go on\n"))
        }
    }
}

/// What `ctl mirror ROUTE --to POOL --percent N` sends.
#[derive(Debug, Clone)]
pub struct MirrorArgs {
    pub pool: String,
    pub percent: i64,
    pub max_body: Option<String>,
    pub timeout: Option<String>,
}

/// `ctl mirror ROUTE --to POOL --percent N [--max-body S] [--timeout D]`
/// (`Some`) or `ctl mirror ROUTE --reset` (back to the file's or labels' mirror).
pub async fn mirror(
    client: &AdminClient,
    route: &str,
    mirror: Option<MirrorArgs>,
) -> Result<String, CtlError> {
    let path = format!("/api/v1/routes/{}/mirror", client::segment(route));
    let answer: Value = match mirror {
        Some(m) => {
            let mut body = serde_json::json!({ "pool": m.pool, "percent": m.percent });
            if let Some(size) = m.max_body {
                body["max_body"] = match size.parse::<i64>() {
                    Ok(n) => n.into(),
                    Err(_) => size.into(),
                };
            }
            if let Some(t) = m.timeout {
                body["timeout"] = t.into();
            }
            let body = body.to_string().into_bytes();
            client
                .json(Method::PUT, &path, Some(("application/json", body)))
                .await?
        }
        None => client.json(Method::DELETE, &path, None).await?,
    };
    let m = &answer["mirror"];
    Ok(if m.is_null() {
        format!("route {route}: no mirror\n")
    } else {
        format!(
            "route {route}: mirrors {}% of its requests to pool {} (bodies up to {} bytes, {} per copy; source {})\n",
            m["percent"],
            m["pool"].as_str().unwrap_or("?"),
            m["max_body"],
            m["timeout"].as_str().unwrap_or("?"),
            m["source"].as_str().unwrap_or("?")
        )
    })
}

/// `ctl maintenance ROUTE [--message T] [--retry-after S]` (`Some`) or `--off`.
pub async fn maintenance(
    client: &AdminClient,
    route: &str,
    on: Option<(Option<String>, Option<i64>)>,
) -> Result<String, CtlError> {
    let path = format!("/api/v1/routes/{}/maintenance", client::segment(route));
    match on {
        Some((message, retry_after)) => {
            let mut body = serde_json::json!({});
            if let Some(m) = message {
                body["message"] = m.into();
            }
            if let Some(r) = retry_after {
                body["retry_after"] = r.into();
            }
            let body = body.to_string().into_bytes();
            let answer: Value = client
                .json(Method::PUT, &path, Some(("application/json", body)))
                .await?;
            Ok(format!(
                "route {route}: in maintenance (503, Retry-After {}); end it with `sluicegate ctl maintenance {route} --off`\n",
                answer["maintenance"]["retry_after"]
            ))
        }
        None => {
            let _: Value = client.json(Method::DELETE, &path, None).await?;
            Ok(format!("route {route}: out of maintenance\n"))
        }
    }
}

/// `plan -c FILE`: what reloading `file` would change in the running gateway.
pub async fn plan(client: &AdminClient, file: &Path) -> Result<String, CtlError> {
    // Validate locally first: the same errors `check` prints, without a round trip.
    crate::control_plane::config::load(file)?;
    let text =
        std::fs::read(file).map_err(|error| crate::control_plane::config::LoadError::Read {
            path: file.to_path_buf(),
            error,
        })?;
    let plan: Plan = client
        .json(
            Method::POST,
            "/api/v1/plan",
            Some(("application/toml", text)),
        )
        .await?;
    Ok(plan.to_string())
}

/// `health`: whether the admin API's `/readyz` answers 200.
pub async fn health(client: &AdminClient) -> Result<(), CtlError> {
    let (status, body) = client.send(Method::GET, "/readyz", None).await?;
    if status.is_success() {
        Ok(())
    } else {
        Err(CtlError::Api {
            status,
            error: String::from_utf8_lossy(&body).trim().to_owned(),
            path: String::new(),
            hint: "",
        })
    }
}

/// `POOL=WEIGHT…` as the JSON body of a split PUT.
pub fn split_body(assignments: &[String]) -> Result<Vec<u8>, CtlError> {
    if assignments.is_empty() {
        return Err(CtlError::Usage(
            "give the whole split as POOL=WEIGHT…, e.g. `agent-blue=0 agent-green=100`".into(),
        ));
    }
    let mut map = serde_json::Map::new();
    for a in assignments {
        let parsed = a
            .split_once('=')
            .and_then(|(pool, w)| Some((pool, w.trim().parse::<i64>().ok()?)));
        let Some((pool, weight)) = parsed else {
            return Err(CtlError::Usage(format!(
                "{a:?} is not POOL=WEIGHT (WEIGHT an integer), e.g. agent-green=100"
            )));
        };
        if map.insert(pool.to_owned(), Value::from(weight)).is_some() {
            return Err(CtlError::Usage(format!("pool {pool} is given twice")));
        }
    }
    serde_json::to_vec(&map).map_err(|e| CtlError::Usage(e.to_string()))
}

/// The status tables.
pub fn render_status(view: &StateView) -> String {
    let mut out = String::new();
    let c = &view.counters;
    let _ = writeln!(
        out,
        "config {}  generation {}  reloads {} ok / {} failed  streams closed {}\n",
        view.config_file.as_deref().unwrap_or("(embedded)"),
        c.generation,
        c.reloads_ok,
        c.reloads_failed,
        c.streams_closed
    );
    let mut routes = vec![row(&["ROUTE", "SPLIT", "SOURCE"])];
    for r in &view.routes {
        let mut source = r.split_source.as_str().to_owned();
        if let Some(rollout) = &r.rollout {
            source.push_str(&format!(" {} {}", rollout.id, rollout.phase));
        }
        if let Some(file) = &r.file_split {
            source.push_str(&format!(" (file: {})", show_split(file)));
        }
        if let Some(m) = &r.maintenance {
            source.push_str(&format!("  MAINTENANCE (retry after {}s)", m.retry_after));
        }
        if let Some(p) = &r.paused {
            source.push_str(&format!("  PAUSED (max {}, queue {})", p.max, p.max_queued));
        }
        if let Some(m) = &r.mirror {
            source.push_str(&format!(
                "  MIRROR {}% -> {} ({})",
                m.percent,
                m.pool,
                m.source.as_str()
            ));
        }
        routes.push(vec![r.name.clone(), show_split(&r.split), source]);
    }
    out.push_str(&table(&routes));
    out.push('\n');
    if let Some(limits) = render_limits(view) {
        out.push_str(&limits);
        out.push('\n');
    }
    let mut pools = vec![row(&[
        "POOL", "BACKEND", "WEIGHT", "SOURCE", "HEALTH", "DRAINING", "INFLIGHT",
    ])];
    for p in &view.pools {
        if p.backends.is_empty() {
            pools.push(vec![p.name.clone(), "(no backends)".into()]);
        }
        for b in &p.backends {
            let health = match (b.healthy, b.ejected, b.docker_healthy) {
                (_, _, Some(false)) => match b.docker_health.as_deref() {
                    Some("starting") => "docker: starting",
                    Some("unhealthy") => "docker: unhealthy",
                    _ => "docker: not healthy",
                },
                (_, true, _) => "ejected",
                (true, false, _) => "healthy",
                (false, false, _) => "unhealthy",
            };
            let mut source = b.source.as_str().to_owned();
            if let Some(container) = &b.container {
                source.push_str(&format!(" ({container})"));
            }
            if let (Source::Api, Some(ms)) = (b.source, b.ttl_remaining_ms) {
                source.push_str(&format!(" (ttl {}s)", ms / 1000));
            }
            let weight = if b.backup {
                format!("{} backup", b.weight)
            } else {
                b.weight.to_string()
            };
            pools.push(vec![
                p.name.clone(),
                b.addr.clone(),
                weight,
                source,
                health.into(),
                if b.draining { "yes" } else { "-" }.into(),
                b.inflight.to_string(),
            ]);
        }
    }
    out.push_str(&table(&pools));
    if let Some(d) = &view.docker {
        let link = if d.connected {
            "connected".to_owned()
        } else if d.lists == 0 {
            format!(
                "DISCONNECTED ({}); never listed: no discovered backends, not ready until it lists",
                d.last_error.as_deref().unwrap_or("not listed yet")
            )
        } else {
            format!(
                "DISCONNECTED ({}); last known backends keep serving",
                d.last_error.as_deref().unwrap_or("not listed yet")
            )
        };
        let _ = writeln!(out, "\ndocker: {link}, {} lists", d.lists);
        for s in &d.skipped {
            let _ = writeln!(out, "  skipped {}: {}", s.container, s.reason);
        }
    }
    if let Some(c) = &view.cluster {
        render_cluster(&mut out, c);
    }
    out
}

/// The limits table of `ctl status`: each route's and pool's limits in force with
/// live counts, and what each route's limits refused; `None` when nothing is limited.
fn render_limits(view: &StateView) -> Option<String> {
    let in_flight = |f: &crate::control_plane::controller::state_view::InFlightView| {
        let mut text = format!("in_flight {}/{}", f.in_flight, f.max_in_flight);
        if f.queue > 0 {
            text.push_str(&format!(" queue {}/{}", f.waiting, f.queue));
        }
        text
    };
    let mut rows = vec![row(&["LIMITS OF", "IN FORCE", "REFUSED"])];
    for r in &view.routes {
        let Some(l) = &r.limits else { continue };
        let mut force = Vec::new();
        if let Some(rate) = &l.rate {
            force.push(format!(
                "rate {}/s burst {} by {} ({})",
                rate.rate,
                rate.burst,
                rate.key,
                rate.source.as_str()
            ));
        }
        if let Some(f) = &l.in_flight {
            force.push(in_flight(f));
        }
        let refused: Vec<String> = l.refused.iter().map(|(k, n)| format!("{k} {n}")).collect();
        rows.push(vec![
            format!("route {}", r.name),
            if force.is_empty() {
                "-".into()
            } else {
                force.join(", ")
            },
            if refused.is_empty() {
                "-".into()
            } else {
                refused.join(", ")
            },
        ]);
    }
    for p in &view.pools {
        if let Some(f) = &p.in_flight {
            rows.push(vec![
                format!("pool {}", p.name),
                in_flight(f),
                "(counted per route: pool_in_flight)".into(),
            ]);
        }
    }
    (rows.len() > 1).then(|| table(&rows))
}

/// The `[cluster]` lines of `ctl status`.
fn render_cluster(out: &mut String, c: &crate::control_plane::controller::state_view::ClusterView) {
    let link = if c.reachable {
        "reachable".to_owned()
    } else {
        format!(
            "UNREACHABLE ({}); routing on the last state, writes refused",
            c.last_error.as_deref().unwrap_or("not read yet")
        )
    };
    let _ = writeln!(
        out,
        "\ncluster: {} ({link}); serving state {} written by {}; store version {}; {} writes, {} conflicts{}",
        c.store,
        c.serving,
        c.written_by.as_deref().unwrap_or("-"),
        c.store_version.map_or_else(|| "-".to_owned(), |v| v.to_string()),
        c.writes,
        c.conflicts,
        if c.stale { "; STATE MAY BE STALE" } else { "" },
    );
    if let Some(why) = &c.ignored {
        let _ = writeln!(out, "  IGNORED store value: {why}");
    }
    let mut rows = vec![row(&["REPLICA", "NODE", "LAST SEEN", "SERVING", "AGREES"])];
    for r in &c.replicas {
        let serving = r.serving.map_or_else(|| "?".to_owned(), |s| s.to_string());
        let agrees = match (r.serving, &r.error) {
            (_, Some(e)) => format!("unknown ({e})"),
            (Some(s), None) if s == c.serving => "yes".to_owned(),
            (Some(_), None) => "NO".to_owned(),
            (None, None) => "unknown".to_owned(),
        };
        rows.push(vec![
            r.id.clone(),
            r.node.clone(),
            r.last_seen.clone().unwrap_or_else(|| "-".to_owned()),
            serving,
            agrees,
        ]);
    }
    out.push_str(&table(&rows));
}

/// `blue=90 (90%) green=10 (10%)`.
fn show_split(split: &[SplitView]) -> String {
    let total: u64 = split.iter().map(|s| u64::from(s.weight)).sum();
    let parts: Vec<String> = split
        .iter()
        .map(|s| {
            let pct = if total == 0 {
                0.0
            } else {
                100.0 * f64::from(s.weight) / total as f64
            };
            format!("{}={} ({pct:.0}%)", s.pool, s.weight)
        })
        .collect();
    parts.join(" ")
}

pub(crate) fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

/// Left-aligned columns, two spaces apart.
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_body_is_a_pool_weight_object() {
        let body = split_body(&["blue=0".into(), "green=100".into()]).unwrap();
        assert_eq!(body, br#"{"blue":0,"green":100}"#);
        assert!(split_body(&[]).is_err());
        assert!(split_body(&["blue".into()]).is_err());
        assert!(split_body(&["blue=x".into()]).is_err());
        assert!(split_body(&["blue=1".into(), "blue=2".into()]).is_err());
    }

    #[test]
    fn cluster_status_names_replicas_staleness_and_ignored_values() {
        use crate::control_plane::controller::state_view::{ClusterView, ReplicaView};
        let mut c = ClusterView {
            store: "swarm service gw".into(),
            replica: "r1".into(),
            node: "n1".into(),
            reachable: true,
            serving: 4,
            written_by: Some("r2".into()),
            store_version: Some(120),
            replicas: vec![
                ReplicaView {
                    id: "r1".into(),
                    node: "n1".into(),
                    serving: Some(4),
                    ..Default::default()
                },
                ReplicaView {
                    id: "r2".into(),
                    node: "n2".into(),
                    serving: Some(3),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let mut out = String::new();
        render_cluster(&mut out, &c);
        assert!(out.contains("serving state 4 written by r2"), "{out}");
        assert!(out.contains("r2       n2"), "{out}");
        assert!(out.contains("NO"), "{out}");
        assert!(!out.contains("STALE"), "{out}");
        c.reachable = false;
        c.stale = true;
        c.last_error = Some("engine gone".into());
        c.ignored = Some("store version 130: format 2".into());
        let mut out = String::new();
        render_cluster(&mut out, &c);
        assert!(out.contains("UNREACHABLE (engine gone)"), "{out}");
        assert!(out.contains("STATE MAY BE STALE"), "{out}");
        assert!(
            out.contains("IGNORED store value: store version 130"),
            "{out}"
        );
    }

    #[test]
    fn tables_align() {
        let t = table(&[row(&["A", "BB"]), row(&["ccc", "d"])]);
        assert_eq!(t, "A    BB\nccc  d\n");
    }
}
