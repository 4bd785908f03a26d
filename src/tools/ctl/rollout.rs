//! `sluicegate ctl rollout start|status|pause|resume|promote|abort`.
//!
//! Every command prints the rollout as a step table: weight, time, the target's
//! requests, errors, error rate and p99 during the step, the baseline's error rate,
//! and the verdict with its note; then why it ended, if it did. `status --watch`
//! (and `start --watch`) redraws the table whenever it changes until the rollout
//! ends, so the steps and figures show as they happen; when the output is not a
//! terminal it prints one line per change instead (see [`changes`]), so a log or
//! a pipe gets a readable history rather than a table per second.

use std::fmt::Write;
use std::time::Duration;

use http::Method;

use super::client::{segment, AdminClient, CtlError};
use super::{row, table};
use crate::control_plane::rollout::gate::percent;
use crate::control_plane::rollout::{Action, Rollout, RolloutList, RolloutRequest};

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

/// How `--watch` shows a rollout as it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchOutput {
    /// The whole table again whenever it changed (for a terminal).
    Table,
    /// One line per change: a step started or judged, the phase changed (for a
    /// pipe or a file, where redrawn tables would pile up).
    Lines,
}

/// Polls rollout `id` every `every` until it has ended, calling `emit` with each
/// change in the form `output` asks for; returns its last state.
pub async fn watch(
    client: &AdminClient,
    id: &str,
    every: Duration,
    output: WatchOutput,
    mut emit: impl FnMut(&str),
) -> Result<Rollout, CtlError> {
    let mut last_table = String::new();
    let mut last: Option<Rollout> = None;
    loop {
        let r = get(client, id).await?;
        match output {
            WatchOutput::Table => {
                let text = render(&r);
                if text != last_table {
                    emit(&text);
                    last_table = text;
                }
            }
            WatchOutput::Lines => {
                for line in changes(last.as_ref(), &r) {
                    emit(&line);
                }
            }
        }
        if !r.phase.is_active() {
            return Ok(r);
        }
        last = Some(r);
        tokio::time::sleep(every).await;
    }
}

/// What changed from `prev` (the last poll, `None` at first) to `next`, one line
/// each: the rollout's header at first, each step as it starts and as it is
/// judged, each phase change with the reason the rollout ended. Figures that move
/// on every poll (elapsed time, request counts) are not changes on their own.
pub fn changes(prev: Option<&Rollout>, next: &Rollout) -> Vec<String> {
    let mut lines = Vec::new();
    let total = next.spec.steps.len();
    if prev.is_none() {
        lines.push(render(next).lines().next().unwrap_or_default().to_owned());
    }
    for (i, step) in next.steps.iter().enumerate() {
        let before = prev.and_then(|p| p.steps.get(i));
        if before.is_none() {
            lines.push(format!("step {}/{total}: {}% started", i + 1, step.weight));
        }
        let judged = step.verdict != crate::control_plane::rollout::Verdict::Measuring;
        if judged && before.is_none_or(|b| b.verdict != step.verdict) {
            let mut line = format!(
                "step {}/{total}: {}% {} after {:.1}s: {} requests, {} errors ({}), p99 {}",
                i + 1,
                step.weight,
                verdict_word(step.verdict),
                step.elapsed_ms as f64 / 1000.0,
                step.requests,
                step.errors,
                percent(step.error_rate),
                step.p99_ms.map_or("-".into(), |p| format!("{p:.1}ms")),
            );
            if let Some(note) = &step.note {
                let _ = write!(line, "; {note}");
            }
            lines.push(line);
        }
    }
    // After the steps, so a poll that saw a step judged and the rollout end reads
    // in the order it happened.
    let phase_changed = prev.is_some_and(|p| p.phase != next.phase);
    if phase_changed {
        lines.push(format!("rollout {} {}", next.id, next.phase.as_str()));
    }
    if (phase_changed || prev.is_none()) && !next.phase.is_active() {
        if let Some(reason) = &next.reason {
            lines.push(format!("{}: {}", reason.metric, reason.message));
        }
    }
    lines
}

/// A verdict as the step table writes it (`passed`, `not_judged`, …).
fn verdict_word(verdict: crate::control_plane::rollout::Verdict) -> String {
    serde_json::to_value(verdict)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
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
            crate::control_plane::rollout::LowTraffic::Fail => "fail",
            crate::control_plane::rollout::LowTraffic::Pass => "pass",
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
            verdict_word(step.verdict),
            step.note.clone().unwrap_or_default(),
        ]);
    }
    out.push_str(&table(&rows));
    for (i, step) in r.steps.iter().enumerate() {
        if step.replicas > 0 {
            let _ = writeln!(
                out,
                "step {}: figures summed over {} replicas",
                i + 1,
                step.replicas
            );
        }
        for peer in &step.peers {
            let _ = writeln!(out, "step {}: peer not counted: {peer}", i + 1);
        }
    }
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

    #[test]
    fn the_step_table_names_the_replicas_summed_and_the_peers_not_counted() {
        let steps = r#"{"weight": 25, "started_ms": 1, "elapsed_ms": 12000, "requests": 900,
            "errors": 0, "error_rate": 0.0, "verdict": "passed", "replicas": 2,
            "peers": ["gw-3 (10.0.1.7:9901): connection refused"]}"#;
        let text = render(&rollout("running", steps, ""));
        assert!(
            text.contains("step 1: figures summed over 2 replicas\n"),
            "{text}"
        );
        assert!(
            text.contains("step 1: peer not counted: gw-3 (10.0.1.7:9901): connection refused\n"),
            "{text}"
        );
    }

    fn rollout(phase: &str, steps: &str, reason: &str) -> Rollout {
        serde_json::from_str(&format!(
            r#"{{
          "id": "agents-1", "phase": "{phase}", "start_from_file": true,
          "start_split": [{{"pool": "blue", "weight": 100}}], "started_ms": 1, "resumed": 0,
          "spec": {{"route": "agents", "to": "green", "from": ["blue"], "steps": [25, 100],
            "step_interval": "10s", "max_error_rate": 0.01,
            "min_requests": 5, "max_wait": "90s", "on_low_traffic": "fail",
            "on_restart": "resume"}},
          "steps": [{steps}]{reason}
        }}"#
        ))
        .expect("a rollout")
    }

    fn step(weight: u32, elapsed_ms: u64, requests: u64, verdict: &str) -> String {
        format!(
            r#"{{"weight": {weight}, "started_ms": 1, "elapsed_ms": {elapsed_ms}, "requests": {requests},
            "errors": 0, "error_rate": 0.0, "verdict": "{verdict}"}}"#
        )
    }

    #[test]
    fn watch_lines_show_changes_not_moving_figures() {
        let first = rollout("running", &step(25, 100, 1, "measuring"), "");
        let lines = changes(None, &first);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("rollout agents-1  route agents  blue -> green  running"));
        assert_eq!(lines[1], "step 1/2: 25% started");
        // Time and counts moved; nothing else did: no line.
        let later = rollout("running", &step(25, 5000, 40, "measuring"), "");
        assert!(changes(Some(&first), &later).is_empty());
        let next = rollout(
            "running",
            &format!(
                "{},{}",
                step(25, 10000, 80, "passed"),
                step(100, 0, 0, "measuring")
            ),
            "",
        );
        let lines = changes(Some(&later), &next);
        assert_eq!(
            lines,
            [
                "step 1/2: 25% passed after 10.0s: 80 requests, 0 errors (0.00%), p99 -",
                "step 2/2: 100% started",
            ]
        );
        let done = rollout(
            "succeeded",
            &format!(
                "{},{}",
                step(25, 10000, 80, "passed"),
                step(100, 10, 1, "not_judged")
            ),
            "",
        );
        let lines = changes(Some(&next), &done);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("step 2/2: 100% not_judged after 0.0s"));
        assert_eq!(lines[1], "rollout agents-1 succeeded");
    }
}
