//! A `/metrics` scrape, parsed just enough to look up one sample by its labels, and
//! `promtool check metrics` on it when promtool is installed.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use http::Method;

use crate::support::live::LiveGateway;

/// The text of one scrape.
pub struct Scrape {
    pub text: String,
}

impl Scrape {
    /// `GET /metrics` on the gateway's admin listener.
    pub async fn get(gw: &LiveGateway) -> Scrape {
        let r = gw.api(Method::GET, "/metrics", None).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        Scrape {
            text: String::from_utf8(r.body.to_vec()).expect("UTF-8 scrape"),
        }
    }

    /// The value of sample `name` whose labels are exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<&str, &str> = labels.iter().copied().collect();
        self.text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(parse_line)
            .find(|(n, l, _)| *n == name && *l == want)
            .map(|(_, _, v)| v)
    }
}

/// `name{k="v",…} value` → parts; label values here never hold `"` or `,`.
fn parse_line(line: &str) -> Option<(&str, BTreeMap<&str, &str>, f64)> {
    let (head, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        None => (head, BTreeMap::new()),
        Some((name, rest)) => {
            let inner = rest.strip_suffix('}')?;
            let labels = inner
                .split(',')
                .filter(|p| !p.is_empty())
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    Some((k, v.strip_prefix('"')?.strip_suffix('"')?))
                })
                .collect();
            (name, labels)
        }
    };
    Some((name, labels, value))
}

/// Runs `promtool check metrics` on `text` if promtool is installed (CI installs it
/// and sets `CI`, so there a missing promtool fails the test instead of skipping).
pub fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(err) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is needed in CI ({err}); .ci/run installs Debian's prometheus package"
            );
            eprintln!("promtool not installed ({err}); skipping `promtool check metrics`");
            return;
        }
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write scrape");
    let out = child.wait_with_output().expect("promtool ran");
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n--- scrape ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
