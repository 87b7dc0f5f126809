//! The core's modules depend on each other one way only: this reads `src/`, builds the
//! graph of `crate::` / `super::` / `self::` paths and paths into declared child modules,
//! and fails on any cycle (naming it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// Source text with comments, strings and char literals blanked, so only code remains.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &src[i..];
        if rest.starts_with("//") {
            let end = rest.find('\n').unwrap_or(rest.len());
            i += end;
        } else if rest.starts_with("/*") {
            let end = rest.find("*/").map_or(rest.len(), |e| e + 2);
            i += end;
            out.push(' ');
        } else if rest.starts_with("r#\"") || rest.starts_with("r\"") {
            let hashes = rest[1..].chars().take_while(|c| *c == '#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let body = 2 + hashes;
            let end = rest[body..]
                .find(&close)
                .map_or(rest.len(), |e| body + e + close.len());
            i += end;
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            i = j + 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if b.get(i + 1) == Some(&b'\\') {
                let end = rest[2..].find('\'').map_or(rest.len(), |e| e + 3);
                i += end;
                out.push_str("' '");
            } else if let Some(c) = rest[1..].chars().next() {
                if rest[1 + c.len_utf8()..].starts_with('\'') {
                    i += 2 + c.len_utf8();
                    out.push_str("' '");
                } else {
                    out.push('\'');
                    i += 1;
                }
            } else {
                i += 1;
            }
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// `src/a/b.rs` and `src/a/b/mod.rs` → `[a, b]`; `src/lib.rs` → `[]`.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap_or(file).with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("src entry is readable").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Reads a `use`-style tree or an expression path at `s` (just after its first `::`),
/// calling `found` with every full path it names.
fn paths_at(s: &str, prefix: &[String], found: &mut dyn FnMut(Vec<String>)) -> usize {
    let mut path = prefix.to_vec();
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    loop {
        while i < b.len() && b[i].is_whitespace() {
            i += 1;
        }
        if i < b.len() && b[i] == '{' {
            i += 1;
            loop {
                while i < b.len() && (b[i].is_whitespace() || b[i] == ',') {
                    i += 1;
                }
                if i >= b.len() || b[i] == '}' {
                    found(path.clone());
                    return i + 1;
                }
                let rest: String = b[i..].iter().collect();
                i += paths_at(&rest, &path, found);
            }
        }
        let start = i;
        while i < b.len() && is_ident(b[i]) {
            i += 1;
        }
        let seg: String = b[start..i].iter().collect();
        if seg.is_empty() || seg == "self" {
            found(path);
            return i;
        }
        path.push(seg);
        if b.get(i) == Some(&':') && b.get(i + 1) == Some(&':') {
            i += 2;
        } else {
            found(path);
            return i;
        }
    }
}

#[test]
fn core_modules_have_no_dependency_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<Module> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();

    for file in &files {
        let me = module_of(&src, file);
        let text = code_only(&std::fs::read_to_string(file).expect("source is readable"));
        // Child modules declared in this file (`mod x;`), reachable by relative paths.
        let children: BTreeSet<String> = modules
            .iter()
            .filter(|m| m.len() == me.len() + 1 && m.starts_with(&me))
            .map(|m| m[me.len()].clone())
            .collect();
        // Inline modules (`mod tests { .. }`) shift what `super::` means.
        let mut inline: Vec<(usize, usize)> = Vec::new(); // (brace depth, segments)
        let mut depth = 0usize;
        let mut scope = me.clone();
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let mut k = 0;
        while k < chars.len() {
            let (pos, c) = chars[k];
            match c {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if inline.last().is_some_and(|(d, _)| *d == depth) {
                        inline.pop();
                        scope.pop();
                    }
                }
                _ => {}
            }
            let before = text[..pos].chars().next_back();
            let at_word = !before.is_some_and(|p| is_ident(p) || p == ':') && is_ident(c);
            if !at_word {
                k += 1;
                continue;
            }
            let word: String = text[pos..].chars().take_while(|c| is_ident(*c)).collect();
            let after = &text[pos + word.len()..];
            if word == "mod" {
                let rest = after.trim_start();
                let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
                if !name.is_empty() && rest[name.len()..].trim_start().starts_with('{') {
                    inline.push((depth, scope.len()));
                    scope.push(name);
                }
            }
            if let Some(tail) = after.strip_prefix("::") {
                let base: Option<Module> = match word.as_str() {
                    "crate" => Some(Vec::new()),
                    "self" => Some(scope.clone()),
                    "super" => Some(scope[..scope.len().saturating_sub(1)].to_vec()),
                    w if children.contains(w) && scope == me => {
                        Some([me.clone(), vec![w.to_string()]].concat())
                    }
                    _ => None,
                };
                if let Some(base) = base {
                    let mut base = base;
                    let mut tail = tail;
                    // `super::super::x`
                    while let Some(t) = tail.strip_prefix("super::") {
                        base.pop();
                        tail = t;
                    }
                    paths_at(tail, &base, &mut |p| {
                        // The longest module the path names (items live in modules).
                        let target = (0..=p.len())
                            .rev()
                            .map(|n| p[..n].to_vec())
                            .find(|m| modules.contains(m))
                            .unwrap_or_default();
                        if target != me {
                            edges.entry(me.clone()).or_default().insert(target);
                        }
                    });
                }
            }
            k += word.chars().count();
        }
    }

    // Depth-first search for a back edge.
    fn visit(
        m: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        state: &mut BTreeMap<Module, u8>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        state.insert(m.clone(), 1);
        stack.push(m.clone());
        for next in edges.get(m).into_iter().flatten() {
            match state.get(next) {
                Some(1) => {
                    let from = stack.iter().position(|s| s == next).unwrap_or(0);
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(next, edges, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(m.clone(), 2);
        None
    }
    let name = |m: &Module| {
        if m.is_empty() {
            "crate".to_string()
        } else {
            m.join("::")
        }
    };
    let mut state = BTreeMap::new();
    for m in &modules {
        if state.contains_key(m) {
            continue;
        }
        if let Some(cycle) = visit(m, &edges, &mut state, &mut Vec::new()) {
            panic!(
                "module dependency cycle: {}",
                cycle.iter().map(name).collect::<Vec<_>>().join(" -> ")
            );
        }
    }
    // The graph is not trivially empty (the scan found the real dependencies).
    assert!(edges
        .get(&vec!["world".to_string(), "local".to_string()])
        .is_some_and(|e| e.contains(&vec!["stream".to_string()])));
}
