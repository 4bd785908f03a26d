//! `sluicegate plan`: what reloading a file would change in the running gateway.
//!
//! Like `terraform plan`: nothing is applied. The running gateway computes the plan
//! (it alone knows its overrides) with the same merge a real reload would do: prune
//! the overrides against the new file, lay the survivors over it, and diff the
//! resulting effective spec against the running one. The plan lists routes, splits,
//! pools and backends added, removed or changed, the overrides that would be
//! dropped, and notes (file values an override hides, settings that need a restart).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::control_plane::config::spec::{
    BackendSpec, MirrorSpec, PoolSpec, RouteSpec, Spec, SplitSpec,
};
use crate::control_plane::overrides::Overrides;

/// The whole plan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub changes: Vec<PlanItem>,
    /// Admin overrides the reload would drop, with the reason.
    pub dropped: Vec<String>,
    pub notes: Vec<String>,
}

/// One change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanItem {
    pub op: Op,
    /// `route agents`, `split agents`, `pool blue`, `backend blue 10.0.0.5:80`, …
    pub what: String,
    /// Old → new, or what is added.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// Kind of change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Add,
    Remove,
    Change,
}

impl Plan {
    /// True when the reload would change nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.dropped.is_empty()
    }
}

/// The plan for replacing `file` (running, under `overrides`, giving `running`
/// as effective spec) with `next`.
pub fn plan(running: &Spec, file: &Spec, overrides: &Overrides, next: &Spec) -> Plan {
    let mut kept = overrides.clone();
    let dropped = kept.prune(next).iter().map(ToString::to_string).collect();
    let changes = diff(running, &kept.merge(next));
    let mut notes = Vec::new();
    for (route, split) in kept.splits() {
        let file_split = |s: &Spec| {
            s.routes
                .iter()
                .find(|r| &r.name == route)
                .map(|r| show(&r.split))
        };
        if file_split(file) != file_split(next) {
            notes.push(format!(
                "route {route}: the file's split changes to {} but the admin override {} stays in force",
                file_split(next).unwrap_or_default(),
                show(split)
            ));
        }
    }
    let mut kept_next = next.clone();
    notes.extend(
        keep_restart_only(running, &mut kept_next)
            .into_iter()
            .map(String::from),
    );
    Plan {
        changes,
        dropped,
        notes,
    }
}

/// Settings a reload cannot change (listeners, the certificate list, admin, log,
/// discovery): keeps the running ones in `next` and returns one note per section
/// kept. The reload logs the notes; `plan` shows them. `stream_close_delay` is not a listener setting and does change; nor
/// is a pool's `tls`. The HTTPS listener's certificate *list* (`[tls]`) is fixed
/// at start too; the certificate files themselves are reloaded by `tls::watch`.
pub fn keep_restart_only(running: &Spec, next: &mut Spec) -> Vec<&'static str> {
    let mut notes = Vec::new();
    let (old, new) = (&running.listen, &mut next.listen);
    if (
        old.http,
        old.max_connections,
        old.header_read_timeout,
        old.https,
        old.redirect_https,
        old.http1_fast_path,
    ) != (
        new.http,
        new.max_connections,
        new.header_read_timeout,
        new.https,
        new.redirect_https,
        new.http1_fast_path,
    ) {
        notes.push("[listen] changes apply only at the next restart");
        new.http = old.http;
        new.max_connections = old.max_connections;
        new.header_read_timeout = old.header_read_timeout;
        new.https = old.https;
        new.redirect_https = old.redirect_https;
        new.http1_fast_path = old.http1_fast_path;
    }
    if running.tls != next.tls {
        notes.push("[tls] changes (certificate list, handshake_timeout) apply only at the next restart; certificate file contents are reloaded when they change");
        next.tls.clone_from(&running.tls);
    }
    if running.admin != next.admin {
        notes.push("[admin] changes apply only at the next restart");
        next.admin.clone_from(&running.admin);
    }
    if running.log != next.log {
        notes.push("[log] changes apply only at the next restart");
        next.log = running.log;
    }
    // The discovery task runs with the settings it started with; only the pools
    // routes imply follow the file (they are part of the routing, not of discovery).
    let settings = |s: &Spec| {
        s.discovery.docker.as_ref().map(|d| {
            (
                d.label_prefix.clone(),
                d.network.clone(),
                d.projects.clone(),
            )
        })
    };
    if settings(running) != settings(next) {
        notes.push("[discovery.docker] changes apply only at the next restart");
        let implied = next
            .discovery
            .docker
            .take()
            .map(|d| d.implied_pools)
            .unwrap_or_default();
        next.discovery.docker = running.discovery.docker.clone().map(|mut d| {
            d.implied_pools = implied;
            d
        });
    }
    notes
}

/// Everything that differs between two effective specs.
pub fn diff(old: &Spec, new: &Spec) -> Vec<PlanItem> {
    let mut out = Vec::new();
    let mut push = |op, what: String, detail: String| out.push(PlanItem { op, what, detail });
    if old.listen.stream_close_delay != new.listen.stream_close_delay {
        push(
            Op::Change,
            "listen.stream_close_delay".into(),
            format!(
                "{} → {}",
                humantime::format_duration(old.listen.stream_close_delay),
                humantime::format_duration(new.listen.stream_close_delay)
            ),
        );
    }
    for r in &old.routes {
        if !new.routes.iter().any(|n| n.name == r.name) {
            push(Op::Remove, format!("route {}", r.name), String::new());
        }
    }
    for r in &new.routes {
        match old.routes.iter().find(|o| o.name == r.name) {
            None => push(Op::Add, format!("route {}", r.name), show(&r.split)),
            Some(o) => {
                if o.split != r.split {
                    let detail = format!("{} → {}", show(&o.split), show(&r.split));
                    push(Op::Change, format!("split {}", r.name), detail);
                }
                if o.mirror != r.mirror {
                    let detail = format!("{} → {}", show_mirror(&o.mirror), show_mirror(&r.mirror));
                    push(Op::Change, format!("mirror {}", r.name), detail);
                }
                let what = route_changes(o, r);
                if !what.is_empty() {
                    push(Op::Change, format!("route {}", r.name), what.join(", "));
                }
            }
        }
    }
    for p in &old.pools {
        if !new.pools.iter().any(|n| n.name == p.name) {
            let detail = format!(
                "{} backend(s); their open streams close after stream_close_delay",
                p.backends.len()
            );
            push(Op::Remove, format!("pool {}", p.name), detail);
        }
    }
    for p in &new.pools {
        match old.pools.iter().find(|o| o.name == p.name) {
            None => {
                let addrs: Vec<String> = p.backends.iter().map(|b| b.addr.to_string()).collect();
                push(Op::Add, format!("pool {}", p.name), addrs.join(" "));
            }
            Some(o) => pool_changes(o, p, &mut push),
        }
    }
    out
}

/// `green 10% (max_body 1048576, timeout 10s)`, or `none`.
fn show_mirror(m: &Option<MirrorSpec>) -> String {
    match m {
        None => "none".into(),
        Some(m) => format!(
            "{} {}% (max_body {}, timeout {})",
            m.pool,
            m.percent,
            m.max_body,
            humantime::format_duration(m.timeout)
        ),
    }
}

fn route_changes(old: &RouteSpec, new: &RouteSpec) -> Vec<&'static str> {
    let mut what = Vec::new();
    if old.matcher != new.matcher {
        what.push("match");
    }
    if old.sticky != new.sticky {
        what.push("sticky");
    }
    if old.retries != new.retries {
        what.push("retries");
    }
    if old.timeouts != new.timeouts {
        what.push("timeouts");
    }
    if old.max_request_body != new.max_request_body {
        what.push("max_request_body");
    }
    if old.upgrades != new.upgrades {
        what.push("upgrades");
    }
    if old.retry_on_status != new.retry_on_status {
        what.push("retry_on_status");
    }
    if old.limits.rate != new.limits.rate {
        what.push("rate_limit");
    }
    if old.limits.concurrency != new.limits.concurrency {
        what.push("concurrency");
    }
    what
}

fn pool_changes(old: &PoolSpec, new: &PoolSpec, push: &mut impl FnMut(Op, String, String)) {
    if old.balance != new.balance {
        push(
            Op::Change,
            format!("pool {}", new.name),
            "balance policy changed".into(),
        );
    }
    if old.tls != new.tls {
        push(
            Op::Change,
            format!("pool {}", new.name),
            "tls changed: its backends start afresh (new connections; open streams close after stream_close_delay)".into(),
        );
    }
    if old.limits != new.limits {
        let (o, n) = (&old.limits, &new.limits);
        let which: Vec<&str> = [
            (o.retry_budget != n.retry_budget, "retry_budget"),
            (o.concurrency != n.concurrency, "concurrency"),
            (o.breaker != n.breaker, "circuit_breaker"),
        ]
        .into_iter()
        .filter_map(|(changed, name)| changed.then_some(name))
        .collect();
        push(
            Op::Change,
            format!("pool {}", new.name),
            format!("limits changed ({})", which.join(", ")),
        );
    }
    for b in &old.backends {
        if !new.backends.iter().any(|n| n.addr == b.addr) {
            push(
                Op::Remove,
                format!("backend {} {}", old.name, b.addr),
                format!("source {}", b.source.as_str()),
            );
        }
    }
    for b in &new.backends {
        let what = format!("backend {} {}", new.name, b.addr);
        match old.backends.iter().find(|o| o.addr == b.addr) {
            None => push(Op::Add, what, describe(b)),
            Some(o) if o != b => push(
                Op::Change,
                what,
                format!("{} → {}", describe(o), describe(b)),
            ),
            Some(_) => {}
        }
    }
}

fn describe(b: &BackendSpec) -> String {
    let mut s = format!("weight {}", b.weight);
    if b.backup {
        s.push_str(" backup");
    }
    if b.draining {
        s.push_str(" draining");
    }
    s.push_str(&format!(" ({})", b.source.as_str()));
    s
}

/// `blue=90 green=10`.
pub fn show(split: &[SplitSpec]) -> String {
    let parts: Vec<String> = split
        .iter()
        .map(|s| format!("{}={}", s.pool, s.weight))
        .collect();
    parts.join(" ")
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            writeln!(
                f,
                "No changes: the running gateway already matches this file."
            )?;
        }
        for c in &self.changes {
            let sign = match c.op {
                Op::Add => '+',
                Op::Remove => '-',
                Op::Change => '~',
            };
            if c.detail.is_empty() {
                writeln!(f, "{sign} {}", c.what)?;
            } else {
                writeln!(f, "{sign} {}: {}", c.what, c.detail)?;
            }
        }
        for d in &self.dropped {
            writeln!(f, "! admin override dropped: {d}")?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
