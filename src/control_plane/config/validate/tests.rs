//! Error kinds of the top level, `[listen]` and `[[pools]]`: exact path and a
//! fragment of the message for each.

use crate::control_plane::config::tests::{
    assert_one, errors, with_pool, with_pools, LISTEN, POOLS,
};

#[test]
fn unknown_top_level_key_lists_accepted() {
    assert_one(
        &format!("{LISTEN}[listne]\nx = 1\n"),
        "listne",
        "accepted top-level keys: listen, admin, log, pools, routes, discovery, tls",
    );
}

#[test]
fn missing_listen() {
    assert_one(POOLS, "listen", "missing [listen]");
}

#[test]
fn listen_hostname_and_missing_port() {
    assert_one(
        "[listen]\nhttp = \"localhost:8080\"\n",
        "listen.http",
        "names a host, not an IP address",
    );
    assert_one(
        "[listen]\nhttp = \"0.0.0.0\"\n",
        "listen.http",
        "has no port",
    );
    assert_one(
        "[listen]\nhttp = \"0.0.0.0:99999\"\n",
        "listen.http",
        "not a port number",
    );
}

#[test]
fn listen_max_connections_at_least_one() {
    assert_one(
        &format!("{LISTEN}max_connections = 0\n"),
        "listen.max_connections",
        "at least 1",
    );
}

#[test]
fn listen_http1_fast_path_is_a_bool_on_by_default() {
    assert_one(
        &format!("{LISTEN}http1_fast_path = \"no\"\n"),
        "listen.http1_fast_path",
        "expected a boolean",
    );
    let on = crate::control_plane::config::parse(&with_pool(
        r#"backends = [{ addr = "127.0.0.1:9001" }]"#,
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(on.listen.http1_fast_path);
    let text = with_pool(r#"backends = [{ addr = "127.0.0.1:9001" }]"#).replacen(
        "[listen]\n",
        "[listen]\nhttp1_fast_path = false\n",
        1,
    );
    let off = crate::control_plane::config::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    assert!(!off.listen.http1_fast_path);
}

#[test]
fn listen_header_read_timeout_positive_duration() {
    assert_one(
        &format!("{LISTEN}header_read_timeout = \"0s\"\n"),
        "listen.header_read_timeout",
        "greater than 0",
    );
    assert_one(
        &format!("{LISTEN}header_read_timeout = \"ten\"\n"),
        "listen.header_read_timeout",
        "is not a duration",
    );
    assert_one(
        &format!("{LISTEN}header_read_timeout = 10\n"),
        "listen.header_read_timeout",
        "expected a duration string",
    );
}

#[test]
fn listen_https_needs_certificates() {
    assert_one(
        &format!("{LISTEN}https = \"0.0.0.0:8443\"\n"),
        "listen.https",
        "HTTPS needs a certificate",
    );
}

#[test]
fn pools_must_be_array_of_tables() {
    assert_one(
        &format!("{LISTEN}[pools]\nname = \"a\"\n"),
        "pools",
        "[[pools]]",
    );
    assert_one(
        &format!("pools = [\"a\"]\n{LISTEN}"),
        "pools[0]",
        "expected a table",
    );
}

#[test]
fn wrong_type_has_full_path() {
    let text = with_pool(r#"backends = [{ addr = "127.0.0.1:9001", weight = "heavy" }]"#);
    assert_one(
        &text,
        "pools[0].backends[0].weight",
        "expected an integer, found string",
    );
}

#[test]
fn unknown_field_names_key_and_lists_accepted() {
    let text = with_pool(r#"backends = [{ addr = "127.0.0.1:9001", wieght = 2 }]"#);
    assert_one(
        &text,
        "pools[0].backends[0].wieght",
        "unknown key `wieght`; accepted keys: addr, weight, backup",
    );
}

#[test]
fn missing_required_key_points_at_key() {
    assert_one(
        &format!("{LISTEN}[[pools]]\nbackends = []\n"),
        "pools[0].name",
        "missing required key `name`",
    );
}

#[test]
fn pool_name_charset_and_length() {
    assert_one(
        &format!("{LISTEN}[[pools]]\nname = \"agent blue\"\n"),
        "pools[0].name",
        "contains ' '",
    );
    assert_one(
        &format!("{LISTEN}[[pools]]\nname = \"\"\n"),
        "pools[0].name",
        "empty",
    );
    let long = "a".repeat(65);
    assert_one(
        &format!("{LISTEN}[[pools]]\nname = \"{long}\"\n"),
        "pools[0].name",
        "at most 64",
    );
}

#[test]
fn duplicate_pool_name_points_at_second() {
    let text = with_pools("[[pools]]\nname = \"agent-blue\"\n");
    assert_one(
        &text,
        "pools[2].name",
        "duplicate pool name \"agent-blue\" (first defined at pools[0])",
    );
}

#[test]
fn unknown_balance_lists_policies() {
    assert_one(
        &with_pool("balance = \"fastest\""),
        "pools[0].balance",
        "use one of: round_robin, least_conn, p2c, hash",
    );
}

#[test]
fn hash_without_hash_key() {
    assert_one(
        &with_pool("balance = \"hash\""),
        "pools[0].hash_key",
        "needs hash_key",
    );
}

#[test]
fn hash_key_without_hash() {
    let text = with_pool("balance = \"p2c\"\nhash_key = \"client_ip\"");
    assert_one(
        &text,
        "pools[0].hash_key",
        "only applies to balance = \"hash\"",
    );
    assert_one(
        &with_pool("hash_key = \"client_ip\""),
        "pools[0].hash_key",
        "\"round_robin\"",
    );
}

#[test]
fn bad_hash_keys() {
    let bad = |key: &str| with_pool(&format!("balance = \"hash\"\nhash_key = \"{key}\""));
    assert_one(&bad("session"), "pools[0].hash_key", "is not a hash key");
    assert_one(
        &bad("header:x session"),
        "pools[0].hash_key",
        "not a valid header name",
    );
    assert_one(
        &bad("cookie:a;b"),
        "pools[0].hash_key",
        "not a valid cookie name",
    );
}

#[test]
fn backend_hostname_suggests_ip_or_docker() {
    let text = with_pool(r#"backends = [{ addr = "agent-blue:9001" }]"#);
    assert_one(&text, "pools[0].backends[0].addr", "Docker discovery");
}

#[test]
fn backend_weight_range() {
    let text = with_pool(r#"backends = [{ addr = "127.0.0.1:9001", weight = 0 }]"#);
    assert_one(
        &text,
        "pools[0].backends[0].weight",
        "between 1 and 1000000",
    );
    let text = with_pool(r#"backends = [{ addr = "127.0.0.1:9001", weight = 1000001 }]"#);
    assert_one(&text, "pools[0].backends[0].weight", "got 1000001");
}

#[test]
fn duplicate_backend_addr() {
    let text = with_pool(
        r#"backends = [{ addr = "127.0.0.1:9001" }, { addr = "127.0.0.1:9001", backup = true }]"#,
    );
    assert_one(
        &text,
        "pools[0].backends[1].addr",
        "duplicate backend 127.0.0.1:9001 (first at pools[0].backends[0])",
    );
}

#[test]
fn every_bad_key_of_one_element_is_reported() {
    let text = format!(
        "{LISTEN}[[pools]]\nname = \"p\"\ncolour = \"blue\"\nbalance = \"fastest\"\nbackends = [{{ addr = 1 }}]\n"
    );
    let errors = errors(&text);
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "pools[0].backends[0].addr",
            "pools[0].colour",
            "pools[0].balance"
        ]
    );
}

#[test]
fn wrong_type_of_required_key_is_not_also_missing() {
    assert_one(
        &format!("{LISTEN}[[pools]]\nname = 5\n"),
        "pools[0].name",
        "expected a string, found integer",
    );
}

#[test]
fn admin_table_builds_spec() {
    let text = format!(
        "{LISTEN}stream_close_delay = \"2s\"\n[admin]\nlisten = \"0.0.0.0:9901\"\ntoken_env = \"SG_TOKEN\"\nstate_file = \"/tmp/state.json\"\n"
    );
    let spec = crate::control_plane::config::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let admin = spec.admin.expect("admin");
    assert_eq!(admin.listen, "0.0.0.0:9901".parse().expect("literal"));
    assert_eq!(admin.token_env.as_deref(), Some("SG_TOKEN"));
    assert_eq!(
        spec.listen.stream_close_delay,
        std::time::Duration::from_secs(2)
    );
    let none = crate::control_plane::config::parse(LISTEN).expect("valid");
    assert!(none.admin.is_none());
    assert_eq!(
        none.listen.stream_close_delay,
        std::time::Duration::from_secs(300)
    );
}

#[test]
fn admin_non_loopback_needs_a_token() {
    assert_one(
        &format!("{LISTEN}[admin]\nlisten = \"0.0.0.0:9901\"\n"),
        "admin.token_env",
        "is not a loopback address",
    );
}

#[test]
fn admin_never_shares_the_traffic_port() {
    let text = "[listen]\nhttp = \"0.0.0.0:8080\"\n[admin]\nlisten = \"127.0.0.1:8080\"\n";
    assert_one(text, "admin.listen", "clashes with listen.http");
    let text = "[listen]\nhttp = \"0.0.0.0:8080\"\nhttps = \"0.0.0.0:8443\"\n[admin]\nlisten = \"127.0.0.1:8443\"\n[[tls.certificates]]\ncert = \"a.pem\"\nkey = \"a.key\"\n";
    assert_one(
        text,
        "admin.listen",
        "clashes with listen.https 0.0.0.0:8443",
    );
}

#[test]
fn admin_bad_values_have_paths() {
    assert_one(
        &format!("{LISTEN}[admin]\nlisten = \"127.0.0.1:9901\"\ntoken_env = \"A-B\"\n"),
        "admin.token_env",
        "not an environment variable name",
    );
    assert_one(
        &format!("{LISTEN}[admin]\nlisten = \"127.0.0.1:9901\"\nstate_file = \"\"\n"),
        "admin.state_file",
        "state_file is empty",
    );
    assert_one(
        &format!("{LISTEN}[admin]\nlisten = \"127.0.0.1:9901\"\nrollouts = true\n"),
        "admin.rollouts",
        "unknown key",
    );
    assert_one(
        &format!("{LISTEN}stream_close_delay = \"0s\"\n"),
        "listen.stream_close_delay",
        "greater than 0",
    );
}
