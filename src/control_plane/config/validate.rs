//! Raw `routes.toml` → [`Spec`], collecting every error with its key path.
//!
//! Owns the rules of the file: names, references between routes and pools,
//! ranges, and which keys are planned but not supported yet. It works in two
//! passes so that one mistake never hides another:
//!
//! 1. *shape*: each section (`listen`, every `pools[i]`, every `routes[i]`) is
//!    deserialized on its own with `serde_path_to_error`, so a type error or an
//!    unknown key is reported at its full path and the other elements are still
//!    checked;
//! 2. *meaning*: everything that deserialized is checked and converted (`pool`,
//!    `route`; single values in `values`).
//!
//! Errors come out section by section; [`super::parse`] puts them in file order.
//! This module does not read files or parse TOML text.

mod api;
mod cluster;
mod discovery;
mod health;
mod limits;
mod listen;
mod log;
mod maintenance;
mod mirror;
mod pool;
mod protect;
mod route;
mod sticky;
mod tls;
mod values;

pub use api::{
    rate_limit_body, validate_backend, validate_maintenance, validate_pause, validate_rate_limit,
    validate_split, ApiBackend, ApiMaintenance, ApiPause,
};
pub use discovery::{pool_name, route_name, weight};
pub use maintenance::check_template;
pub use mirror::{mirror_percent, validate_mirror};
pub use pool::protocol_value;
pub(super) use values::key_path;
pub use values::too_long;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use super::raw::{RawAdmin, RawListen, RawLog, RawMaintenance, RawPool, RawRoute};
use super::spec::{DiscoverySpec, PoolSpec, Spec};
use super::{ConfigError, ConfigErrors};
use listen::{check_admin, check_https_needs_tls, check_listen};
use pool::check_pool;
use route::check_route;

/// Top-level keys that DESIGN.md describes but this version does not implement
/// (none left; the mechanism stays for the next planned key).
const TOP_UNSUPPORTED: &[(&str, &str)] = &[];

/// Collects errors while validating.
#[derive(Default)]
pub(super) struct Report {
    errors: Vec<ConfigError>,
}

impl Report {
    /// Records one problem at `path`.
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Validates a parsed `routes.toml` document and builds the [`Spec`].
///
/// On failure every problem found is returned, grouped by section (listen,
/// other top-level keys, pools in order, routes in order).
pub fn validate(mut doc: toml::Table) -> Result<Spec, ConfigErrors> {
    let mut report = Report::default();
    let listen = doc.remove("listen");
    let admin = doc.remove("admin");
    let pools = doc.remove("pools");
    let routes = doc.remove("routes");
    let log = doc.remove("log");
    let discovery = doc.remove("discovery");
    let tls = doc.remove("tls");
    let cluster = doc.remove("cluster");
    let maintenance = doc.remove("maintenance");
    take_unsupported(&mut doc, "", TOP_UNSUPPORTED, &mut report);
    for key in doc.keys() {
        report.add(
            values::key_path("", key),
            format!(
                "unknown key `{key}`; accepted top-level keys: listen, admin, log, pools, routes, discovery, tls, cluster, maintenance"
            ),
        );
    }
    // `None`: [cluster] had errors (already reported).
    let cluster = match cluster {
        None => Some(None),
        Some(value) => cluster::check_cluster(value, &mut report).map(Some),
    };
    let discovery = match discovery {
        None => Some(DiscoverySpec::default()),
        Some(value) => discovery::check_discovery(value, &mut report),
    };

    let listen = match listen {
        Some(value) => {
            let raw = table_of(value, "listen", "[listen]", &mut report)
                .and_then(|table| shape::<RawListen>(table, "listen", &mut report));
            raw.and_then(|raw| check_listen(raw, &mut report))
        }
        None => {
            report.add(
                "listen",
                r#"missing [listen]; add it with `http = "0.0.0.0:8080"`"#,
            );
            None
        }
    };

    // `None`: [maintenance] had errors (already reported).
    let maintenance = match maintenance {
        None => Some(Default::default()),
        Some(value) => table_of(value, "maintenance", "[maintenance]", &mut report)
            .and_then(|table| shape::<RawMaintenance>(table, "maintenance", &mut report))
            .and_then(|raw| maintenance::check_maintenance(raw, &mut report)),
    };

    let tls_given = tls.is_some();
    let tls = tls.and_then(|value| tls::check_tls(value, &mut report));
    if let Some(listen) = &listen {
        check_https_needs_tls(listen, tls_given, &mut report);
    }

    // `None`: no [admin]; `Some(None)`: an [admin] with errors (already reported).
    let admin = admin.map(|value| {
        table_of(value, "admin", "[admin]", &mut report)
            .and_then(|table| shape::<RawAdmin>(table, "admin", &mut report))
            .and_then(|raw| check_admin(raw, listen.as_ref(), &mut report))
    });

    // `None`: [log] had errors (already reported).
    let log = match log {
        None => Some(Default::default()),
        Some(value) => table_of(value, "log", "[log]", &mut report)
            .and_then(|table| shape::<RawLog>(table, "log", &mut report))
            .and_then(|raw| log::check_log(raw, &mut report)),
    };

    let pool_tables = elements(pools, "pools", &mut report);
    // Names straight from the tables, so a pool with a typo elsewhere still
    // counts as defined and routes naming it get no misleading error.
    let pool_names = names_of(&pool_tables);
    let mut pool_specs = Vec::new();
    for (i, table) in pool_tables.into_iter().enumerate() {
        let path = format!("pools[{i}]");
        check_unique(&pool_names, i, "pool", "pools", &mut report);
        let Some(table) = table else { continue };
        if let Some(spec) = shape::<RawPool>(table, &path, &mut report)
            .and_then(|raw| check_pool(&path, raw, &mut report))
        {
            pool_specs.push(spec);
        }
    }

    let mut defined: Vec<&str> = unique(pool_names.iter().flatten().map(String::as_str));
    let route_tables = elements(routes, "routes", &mut report);
    // With Docker discovery on, a split may name a pool the file lacks: labels
    // fill it. It exists (empty) from the start so the gateway boots with it.
    let mut discovery = discovery;
    let implied = discovery
        .as_mut()
        .and_then(|d| match (&mut d.docker, &mut d.swarm) {
            (Some(docker), _) => Some(&mut docker.implied_pools),
            (None, Some(swarm)) => Some(&mut swarm.implied_pools),
            (None, None) => None,
        });
    if let Some(implied) = implied {
        *implied = discovery::implied_pools(&route_tables, &defined);
        defined.extend(implied.iter().map(|p| p.as_str()));
        pool_specs.extend(implied.iter().cloned().map(PoolSpec::empty));
    }
    let route_names = names_of(&route_tables);
    let clustered = matches!(cluster, Some(Some(_)));
    let mut route_specs = Vec::new();
    for (i, table) in route_tables.into_iter().enumerate() {
        let path = format!("routes[{i}]");
        check_unique(&route_names, i, "route", "routes", &mut report);
        let Some(table) = table else { continue };
        if let Some(spec) = shape::<RawRoute>(table, &path, &mut report)
            .and_then(|raw| check_route(&path, raw, &defined, clustered, &mut report))
        {
            route_specs.push(spec);
        }
    }

    if let (Some(Some(_)), Some(Some(admin))) = (&cluster, &admin) {
        if admin.state_file.is_some() {
            report.add(
                "cluster",
                "[cluster] and [admin].state_file both keep the admin overrides; with [cluster] the store holds them for every replica: remove state_file",
            );
        }
    }
    let admin = match admin {
        None => Some(None),
        Some(Some(admin)) => Some(Some(admin)),
        Some(None) => None,
    };
    match (listen, admin, discovery, log, cluster, maintenance) {
        (
            Some(listen),
            Some(admin),
            Some(discovery),
            Some(log),
            Some(cluster),
            Some(maintenance),
        ) if report.errors.is_empty() => Ok(Spec {
            listen,
            admin,
            pools: pool_specs,
            routes: route_specs,
            discovery,
            log,
            tls,
            cluster,
            maintenance,
        }),
        _ => Err(ConfigErrors(report.errors)),
    }
}

/// Removes planned-but-unsupported keys from `table`, reporting each one.
fn take_unsupported(
    table: &mut toml::Table,
    prefix: &str,
    unsupported: &[(&str, &str)],
    report: &mut Report,
) {
    for (key, message) in unsupported {
        if table.remove(*key).is_some() {
            report.add(values::key_path(prefix, key), *message);
        }
    }
}

/// `value` as a table, or an error naming what was expected.
fn table_of(
    value: toml::Value,
    path: &str,
    looks_like: &str,
    report: &mut Report,
) -> Option<toml::Table> {
    match value {
        toml::Value::Table(table) => Some(table),
        other => {
            report.add(
                path,
                format!(
                    "expected a table ({looks_like}), found {}",
                    other.type_str()
                ),
            );
            None
        }
    }
}

/// The tables of an array of tables (`[[pools]]`); `None` marks a broken element.
fn elements(
    value: Option<toml::Value>,
    key: &str,
    report: &mut Report,
) -> Vec<Option<toml::Table>> {
    match value {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| table_of(item, &format!("{key}[{i}]"), &format!("[[{key}]]"), report))
            .collect(),
        Some(other) => {
            report.add(
                key,
                format!(
                    "expected an array of tables, found {}; write [[{key}]] (double brackets) before each entry",
                    other.type_str()
                ),
            );
            Vec::new()
        }
    }
}

/// Deserializes one section, reporting shape errors at their full paths.
///
/// serde stops at the first error, so after each one the offending top-level
/// key of the section is removed and the rest is tried again: every bad key of
/// the section is reported, and what remains is returned so its values are
/// checked too (no spec is built while any error stands). A section missing a
/// required key yields `None`.
fn shape<T: DeserializeOwned>(
    mut table: toml::Table,
    prefix: &str,
    report: &mut Report,
) -> Option<T> {
    let mut removed: Vec<String> = Vec::new();
    loop {
        let error = match serde_path_to_error::deserialize(toml::Value::Table(table.clone())) {
            Ok(value) => return Some(value),
            Err(error) => error,
        };
        let mut path = prefix.to_owned();
        for segment in error.path().iter() {
            values::push_segment(&mut path, segment);
        }
        let message = error.inner().message();
        let caused_by_removal = removed
            .iter()
            .any(|key| message == format!("missing field `{key}`"));
        if !caused_by_removal {
            let (path, message) = values::explain(path, message);
            report.add(path, message);
        }
        match error.path().iter().next() {
            Some(Segment::Map { key }) if table.remove(key).is_some() => removed.push(key.clone()),
            _ => return None,
        }
    }
}

/// The `name` string of each element, where it has one.
fn names_of(tables: &[Option<toml::Table>]) -> Vec<Option<String>> {
    let name = |t: &toml::Table| t.get("name")?.as_str().map(str::to_owned);
    tables.iter().map(|t| t.as_ref().and_then(name)).collect()
}

/// Reports element `i` if its name was used by an earlier element.
fn check_unique(names: &[Option<String>], i: usize, kind: &str, key: &str, report: &mut Report) {
    let Some(name) = names[i].as_deref() else {
        return;
    };
    if let Some(first) = names[..i].iter().position(|n| n.as_deref() == Some(name)) {
        report.add(
            format!("{key}[{i}].name"),
            format!(
                "duplicate {kind} name {name:?} (first defined at {key}[{first}]); {kind} names must be unique"
            ),
        );
    }
}

/// `items` without repeats, first occurrence kept.
fn unique<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

#[cfg(test)]
mod tests;
