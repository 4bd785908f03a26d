//! `sluicegate ctl watch`: the `ctl status` picture, live from the event stream.
//!
//! On a terminal the picture is redrawn (with the last events under it) whenever
//! an event arrives; without one, each event is printed as one line, for logs and
//! pipes. `--once` prints the picture and exits. A stream that ends (the gateway
//! restarted, or this client fell behind and was dropped) is reopened with
//! `Last-Event-ID`, so no event is missed while the history has it.

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
/// Wait before reopening an ended stream.
const REOPEN: Duration = Duration::from_secs(1);

/// The picture: `ctl status`'s table of routes, pools and backends.
pub async fn picture(client: &AdminClient) -> Result<String, CtlError> {
    let view: StateView = client.json(Method::GET, "/api/v1/state", None).await?;
    Ok(render_status(&view))
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
        while let Some(Ok(f)) = body.frame().await {
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
