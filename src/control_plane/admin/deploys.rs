//! Deploys over the admin API (see `crate::control_plane::deploy`).
//!
//! - `POST /api/v1/routes/{route}/deploy` — body `deploy::DeployRequest`; 202
//!   with the deploy record once it runs (it goes on in the gateway);
//! - `GET /api/v1/deploys` — every known deploy, running first;
//! - `GET /api/v1/deploys/{id}` — phase, timeline, what it waits for, outcome;
//! - `POST /api/v1/deploys/{id}/cancel` — ends it in a consistent state and
//!   answers the record that says which.
//!
//! Errors are `{error, path}` like the rest of the admin API: 400 for bad values
//! (every one, with its key path), 404 for an unknown route or deploy, 409 while
//! another deploy runs on the route.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::api::{parse_json, refusal};
use super::AdminState;
use crate::control_plane::deploy::DeployRequest;

/// Adds the deploy routes to the `/api/v1` router.
pub(super) fn routes(api: Router<AdminState>) -> Router<AdminState> {
    api.route("/routes/{route}/deploy", post(start))
        .route("/deploys", get(list))
        .route("/deploys/{id}", get(show))
        .route("/deploys/{id}/cancel", post(cancel))
}

async fn start(
    State(state): State<AdminState>,
    Path(route): Path<String>,
    body: Bytes,
) -> Response {
    let req: DeployRequest = match parse_json(&body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    match state.deploys.start(route, req).await {
        Ok(deploy) => (StatusCode::ACCEPTED, Json(deploy)).into_response(),
        Err(err) => refusal(err),
    }
}

async fn list(State(state): State<AdminState>) -> Response {
    Json(state.deploys.list().await).into_response()
}

async fn show(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    match state.deploys.get(&id).await {
        Ok(deploy) => Json(deploy).into_response(),
        Err(err) => refusal(err),
    }
}

async fn cancel(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    match state.deploys.cancel(&id).await {
        Ok(deploy) => Json(deploy).into_response(),
        Err(err) => refusal(err),
    }
}
