//! `routes.toml`: reading, checking and typing the one config file.
//!
//! Config flows one way in three types: [`raw`] mirrors the file, [`validate`]
//! checks it and collects *every* problem with its key path, [`spec`] is the
//! typed result. This module owns the entry points ([`parse`], [`load`]) and the
//! error types; it does not build runtime snapshots or watch the file.

pub mod raw;
pub mod spec;
pub mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

pub use spec::*;

/// One problem in the config.
///
/// `path` is the key path like `routes[1].split[0].pool` (`""` for whole-file
/// syntax errors); `message` says what is wrong and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{}", .path, if .path.is_empty() { "" } else { ": " }, .message)]
pub struct ConfigError {
    /// Key path of the offending value, e.g. `pools[0].backends[1].addr`.
    pub path: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

/// All problems found, in file order; `Display` prints one per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", Lines(.0))]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// Displays errors one per line.
struct Lines<'a>(&'a [ConfigError]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Why [`load`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {}: {error}", .path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// What the OS said (in the message, not as a `source`, so it prints once).
        error: std::io::Error,
    },
    /// The file was read but is not a valid config.
    #[error("{} is invalid:\n{errors}", .path.display())]
    Invalid {
        /// The file that was read.
        path: PathBuf,
        /// Every problem found.
        errors: ConfigErrors,
    },
}

/// Parses and validates the text of a `routes.toml`.
///
/// A TOML syntax error is reported alone (path `""`, with line and column);
/// otherwise every problem in the file is reported, in file order.
pub fn parse(text: &str) -> Result<Spec, ConfigErrors> {
    let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        ConfigErrors(vec![ConfigError {
            path: String::new(),
            message: e.to_string().trim_end().to_owned(),
        }])
    })?;
    validate::validate(doc).map_err(|ConfigErrors(mut errors)| {
        sort_by_position(text, &mut errors);
        ConfigErrors(errors)
    })
}

/// Reads `path` and [`parse`]s it, with the files it names read (see [`parse_at`]).
pub fn load(path: &Path) -> Result<Spec, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|error| LoadError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    parse_at(&text, path).map_err(|errors| LoadError::Invalid {
        path: path.to_path_buf(),
        errors,
    })
}

/// [`parse`], then reads what the file names besides TLS files (those are
/// `tls`'s): the `[maintenance].template` page, relative to `config`'s directory.
/// Blocking file I/O: call it where [`load`] is called, or off the workers.
pub fn parse_at(text: &str, config: &Path) -> Result<Spec, ConfigErrors> {
    let mut spec = parse(text)?;
    if let Some(file) = &spec.maintenance.file {
        let dir = config.parent().unwrap_or_else(|| Path::new("."));
        let path = dir.join(file);
        let path_key = "maintenance.template".to_owned();
        let fail = |message: String| {
            ConfigErrors(vec![ConfigError {
                path: path_key.clone(),
                message,
            }])
        };
        // Bounded read: one byte past the limit is enough to refuse.
        let limit = spec::MAINTENANCE_TEMPLATE_LIMIT as u64 + 1;
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| {
                std::io::Read::read_to_end(&mut std::io::Read::take(f, limit), &mut bytes)
            })
            .map_err(|e| {
                fail(format!(
                    "cannot read the maintenance page {}: {e}",
                    path.display()
                ))
            })?;
        let html = String::from_utf8(bytes)
            .map_err(|_| fail(format!("{} is not UTF-8 text", path.display())))?;
        let problems = validate::check_template(&html);
        if !problems.is_empty() {
            return Err(ConfigErrors(
                problems
                    .into_iter()
                    .map(|message| ConfigError {
                        path: path_key.clone(),
                        message: format!("{}: {message}", path.display()),
                    })
                    .collect(),
            ));
        }
        spec.maintenance.html = Some(html.into());
    }
    Ok(spec)
}

/// Orders errors by where their top-level section (or `[[pools]]`/`[[routes]]`
/// element) starts in the text; errors within one element keep their order.
fn sort_by_position(text: &str, errors: &mut [ConfigError]) {
    // The text parsed once already; if spans are unavailable keep section order.
    let Ok(starts) = toml::from_str::<BTreeMap<String, toml::Spanned<Starts>>>(text) else {
        return;
    };
    let position = |path: &str| -> usize {
        for (key, value) in &starts {
            let head = validate::key_path("", key);
            let Some(rest) = path.strip_prefix(head.as_str()) else {
                continue;
            };
            if !(rest.is_empty() || rest.starts_with(['.', '['])) {
                continue;
            }
            let index = rest
                .strip_prefix('[')
                .and_then(|r| r.split_once(']'))
                .and_then(|(i, _)| i.parse::<usize>().ok());
            let element = index.and_then(|i| value.get_ref().0.get(i).copied());
            return element.unwrap_or(value.span().start);
        }
        0
    };
    errors.sort_by_cached_key(|e| position(&e.path));
}

/// Start offsets of the elements of an array (empty for any other value).
struct Starts(Vec<usize>);

impl<'de> Deserialize<'de> for Starts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct StartsVisitor;

        impl<'de> Visitor<'de> for StartsVisitor {
            type Value = Starts;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any TOML value")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Starts, A::Error> {
                let mut starts = Vec::new();
                while let Some(item) = seq.next_element::<toml::Spanned<IgnoredAny>>()? {
                    starts.push(item.span().start);
                }
                Ok(Starts(starts))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Starts, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Starts(Vec::new()))
            }

            fn visit_bool<E>(self, _: bool) -> Result<Starts, E> {
                Ok(Starts(Vec::new()))
            }

            fn visit_i64<E>(self, _: i64) -> Result<Starts, E> {
                Ok(Starts(Vec::new()))
            }

            fn visit_f64<E>(self, _: f64) -> Result<Starts, E> {
                Ok(Starts(Vec::new()))
            }

            fn visit_str<E>(self, _: &str) -> Result<Starts, E> {
                Ok(Starts(Vec::new()))
            }
        }

        deserializer.deserialize_any(StartsVisitor)
    }
}

#[cfg(test)]
mod tests;
