//! Checks of `[maintenance]`: the operator's maintenance page (`template`, a
//! file, or `html`, inline) and its placeholders.
//!
//! The page's text is checked here when inline; a `template` file is read and
//! checked by [`check_template`] when the config is loaded (this module reads no
//! files), with the same errors at `maintenance.template`.

use std::sync::Arc;

use super::Report;
use crate::control_plane::config::raw::RawMaintenance;
use crate::control_plane::config::spec::{
    MaintenanceTemplateSpec, MAINTENANCE_PLACEHOLDERS, MAINTENANCE_TEMPLATE_LIMIT,
};

pub(super) fn check_maintenance(
    raw: RawMaintenance,
    report: &mut Report,
) -> Option<MaintenanceTemplateSpec> {
    let before = report.errors.len();
    match (&raw.template, &raw.html) {
        (Some(_), Some(_)) => report.add(
            "maintenance",
            "give either template (a file) or html (the page inline), not both",
        ),
        (Some(file), None) if file.trim().is_empty() => report.add(
            "maintenance.template",
            "the path of the page's file is empty; name an HTML file (relative to this file's directory)",
        ),
        (None, Some(html)) => {
            for message in check_template(html) {
                report.add("maintenance.html", message);
            }
        }
        _ => {}
    }
    (report.errors.len() == before).then(|| MaintenanceTemplateSpec {
        html: raw.html.map(Arc::from),
        file: raw.template.map(Into::into),
    })
}

/// What is wrong with a maintenance template (empty: nothing): its size, and
/// placeholders other than `{{message}}`, `{{route}}`, `{{retry_after}}`.
pub fn check_template(html: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if html.len() > MAINTENANCE_TEMPLATE_LIMIT {
        problems.push(format!(
            "the page is {} bytes; at most {MAINTENANCE_TEMPLATE_LIMIT} (it is sent whole with every refused request)",
            html.len()
        ));
    }
    let mut rest = html;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            problems.push("a `{{` is never closed with `}}`".to_owned());
            break;
        };
        // Written exactly: the page is filled by plain replacement.
        let name = &after[..close];
        if !MAINTENANCE_PLACEHOLDERS.contains(&name) {
            problems.push(format!(
                "unknown placeholder {{{{{name}}}}}; the page may use {{{{message}}}}, {{{{route}}}} and {{{{retry_after}}}}"
            ));
        }
        rest = &after[close + 2..];
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::check_template;
    use crate::control_plane::config::{parse, parse_at};

    const BASE: &str = "[listen]\nhttp = \"127.0.0.1:8080\"\n";

    fn paths(text: &str) -> Vec<String> {
        match parse(&format!("{BASE}{text}")) {
            Ok(_) => Vec::new(),
            Err(e) => {
                e.0.into_iter()
                    .map(|e| format!("{}: {}", e.path, e.message))
                    .collect()
            }
        }
    }

    #[test]
    fn bad_maintenance_tables_are_reported_at_their_key_paths() {
        let both = paths("[maintenance]\ntemplate = \"a.html\"\nhtml = \"x\"\n");
        assert!(both[0].starts_with("maintenance: give either"), "{both:?}");
        let unknown = paths("[maintenance]\nhtml = \"<p>{{msg}}</p>\"\n");
        assert!(
            unknown[0].starts_with("maintenance.html: unknown placeholder {{msg}}"),
            "{unknown:?}"
        );
        let key = paths("[maintenance]\npage = \"x\"\n");
        assert!(key[0].starts_with("maintenance.page"), "{key:?}");
        assert!(paths("[maintenance]\nhtml = \"<p>{{message}}</p>\"\n").is_empty());
    }

    #[test]
    fn a_template_file_is_read_relative_to_the_config_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("routes.toml");
        let text = format!("{BASE}[maintenance]\ntemplate = \"page.html\"\n");
        let missing = parse_at(&text, &config).expect_err("no file yet");
        assert_eq!(missing.0[0].path, "maintenance.template");
        assert!(missing.0[0]
            .message
            .contains("cannot read the maintenance page"));
        std::fs::write(dir.path().join("page.html"), "<p>{{retry_afterr}}</p>").expect("write");
        let bad = parse_at(&text, &config).expect_err("bad placeholder");
        assert!(
            bad.0[0]
                .message
                .contains("unknown placeholder {{retry_afterr}}"),
            "{bad}"
        );
        std::fs::write(dir.path().join("page.html"), "<p>{{message}}</p>").expect("write");
        let spec = parse_at(&text, &config).expect("valid");
        assert_eq!(spec.maintenance.html.as_deref(), Some("<p>{{message}}</p>"));
    }

    #[test]
    fn known_placeholders_pass_and_others_are_named() {
        assert!(check_template("<p>{{message}} {{route}} {{retry_after}}</p>").is_empty());
        assert_eq!(check_template("{{ message }}").len(), 1);
        let problems = check_template("<p>{{mesage}}</p>{{");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("{{mesage}}"), "{problems:?}");
        assert!(check_template(&"x".repeat(70_000))[0].contains("70000 bytes"));
    }
}
