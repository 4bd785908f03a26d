//! The crate's public API is curated (issue 22, item 4): the layers are private
//! modules, the root re-exports what a program driving sluicegate needs, and what only
//! tests, benches and fuzz targets need sits behind the one hidden `testing` module.
//! These tests read `src/lib.rs` and the binary's sources, so that widening the API or
//! letting the product reach through the test door is a deliberate, reviewed change.

use std::path::Path;

fn source(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The code lines of `src/lib.rs` (comments and blank lines left out).
fn lib_lines() -> Vec<String> {
    source("src/lib.rs")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_only_public_module_is_the_hidden_testing_door() {
    let lines = lib_lines();
    let public: Vec<&String> = lines.iter().filter(|l| l.starts_with("pub mod ")).collect();
    assert_eq!(public, ["pub mod testing;"], "public modules in src/lib.rs");
    let at = lines
        .iter()
        .position(|l| l == "pub mod testing;")
        .expect("testing is declared");
    assert_eq!(
        lines.get(at.wrapping_sub(1)).map(String::as_str),
        Some("#[doc(hidden)]"),
        "the testing module is hidden from the docs"
    );
    for layer in ["data_plane", "control_plane", "tools"] {
        assert!(
            lines.contains(&format!("mod {layer};")),
            "the layer {layer} is a private module"
        );
    }
}

#[test]
fn the_root_re_exports_exactly_the_curated_list() {
    let exports: Vec<String> = lib_lines()
        .into_iter()
        .filter(|l| l.starts_with("pub use "))
        .collect();
    let expected = [
        "pub use control_plane::config::{self, load, parse, ConfigError, ConfigErrors, LoadError, Spec};",
        "pub use control_plane::controller::state_view;",
        "pub use control_plane::discovery;",
        "pub use control_plane::reload::ReloadOptions;",
        "pub use control_plane::rollout::{Action as RolloutAction, RolloutRequest};",
        "pub use data_plane::access_log;",
        "pub use data_plane::server::Drained;",
        "pub use data_plane::tls::load as load_tls;",
        "pub use gateway::{Gateway, GatewayError, Options as GatewayOptions};",
        "pub use tools::ctl::{self, AdminClient, CtlError};",
        "pub use tools::{check, demo};",
    ];
    assert_eq!(exports, expected, "the crate root's re-exports changed");
}

#[test]
fn the_binary_uses_only_the_public_api() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin/sluicegate");
    let mut read = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        let text = std::fs::read_to_string(&path).expect("binary source");
        read += 1;
        assert!(
            !text.contains("sluicegate::testing"),
            "{} reaches through the test door",
            path.display()
        );
    }
    assert!(read >= 2, "the binary's sources were found ({read})");
}
