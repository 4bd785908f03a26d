//! A container's Docker labels (one `key=value` a line) as discovery reads them.
#![no_main]
use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use sluicegate::discovery::labels;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let map: HashMap<String, String> = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let exposed = map.get("exposed").map(String::as_str).unwrap_or("");
    if let Ok(Some(found)) = labels::parse(&map, "sluicegate") {
        let _ = labels::port(found.port, exposed.split(','), "sluicegate");
    }
});
