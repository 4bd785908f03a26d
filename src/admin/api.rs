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
use serde::Deserialize;
use serde_json::{json, Value};

use super::{auth, AdminState};
use crate::config::validate::ApiBackend;
use crate::config::ConfigErrors;
use crate::controller::task::{Change, ChangeError};

/// Largest admin request body (a whole `routes.toml` for `/plan` fits easily).
pub const MAX_BODY: usize = 1024 * 1024;
/// Longest an admin request may take, reading its body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The admin routes; `/api/v1/*` behind the token check.
pub(super) fn router(state: AdminState) -> Router {
    let api = Router::new()
        .route("/state", get(state_handler))
        .route("/routes/{route}/split", put(set_split).delete(clear_split))
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
        .route("/plan", post(plan));
    let api = super::rollouts::routes(api).route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_token,
    ));
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
        .layer(middleware::from_fn(time_limit))
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

pub(super) fn change_error(err: ChangeError) -> Response {
    match &err {
        ChangeError::Invalid(errors) => config_errors(StatusCode::BAD_REQUEST, errors),
        ChangeError::NotFound { path, message } => {
            error_response(StatusCode::NOT_FOUND, message, path)
        }
        ChangeError::Conflict { path, message } => {
            error_response(StatusCode::CONFLICT, message, path)
        }
        ChangeError::Persist(e) => {
            tracing::error!(err = %e, "admin change refused: state file not writable");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &e.to_string(),
                "state_file",
            )
        }
        ChangeError::Closed => {
            error_response(StatusCode::SERVICE_UNAVAILABLE, &err.to_string(), "")
        }
    }
}

async fn apply(state: &AdminState, change: Change) -> Response {
    match state.control.change(change).await {
        Ok(value) => Json(value).into_response(),
        Err(err) => change_error(err),
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

async fn state_handler(State(state): State<AdminState>) -> Response {
    let Some(parts) = state.control.state_parts().await else {
        return change_error(ChangeError::Closed);
    };
    // Built and written as JSON in one job off the workers: megabytes of it for
    // 10 000 backends.
    let answer = move || serde_json::to_vec(&parts.finish());
    match crate::off_worker::run("state answer", answer).await {
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
        None => change_error(ChangeError::Closed),
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

async fn drain(
    State(state): State<AdminState>,
    Path((pool, addr)): Path<(String, String)>,
) -> Response {
    apply(
        &state,
        Change::Drain {
            pool,
            addr,
            drain: true,
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
            drain: false,
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

/// Body: a whole `routes.toml`. Answer: the [`Plan`](crate::plan::Plan), or 400
/// with key-path errors when the file is invalid or its TLS files do not load.
async fn plan(State(state): State<AdminState>, body: Bytes) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "the body must be a UTF-8 routes.toml",
            "",
        );
    };
    let spec = match crate::config::parse(text) {
        Ok(spec) => spec,
        Err(errors) => return config_errors(StatusCode::BAD_REQUEST, &errors),
    };
    // A reload of this file would be refused if its TLS files do not load.
    if let Err(errors) = crate::tls::load_off_thread(&spec).await {
        return config_errors(StatusCode::BAD_REQUEST, &errors);
    }
    match state.control.plan(spec).await {
        Some(plan) => Json(plan).into_response(),
        None => change_error(ChangeError::Closed),
    }
}

/// Parses a JSON body, reporting the key path of a shape error.
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
