//! Checks of `[log]`: where the access log goes and in which format.

use super::Report;
use crate::control_plane::config::raw::RawLog;
use crate::control_plane::config::spec::{AccessLog, LogFormat, LogSpec};

pub(super) fn check_log(raw: RawLog, report: &mut Report) -> Option<LogSpec> {
    let access = match raw.access.as_deref() {
        None | Some("off") => Some(AccessLog::Off),
        Some("stdout") => Some(AccessLog::Stdout),
        Some(other) => {
            report.add(
                "log.access",
                format!(r#"unknown access log target {other:?}; use "off" or "stdout""#),
            );
            None
        }
    };
    let format = match raw.format.as_deref() {
        None | Some("json") => Some(LogFormat::Json),
        Some("text") => Some(LogFormat::Text),
        Some(other) => {
            report.add(
                "log.format",
                format!(r#"unknown log format {other:?}; use "json" or "text""#),
            );
            None
        }
    };
    Some(LogSpec {
        access: access?,
        format: format?,
    })
}

#[cfg(test)]
mod tests {
    use crate::control_plane::config::spec::{AccessLog, LogFormat, LogSpec};

    const BASE: &str = "[listen]\nhttp = \"127.0.0.1:8080\"\n";

    fn parse(log: &str) -> Result<LogSpec, String> {
        crate::control_plane::config::parse(&format!("{BASE}{log}"))
            .map(|spec| spec.log)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn access_log_is_off_and_json_by_default() {
        assert_eq!(parse("").unwrap(), LogSpec::default());
        assert_eq!(parse("[log]\n").unwrap().access, AccessLog::Off);
        assert_eq!(parse("[log]\n").unwrap().format, LogFormat::Json);
    }

    #[test]
    fn stdout_and_text_are_accepted() {
        let spec = parse("[log]\naccess = \"stdout\"\nformat = \"text\"\n").unwrap();
        assert_eq!(
            spec,
            LogSpec {
                access: AccessLog::Stdout,
                format: LogFormat::Text
            }
        );
    }

    #[test]
    fn bad_values_and_keys_are_reported_at_their_paths() {
        let err = parse("[log]\naccess = \"file\"\nformat = \"xml\"\n").unwrap_err();
        assert!(
            err.contains("log.access") && err.contains("\"stdout\""),
            "{err}"
        );
        assert!(
            err.contains("log.format") && err.contains("\"text\""),
            "{err}"
        );
        let err = parse("[log]\nlevel = \"debug\"\n").unwrap_err();
        assert!(err.contains("log.level"), "{err}");
        let err = parse("log = 1\n").unwrap_err();
        assert!(err.contains("log"), "{err}");
    }
}
