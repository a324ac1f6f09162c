//! Layers point one way: every `.rs` file under src/ may import only its own room and the rooms that the
//! table in docs/architecture.md (section "Layers") lets its room use. The rule, as that section states it:
//!
//! - A room is a module path under `crate::`; a file belongs to the longest room that prefixes its
//!   module path (`src/a/mod.rs` is `a`, `src/a/b.rs` is `a::b`; `lib.rs` and `main.rs` are the top and
//!   may use anything).
//! - An import is a `use crate::…` (groups count path by path), a `use super::…` / `use self::…` or a
//!   `use child::…` of a module declared in the same file, resolved to an absolute path, or such a path
//!   written inline in code. It targets the longest room that prefixes it and is allowed when that is
//!   the file's own room or one its row lists.
//! - `#[cfg(test)] mod … { … }` blocks (and `#[cfg(test)] mod …;` files) and `crate::testutil` are
//!   exempt; comments and string literals are not code.
//!
//! The reader below is a small Rust lexer, not a parser: enough to find paths, with unit tests of its
//! own at the end of this file.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

/// A room: a module path under `crate::`, as segments (`["smtp", "session"]`).
type Room = Vec<String>;

fn room_name(r: &[String]) -> String {
    r.join("::")
}

/// The layering table: each room and the rooms it may use.
#[derive(Debug, Default)]
struct Table {
    may_use: BTreeMap<Room, BTreeSet<Room>>,
}

/// `` `a::b` `` → `["a", "b"]`, if the cell holds exactly one room name in backticks.
fn backticked_room(cell: &str) -> Option<Room> {
    let name = cell.trim().strip_prefix('`')?.strip_suffix('`')?;
    let segs: Room = name.split("::").map(str::to_string).collect();
    let ident = |s: &String| {
        !s.is_empty()
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !s.starts_with(|c: char| c.is_ascii_digit())
    };
    segs.iter().all(ident).then_some(segs)
}

impl Table {
    /// Reads the `## Layers` section of `markdown`: a table whose rows are
    /// `` | `room` | `a`, `b` | `` or `` | `room` | — | ``.
    fn parse(markdown: &str) -> Result<Table, Vec<String>> {
        let mut lines = markdown.lines().enumerate();
        if !lines.any(|(_, l)| l.trim() == "## Layers") {
            return Err(vec!["no `## Layers` section".into()]);
        }
        let mut table = Table::default();
        let mut errors = Vec::new();
        let mut seen_header = false;
        for (n, line) in lines {
            let t = line.trim();
            if t.starts_with("# ") || t.starts_with("## ") {
                break;
            }
            if !t.starts_with('|') {
                continue;
            }
            let cells: Vec<&str> = t.trim_matches('|').split('|').map(str::trim).collect();
            let rule = t.chars().all(|c| matches!(c, '|' | '-' | ':' | ' '));
            if !seen_header || rule {
                // The header row (`room | may use`) and the `|---|---|` under it.
                seen_header = true;
                continue;
            }
            let at = format!("line {}", n + 1);
            if cells.len() != 2 {
                errors.push(format!(
                    "{at}: a row has two cells, not {}: {t}",
                    cells.len()
                ));
                continue;
            }
            let Some(room) = backticked_room(cells[0]) else {
                errors.push(format!("{at}: not a room in backticks: {:?}", cells[0]));
                continue;
            };
            let mut uses = BTreeSet::new();
            if !matches!(cells[1], "—" | "-" | "") {
                for part in cells[1].split(',') {
                    match backticked_room(part) {
                        Some(r) => {
                            uses.insert(r);
                        }
                        None => errors.push(format!("{at}: not a room in backticks: {part:?}")),
                    }
                }
            }
            if table.may_use.insert(room.clone(), uses).is_some() {
                errors.push(format!("{at}: room `{}` has two rows", room_name(&room)));
            }
        }
        if table.may_use.is_empty() && errors.is_empty() {
            errors.push("the `## Layers` section holds no table rows".into());
        }
        for (room, uses) in &table.may_use {
            for u in uses {
                if !table.may_use.contains_key(u) {
                    errors.push(format!(
                        "`{}` may use `{}`, which has no row of its own",
                        room_name(room),
                        room_name(u)
                    ));
                }
            }
        }
        if errors.is_empty() {
            Ok(table)
        } else {
            Err(errors)
        }
    }

    /// The longest room that prefixes `path`.
    fn room_of(&self, path: &[String]) -> Option<&Room> {
        self.may_use
            .keys()
            .filter(|r| path.starts_with(r))
            .max_by_key(|r| r.len())
    }

    fn allows(&self, from: &Room, to: &Room) -> bool {
        from == to || self.may_use.get(from).is_some_and(|u| u.contains(to))
    }
}

// ---------------------------------------------------------------------------------------------
// Lexing: identifiers, `::` and punctuation, without comments and literals
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    PathSep,
    Punct(char),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

impl Token {
    fn is_ident(&self, s: &str) -> bool {
        matches!(&self.tok, Tok::Ident(i) if i == s)
    }
    fn is_punct(&self, c: char) -> bool {
        self.tok == Tok::Punct(c)
    }
    fn ident(&self) -> Option<&str> {
        match &self.tok {
            Tok::Ident(i) => Some(i),
            _ => None,
        }
    }
}

fn ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Splits Rust source into tokens. Comments (nested block comments too), string literals (plain,
/// raw, byte, C) and char literals are dropped; a lifetime leaves its name as an identifier, which
/// never matters here; `$crate` is `crate`.
fn lex(src: &str) -> Vec<Token> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    // Skips to after the closing quote of a string whose body starts at `i`; `raw` hashes, or None
    // for a string with escapes.
    let skip_string = |mut i: usize, raw: Option<usize>, line: &mut usize| -> usize {
        while i < c.len() {
            match (c[i], raw) {
                ('\n', _) => *line += 1,
                ('\\', None) => {
                    if c.get(i + 1) == Some(&'\n') {
                        *line += 1;
                    }
                    i += 1;
                }
                ('"', None) => return i + 1,
                ('"', Some(h)) if (1..=h).all(|k| c.get(i + k) == Some(&'#')) => return i + 1 + h,
                _ => {}
            }
            i += 1;
        }
        i
    };
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_string(i + 1, None, &mut line);
        } else if ch == '\'' {
            if c.get(i + 1) == Some(&'\\') {
                // An escaped char literal: '\n', '\'', '\u{1F600}'.
                i += 3;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                // A lifetime or a label: its name follows as an identifier.
                i += 1;
            }
        } else if ch == '$' && c[i + 1..].starts_with(&['c', 'r', 'a', 't', 'e']) {
            i += 1;
        } else if ident_start(ch) {
            let start = i;
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let next = c.get(i).copied();
            let raw_prefix = matches!(word.as_str(), "r" | "br" | "cr");
            if matches!(word.as_str(), "b" | "c") && next == Some('"') {
                i = skip_string(i + 1, None, &mut line);
            } else if raw_prefix && matches!(next, Some('"') | Some('#')) {
                let mut h = 0;
                while c.get(i + h) == Some(&'#') {
                    h += 1;
                }
                if c.get(i + h) == Some(&'"') {
                    i = skip_string(i + h + 1, Some(h), &mut line);
                } else if word == "r" && h == 1 {
                    // A raw identifier, r#type.
                    let s = i + 1;
                    i = s;
                    while i < c.len() && ident_char(c[i]) {
                        i += 1;
                    }
                    out.push(Token {
                        tok: Tok::Ident(c[s..i].iter().collect()),
                        line,
                    });
                } else {
                    out.push(Token {
                        tok: Tok::Ident(word),
                        line,
                    });
                }
            } else if word == "b" && next == Some('\'') {
                // b'x': the char literal is skipped on the next round.
            } else {
                out.push(Token {
                    tok: Tok::Ident(word),
                    line,
                });
            }
        } else if ch.is_ascii_digit() {
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push(Token {
                tok: Tok::PathSep,
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                tok: Tok::Punct(ch),
                line,
            });
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Finding the paths a file uses
// ---------------------------------------------------------------------------------------------

/// A path as written in a file, where, and in which module it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    line: usize,
    /// e.g. `["super", "engine", "Engine"]`.
    path: Vec<String>,
    /// The module the path was written in (a file's module, or an inline `mod` inside it).
    module: Vec<String>,
    /// From a `use` declaration (else inline in code).
    in_use: bool,
}

/// What one file holds: the paths it writes and the child modules each of its modules declares.
#[derive(Debug, Default)]
struct Scan {
    paths: Vec<Written>,
    /// Module path → the names of the `mod` items declared in it (outside test modules).
    children: BTreeMap<Vec<String>, BTreeSet<String>>,
    /// Module paths declared `#[cfg(test)] mod name;` (their files are test code).
    test_files: Vec<Vec<String>>,
}

/// The index after the bracket that closes the one at `open` (`{`/`}` or `[`/`]`).
fn matching(t: &[Token], open: usize) -> usize {
    let (o, c) = match t[open].tok {
        Tok::Punct('[') => ('[', ']'),
        _ => ('{', '}'),
    };
    let mut depth = 0;
    for (k, tok) in t.iter().enumerate().skip(open) {
        if tok.is_punct(o) {
            depth += 1;
        } else if tok.is_punct(c) {
            depth -= 1;
            if depth == 0 {
                return k + 1;
            }
        }
    }
    t.len()
}

/// After attributes and a visibility (`pub`, `pub(crate)`, `pub(in a::b)`) starting at `k`: the index
/// of the next token.
fn skip_attributes_and_visibility(t: &[Token], mut k: usize) -> usize {
    loop {
        if k + 1 < t.len() && t[k].is_punct('#') && t[k + 1].is_punct('[') {
            k = matching(t, k + 1);
        } else if k < t.len() && t[k].is_ident("pub") {
            k += 1;
            if k < t.len() && t[k].is_punct('(') {
                while k < t.len() && !t[k].is_punct(')') {
                    k += 1;
                }
                k += 1;
            }
        } else {
            return k;
        }
    }
}

/// Reads a use tree from `t[*k..]` under `prefix`; pushes every full path with the line of its last
/// segment.
fn use_tree(t: &[Token], k: &mut usize, prefix: &[String], out: &mut Vec<(Vec<String>, usize)>) {
    let mut path = prefix.to_vec();
    let mut line = t.get(*k).map_or(0, |x| x.line);
    if *k < t.len() && t[*k].tok == Tok::PathSep {
        // `use ::name` is an external crate.
        path.push("::".into());
        *k += 1;
    }
    while let Some(tok) = t.get(*k) {
        match &tok.tok {
            Tok::Punct('*') => {
                *k += 1;
                break;
            }
            Tok::Punct('{') => {
                *k += 1;
                while *k < t.len() && !t[*k].is_punct('}') {
                    use_tree(t, k, &path, out);
                    if *k < t.len() && t[*k].is_punct(',') {
                        *k += 1;
                    }
                }
                *k += 1;
                return;
            }
            Tok::Ident(name) => {
                // `self` inside a group names the group's own prefix.
                if !(name == "self" && !prefix.is_empty() && path.len() == prefix.len()) {
                    path.push(name.clone());
                }
                line = tok.line;
                *k += 1;
                if *k < t.len() && t[*k].tok == Tok::PathSep {
                    *k += 1;
                    continue;
                }
                if *k < t.len() && t[*k].is_ident("as") {
                    *k += 2;
                }
                break;
            }
            _ => break,
        }
    }
    out.push((path, line));
}

/// Finds the paths of a file whose module path is `module`: `use` declarations and inline paths that
/// start with `crate`, `super`, `self` or a child module of the module they are written in. Test
/// modules and attributes are skipped.
fn scan(src: &str, module: &[String]) -> Scan {
    let t = lex(src);
    let mut s = Scan::default();
    // Inline modules open at a brace depth; the innermost is last.
    let mut scopes: Vec<(Vec<String>, usize)> = vec![(module.to_vec(), 0)];
    let mut depth = 0usize;
    let mut k = 0;
    while k < t.len() {
        let here = scopes.last().map(|x| x.0.clone()).unwrap_or_default();
        let tok = &t[k];
        if tok.is_punct('#') && t.get(k + 1).is_some_and(|x| x.is_punct('!')) {
            k = matching(&t, k + 2);
        } else if tok.is_punct('#') && t.get(k + 1).is_some_and(|x| x.is_punct('[')) {
            let end = matching(&t, k + 1);
            let attr: Vec<&Tok> = t[k + 2..end.saturating_sub(1)]
                .iter()
                .map(|x| &x.tok)
                .collect();
            let cfg_test = attr
                == [
                    &Tok::Ident("cfg".into()),
                    &Tok::Punct('('),
                    &Tok::Ident("test".into()),
                    &Tok::Punct(')'),
                ];
            k = end;
            if cfg_test {
                let m = skip_attributes_and_visibility(&t, k);
                if t.get(m).is_some_and(|x| x.is_ident("mod")) {
                    let name = t
                        .get(m + 1)
                        .and_then(Token::ident)
                        .unwrap_or("")
                        .to_string();
                    match t.get(m + 2) {
                        Some(x) if x.is_punct('{') => k = matching(&t, m + 2),
                        Some(x) if x.is_punct(';') => {
                            let mut p = here.clone();
                            p.push(name);
                            s.test_files.push(p);
                            k = m + 3;
                        }
                        _ => {}
                    }
                }
            }
        } else if tok.is_ident("mod") && t.get(k + 1).and_then(Token::ident).is_some() {
            let name = t[k + 1].ident().unwrap_or("").to_string();
            s.children
                .entry(here.clone())
                .or_default()
                .insert(name.clone());
            if t.get(k + 2).is_some_and(|x| x.is_punct('{')) {
                depth += 1;
                let mut inner = here.clone();
                inner.push(name);
                scopes.push((inner, depth));
                k += 3;
            } else {
                k += 2;
            }
        } else if tok.is_ident("use") && !t.get(k + 1).is_some_and(|x| x.is_punct('<')) {
            k += 1;
            let mut found = Vec::new();
            use_tree(&t, &mut k, &[], &mut found);
            for (path, line) in found {
                s.paths.push(Written {
                    line,
                    path,
                    module: here.clone(),
                    in_use: true,
                });
            }
            while k < t.len() && !t[k].is_punct(';') {
                k += 1;
            }
        } else if tok.ident().is_some()
            && t.get(k + 1).is_some_and(|x| x.tok == Tok::PathSep)
            && !(k > 0 && (t[k - 1].tok == Tok::PathSep || t[k - 1].is_punct('.')))
        {
            let line = tok.line;
            let mut path = vec![tok.ident().unwrap_or("").to_string()];
            k += 1;
            while k + 1 < t.len() && t[k].tok == Tok::PathSep {
                match t[k + 1].ident() {
                    Some(seg) => {
                        path.push(seg.to_string());
                        k += 2;
                    }
                    None => break,
                }
            }
            s.paths.push(Written {
                line,
                path,
                module: here,
                in_use: false,
            });
        } else {
            if tok.is_punct('{') {
                depth += 1;
            } else if tok.is_punct('}') {
                if scopes.len() > 1 && scopes.last().is_some_and(|x| x.1 == depth) {
                    scopes.pop();
                }
                depth = depth.saturating_sub(1);
            }
            k += 1;
        }
    }
    s
}

/// The absolute path (under `crate::`) that `w` names, or None when it names something outside the
/// crate (std, another crate) or a local item.
fn resolve(w: &Written, children: &BTreeMap<Vec<String>, BTreeSet<String>>) -> Option<Vec<String>> {
    let first = w.path.first()?;
    let rest = |n: usize| w.path[n..].to_vec();
    match first.as_str() {
        "crate" => Some(rest(1)),
        "self" => Some([w.module.clone(), rest(1)].concat()),
        "super" => {
            let ups = w.path.iter().take_while(|s| *s == "super").count();
            let base = &w.module[..w.module.len().saturating_sub(ups)];
            Some([base.to_vec(), rest(ups)].concat())
        }
        name => children
            .get(&w.module)
            .is_some_and(|c| c.contains(name))
            .then(|| [w.module.clone(), w.path.clone()].concat()),
    }
}

// ---------------------------------------------------------------------------------------------
// Checking src/
// ---------------------------------------------------------------------------------------------

/// The module path of a file under src/ (`a/b.rs` → `a::b`, `a/mod.rs` → `a`); None for the top
/// (`lib.rs`, `main.rs`, `bin/…`).
fn module_path(rel: &Path) -> Option<Vec<String>> {
    let mut segs: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().to_string())
        .collect();
    let last = segs.pop()?;
    let stem = last.strip_suffix(".rs")?.to_string();
    if segs.is_empty() && (stem == "lib" || stem == "main")
        || segs.first().is_some_and(|s| s == "bin")
    {
        return None;
    }
    if stem != "mod" {
        segs.push(stem);
    }
    Some(segs)
}

/// One import the table does not allow, or a file that no room holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Finding {
    file: String,
    line: usize,
    what: String,
    /// `from → to`, for the summary.
    rule: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}", self.file, self.line, self.what)
        } else {
            write!(f, "{}: {}", self.file, self.what)
        }
    }
}

fn list(rooms: Option<&BTreeSet<Room>>) -> String {
    match rooms {
        Some(r) if !r.is_empty() => r
            .iter()
            .map(|x| room_name(x))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "nothing else".into(),
    }
}

/// Checks one file (`file` as shown in messages, `module` its module path) against `table`.
fn check_file(table: &Table, file: &str, module: &[String], src: &str) -> (Vec<Finding>, Scan) {
    let s = scan(src, module);
    let mut out = Vec::new();
    let Some(from) = table.room_of(module) else {
        out.push(Finding {
            file: file.into(),
            line: 0,
            what: format!("module {} is in no room of the table", room_name(module)),
            rule: format!("{} (no room)", room_name(module)),
        });
        return (out, s);
    };
    for w in &s.paths {
        let Some(target) = resolve(w, &s.children) else {
            continue;
        };
        if target.first().is_some_and(|x| x == "testutil") {
            continue;
        }
        let written = w.path.join("::");
        let shown = if written.starts_with("crate::") {
            written.clone()
        } else {
            format!("{written} (= crate::{})", target.join("::"))
        };
        let how = if w.in_use { "use " } else { "" };
        match table.room_of(&target) {
            None => out.push(Finding {
                file: file.into(),
                line: w.line,
                what: format!("{how}{shown}: in no room of the table"),
                rule: format!("{} → (no room)", room_name(from)),
            }),
            Some(to) if !table.allows(from, to) => out.push(Finding {
                file: file.into(),
                line: w.line,
                what: format!(
                    "{how}{shown}: {} may not use {} ({} may use: {})",
                    room_name(from),
                    room_name(to),
                    room_name(from),
                    list(table.may_use.get(from))
                ),
                rule: format!("{} → {}", room_name(from), room_name(to)),
            }),
            Some(_) => {}
        }
    }
    (out, s)
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Every finding on the tree at `root` (the crate folder).
fn check_tree(root: &Path) -> Result<Vec<Finding>, Vec<String>> {
    let doc = root.join("docs/architecture.md");
    let md = fs::read_to_string(&doc).map_err(|e| vec![format!("{}: {e}", doc.display())])?;
    let table = Table::parse(&md).map_err(|errs| {
        errs.into_iter()
            .map(|e| format!("docs/architecture.md: {e}"))
            .collect::<Vec<_>>()
    })?;
    let src = root.join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    let mut findings = Vec::new();
    let mut test_files = BTreeSet::new();
    let mut checked = Vec::new();
    for p in &files {
        let rel = p.strip_prefix(&src).expect("under src/");
        let Some(module) = module_path(rel) else {
            continue;
        };
        let text = fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
        let name = format!("src/{}", rel.display());
        let (f, s) = check_file(&table, &name, &module, &text);
        test_files.extend(s.test_files);
        checked.push((module, f));
    }
    for (module, f) in checked {
        // A file declared `#[cfg(test)] mod name;` is test code, exempt like an inline test module.
        if !test_files.iter().any(|t| module.starts_with(t)) {
            findings.extend(f);
        }
    }
    findings.sort();
    Ok(findings)
}

/// The findings as a report: one line each, then how many per rule.
fn report(findings: &[Finding]) -> String {
    let mut by_rule: BTreeMap<&str, usize> = BTreeMap::new();
    for f in findings {
        *by_rule.entry(&f.rule).or_default() += 1;
    }
    let mut s = format!(
        "{} import(s) break the layering table of docs/architecture.md (## Layers):\n",
        findings.len()
    );
    for f in findings {
        s.push_str(&format!("  {f}\n"));
    }
    s.push_str("by rule:\n");
    for (rule, n) in by_rule {
        s.push_str(&format!("  {rule}: {n}\n"));
    }
    s
}

#[test]
fn layers_point_one_way() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    match check_tree(root) {
        Err(errors) => panic!(
            "the layering table cannot be read:\n  {}",
            errors.join("\n  ")
        ),
        Ok(findings) => assert!(findings.is_empty(), "{}", report(&findings)),
    }
}

// ---------------------------------------------------------------------------------------------
// The reader's own tests
// ---------------------------------------------------------------------------------------------

fn m(s: &str) -> Vec<String> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split("::").map(str::to_string).collect()
    }
}

/// The resolved absolute paths of `src` written in module `module`, as `a::b` strings.
fn resolved(src: &str, module: &str) -> Vec<String> {
    let s = scan(src, &m(module));
    s.paths
        .iter()
        .filter_map(|w| resolve(w, &s.children))
        .map(|p| p.join("::"))
        .collect()
}

const TABLE: &str = "intro\n\n## Layers\n\ntext\n\n| room | may use |\n|---|---|\n| `os` | — |\n| `smtp` | `os` |\n| `smtp::session` | `smtp`, `os` |\n| `server` | `smtp::session`, `smtp` |\n\n## Next\n| `ignored` | — |\n";

#[test]
fn the_table_is_read_from_its_section() {
    let t = Table::parse(TABLE).expect("a valid table");
    assert_eq!(
        t.may_use.keys().map(|r| room_name(r)).collect::<Vec<_>>(),
        ["os", "server", "smtp", "smtp::session"]
    );
    assert!(t.may_use[&m("os")].is_empty());
    assert!(t.allows(&m("smtp::session"), &m("smtp")));
    assert!(t.allows(&m("smtp"), &m("smtp")), "its own room");
    assert!(!t.allows(&m("smtp"), &m("smtp::session")), "not upwards");
    assert!(
        !t.allows(&m("server"), &m("os")),
        "not what the row leaves out"
    );
}

#[test]
fn a_bad_table_is_named() {
    let errs = Table::parse("## Layers\n| room | may use |\n| os | — |\n| `a` | `b` |\n")
        .expect_err("bad rows");
    assert!(errs.iter().any(|e| e.contains("\"os\"")), "{errs:?}");
    assert!(
        errs.iter().any(|e| e.contains("`b`, which has no row")),
        "{errs:?}"
    );
    assert!(Table::parse("# Title\nno table here").is_err());
}

#[test]
fn the_longest_room_wins() {
    let t = Table::parse(TABLE).unwrap();
    assert_eq!(
        t.room_of(&m("smtp::session::auth::X")),
        Some(&m("smtp::session"))
    );
    assert_eq!(t.room_of(&m("smtp::reply::Reply")), Some(&m("smtp")));
    assert_eq!(t.room_of(&m("smtpx::a")), None);
}

#[test]
fn module_paths_of_files() {
    assert_eq!(module_path(Path::new("a/b.rs")), Some(m("a::b")));
    assert_eq!(module_path(Path::new("a/mod.rs")), Some(m("a")));
    assert_eq!(module_path(Path::new("a/b/mod.rs")), Some(m("a::b")));
    assert_eq!(module_path(Path::new("time.rs")), Some(m("time")));
    assert_eq!(module_path(Path::new("lib.rs")), None);
    assert_eq!(module_path(Path::new("main.rs")), None);
}

#[test]
fn use_groups_expand_path_by_path() {
    let src = "use crate::{a, b::{c, d as e, self}, f::*};\npub(crate) use crate::g::{\n    h,\n};";
    assert_eq!(resolved(src, "x"), ["a", "b::c", "b::d", "b", "f", "g::h"]);
    let s = scan(src, &m("x"));
    assert_eq!(
        s.paths.last().map(|w| w.line),
        Some(3),
        "the line of the path"
    );
    assert_eq!(
        resolved("use std::io::{self, Read};\nuse ::log;", "x"),
        Vec::<String>::new()
    );
}

#[test]
fn super_and_self_resolve_from_the_module_path() {
    // src/delivery/attempt.rs is delivery::attempt: super is delivery.
    assert_eq!(
        resolved(
            "use super::engine::Engine;\nuse self::inner::X;",
            "delivery::attempt"
        ),
        ["delivery::engine::Engine", "delivery::attempt::inner::X"]
    );
    // src/delivery/mod.rs is delivery: super is the crate root.
    assert_eq!(resolved("use super::config::X;", "delivery"), ["config::X"]);
    assert_eq!(resolved("use super::super::a::B;", "x::y::z"), ["x::a::B"]);
}

#[test]
fn child_modules_resolve_relative_to_their_parent() {
    let src = "pub mod session;\nmod reply;\npub use session::Session;\nuse std::fmt;\nfn f() { reply::ok(); fmt::x(); }";
    assert_eq!(
        resolved(src, "smtp"),
        ["smtp::session::Session", "smtp::reply::ok"]
    );
}

#[test]
fn inline_paths_count_and_method_chains_do_not() {
    let src = "fn f() {\n    let x = crate::net::tls::config();\n    y.crate_thing::<u8>();\n    Z::self_check();\n    super::a::b();\n}";
    assert_eq!(
        resolved(src, "config::mod_a"),
        ["net::tls::config", "config::a::b"]
    );
    let s = scan(src, &m("config::mod_a"));
    assert_eq!(s.paths[0].line, 2);
    assert!(!s.paths[0].in_use);
}

#[test]
fn comments_strings_and_chars_are_not_code() {
    let src = r####"
// use crate::a;
/* use crate::b; /* nested crate::c */ crate::d */
/// [`crate::e`]
fn f<'a>(s: &'a str) -> char {
    let _ = "crate::f \" crate::g";
    let _ = r#"crate::h "quoted" "#;
    let _ = b"crate::i";
    let _ = br##"crate::j"##;
    let _ = ('{', '\'', '\u{7B}', b'}');
    crate::real::one();
    'x'
}
"####;
    assert_eq!(resolved(src, "a"), ["real::one"]);
    let s = scan(src, &m("a"));
    assert_eq!(
        s.paths[0].line, 11,
        "lines are counted through comments and strings"
    );
}

#[test]
fn test_modules_are_skipped_and_inline_modules_nest() {
    let src = "use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::b;\n    fn f() { crate::c::d(); }\n}\n#[cfg(test)]\n#[allow(dead_code)]\npub(crate) mod more { use crate::e; }\n#[cfg(test)]\nmod file_tests;\n#[cfg(test)]\nuse crate::f;\nmod inner {\n    use super::g;\n}\nuse self::h;";
    assert_eq!(resolved(src, "x"), ["a", "f", "x::g", "x::h"]);
    let s = scan(src, &m("x"));
    assert_eq!(s.test_files, [m("x::file_tests")]);
}

#[test]
fn findings_name_file_line_import_and_rule() {
    let t = Table::parse(TABLE).unwrap();
    let (f, _) = check_file(
        &t,
        "src/smtp/reply.rs",
        &m("smtp::reply"),
        "use crate::os::x;\nuse crate::smtp::session::S;\nuse super::session;\nuse crate::testutil::y;\nuse crate::nowhere::z;",
    );
    let shown: Vec<String> = f.iter().map(|x| x.to_string()).collect();
    assert_eq!(
        shown,
        [
            "src/smtp/reply.rs:2: use crate::smtp::session::S: smtp may not use smtp::session (smtp may use: os)",
            "src/smtp/reply.rs:3: use super::session (= crate::smtp::session): smtp may not use smtp::session (smtp may use: os)",
            "src/smtp/reply.rs:5: use crate::nowhere::z: in no room of the table",
        ]
    );
    let (f, _) = check_file(&t, "src/db.rs", &m("db"), "");
    assert_eq!(
        f[0].to_string(),
        "src/db.rs: module db is in no room of the table"
    );
    let text = report(&f);
    assert!(text.contains("db (no room): 1"), "{text}");
}
