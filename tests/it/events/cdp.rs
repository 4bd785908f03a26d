//! Headless Debian `chromium` driven over its DevTools protocol: one page, its
//! console and exceptions collected, JavaScript evaluated in it, screenshots.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Longest wait for chromium to start and for one protocol answer.
const BOUND: Duration = Duration::from_secs(30);

/// A running headless chromium and a DevTools session on its one page.
pub(crate) struct Browser {
    _child: tokio::process::Child,
    _profile: tempfile::TempDir,
    ws: Socket,
    next_id: u64,
    /// Console calls of type error or warning, uncaught exceptions and log entries
    /// of level error, as they arrived.
    pub(crate) problems: Vec<Value>,
}

/// Whether Debian's `chromium` is installed (CI installs it: `.ci/run`; there it is
/// required).
pub(crate) fn installed() -> bool {
    let ok = std::process::Command::new("chromium")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs chromium (.ci/run installs it)"
        );
        eprintln!("dashboard: chromium not installed; skipped");
    }
    ok
}

impl Browser {
    /// Starts chromium headless on a blank page and attaches to that page.
    pub(crate) async fn start() -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut child = tokio::process::Command::new("chromium")
            .args([
                "--headless",
                "--disable-gpu",
                "--no-sandbox",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1100,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn chromium");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/…"
        let port: u16 = tokio::time::timeout(BOUND, async {
            while let Some(line) = lines.next_line().await.expect("chromium stderr") {
                if let Some(url) = line.strip_prefix("DevTools listening on ws://") {
                    let hostport = url.split('/').next().unwrap_or("");
                    let port = hostport.rsplit(':').next().unwrap_or("");
                    return port.parse().expect("DevTools port");
                }
            }
            panic!("chromium exited before listening");
        })
        .await
        .expect("chromium's DevTools within the bound");
        // The rest of its stderr (dbus noise) is read and dropped, so it never blocks.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let targets = devtools_get(port, "/json/list").await;
        let page = targets
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["type"] == "page")
            .unwrap_or_else(|| panic!("no page target: {targets}"));
        let url = page["webSocketDebuggerUrl"].as_str().expect("page ws url");
        let (ws, _) = tokio::time::timeout(BOUND, tokio_tungstenite::connect_async(url))
            .await
            .expect("DevTools connect in time")
            .expect("DevTools websocket");
        let mut browser = Browser {
            _child: child,
            _profile: profile,
            ws,
            next_id: 0,
            problems: Vec::new(),
        };
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            browser.call(domain, json!({})).await;
        }
        browser
    }

    /// Sends `method` and waits for its answer's `result`; events that arrive
    /// meanwhile are checked for problems.
    pub(crate) async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws
            .send(Message::Text(msg))
            .await
            .expect("DevTools send");
        tokio::time::timeout(BOUND, async {
            loop {
                let msg = self
                    .ws
                    .next()
                    .await
                    .expect("DevTools open")
                    .expect("DevTools message");
                let Message::Text(text) = msg else { continue };
                let v: Value = serde_json::from_str(&text).expect("DevTools JSON");
                if v["id"] == id {
                    if let Some(err) = v.get("error") {
                        panic!("{method}: {err}");
                    }
                    return v["result"].clone();
                }
                self.note(v);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{method} answered in time"))
    }

    fn note(&mut self, event: Value) {
        let problem = match event["method"].as_str() {
            Some("Runtime.consoleAPICalled") => {
                matches!(
                    event["params"]["type"].as_str(),
                    Some("error" | "warning" | "assert")
                )
            }
            Some("Runtime.exceptionThrown") => true,
            Some("Log.entryAdded") => event["params"]["entry"]["level"] == "error",
            _ => false,
        };
        if problem {
            self.problems.push(event["params"].clone());
        }
    }

    /// The value of a JavaScript expression (awaited if it is a promise).
    pub(crate) async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `expression` every 10 ms until it is truthy (bounded by `limit`).
    pub(crate) async fn wait_for(&mut self, expression: &str, limit: Duration) -> Value {
        let start = tokio::time::Instant::now();
        loop {
            let v = self.eval(expression).await;
            if !(v.is_null() || v == false || v == "" || v == 0) {
                return v;
            }
            assert!(
                start.elapsed() < limit,
                "`{expression}` not true within {limit:?}; page: {}",
                self.eval("document.body.innerText").await
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A PNG of the page.
    pub(crate) async fn screenshot(&mut self) -> Vec<u8> {
        let r = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        base64_decode(r["data"].as_str().expect("screenshot data"))
    }
}

/// GET on chromium's DevTools HTTP endpoint (it wants an IP or `localhost` as Host).
async fn devtools_get(port: u16, path: &str) -> Value {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("DevTools HTTP");
    let head =
        format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.expect("send");
    // It keeps the connection open: read the head, then Content-Length bytes.
    let mut buf = Vec::new();
    let text = tokio::time::timeout(BOUND, async {
        loop {
            let mut chunk = [0u8; 8192];
            let n = s.read(&mut chunk).await.expect("read");
            assert!(n > 0, "DevTools closed: {}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .expect("Content-Length");
                if body.len() >= len {
                    return body.to_owned();
                }
            }
        }
    })
    .await
    .expect("DevTools HTTP in time");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Standard base64 (what `Page.captureScreenshot` returns).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|&c| c != b'=' && !c.is_ascii_whitespace())
        .map(value)
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut n = 0u32;
        for (i, &d) in chunk.iter().enumerate() {
            n |= u32::from(d) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[test]
fn base64_decodes_padding_right() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode("YWJj"), b"abc");
}
