//! `sluicegate ctl watch`: the `ctl status` picture and each backend's traffic
//! (in-flight, request rate, error rate, p99 from `GET /api/v1/stats`), live.
//!
//! On a terminal the picture is redrawn (with the last events under it) whenever
//! an event arrives; without one, each event is printed as one line, for logs and
//! pipes. `--once` prints the picture and exits. A stream that ends (the gateway
//! restarted, or this client fell behind and was dropped) is reopened with
//! `Last-Event-ID`, so no event is missed while the history has it. On a
//! terminal the picture is also redrawn every [`TRAFFIC_REFRESH`] without
//! events, since the traffic figures change with every request.

use std::collections::VecDeque;
use std::fmt::Write;
use std::time::Duration;

use http::Method;
use http_body_util::BodyExt;
use serde_json::Value;

use super::client::{AdminClient, CtlError};
use super::render_status;
use crate::control_plane::controller::state_view::StateView;

/// Events shown under the redrawn picture.
const SHOWN: usize = 10;
/// Redraw interval on a terminal when no event arrives (the traffic figures).
pub const TRAFFIC_REFRESH: Duration = Duration::from_secs(2);
/// Wait before reopening an ended stream.
const REOPEN: Duration = Duration::from_secs(1);

/// The picture: `ctl status`'s table of routes, pools and backends, then each
/// backend's traffic from `GET /api/v1/stats` (see [`render_traffic`]).
pub async fn picture(client: &AdminClient) -> Result<String, CtlError> {
    let view: StateView = client.json(Method::GET, "/api/v1/state", None).await?;
    let stats: Value = client.json(Method::GET, "/api/v1/stats", None).await?;
    let mut out = render_status(&view);
    out.push('\n');
    out.push_str(&render_traffic(&stats));
    Ok(out)
}

/// The traffic table: per pool (its own counters) and per backend, in-flight
/// now, then request rate, error rate and p99 over the stats window (`-` where
/// the window has no figure).
pub fn render_traffic(stats: &Value) -> String {
    let window = match stats["window_s"].as_f64() {
        Some(w) => format!("over the last {w:.1} s"),
        None => "no earlier sample yet: rates show at the next refresh".to_owned(),
    };
    let mut out = format!(
        "traffic {window}; event stream subscribers {}\n",
        stats["event_subscribers"]
    );
    let mut rows = vec![super::row(&[
        "POOL", "BACKEND", "INFLIGHT", "REQ/S", "ERRORS", "P99", "REQUESTS",
    ])];
    let figures = |v: &Value| {
        let rps = v["rps"]
            .as_f64()
            .map_or("-".to_owned(), |r| format!("{r:.1}"));
        let err = v["error_rate"]
            .as_f64()
            .map_or("-".to_owned(), |e| format!("{:.2}%", e * 100.0));
        let p99 = v["p99_ms"]
            .as_f64()
            .map_or("-".to_owned(), |p| format!("{p:.1}ms"));
        [rps, err, p99, str_of(&v["requests"])]
    };
    for pool in stats["pools"].as_array().into_iter().flatten() {
        let name = str_of(&pool["pool"]);
        let [rps, err, p99, total] = figures(pool);
        rows.push(vec![
            name.clone(),
            "(pool)".into(),
            "".into(),
            rps,
            err,
            p99,
            total,
        ]);
        for b in pool["backends"].as_array().into_iter().flatten() {
            let [rps, err, p99, total] = figures(b);
            rows.push(vec![
                name.clone(),
                str_of(&b["addr"]),
                str_of(&b["inflight"]),
                rps,
                err,
                p99,
                total,
            ]);
        }
    }
    out.push_str(&super::table(&rows));
    out
}

/// Follows the stream until it fails to open; `redraw` (a terminal) redraws the
/// picture, else `out` gets one line per event.
pub async fn watch(
    client: &AdminClient,
    redraw: bool,
    mut out: impl FnMut(&str),
) -> Result<(), CtlError> {
    let mut recent: VecDeque<String> = VecDeque::new();
    let mut last: Option<u64> = None;
    let mut first = true;
    loop {
        let mut body = match client.events(last).await {
            Ok(body) => body,
            Err(err) if first => return Err(err),
            Err(err) => {
                out(&format!("event stream: {err}; retrying"));
                tokio::time::sleep(REOPEN).await;
                continue;
            }
        };
        if first {
            if redraw {
                out(&frame(&picture(client).await?, &recent));
            } else {
                out(picture(client).await?.trim_end());
            }
            first = false;
        }
        let mut buf = String::new();
        loop {
            let next = if redraw {
                match tokio::time::timeout(TRAFFIC_REFRESH, body.frame()).await {
                    Ok(frame) => frame,
                    Err(_) => {
                        out(&frame(&picture(client).await?, &recent));
                        continue;
                    }
                }
            } else {
                body.frame().await
            };
            let Some(Ok(f)) = next else { break };
            let Ok(data) = f.into_data() else { continue };
            buf.push_str(&String::from_utf8_lossy(&data));
            while let Some(end) = buf.find("\n\n") {
                let message: String = buf.drain(..end + 2).collect();
                let Some(event) = parse(&message) else {
                    continue;
                };
                if let Some(seq) = event.get("seq").and_then(Value::as_u64) {
                    last = Some(seq);
                }
                let line = event_line(&event);
                if redraw {
                    if recent.len() == SHOWN {
                        recent.pop_front();
                    }
                    recent.push_back(line);
                    // Several events in one read: one redraw for all of them.
                    if !buf.contains("\n\n") {
                        out(&frame(&picture(client).await?, &recent));
                    }
                } else {
                    out(&line);
                }
            }
        }
        tokio::time::sleep(REOPEN).await;
    }
}

/// The screen: cleared, the picture, then the last events.
fn frame(picture: &str, recent: &VecDeque<String>) -> String {
    let mut s = String::from("\x1b[H\x1b[2J");
    s.push_str(picture);
    s.push_str("\nlast events:\n");
    for line in recent {
        let _ = writeln!(s, "  {line}");
    }
    s
}

/// An SSE message's `data:` as JSON (`None` for comments).
fn parse(message: &str) -> Option<Value> {
    let data = message.lines().find_map(|l| l.strip_prefix("data: "))?;
    serde_json::from_str(data).ok()
}

/// One event as a line: `HH:MM:SS #seq type key=value …` (UTC).
pub fn event_line(event: &Value) -> String {
    let at = event.get("at_ms").and_then(Value::as_u64).unwrap_or(0) / 1000;
    let (h, m, s) = ((at / 3600) % 24, (at / 60) % 60, at % 60);
    let mut line = format!("{h:02}:{m:02}:{s:02}");
    if let Some(seq) = event.get("seq").and_then(Value::as_u64) {
        let _ = write!(line, " #{seq}");
    }
    let kind = event.get("type").and_then(Value::as_str).unwrap_or("?");
    let _ = write!(line, " {kind}");
    if let Value::Object(map) = event {
        for (k, v) in map {
            if matches!(k.as_str(), "seq" | "at_ms" | "type") || v.is_null() {
                continue;
            }
            let v = match (k.as_str(), v) {
                ("split", Value::Array(parts)) => parts
                    .iter()
                    .map(|p| format!("{}={}", str_of(&p["pool"]), p["weight"]))
                    .collect::<Vec<_>>()
                    .join(","),
                _ => str_of(v),
            };
            let _ = write!(line, " {k}={v}");
        }
    }
    line
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_one_readable_line() {
        let event = serde_json::json!({
            "seq": 7, "at_ms": 3_723_000u64, "type": "split_changed", "route": "agents",
            "split": [{"pool": "blue", "weight": 90}, {"pool": "green", "weight": 10}],
            "by": "api",
        });
        assert_eq!(
            event_line(&event),
            "01:02:03 #7 split_changed by=api route=agents split=blue=90,green=10"
        );
    }

    #[test]
    fn messages_without_data_are_skipped() {
        assert_eq!(parse(": keepalive\n\n"), None);
        assert_eq!(
            parse("id: 1\nevent: x\ndata: {\"seq\":1}\n\n").unwrap()["seq"],
            1
        );
    }
}
