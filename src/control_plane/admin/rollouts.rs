//! `/api/v1/rollouts`: start, read and steer rollouts.
//!
//! - `POST /api/v1/rollouts` — the request body of `rollout::RolloutRequest`;
//!   201 with the rollout once its first step is live;
//! - `GET /api/v1/rollouts` — every known rollout (running first) and the totals
//!   by result;
//! - `GET /api/v1/rollouts/{id}` — phase, current step, each step's figures and
//!   verdict (the step in force with its figures as of now);
//! - `POST /api/v1/rollouts/{id}/pause|resume|promote|abort`.
//!
//! With `[cluster]` the last two work through any replica: one that does not
//! drive the rollout answers `GET` from the shared record, and takes the
//! rollout's lease before an action (see `controller::task::cluster`).
//!
//! Errors are `{error, path}` like the rest of the admin API: 400 for bad values
//! (every one, with its key path), 404 for an unknown route or rollout, 409 when
//! another rollout runs on the route or this one has ended, 503 when shutting down.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::api::{error_response, parse_json, refusal};
use super::AdminState;
use crate::control_plane::rollout::{Action, RolloutRequest};

/// Adds the rollout routes to the `/api/v1` router.
pub(super) fn routes(api: Router<AdminState>) -> Router<AdminState> {
    api.route("/rollouts", get(list).post(start))
        .route("/rollouts/{id}", get(show))
        .route("/rollouts/{id}/{action}", post(act))
}

async fn start(State(state): State<AdminState>, body: Bytes) -> Response {
    let req: RolloutRequest = match parse_json(&body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    match state.rollouts.start(req).await {
        Ok(rollout) => (StatusCode::CREATED, Json(rollout)).into_response(),
        Err(err) => refusal(err),
    }
}

async fn list(State(state): State<AdminState>) -> Response {
    match state.rollouts.list().await {
        Ok(list) => Json(list).into_response(),
        Err(err) => refusal(err),
    }
}

async fn show(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    match state.rollouts.get(&id).await {
        Ok(rollout) => Json(rollout).into_response(),
        Err(err) => refusal(err),
    }
}

async fn act(
    State(state): State<AdminState>,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let action = match action.as_str() {
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        "promote" => Action::Promote,
        "abort" => Action::Abort,
        other => {
            let message =
                format!("no rollout action {other:?}; use pause, resume, promote or abort");
            return error_response(StatusCode::NOT_FOUND, &message, "action");
        }
    };
    match state.rollouts.act(&id, action).await {
        Ok(rollout) => Json(rollout).into_response(),
        Err(err) => refusal(err),
    }
}
