//! What comes from files: a reloaded `routes.toml` and, at start, the state file.
//!
//! A reload keeps the overrides that still apply (dropping and logging the rest),
//! keeps the running listener and log settings (`[listen]`, `[tls]`, `[admin]`,
//! `[log]`: they need a restart), and publishes. A state file that cannot be read
//! is set aside and reported loudly; the gateway then starts from `routes.toml`
//! alone rather than refusing to start.

use std::path::{Path, PathBuf};

use tokio::time::Instant;

use super::Task;
use crate::control_plane::config::Spec;
use crate::control_plane::overrides::Overrides;
use crate::control_plane::state_file;

impl Task {
    /// A valid file replaced the old one: keep what applies, publish.
    pub(super) async fn reload(&mut self, mut spec: Spec) {
        for note in crate::control_plane::plan::keep_restart_only(&self.file, &mut spec) {
            tracing::warn!("config file changed: {note}");
        }
        for route in self.overrides.splits().keys() {
            let split_of = |s: &Spec| {
                s.routes
                    .iter()
                    .find(|r| &r.name == route)
                    .map(|r| r.split.clone())
            };
            if split_of(&self.file) != split_of(&spec) {
                tracing::info!(%route, "the file's split of this route changed, but an admin override is in force; `sluicegate ctl split {route} --reset` returns it to the file");
            }
        }
        let base = super::discovered::base_of(&spec, &self.discovered);
        let dropped = self.overrides.prune(&base);
        for d in &dropped {
            tracing::warn!(override = %d.what, why = %d.why, "admin override dropped on reload");
        }
        self.file = spec;
        self.base = base;
        if !dropped.is_empty() {
            self.persist_or_log();
        }
        self.publish(crate::control_plane::events::By::File).await;
        self.controller.metrics().count_reload(true);
        self.counters.send_modify(|c| c.reloads_ok += 1);
        let generation = self.controller.generation();
        self.events
            .emit(crate::control_plane::events::EventKind::ReloadApplied { generation });
        tracing::info!(generation = self.controller.generation(), "config reloaded");
    }
}

/// The persisted overrides for `file`; a bad state file is logged loudly and
/// ignored (set aside as `<file>.corrupt`) so the gateway starts from the file.
pub(super) fn load_overrides(path: &Path, file: &Spec) -> Overrides {
    let persisted = match state_file::load(path) {
        Ok(persisted) => persisted,
        Err(err) => {
            let mut aside = path.as_os_str().to_owned();
            aside.push(".corrupt");
            let aside = PathBuf::from(aside);
            let kept = match std::fs::rename(path, &aside) {
                Ok(()) => format!("kept as {}", aside.display()),
                Err(e) => format!("could not be set aside: {e}"),
            };
            tracing::error!(
                %err,
                "STATE FILE IGNORED: starting from the config file alone, WITHOUT the admin overrides (splits, drains, registered backends) it held; the bad file was {kept}"
            );
            return Overrides::default();
        }
    };
    let (overrides, skipped) = state_file::restore(&persisted, file, Instant::now());
    for d in &skipped {
        tracing::warn!(override = %d.what, why = %d.why, "persisted admin override skipped");
    }
    if !overrides.is_empty() {
        tracing::info!(
            splits = overrides.splits().len(),
            drains = overrides.drains().len(),
            backends = overrides.backends().len(),
            state_file = %path.display(),
            "admin overrides restored"
        );
    }
    overrides
}
