//! The library's module graph, read from the source, and the rule that the control
//! plane and the data plane's upstream side have no import cycles.
//!
//! The graph's nodes are the crate's modules one level below the layers (`proxy` for
//! `src/data_plane/proxy.rs`) and the top-level modules that are not layers
//! (`gateway`, `metrics`, …); each is named by its own name, which is unique. An edge
//! `a → b` is any `crate::b` or `crate::LAYER::b` path (or a `super::` chain that
//! climbs to the crate root and names one, or to `a`'s layer and names a sibling) in
//! the non-test code of module `a`: its file and everything under its directory,
//! comments, `tests.rs` files, `tests/` directories and a trailing
//! `#[cfg(test)] mod tests { … }` left out. `cargo test --test module_cycles --
//! --nocapture` prints the whole graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules among which no import cycle may run (issue 22, item 3).
const NAMED: &[&str] = &["admin", "controller", "proxy", "rollout", "upstream"];

/// The control plane: no two of these may reach each other through *any*
/// modules (not only directly).
const CONTROL_PLANE: &[&str] = &["admin", "controller", "rollout"];

/// Edges among [`NAMED`] that are known and being removed elsewhere (none left:
/// `upstream` no longer takes anything from `proxy`). An entry that no longer
/// exists fails the test, so the list cannot go stale.
const KNOWN: &[(&str, &str)] = &[];

/// The layer directories of `src/`: their modules are the graph's nodes, not the
/// layers themselves.
const LAYERS: &[&str] = &["control_plane", "data_plane", "tools"];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn src_graph() -> Graph {
    module_graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), LAYERS)
}

#[test]
fn the_graph_has_the_named_modules_inside_their_layers() {
    let graph = src_graph();
    for m in NAMED {
        assert!(graph.contains_key(*m), "{m} is not in the graph");
    }
    // A module of a layer is found there, not at the top.
    for (layer, m) in [("data_plane", "proxy"), ("control_plane", "controller")] {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("src/{layer}/{m}.rs"));
        assert!(file.is_file(), "{} is missing", file.display());
    }
    // The graph sees edges written through a layer: the proxy forwards on upstream.
    assert!(graph["proxy"].contains("upstream"), "{}", render(&graph));
}

#[test]
fn no_import_cycles_among_the_named_modules() {
    let graph = src_graph();
    println!("{}", render(&graph));
    let mut among: Graph = Graph::new();
    for &m in NAMED {
        let edges = graph[m]
            .iter()
            .filter(|t| NAMED.contains(&t.as_str()))
            .filter(|t| !KNOWN.contains(&(m, t.as_str())))
            .cloned()
            .collect();
        among.insert(m.to_owned(), edges);
    }
    for &(from, to) in KNOWN {
        assert!(
            graph[from].contains(to),
            "{from} → {to} is gone: delete it from KNOWN"
        );
    }
    println!(
        "among {NAMED:?} (known edges {KNOWN:?} left out):\n{}",
        render(&among)
    );
    let cycles: Vec<Vec<String>> = components(&among)
        .into_iter()
        .filter(|c| c.len() > 1)
        .collect();
    assert!(
        cycles.is_empty(),
        "import cycles among {NAMED:?}: {cycles:?}"
    );
}

#[test]
fn no_control_plane_module_reaches_back_to_another() {
    let graph = src_graph();
    for c in components(&graph) {
        let plane: Vec<&String> = c
            .iter()
            .filter(|m| CONTROL_PLANE.contains(&m.as_str()))
            .collect();
        assert!(
            plane.len() < 2,
            "{plane:?} reach each other through {c:?}\n{}",
            render(&graph)
        );
    }
}

#[test]
fn the_scanner_sees_cycles_and_ignores_comments_and_tests() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let write = |path: &str, text: &str| {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("lib.rs", "pub mod a;\npub mod b;\npub mod c;\npub mod d;\n");
    write(
        "a.rs",
        "mod x;\nuse crate::{b::B, c};\n/// see crate::d\n#[cfg(test)]\nmod tests {\n    use crate::d;\n}\n",
    );
    write("a/x.rs", "fn f() { super::super::d::g(); }\n");
    write("b.rs", "// crate::a in a comment\n");
    write("c.rs", "use crate::b::{self, Thing};\n");
    write("d.rs", "use crate::a::A;\n");
    write("d/tests.rs", "use crate::b;\n");
    let graph = module_graph(&dir, &[]);
    let edges = |m: &str| graph[m].iter().cloned().collect::<Vec<_>>();
    assert_eq!(edges("a"), ["b", "c", "d"]);
    assert!(edges("b").is_empty());
    assert_eq!(edges("c"), ["b"]);
    assert_eq!(edges("d"), ["a"]);
    let cycles: Vec<_> = components(&graph)
        .into_iter()
        .filter(|c| c.len() > 1)
        .collect();
    assert_eq!(cycles, [vec!["a".to_owned(), "d".to_owned()]]);
}

#[test]
fn the_scanner_sees_modules_inside_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let write = |path: &str, text: &str| {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("lib.rs", "pub mod top;\npub mod one;\npub mod two;\n");
    write("top.rs", "use crate::one::p::P;\n");
    write("one.rs", "pub mod p;\npub mod q;\n");
    write("two.rs", "pub mod r;\n");
    // A sibling through `super::`, another layer through `crate::`, the top through a
    // climb to the crate root, and a group naming a layer's modules.
    write(
        "one/p.rs",
        "mod deep;\nuse super::q::Q;\nuse crate::two::r;\n",
    );
    write(
        "one/p/deep.rs",
        "fn f() { super::super::super::top::g(); }\n",
    );
    write("one/q.rs", "use crate::{one::{p, q}, top};\n");
    write(
        "two/r.rs",
        "// crate::one::p in a comment\nuse crate::one::q::{self, Q};\n",
    );
    let graph = module_graph(&dir, &["one", "two"]);
    let edges = |m: &str| graph[m].iter().cloned().collect::<Vec<_>>();
    assert_eq!(graph.keys().collect::<Vec<_>>(), ["p", "q", "r", "top"]);
    assert_eq!(edges("p"), ["q", "r", "top"]);
    assert_eq!(edges("q"), ["p", "top"]);
    assert_eq!(edges("r"), ["q"]);
    assert_eq!(edges("top"), ["p"]);
    let cycles: Vec<_> = components(&graph)
        .into_iter()
        .filter(|c| c.len() > 1)
        .collect();
    assert_eq!(
        cycles,
        [vec![
            "p".to_owned(),
            "q".to_owned(),
            "r".to_owned(),
            "top".to_owned()
        ]]
    );
}

/// The `.rs` module files directly in `dir`, by module name.
fn module_files(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main" {
            names.push(name);
        }
    }
    names
}

/// Every module of the crate at `src` (the top-level ones that are not in `layers`,
/// and those one level inside each layer) and the modules it names.
fn module_graph(src: &Path, layers: &[&str]) -> Graph {
    // Module name → (its directory's parent, its layer if any).
    let mut places: BTreeMap<String, (PathBuf, Option<&str>)> = BTreeMap::new();
    for name in module_files(src) {
        if !layers.contains(&name.as_str()) {
            places.insert(name, (src.to_owned(), None));
        }
    }
    for &layer in layers {
        for name in module_files(&src.join(layer)) {
            let clash = places.insert(name.clone(), (src.join(layer), Some(layer)));
            assert!(clash.is_none(), "two modules named {name}");
        }
    }
    let mut graph: Graph = places
        .keys()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for (module, (parent, layer)) in &places {
        let depth = if layer.is_some() { 2 } else { 1 };
        let mut files = vec![(parent.join(format!("{module}.rs")), depth)];
        collect(&parent.join(module), depth + 1, &mut files);
        for (file, depth) in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for target in referenced(&without_tests(&text), depth, layer.is_some(), layers) {
                if &target != module && places.contains_key(&target) {
                    graph.get_mut(module).unwrap().insert(target);
                }
            }
        }
    }
    graph
}

/// The `.rs` files under `dir` (module depth `depth`), test files left out.
fn collect(dir: &Path, depth: usize, files: &mut Vec<(PathBuf, usize)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "tests" {
                collect(&path, depth + 1, files);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" {
            // `mod.rs` is its directory's module, one level up.
            let depth = if name == "mod.rs" { depth - 1 } else { depth };
            files.push((path, depth));
        }
    }
}

/// `text` without comments and without a `#[cfg(test)] mod tests { … }` block.
fn without_tests(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if trimmed == "#[cfg(test)]" && lines.peek().is_some_and(|l| l.trim() == "mod tests {") {
            break;
        }
        let code = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Module names that `code` (a file at module depth `depth`, inside a layer when
/// `in_layer`) refers to: `crate::m`, `crate::LAYER::m`, and `super::` chains that
/// climb to the crate root or (inside a layer) to the layer.
fn referenced(code: &str, depth: usize, in_layer: bool, layers: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(is_ident(bytes[i - 1]) || bytes[i - 1] == b'$');
        let rest = &bytes[i..];
        if starts_word && rest.starts_with(b"crate::") {
            i += "crate::".len();
            i = names_after(code, i, layers, &mut found);
            continue;
        }
        if starts_word && rest.starts_with(b"super::") {
            let mut climbs = 0;
            let mut j = i;
            while bytes[j..].starts_with(b"super::") {
                climbs += 1;
                j += "super::".len();
            }
            if climbs == depth {
                i = names_after(code, j, layers, &mut found);
            } else if in_layer && climbs + 1 == depth {
                i = names_after(code, j, &[], &mut found);
            } else {
                i = j;
            }
            continue;
        }
        i += 1;
    }
    found
}

/// The first path segment at `at` (each first segment of a `{…}` group), or the
/// second when the first is one of `layers`; returns where scanning resumes.
fn names_after(code: &str, at: usize, layers: &[&str], found: &mut Vec<String>) -> usize {
    let rest = &code[at..];
    if let Some(group) = rest.strip_prefix('{') {
        let mut level = 0;
        let mut segment_start = true;
        let mut end = group.len();
        for (k, c) in group.char_indices() {
            match c {
                '{' => level += 1,
                '}' if level == 0 => {
                    end = k;
                    break;
                }
                '}' => level -= 1,
                ',' if level == 0 => segment_start = true,
                c if segment_start && (c.is_alphanumeric() || c == '_') => {
                    // A layer's own group (`one::{p, q}`) is still counted by the
                    // levels here; the call only records the names.
                    names_after(code, at + 1 + k, layers, found);
                    segment_start = false;
                }
                _ => {}
            }
        }
        return at + 1 + end;
    }
    let word: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let len = word.len();
    if layers.contains(&word.as_str()) && rest[len..].starts_with("::") {
        return names_after(code, at + len + 2, &[], found);
    }
    if !word.is_empty() {
        found.push(word);
    }
    at + len
}

/// Strongly connected components (Tarjan), each sorted, in name order.
fn components(graph: &Graph) -> Vec<Vec<String>> {
    struct Walk<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        out: Vec<Vec<String>>,
    }
    impl<'g> Walk<'g> {
        fn visit(&mut self, v: &'g str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in &self.graph[v] {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                component.sort();
                self.out.push(component);
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.out.sort();
    walk.out
}

/// `module → a, b, c` per line, then the cycles (components of more than one).
fn render(graph: &Graph) -> String {
    let mut out = String::from("module graph (crate:: paths in non-test code):\n");
    for (module, edges) in graph {
        let edges: Vec<&str> = edges.iter().map(String::as_str).collect();
        out.push_str(&format!("  {module} → {}\n", edges.join(", ")));
    }
    let cycles: Vec<Vec<String>> = components(graph)
        .into_iter()
        .filter(|c| c.len() > 1)
        .collect();
    out.push_str("cycles (strongly connected components):\n");
    if cycles.is_empty() {
        out.push_str("  none\n");
    }
    for c in cycles {
        out.push_str(&format!("  {}\n", c.join(" ↔ ")));
    }
    out
}
