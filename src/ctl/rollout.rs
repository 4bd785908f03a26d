//! `sluicegate ctl rollout start|status|pause|resume|promote|abort`.
//!
//! Every command prints the rollout as a step table: weight, time, the target's
//! requests, errors, error rate and p99 during the step, the baseline's error rate,
//! and the verdict with its note; then why it ended, if it did. `status --watch`
//! (and `start --watch`) redraws the table whenever it changes until the rollout
//! ends, so the steps and figures show as they happen.

use std::fmt::Write;
use std::time::Duration;

use http::Method;

use super::client::{segment, AdminClient, CtlError};
use super::{row, table};
use crate::rollout::gate::percent;
use crate::rollout::{Action, Rollout, RolloutList, RolloutRequest};

/// `rollout start`: posts the request; the answer is the rollout at its first step.
pub async fn start(client: &AdminClient, req: &RolloutRequest) -> Result<Rollout, CtlError> {
    let body = serde_json::to_vec(req).map_err(|e| CtlError::Usage(e.to_string()))?;
    client
        .json(
            Method::POST,
            "/api/v1/rollouts",
            Some(("application/json", body)),
        )
        .await
}

/// `rollout status ID`.
pub async fn get(client: &AdminClient, id: &str) -> Result<Rollout, CtlError> {
    let path = format!("/api/v1/rollouts/{}", segment(id));
    client.json(Method::GET, &path, None).await
}

/// `rollout status` without an id: one line per rollout, then the totals.
pub async fn list(client: &AdminClient) -> Result<String, CtlError> {
    let list: RolloutList = client.json(Method::GET, "/api/v1/rollouts", None).await?;
    let mut rows = vec![row(&["ROLLOUT", "ROUTE", "TO", "PHASE", "STEP", "REASON"])];
    for r in &list.rollouts {
        rows.push(vec![
            r.id.clone(),
            r.spec.route.clone(),
            r.spec.to.clone(),
            r.phase.as_str().to_owned(),
            format!("{}%", r.current_weight()),
            r.reason
                .as_ref()
                .map_or_else(String::new, |r| r.message.clone()),
        ]);
    }
    let t = list.totals;
    let mut out = if list.rollouts.is_empty() {
        "no rollouts since the gateway started\n".to_owned()
    } else {
        table(&rows)
    };
    let _ = writeln!(
        out,
        "\ntotals: {} succeeded, {} rolled back, {} aborted",
        t.succeeded, t.rolled_back, t.aborted
    );
    Ok(out)
}

/// `rollout pause|resume|promote|abort ID`.
pub async fn act(client: &AdminClient, id: &str, action: Action) -> Result<Rollout, CtlError> {
    let verb = match action {
        Action::Pause => "pause",
        Action::Resume => "resume",
        Action::Promote => "promote",
        Action::Abort => "abort",
    };
    let path = format!("/api/v1/rollouts/{}/{verb}", segment(id));
    client.json(Method::POST, &path, None).await
}

/// Polls rollout `id` every `every`, calling `frame` with the rendered table each
/// time it changed, until the rollout has ended; returns its last state.
pub async fn watch(
    client: &AdminClient,
    id: &str,
    every: Duration,
    mut frame: impl FnMut(&str),
) -> Result<Rollout, CtlError> {
    let mut last = String::new();
    loop {
        let r = get(client, id).await?;
        let text = render(&r);
        if text != last {
            frame(&text);
            last = text;
        }
        if !r.phase.is_active() {
            return Ok(r);
        }
        tokio::time::sleep(every).await;
    }
}

/// The rollout as a header, its gate, the step table and the reason it ended.
pub fn render(r: &Rollout) -> String {
    let s = &r.spec;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rollout {}  route {}  {} -> {}  {}  step {}/{} ({}%){}",
        r.id,
        s.route,
        s.from.join("+"),
        s.to,
        r.phase.as_str(),
        r.steps.len(),
        s.steps.len(),
        r.current_weight(),
        if r.resumed > 0 {
            format!("  resumed after {} restart(s)", r.resumed)
        } else {
            String::new()
        }
    );
    let mut gate = format!("gate: error rate <= {}", percent(s.max_error_rate));
    if let Some(d) = s.max_error_rate_delta {
        let _ = write!(gate, " (and <= baseline + {})", percent(d));
    }
    if let Some(p) = s.max_p99 {
        let _ = write!(gate, ", p99 <= {}", humantime::format_duration(p));
    }
    let _ = write!(
        gate,
        ", >= {} requests per step (else wait up to {}, then {}), step {}",
        s.min_requests,
        humantime::format_duration(s.max_wait),
        match s.on_low_traffic {
            crate::rollout::LowTraffic::Fail => "fail",
            crate::rollout::LowTraffic::Pass => "pass",
        },
        humantime::format_duration(s.step_interval)
    );
    if let Some(b) = s.bake {
        let _ = write!(gate, ", bake {}", humantime::format_duration(b));
    }
    let _ = writeln!(out, "{gate}\n");
    let mut rows = vec![row(&[
        "STEP", "WEIGHT", "TIME", "REQUESTS", "ERRORS", "ERR RATE", "P99", "BASELINE", "VERDICT",
        "NOTE",
    ])];
    for (i, step) in r.steps.iter().enumerate() {
        rows.push(vec![
            (i + 1).to_string(),
            format!("{}%", step.weight),
            format!("{:.1}s", step.elapsed_ms as f64 / 1000.0),
            step.requests.to_string(),
            step.errors.to_string(),
            percent(step.error_rate),
            step.p99_ms.map_or("-".into(), |p| format!("{p:.1}ms")),
            step.baseline_error_rate.map_or("-".into(), percent),
            serde_json::to_value(step.verdict)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            step.note.clone().unwrap_or_default(),
        ]);
    }
    out.push_str(&table(&rows));
    if let Some(reason) = &r.reason {
        let _ = writeln!(out, "\n{}: {}", reason.metric, reason.message);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_step_table_shows_figures_verdicts_and_the_reason() {
        let r: Rollout = serde_json::from_str(
            r#"{
          "id": "agents-1", "phase": "rolled_back", "start_from_file": true,
          "start_split": [{"pool": "blue", "weight": 100}], "started_ms": 1, "resumed": 0,
          "spec": {"route": "agents", "to": "green", "from": ["blue"], "steps": [5, 100],
            "step_interval": "30s", "max_error_rate": 0.01, "max_p99": "500ms",
            "min_requests": 20, "max_wait": "90s", "on_low_traffic": "fail",
            "on_restart": "resume"},
          "steps": [{"weight": 5, "started_ms": 1, "elapsed_ms": 30000, "requests": 1500,
            "errors": 75, "error_rate": 0.05, "p99_ms": 20.5, "baseline_error_rate": 0.0,
            "verdict": "failed", "note": "error rate 5.00% > max_error_rate 1.00%"}],
          "reason": {"metric": "error_rate", "value": 0.05, "bound": 0.01,
            "message": "error rate 5.00% (75 of 1500 requests to green) > max_error_rate 1.00%"}
        }"#,
        )
        .expect("a rollout");
        let text = render(&r);
        assert!(
            text.starts_with(
                "rollout agents-1  route agents  blue -> green  rolled_back  step 1/2 (0%)"
            ),
            "{text}"
        );
        assert!(text.contains("gate: error rate <= 1.00%, p99 <= 500ms, >= 20 requests per step (else wait up to 1m 30s, then fail), step 30s"), "{text}");
        let line = text
            .lines()
            .find(|l| l.starts_with("1 "))
            .expect("a step row");
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            &cells[..9],
            ["1", "5%", "30.0s", "1500", "75", "5.00%", "20.5ms", "0.00%", "failed"]
        );
        assert!(text.ends_with("error_rate: error rate 5.00% (75 of 1500 requests to green) > max_error_rate 1.00%\n"), "{text}");
    }
}
