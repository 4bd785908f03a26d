//! Admin API handlers: HTTP in, controller [`Change`] out, JSON back.
//!
//! Bodies are parsed here only as far as JSON goes (malformed JSON, wrong types,
//! unknown keys → 400 with the key path); the config rules themselves are applied by
//! the controller task with the validator the file uses. Every error is
//! `{"error": "…", "path": "…"}` (plus `errors` when there are several) with a 4xx
//! status, or 5xx when the gateway itself failed.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{middleware, Json, Router};
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::guard::{self, HostPolicy};
use super::{auth, AdminState};
use crate::control_plane::config::spec::UpstreamVerify;
use crate::control_plane::config::validate::{
    validate_maintenance, validate_pause, ApiBackend, ApiMaintenance, ApiPause,
};
use crate::control_plane::config::{ConfigError, ConfigErrors, Spec};
use crate::control_plane::controller::task::{Change, DrainAction, Written};
use crate::control_plane::controller::{Refusal, Stopped};

/// Largest admin request body (a whole `routes.toml` for `/plan` fits easily).
pub(super) const MAX_BODY: usize = 1024 * 1024;
/// Longest an admin request may take, reading its body included.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most of an oversized body read (and thrown away) before the 413, so that a
/// client that sends its whole body before reading reads the 413 instead of a
/// connection reset.
const DISCARD_BYTES: usize = 64 * 1024 * 1024;
/// Longest time spent throwing an oversized body away.
const DISCARD_TIME: Duration = Duration::from_secs(3);

/// The admin routes; `/api/v1/*` behind the token check.
pub(super) fn router(state: AdminState, hosts: HostPolicy) -> Router {
    let api = Router::new()
        .route("/state", get(state_handler))
        .route("/stats", get(super::stats::stats))
        .route("/routes/{route}/split", put(set_split).delete(clear_split))
        .route(
            "/routes/{route}/mirror",
            put(set_mirror).delete(clear_mirror),
        )
        .route("/routes/{route}/pause", post(pause))
        .route("/routes/{route}/resume", post(resume))
        .route(
            "/routes/{route}/maintenance",
            put(maintenance_on).delete(maintenance_off),
        )
        .route(
            "/routes/{route}/rate_limit",
            put(rate_limit_set).delete(rate_limit_clear),
        )
        .route(
            "/pools/{pool}/backends",
            post(register).delete(deregister_body),
        )
        .route(
            "/pools/{pool}/backends/{addr}",
            axum::routing::delete(deregister_path),
        )
        .route("/pools/{pool}/backends/{addr}/drain", post(drain))
        .route("/pools/{pool}/backends/{addr}/undrain", post(undrain))
        .route("/plan", post(plan))
        .route("/events", get(super::events::events))
        .route("/discovery/swarm", get(swarm_export))
        .route("/cluster/replica", get(cluster_replica))
        .route("/cluster/counters", get(cluster_counters));
    let api = super::deploys::routes(super::rollouts::routes(api)).route_layer(
        middleware::from_fn_with_state(state.clone(), auth::require_token),
    );
    let metrics = Router::new()
        .route("/metrics", get(metrics_handler))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(metrics)
        .merge(super::ui::routes())
        .nest("/api/v1", api)
        .fallback(|| async {
            error_response(
                StatusCode::NOT_FOUND,
                "no such admin endpoint; see /api/v1/state",
                "",
            )
        })
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(read_body))
        .layer(middleware::from_fn(time_limit))
        .layer(middleware::from_fn_with_state(hosts, guard::check))
}

/// What a connection accepted while every regular slot is taken gets (see
/// `serve`): `/healthz` and `/readyz`, and 503 for anything else.
pub(super) fn health_router(state: AdminState, hosts: HostPolicy) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(|| async {
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "the admin API is busy (every connection slot is taken); only /healthz and /readyz are answered now",
                "",
            )
        })
        .with_state(state)
        .layer(middleware::from_fn(time_limit))
        .layer(middleware::from_fn_with_state(hosts, guard::check))
}

/// Answers 408 when a request (a slow body included) takes longer than
/// [`REQUEST_TIMEOUT`].
async fn time_limit(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => error_response(
            StatusCode::REQUEST_TIMEOUT,
            "the admin request took too long (sending the body included)",
            "",
        ),
    }
}

/// Reads the whole body (at most [`MAX_BODY`]) before the handler runs. A larger
/// body is answered 413 with `Connection: close`, after up to [`DISCARD_BYTES`]
/// of it were read and thrown away ([`DISCARD_TIME`] at most), unless the client
/// waits for `100 Continue` (it then sends nothing more).
async fn read_body(req: Request, next: Next) -> Response {
    let (parts, mut body) = req.into_parts();
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let waits_for_continue = parts
        .headers
        .get(axum::http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let too_large = || {
        let mut resp = error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the body is larger than the admin API takes ({MAX_BODY} bytes)"),
            "",
        );
        resp.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
        resp
    };
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        if !waits_for_continue {
            discard(body).await;
        }
        return too_large();
    }
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            let message = "the request body could not be read (cut short or badly framed)";
            return error_response(StatusCode::BAD_REQUEST, message, "");
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_BODY {
                discard(body).await;
                return too_large();
            }
            buf.extend_from_slice(&data);
        }
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(buf)))
        .await
}

/// Reads and drops what is left of `body` (bounded in bytes and time).
async fn discard(mut body: axum::body::Body) {
    let drain = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                seen = seen.saturating_add(data.len());
                if seen > DISCARD_BYTES {
                    break;
                }
            }
        }
    };
    if tokio::time::timeout(DISCARD_TIME, drain).await.is_err() {
        // The connection then closes under a client still sending.
        tracing::debug!("oversized admin body still arriving after the discard time");
    }
}

/// `{error, path}` with `status`.
pub(super) fn error_response(status: StatusCode, error: &str, path: &str) -> Response {
    (status, Json(json!({ "error": error, "path": path }))).into_response()
}

pub(super) fn config_errors(status: StatusCode, errors: &ConfigErrors) -> Response {
    let list: Vec<Value> = errors
        .0
        .iter()
        .map(|e| json!({ "error": e.message, "path": e.path }))
        .collect();
    let mut body = list
        .first()
        .cloned()
        .unwrap_or_else(|| json!({"error": "invalid", "path": ""}));
    if list.len() > 1 {
        body["errors"] = Value::Array(list);
    }
    (status, Json(body)).into_response()
}

/// A refusal as the admin API answers it: `{error, path}` (every error for an
/// invalid request) with the refusal's status.
pub(super) fn refusal(err: Refusal) -> Response {
    let status = err.status();
    match &err {
        Refusal::Invalid(errors) => config_errors(status, errors),
        Refusal::Persist(e) => {
            tracing::error!(err = %e, "admin change refused: state file not writable");
            error_response(status, &e.to_string(), err.path())
        }
        Refusal::NotFound { message, .. }
        | Refusal::Conflict { message, .. }
        | Refusal::Unavailable { message, .. } => error_response(status, message, err.path()),
        Refusal::Closed(_) => error_response(status, &err.to_string(), err.path()),
    }
}

/// The controller has stopped (503).
fn controller_closed() -> Response {
    refusal(Refusal::Closed(Stopped::Controller))
}

/// What a write changed, as JSON: the route or the backend (with its pool) as
/// `GET /api/v1/state` shows them, or the removal.
fn written(answer: Written) -> Value {
    let to_value = |v: Result<Value, serde_json::Error>| v.unwrap_or(Value::Null);
    match answer {
        Written::Route(route) => to_value(serde_json::to_value(route)),
        Written::Backend { pool, backend } => match to_value(serde_json::to_value(backend)) {
            Value::Object(mut map) => {
                map.insert("pool".into(), Value::String(pool.to_string()));
                Value::Object(map)
            }
            _ => Value::Null,
        },
        Written::Removed { pool, addr } => json!({
            "pool": pool.as_str(),
            "addr": addr.to_string(),
            "source": crate::control_plane::config::spec::Source::Api,
            "removed": true,
        }),
    }
}

async fn apply(state: &AdminState, change: Change) -> Response {
    match state.control.change(change).await {
        Ok(answer) => Json(written(answer)).into_response(),
        Err(err) => refusal(err),
    }
}

/// `GET /metrics`: gauges sampled from the current snapshot, then the exporter's text.
async fn metrics_handler(State(state): State<AdminState>) -> Response {
    let Some(text) = state.metrics.render().await else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway is shutting down",
            "",
        );
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let ended = state.tasks.ended();
    if !ended.is_empty() {
        let body = format!("not ready: background task ended: {}\n", ended.join(", "));
        return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    }
    if let Some(reason) = state.board.not_ready.load_full() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response();
    }
    if let Some(reason) = state.listed.unlisted() {
        let body = format!("not ready: {reason}\n");
        return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    }
    if state.ready.load(Ordering::Acquire) {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// `GET /api/v1/discovery/swarm`: the set read from this gateway's own engine.
async fn swarm_export(State(state): State<AdminState>) -> Response {
    match state.board.export.load_full() {
        Some(export) => Json(&*export).into_response(),
        None => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "this gateway has no Swarm set read from its own engine (Swarm discovery is off, its engine is not a manager, or it is unreachable)",
            "",
        ),
    }
}

/// `GET /api/v1/cluster/replica`: this replica's ID, node and the state version it
/// serves (what peers show in their replica table); 404 without `[cluster]`.
async fn cluster_replica(State(state): State<AdminState>) -> Response {
    match state.control.replica() {
        Some(me) => Json(me).into_response(),
        None => error_response(
            StatusCode::NOT_FOUND,
            "this gateway has no [cluster] table",
            "cluster",
        ),
    }
}

/// `GET /api/v1/cluster/counters`: this replica's cumulative counters of every
/// pool (what the replica driving a rollout sums into its gate); 404 without
/// `[cluster]`.
async fn cluster_counters(State(state): State<AdminState>) -> Response {
    match state.control.replica() {
        Some(me) => {
            let snapshot = state.metrics.snapshot.load();
            Json(crate::control_plane::cluster::counters::ReplicaCounters::of(me.id, &snapshot))
                .into_response()
        }
        None => error_response(
            StatusCode::NOT_FOUND,
            "this gateway has no [cluster] table",
            "cluster",
        ),
    }
}

async fn state_handler(State(state): State<AdminState>) -> Response {
    let Some(parts) = state.control.state_parts().await else {
        return controller_closed();
    };
    // Built and written as JSON in one job off the workers: megabytes of it for
    // 10 000 backends.
    let answer = move || serde_json::to_vec(&parts.finish());
    match crate::control_plane::off_worker::run("state answer", answer).await {
        Some(Ok(body)) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Some(Err(err)) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot write the state as JSON: {err}"),
            "",
        ),
        None => controller_closed(),
    }
}

/// `{"agent-blue": 90, "agent-green": 10}`: the whole new split.
async fn set_split(
    State(state): State<AdminState>,
    Path(route): Path<String>,
    body: Bytes,
) -> Response {
    let map: serde_json::Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(map) => map,
        Err(e) => {
            let message = format!("expected a JSON object of pool → weight, like {{\"agent-blue\": 90, \"agent-green\": 10}} ({e})");
            return error_response(StatusCode::BAD_REQUEST, &message, "");
        }
    };
    let mut weights = Vec::with_capacity(map.len());
    for (pool, value) in map {
        match value.as_i64() {
            Some(w) => weights.push((pool, w)),
            None => {
                let message =
                    format!("weight must be an integer between 0 and 1000000, got {value}");
                return error_response(StatusCode::BAD_REQUEST, &message, &pool);
            }
        }
    }
    apply(&state, Change::SetSplit { route, weights }).await
}

async fn clear_split(State(state): State<AdminState>, Path(route): Path<String>) -> Response {
    apply(&state, Change::ClearSplit { route }).await
}

/// `{"pool": "agents-v2", "percent": 10, "max_body": "1MiB", "timeout": "10s"}`
/// (`max_body` and `timeout` optional).
async fn set_mirror(
    State(state): State<AdminState>,
    Path(route): Path<String>,
    body: Bytes,
) -> Response {
    let mirror: crate::control_plane::config::raw::RawMirror = match parse_json(&body) {
        Ok(body) => body,
        Err(resp) => return *resp,
    };
    let mirror = Some(mirror);
    apply(&state, Change::Mirror { route, mirror }).await
}

async fn clear_mirror(State(state): State<AdminState>, Path(route): Path<String>) -> Response {
    apply(
        &state,
        Change::Mirror {
            route,
            mirror: None,
        },
    )
    .await
}

/// `{"max": "30s", "max_queued": 1000}` (both optional; an empty body is `{}`).
async fn pause(
    State(state): State<AdminState>,
    Path(route): Path<String>,
    body: Bytes,
) -> Response {
    let body: ApiPause = match parse_optional_json(&body) {
        Ok(body) => body,
        Err(resp) => return *resp,
    };
    match validate_pause(&body) {
        Ok(pause) => {
            let pause = Some(pause);
            apply(&state, Change::Pause { route, pause }).await
        }
        Err(errors) => config_errors(StatusCode::BAD_REQUEST, &errors),
    }
}

async fn resume(State(state): State<AdminState>, Path(route): Path<String>) -> Response {
    apply(&state, Change::Pause { route, pause: None }).await
}

/// `{"message": "…", "retry_after": 120}` (both optional; an empty body is `{}`).
async fn maintenance_on(
    State(state): State<AdminState>,
    Path(route): Path<String>,
    body: Bytes,
) -> Response {
    let body: ApiMaintenance = match parse_optional_json(&body) {
        Ok(body) => body,
        Err(resp) => return *resp,
    };
    match validate_maintenance(&body) {
        Ok(m) => {
            let maintenance = Some(m);
            apply(&state, Change::Maintenance { route, maintenance }).await
        }
        Err(errors) => config_errors(StatusCode::BAD_REQUEST, &errors),
    }
}

/// `{"rate": 10, "burst": 20, "key": "client_ip", "trusted_proxies": […],
/// "max_keys": 100000}`: the keys of `rate_limit` in `routes.toml`, checked by the
/// same rules (errors at `rate_limit.<key>`).
async fn rate_limit_set(
    State(state): State<AdminState>,
    Path(route): Path<String>,
    body: Bytes,
) -> Response {
    let body: crate::control_plane::config::raw::RawRateLimit = match parse_optional_json(&body) {
        Ok(body) => body,
        Err(resp) => return *resp,
    };
    match crate::control_plane::config::validate::validate_rate_limit(&body) {
        Ok(limit) => {
            let limit = Some(limit);
            apply(&state, Change::RateLimit { route, limit }).await
        }
        Err(errors) => config_errors(StatusCode::BAD_REQUEST, &errors),
    }
}

async fn rate_limit_clear(State(state): State<AdminState>, Path(route): Path<String>) -> Response {
    let limit = None;
    apply(&state, Change::RateLimit { route, limit }).await
}

async fn maintenance_off(State(state): State<AdminState>, Path(route): Path<String>) -> Response {
    let maintenance = None;
    apply(&state, Change::Maintenance { route, maintenance }).await
}

async fn drain(
    State(state): State<AdminState>,
    Path((pool, addr)): Path<(String, String)>,
) -> Response {
    apply(
        &state,
        Change::Drain {
            pool,
            addr,
            action: DrainAction::Drain,
        },
    )
    .await
}

async fn undrain(
    State(state): State<AdminState>,
    Path((pool, addr)): Path<(String, String)>,
) -> Response {
    apply(
        &state,
        Change::Drain {
            pool,
            addr,
            action: DrainAction::Undrain,
        },
    )
    .await
}

async fn register(
    State(state): State<AdminState>,
    Path(pool): Path<String>,
    body: Bytes,
) -> Response {
    match parse_json::<ApiBackend>(&body) {
        Ok(body) => apply(&state, Change::Register { pool, body }).await,
        Err(resp) => *resp,
    }
}

/// `DELETE …/backends` with `{"addr": "…"}`.
async fn deregister_body(
    State(state): State<AdminState>,
    Path(pool): Path<String>,
    body: Bytes,
) -> Response {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Addr {
        addr: String,
    }
    match parse_json::<Addr>(&body) {
        Ok(Addr { addr }) => apply(&state, Change::Deregister { pool, addr }).await,
        Err(resp) => *resp,
    }
}

async fn deregister_path(
    State(state): State<AdminState>,
    Path((pool, addr)): Path<(String, String)>,
) -> Response {
    apply(&state, Change::Deregister { pool, addr }).await
}

/// Body: a whole `routes.toml`. Answer: the [`Plan`](crate::control_plane::plan::Plan), or 400
/// with key-path errors when the file is invalid or its TLS files do not load.
async fn plan(State(state): State<AdminState>, body: Bytes) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "the body must be a UTF-8 routes.toml",
            "",
        );
    };
    let spec = match crate::control_plane::config::parse(text) {
        Ok(spec) => spec,
        Err(errors) => return config_errors(StatusCode::BAD_REQUEST, &errors),
    };
    // Reading a file the posted text names would tell its sender whether it
    // exists and is a valid PEM: only files the running config names are read.
    let unknown = {
        let running = state.metrics.snapshot.load();
        unknown_files(running.spec(), &spec)
    };
    if !unknown.0.is_empty() {
        return config_errors(StatusCode::BAD_REQUEST, &unknown);
    }
    // A reload of this file would be refused if its TLS files do not load.
    if let Err(errors) = crate::data_plane::tls::load_off_thread(&spec).await {
        return config_errors(StatusCode::BAD_REQUEST, &errors);
    }
    match state.control.plan(spec).await {
        Some(plan) => Json(plan).into_response(),
        None => controller_closed(),
    }
}

/// The files `spec` names that loading it reads (TLS certificates, keys and CA
/// files), with their key paths.
fn files_named(spec: &Spec) -> Vec<(String, &std::path::Path)> {
    let mut files = Vec::new();
    if let Some(tls) = &spec.tls {
        for (i, c) in tls.certificates.iter().enumerate() {
            files.push((format!("tls.certificates[{i}].cert"), c.cert.as_path()));
            files.push((format!("tls.certificates[{i}].key"), c.key.as_path()));
        }
    }
    for (i, pool) in spec.pools.iter().enumerate() {
        if let Some(UpstreamVerify::Ca(ca)) = pool.tls.as_ref().map(|t| &t.verify) {
            files.push((format!("pools[{i}].tls.ca"), ca.as_path()));
        }
    }
    files
}

/// The files `posted` names that `running` does not, each as an error at its key
/// path: `POST /api/v1/plan` reads only files the running config names.
fn unknown_files(running: &Spec, posted: &Spec) -> ConfigErrors {
    let known: Vec<&std::path::Path> = files_named(running).into_iter().map(|(_, p)| p).collect();
    ConfigErrors(
        files_named(posted)
            .into_iter()
            .filter(|(_, p)| !known.contains(p))
            .map(|(path, p)| ConfigError {
                path,
                message: format!(
                    "{} is not read: the plan reads only files the running config names; check a config with new files with `sluicegate check` on the gateway's host",
                    p.display()
                ),
            })
            .collect(),
    )
}

/// Parses a JSON body, reporting the key path of a shape error.
/// [`parse_json`], with an empty body read as `T::default()` (`{}`).
fn parse_optional_json<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
) -> Result<T, Box<Response>> {
    if body.is_empty() {
        Ok(T::default())
    } else {
        parse_json(body)
    }
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let inner = e.into_inner();
        let message = if inner.is_syntax() || inner.is_eof() {
            format!("malformed JSON: {inner}")
        } else {
            inner.to_string()
        };
        Box::new(error_response(StatusCode::BAD_REQUEST, &message, &path))
    })
}
