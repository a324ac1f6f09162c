//! Metabase properties → mailroot INI text. Each property of the service, of each virtual server
//! (with what it inherits) and of each domain ends in exactly one of three places: a key (converted),
//! a comment saying why not (not supported, Windows-only, Exchange-only, a path this system cannot
//! use, a note), or refused (mailroot's loader does not accept the value; the line stays as a comment
//! with the loader's words). Nothing is dropped unseen: [`Conversion::summary`] counts them.
//!
//! Units: where mailroot's key has the metabase's name it has its unit too (sizes in bytes,
//! ConnectionTimeout and RemoteTimeout in seconds, retries and expiries in minutes), so values pass
//! through; what changes is the form (symbolic flags, TRUE/FALSE, 4294967295 for "unlimited", the
//! IPSECLIST blobs, IIS's `IP:port:host` bindings, RouteAction bits).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use super::ipseclist::{self, AddrMask, IpSecList};
use super::metabase::{Domain, Metabase, Node, Prop, Server};
use crate::config::ini::IniFile;
use crate::config::{Config, Source};

/// IIS's "unlimited" DWORD.
const UNLIMITED: u32 = u32::MAX;
/// IIS setup's MaxConnections: unlimited in all but name.
const SETUP_UNLIMITED: u32 = 2_000_000_000;
/// The most ranges a grant-by-default relay list may turn into (its complement).
const MAX_RANGES: usize = 4096;

/// AuthFlags names (iiscnfg.h MD_AUTH_*).
const AUTH_FLAGS: &[(&str, u32)] = &[
    ("AuthAnonymous", 1),
    ("AuthBasic", 2),
    ("AuthNTLM", 4),
    ("AuthMD5", 0x10),
    ("AuthPassport", 0x40),
];
/// RouteAction names (iis-smtp.md §1.2).
const ROUTE_FLAGS: &[(&str, u32)] = &[
    ("SMTP_DROP", 0x1),
    ("SMTP_SMARTHOST", 0x2),
    ("SMTP_SSL", 0x4),
    ("SMTP_SASL", 0x8),
    ("SMTP_ALIAS", 0x10),
    ("SMTP_DELIVER", 0x20),
    ("SMTP_DEFAULT", 0x40),
    ("SMTP_AUTH_NTLM", 0x80),
    ("SMTP_AUTH_CLEARTEXT", 0x100),
    ("SMTP_ETRN_CMD", 0x200),
    ("SMTP_IP_RELAY", 0x400),
    ("SMTP_AUTH_RELAY", 0x800),
    ("SMTP_DOMAIN_RELAY", 0x1000),
    ("SMTP_CSIDE_TURN", 0x2000),
    ("SMTP_CSIDE_ETRN", 0x4000),
    ("SMTP_DISABLE_ETRN", 0x8000),
    ("SMTP_CHUNKING", 0x10000),
    ("SMTP_DISABLE_CHUNK", 0x20000),
    ("SMTP_DISABLE_BMIME", 0x40000),
    ("SMTP_DISABLE_DSN", 0x80000),
    ("SMTP_DISABLE_PIPELINE", 0x100000),
    ("SMTP_AUTH_KERBEROS", 0x200000),
    ("SMTP_USE_HELO", 0x400000),
];
/// LogFilePeriod names (iiscnfg.h MD_LOGFILE_PERIOD_*).
const LOG_PERIODS: &[(&str, u32)] = &[
    ("MD_LOGFILE_PERIOD_NONE", 0),
    ("MD_LOGFILE_PERIOD_MAXSIZE", 0),
    ("MD_LOGFILE_PERIOD_DAILY", 1),
    ("MD_LOGFILE_PERIOD_WEEKLY", 2),
    ("MD_LOGFILE_PERIOD_MONTHLY", 3),
    ("MD_LOGFILE_PERIOD_HOURLY", 4),
];
/// LogType names (iiscnfg.h MD_LOG_TYPE_*).
const LOG_TYPES: &[(&str, u32)] = &[("MD_LOG_TYPE_DISABLED", 0), ("MD_LOG_TYPE_ENABLED", 1)];
/// The W3C extended log module (the only format mailroot writes).
const W3C_CLSID: &str = "{FF160663-DE82-11CF-BC0A-00AA006111E0}";

const DROP: u32 = 0x1;
const SMARTHOST: u32 = 0x2;
const SSL: u32 = 0x4;
const SASL: u32 = 0x8;
const ALIAS: u32 = 0x10;
const DEFAULT: u32 = 0x40;
const AUTH_NTLM: u32 = 0x80;
const AUTH_CLEARTEXT: u32 = 0x100;
const DOMAIN_RELAY: u32 = 0x1000;
const AUTH_KERBEROS: u32 = 0x200000;

/// What the importer was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only this virtual server (`--instance N`); `None`: all.
    pub instance: Option<u32>,
    /// The source file as the header names it.
    pub source: String,
    /// Whether paths such as `C:\Inetpub\mailroot` are usable here (on Windows); elsewhere they are
    /// written as comments.
    pub windows_paths: bool,
}

/// Why a property became a comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// mailroot has no such setting.
    NotSupported,
    /// Tied to Windows (accounts, security descriptors, the certificate store, NTLM).
    WindowsOnly,
    /// Reserved for Microsoft Exchange.
    ExchangeOnly,
    /// A path this system cannot use (a Windows path elsewhere, an unset `%VARIABLE%`).
    Path,
    /// Kept for the reader: a description, a value overridden everywhere, mailroot's own limit kept.
    Note,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::NotSupported => "not supported",
            Kind::WindowsOnly => "Windows-only",
            Kind::ExchangeOnly => "Exchange-only",
            Kind::Path => "paths for the old server",
            Kind::Note => "notes",
        }
    }
}

/// Where one property ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Written as a key.
    Converted,
    /// Written as a comment.
    Commented(Kind),
    /// Refused by mailroot's loader (or unusable as a whole); the loader's or the importer's words.
    Refused(String),
}

/// One property's fate.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The node's path (`/LM/SmtpSvc/1`).
    pub location: String,
    /// The property.
    pub name: String,
    /// Where it ended.
    pub outcome: Outcome,
}

/// A value the importer cannot read: names the element, the property and its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    /// The element (KeyType).
    pub element: String,
    /// Its Location.
    pub location: String,
    /// The property.
    pub property: String,
    /// The attribute's line.
    pub line: usize,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: <{} Location=\"{}\">: {}: {}",
            self.line, self.element, self.location, self.property, self.what
        )
    }
}

impl std::error::Error for ValueError {}

/// For each rendered line (1-based; index 0 unused): its section, and its line in the section
/// (`None`: the section header). Comments and blank lines map to `None`.
type LineMap = Vec<Option<(usize, Option<usize>)>>;

/// One output line.
#[derive(Debug, Clone)]
enum Line {
    /// A comment, written as is (starts with `;`).
    Text(String),
    /// `key = value`, from these ledger entries.
    Key {
        key: String,
        value: String,
        props: Vec<usize>,
    },
}

/// One output section.
#[derive(Debug, Clone)]
struct Section {
    name: String,
    /// The virtual server it belongs to.
    instance: u32,
    lines: Vec<Line>,
    /// Refused as a whole: written commented out, with this reason.
    refused: Option<String>,
}

/// The converted configuration, before and after validation.
#[derive(Debug, Clone)]
pub struct Conversion {
    header: Vec<String>,
    sections: Vec<Section>,
    /// Every property's fate.
    pub ledger: Vec<Entry>,
    /// What the admin must look at (an open relay kept, a stopped server that will run).
    pub warnings: Vec<String>,
}

/// The counts printed after an import.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Virtual servers written.
    pub servers: usize,
    /// Remote domain sections written.
    pub domains: usize,
    /// Properties written as keys.
    pub converted: usize,
    /// Properties written as comments, by kind.
    pub commented: BTreeMap<Kind, usize>,
    /// Refused properties: where, which, why.
    pub refused: Vec<(String, String, String)>,
    /// The warnings.
    pub warnings: Vec<String>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let commented: usize = self.commented.values().sum();
        writeln!(
            f,
            "import-iis: {} virtual server(s), {} remote domain section(s)",
            self.servers, self.domains
        )?;
        writeln!(f, "  converted: {} properties", self.converted)?;
        let kinds: Vec<String> = self
            .commented
            .iter()
            .map(|(k, n)| format!("{} {n}", k.label()))
            .collect();
        if kinds.is_empty() {
            writeln!(f, "  commented: 0")?;
        } else {
            writeln!(f, "  commented: {commented} ({})", kinds.join(", "))?;
        }
        writeln!(f, "  refused: {}", self.refused.len())?;
        for (loc, name, why) in &self.refused {
            writeln!(f, "    {loc} {name}: {why}")?;
        }
        for w in &self.warnings {
            writeln!(f, "  warning: {w}")?;
        }
        Ok(())
    }
}

impl Conversion {
    /// The INI text, and for each line (1-based, index 0 unused) the section and line it came from.
    fn render(&self) -> (String, LineMap) {
        let mut text = String::new();
        let mut map: LineMap = vec![None];
        let mut push = |text: &mut String, line: &str, at: Option<(usize, Option<usize>)>| {
            text.push_str(line);
            text.push('\n');
            map.push(at);
        };
        for h in &self.header {
            push(&mut text, h, None);
        }
        for (si, s) in self.sections.iter().enumerate() {
            push(&mut text, "", None);
            let off = if s.refused.is_some() { "; " } else { "" };
            if let Some(why) = &s.refused {
                push(
                    &mut text,
                    &format!("; refused, the whole section: {why}"),
                    None,
                );
            }
            push(&mut text, &format!("{off}[{}]", s.name), Some((si, None)));
            for (li, l) in s.lines.iter().enumerate() {
                match l {
                    Line::Text(t) => push(&mut text, t, None),
                    Line::Key { key, value, .. } => {
                        // An empty value is written `Key =`: it means something (RelayIpList).
                        let line = if value.is_empty() {
                            format!("{off}{key} =")
                        } else {
                            format!("{off}{key} = {value}")
                        };
                        push(&mut text, &line, Some((si, Some(li))))
                    }
                }
            }
        }
        (text, map)
    }

    /// The INI text.
    pub fn text(&self) -> String {
        self.render().0
    }

    /// Loads the text through mailroot's own loader (relative paths against `base`) until it is
    /// accepted: a key the loader refuses becomes a comment with the loader's message, a section it
    /// refuses (a domain name it does not take, bindings that overlap another virtual server's) is
    /// commented out whole. Returns the loader's last error when nothing is left to refuse.
    pub fn validate(&mut self, base: &Path) -> Result<(), String> {
        let name = Path::new("<imported>");
        for _ in 0..=self.ledger.len() + self.sections.len() {
            let (text, map) = self.render();
            let ini = IniFile::parse(name, &text).map_err(|e| e.to_string())?;
            let err = match Config::from_ini(&ini, base, Source::File(name.into())) {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let at = err.line.and_then(|l| map.get(l).copied().flatten());
            match at {
                Some((si, Some(li))) => {
                    let overlap = matches!(&self.sections[si].lines[li],
                        Line::Key { key, .. } if key == "ServerBindings")
                        && err.message.contains("overlaps");
                    if overlap {
                        self.refuse_server(self.sections[si].instance, &err.message);
                    } else {
                        self.refuse_line(si, li, &err.message);
                    }
                }
                Some((si, None)) => {
                    if self.sections[si].name.contains("/Domain/") {
                        self.refuse_section(si, &err.message);
                    } else {
                        self.refuse_server(self.sections[si].instance, &err.message);
                    }
                }
                None => return Err(err.to_string()),
            }
        }
        Err("the imported configuration is still refused after every refusal".into())
    }

    fn refuse_line(&mut self, si: usize, li: usize, why: &str) {
        let Line::Key { key, value, props } = self.sections[si].lines[li].clone() else {
            return;
        };
        for p in &props {
            self.ledger[*p].outcome = Outcome::Refused(why.to_string());
        }
        self.sections[si].lines.splice(
            li..=li,
            [
                Line::Text(format!("; refused by mailroot: {why}")),
                Line::Text(format!("; {key} = {value}")),
            ],
        );
    }

    fn refuse_section(&mut self, si: usize, why: &str) {
        for l in &self.sections[si].lines {
            if let Line::Key { props, .. } = l {
                for p in props {
                    self.ledger[*p].outcome = Outcome::Refused(why.to_string());
                }
            }
        }
        self.sections[si].refused = Some(why.to_string());
    }

    fn refuse_server(&mut self, instance: u32, why: &str) {
        let all: Vec<usize> = (0..self.sections.len())
            .filter(|i| {
                self.sections[*i].instance == instance && self.sections[*i].refused.is_none()
            })
            .collect();
        for si in all {
            self.refuse_section(si, why);
        }
        self.warnings
            .push(format!("SmtpSvc/{instance} is commented out whole: {why}"));
    }

    /// What became of every property.
    pub fn summary(&self) -> Summary {
        let mut s = Summary {
            servers: self
                .sections
                .iter()
                .filter(|s| s.refused.is_none() && !s.name.contains("/Domain/"))
                .count(),
            domains: self
                .sections
                .iter()
                .filter(|s| s.refused.is_none() && s.name.contains("/Domain/"))
                .count(),
            warnings: self.warnings.clone(),
            ..Summary::default()
        };
        for e in &self.ledger {
            match &e.outcome {
                Outcome::Converted => s.converted += 1,
                Outcome::Commented(k) => *s.commented.entry(*k).or_default() += 1,
                Outcome::Refused(why) => {
                    s.refused
                        .push((e.location.clone(), e.name.clone(), why.clone()))
                }
            }
        }
        s
    }
}

/// Converts the metabase's SMTP settings.
pub fn convert(mb: &Metabase, opts: &Options) -> Result<Conversion, ValueError> {
    let mut c = Converter {
        opts,
        conv: Conversion {
            header: Vec::new(),
            sections: Vec::new(),
            ledger: Vec::new(),
            warnings: Vec::new(),
        },
    };
    let servers: Vec<&Server> = mb
        .servers
        .iter()
        .filter(|s| opts.instance.is_none_or(|n| n == s.instance))
        .collect();
    c.header(mb, &servers);
    for s in &servers {
        c.server(mb, s)?;
    }
    Ok(c.conv)
}

struct Converter<'a> {
    opts: &'a Options,
    conv: Conversion,
}

/// The lines of one section being written.
struct Writer {
    lines: Vec<Line>,
}

impl Writer {
    fn note(&mut self, text: impl AsRef<str>) {
        for l in text.as_ref().lines() {
            self.lines.push(Line::Text(format!("; {l}")));
        }
    }
    fn key(&mut self, key: &str, value: impl Into<String>, props: Vec<usize>) {
        self.lines.push(Line::Key {
            key: key.to_string(),
            value: value.into(),
            props,
        });
    }
}

/// A property value as a comment shows it: one line, secrets and long blobs left out.
fn shown(p: &Prop) -> String {
    let lower = p.name.to_ascii_lowercase();
    if p.secure || lower.contains("password") || lower.ends_with("pass") {
        return "(secret, not shown)".into();
    }
    let v = p.value.split_whitespace().collect::<Vec<_>>().join(" ");
    let n = v.chars().count();
    if n > 72 {
        format!(
            "{}… ({n} characters)",
            v.chars().take(40).collect::<String>()
        )
    } else {
        format!("\"{v}\"")
    }
}

impl Converter<'_> {
    fn entry(&mut self, node: &Node, p: &Prop, outcome: Outcome) -> usize {
        self.conv.ledger.push(Entry {
            location: node.location.clone(),
            name: p.name.clone(),
            outcome,
        });
        self.conv.ledger.len() - 1
    }

    fn bad(node: &Node, p: &Prop, what: impl Into<String>) -> ValueError {
        ValueError {
            element: node.key_type.clone(),
            location: node.location.clone(),
            property: p.name.clone(),
            line: p.line,
            what: what.into(),
        }
    }

    /// A property written as a comment, with its kind and reason.
    fn comment(&mut self, w: &mut Writer, node: &Node, p: &Prop, kind: Kind, why: &str) {
        self.entry(node, p, Outcome::Commented(kind));
        let from = if p.inherited {
            " (from /LM/SmtpSvc)"
        } else {
            ""
        };
        w.note(format!(
            "{} = {}{from}: not converted, {}: {why}",
            p.name,
            shown(p),
            kind.label()
        ));
    }

    /// A property written as `key = value`.
    fn key(&mut self, w: &mut Writer, node: &Node, p: &Prop, key: &str, value: String, note: &str) {
        let i = self.entry(node, p, Outcome::Converted);
        if p.inherited {
            w.note(format!("{} from /LM/SmtpSvc{note}", p.name));
        } else if !note.is_empty() {
            w.note(format!("{}{note}", p.name));
        }
        w.key(key, value, vec![i]);
    }

    fn header(&mut self, mb: &Metabase, servers: &[&Server]) {
        let h = &mut self.conv.header;
        h.push(
            "; mailroot configuration imported from an IIS 6 metabase by `mailroot import-iis`"
                .into(),
        );
        h.push(format!("; source: {}", self.opts.source));
        h.push("; Every SMTP property of the metabase is below: as a key where mailroot has it, else as a".into());
        h.push("; comment saying why not. Check the result with `mailroot check --config <this file>`;".into());
        h.push("; docs/migrate-from-iis.md explains each conversion.".into());
        if let Some(n) = self.opts.instance {
            h.push(format!(
                "; only /LM/SmtpSvc/{n} (--instance {n}); the other virtual servers are left out"
            ));
        }
        if mb.outside > 0 {
            h.push(format!(
                "; {} element(s) outside /LM/SmtpSvc (W3SVC, the schema, …) are not SMTP settings: left out",
                mb.outside
            ));
        }
        let Some(svc) = &mb.service else { return };
        // A service property every written server overrides reaches none of them: say so here.
        let overridden: Vec<&Prop> = svc
            .props
            .iter()
            .filter(|p| {
                servers
                    .iter()
                    .all(|s| s.node.get(&p.name).is_some_and(|own| !own.inherited))
            })
            .collect();
        let mut w = Writer { lines: Vec::new() };
        for p in overridden {
            self.entry(svc, p, Outcome::Commented(Kind::Note));
            w.note(format!(
                "/LM/SmtpSvc {} = {}: overridden by every virtual server below",
                p.name,
                shown(p)
            ));
        }
        for n in mb
            .others
            .iter()
            .filter(|n| super::metabase::instance_of(&n.location).is_none())
        {
            self.other_node(&mut w, n);
        }
        for l in w.lines {
            if let Line::Text(t) = l {
                self.conv.header.push(t);
            }
        }
    }

    /// An SMTP node that is neither a server nor a domain: every property commented.
    fn other_node(&mut self, w: &mut Writer, n: &Node) {
        let (kind, why) = match n.key_type.as_str() {
            "IIsSmtpVirtualDir" => (
                Kind::NotSupported,
                "the mail root's virtual directory: mailroot's folders are MailRoot and the *Directory keys",
            ),
            "IIsSmtpRoutingSource" => (
                Kind::ExchangeOnly,
                "LDAP routing (Exchange, Active Directory)",
            ),
            "IIsSmtpSessions" => (Kind::NotSupported, "the MMC's current-sessions node"),
            "IIsSmtpDomain" => (
                Kind::NotSupported,
                "a domain of a virtual server not imported",
            ),
            _ => (Kind::NotSupported, "no mailroot equivalent"),
        };
        w.note(format!(
            "{} ({}, line {}): not converted, {}: {why}",
            n.location,
            n.key_type,
            n.line,
            kind.label()
        ));
        for p in &n.props {
            self.entry(n, p, Outcome::Commented(kind));
            w.note(format!("  {} = {}", p.name, shown(p)));
        }
    }

    fn server(&mut self, mb: &Metabase, s: &Server) -> Result<(), ValueError> {
        let node = &s.node;
        let mut w = Writer { lines: Vec::new() };
        w.note(format!(
            "IIS {} ({}, line {} of the metabase)",
            node.location, node.key_type, node.line
        ));
        let mut done: Vec<bool> = vec![false; node.props.len()];
        let idx = |name: &str| {
            node.props
                .iter()
                .position(|p| p.name.eq_ignore_ascii_case(name))
        };
        macro_rules! take {
            ($name:expr) => {{
                match idx($name) {
                    Some(i) => {
                        done[i] = true;
                        Some(&node.props[i])
                    }
                    None => None,
                }
            }};
        }

        if let Some(p) = take!("ServerComment") {
            self.entry(node, p, Outcome::Commented(Kind::Note));
            w.note(format!(
                "ServerComment = {} (the IIS description)",
                shown(p)
            ));
        }
        if let Some(p) = take!("ServerAutoStart") {
            if bool_value(p).map_err(|e| Self::bad(node, p, e))? {
                self.entry(node, p, Outcome::Commented(Kind::Note));
                w.note("ServerAutoStart = TRUE: mailroot starts every [SmtpSvc/n] section");
            } else {
                self.comment(&mut w, node, p, Kind::NotSupported,
                    "IIS did not start this virtual server by itself; mailroot runs every [SmtpSvc/n] section: remove this one to keep it off");
                self.conv.warnings.push(format!(
                    "SmtpSvc/{}: ServerAutoStart = FALSE in IIS, but mailroot will run it",
                    s.instance
                ));
            }
        }
        if let Some(p) = take!("ServerBindings") {
            let (v, notes) = bindings(&p.value);
            self.key(&mut w, node, p, "ServerBindings", v, &notes);
        }
        if let Some(p) = take!("SecureBindings") {
            let (v, _) = bindings(&p.value);
            self.comment(&mut w, node, p, Kind::WindowsOnly,
                "implicit TLS needs the certificate as PEM files (TlsCertificateFile, TlsKeyFile): export it from the Windows certificate store, then write");
            w.note(format!("SecureBindings = {v}"));
        }
        if let Some(p) = take!("FullyQualifiedDomainName") {
            self.key(
                &mut w,
                node,
                p,
                "FullyQualifiedDomainName",
                p.value.trim().into(),
                "",
            );
        }

        // Domains: local ones become DefaultDomain / LocalDomains here, remote ones sections below.
        let mut locals: Vec<(String, usize)> = Vec::new();
        let mut default_from_domain: Option<(String, usize)> = None;
        let mut remote: Vec<(&Domain, u32)> = Vec::new();
        let mut local_notes = Writer { lines: Vec::new() };
        for d in &s.domains {
            let dn = &d.node;
            let action = match dn.get("RouteAction") {
                Some(p) => dword(p, ROUTE_FLAGS).map_err(|e| Self::bad(dn, p, e))?,
                None => 0,
            };
            if action & (DROP | ALIAS | DEFAULT) == 0 {
                remote.push((d, action));
                continue;
            }
            let name = d.name.trim_end_matches('.').to_ascii_lowercase();
            let what = if action & DEFAULT != 0 {
                "the default local domain"
            } else if action & ALIAS != 0 {
                "a local alias domain"
            } else {
                "a local (drop) domain"
            };
            local_notes.note(format!(
                "{} ({}, line {}): {what}",
                dn.location, dn.key_type, dn.line
            ));
            for p in &dn.props {
                if p.name.eq_ignore_ascii_case("RouteAction") {
                    let i = self.entry(dn, p, Outcome::Converted);
                    local_notes.note(format!(
                        "  RouteAction = {} ({})",
                        p.value.trim(),
                        flag_names(action, ROUTE_FLAGS)
                    ));
                    if action & DEFAULT != 0 && default_from_domain.is_none() {
                        default_from_domain = Some((name.clone(), i));
                    } else {
                        locals.push((name.clone(), i));
                    }
                } else if p.name.eq_ignore_ascii_case("RouteActionString")
                    || p.name.eq_ignore_ascii_case("DropDirectory")
                {
                    self.entry(dn, p, Outcome::Commented(Kind::NotSupported));
                    local_notes.note(format!(
                        "  {} = {}: not converted, not supported: mailroot writes every local domain's mail to the virtual server's DropDirectory",
                        p.name,
                        shown(p)
                    ));
                } else {
                    let (kind, why) = reason(&p.name);
                    self.entry(dn, p, Outcome::Commented(kind));
                    local_notes.note(format!(
                        "  {} = {}: not converted, {}: {why}",
                        p.name,
                        shown(p),
                        kind.label()
                    ));
                }
            }
        }
        let default_prop = take!("DefaultDomain");
        match (default_prop, default_from_domain) {
            (Some(p), dd) => {
                self.key(&mut w, node, p, "DefaultDomain", p.value.trim().into(), "");
                if let Some((name, i)) = dd
                    && !name.eq_ignore_ascii_case(p.value.trim())
                {
                    locals.insert(0, (name, i));
                }
            }
            (None, Some((name, i))) => {
                w.note("DefaultDomain from the domain marked SMTP_DEFAULT (below)");
                w.key("DefaultDomain", name, vec![i]);
            }
            (None, None) => {}
        }
        if !locals.is_empty() {
            let names: Vec<String> = locals.iter().map(|(n, _)| n.clone()).collect();
            w.note("LocalDomains from the local domains below");
            w.key(
                "LocalDomains",
                names.join(", "),
                locals.iter().map(|(_, i)| *i).collect(),
            );
        }
        w.lines.append(&mut local_notes.lines);

        self.directories(&mut w, node, &mut done)?;

        for (name, form) in [
            ("MaxConnections", Form::Connections),
            ("ConnectionTimeout", Form::Number),
            ("MaxMessageSize", Form::Size),
            ("MaxSessionSize", Form::Size),
            ("MaxRecipients", Form::Number),
            ("MaxSmtpErrors", Form::Number),
            ("HopCount", Form::Number),
        ] {
            if let Some(p) = take!(name) {
                self.number(&mut w, node, p, form)?;
            }
        }

        let relay = take!("RelayIpList");
        self.relay(&mut w, node, relay, s.instance)?;
        if let Some(p) = take!("IPSecurity") {
            self.ip_security(&mut w, node, p)?;
        }

        if let Some(p) = take!("LogType") {
            let v = dword(p, LOG_TYPES).map_err(|e| Self::bad(node, p, e))?;
            self.key(&mut w, node, p, "LogType", v.to_string(), "");
        }
        if let Some(p) = take!("LogFileDirectory") {
            self.path(&mut w, node, p, "LogFileDirectory");
        }
        if let Some(p) = take!("LogFilePeriod") {
            let v = dword(p, LOG_PERIODS).map_err(|e| Self::bad(node, p, e))?;
            let note = if p.value.trim().parse::<u32>().is_ok() {
                String::new()
            } else {
                format!(" = {}", p.value.trim())
            };
            self.key(&mut w, node, p, "LogFilePeriod", v.to_string(), &note);
        }
        if let Some(p) = take!("LogFileTruncateSize") {
            self.number(&mut w, node, p, Form::Number)?;
        }
        if let Some(p) = take!("LogPluginClsid") {
            if p.value.trim().eq_ignore_ascii_case(W3C_CLSID) {
                self.comment(
                    &mut w,
                    node,
                    p,
                    Kind::Note,
                    "W3C extended, the format mailroot writes",
                );
            } else {
                self.comment(
                    &mut w,
                    node,
                    p,
                    Kind::NotSupported,
                    "mailroot writes the W3C extended log only",
                );
            }
        }

        if let Some(p) = take!("AuthFlags") {
            self.auth_flags(&mut w, node, p)?;
        }
        if let Some(p) = take!("RelayForAuth") {
            let v = dword(p, &[]).map_err(|e| Self::bad(node, p, e))?;
            let note = if v == UNLIMITED {
                " = -1 (4294967295): yes"
            } else {
                ""
            };
            self.key(
                &mut w,
                node,
                p,
                "RelayForAuth",
                u8::from(v != 0).to_string(),
                note,
            );
        }
        if let Some(p) = take!("EnableReverseDnsLookup") {
            let v = bool_value(p).map_err(|e| Self::bad(node, p, e))?;
            self.key(
                &mut w,
                node,
                p,
                "EnableReverseDnsLookup",
                u8::from(v).to_string(),
                "",
            );
        }

        if let Some(p) = take!("SmartHost") {
            self.key(&mut w, node, p, "SmartHost", p.value.trim().into(), "");
        }
        for (name, form) in [
            ("SmartHostType", Form::Number),
            ("RemoteSmtpPort", Form::Number),
            ("MaxBatchedMessages", Form::Batch),
            ("RemoteTimeout", Form::Number),
            ("MaxOutConnections", Form::OutConnections),
            ("MaxOutConnectionsPerDomain", Form::OutConnections),
        ] {
            if let Some(p) = take!(name) {
                self.number(&mut w, node, p, form)?;
            }
        }
        if let Some(p) = take!("RouteAction") {
            let v = dword(p, ROUTE_FLAGS).map_err(|e| Self::bad(node, p, e))?;
            self.route_action(&mut w, node, p, v, false);
        }
        for name in ["RouteUserName", "RoutePassword"] {
            if let Some(p) = take!(name) {
                self.route_credential(&mut w, node, p);
            }
        }
        if let Some(p) = take!("SmtpRemoteProgressiveRetry") {
            let v: Vec<&str> = p.value.split(',').map(str::trim).collect();
            self.key(
                &mut w,
                node,
                p,
                "SmtpRemoteProgressiveRetry",
                v.join(","),
                "",
            );
        }
        for name in ["SmtpRemoteDelayExpireMinutes", "SmtpRemoteNDRExpireMinutes"] {
            if let Some(p) = take!(name) {
                self.number(&mut w, node, p, Form::Number)?;
            }
        }
        let masquerade = take!("MasqueradeDomain");
        let do_masquerade = take!("DoMasquerade");
        self.masquerade(&mut w, node, masquerade, do_masquerade)?;
        if let Some(p) = take!("SendNdrTo") {
            self.key(&mut w, node, p, "SendNdrTo", p.value.trim().into(), "");
        }

        for (i, p) in node.props.iter().enumerate() {
            if !done[i] {
                let (kind, why) = reason(&p.name);
                self.comment(&mut w, node, p, kind, why);
            }
        }
        let prefix = format!("{}/", node.location.trim_end_matches('/')).to_ascii_lowercase();
        for n in mb
            .others
            .iter()
            .filter(|n| n.location.to_ascii_lowercase().starts_with(&prefix))
        {
            self.other_node(&mut w, n);
        }
        self.conv.sections.push(Section {
            name: format!("SmtpSvc/{}", s.instance),
            instance: s.instance,
            lines: w.lines,
            refused: None,
        });
        for (d, action) in remote {
            self.remote_domain(s.instance, d, action);
        }
        Ok(())
    }

    /// The four folders, and MailRoot as the folder that holds the Queue.
    fn directories(
        &mut self,
        w: &mut Writer,
        node: &Node,
        done: &mut [bool],
    ) -> Result<(), ValueError> {
        let names = [
            "PickupDirectory",
            "QueueDirectory",
            "BadMailDirectory",
            "DropDirectory",
        ];
        let queue = node
            .get("QueueDirectory")
            .and_then(|p| self.usable_path(&p.value).ok());
        if let Some(q) = queue
            && let Some(parent) = parent_of(&q)
        {
            w.note("MailRoot: IIS has none; the folder that holds QueueDirectory (SortTemp goes there, on the Queue's volume)");
            w.key("MailRoot", parent, Vec::new());
        }
        for name in names {
            if let Some(i) = node
                .props
                .iter()
                .position(|p| p.name.eq_ignore_ascii_case(name))
            {
                done[i] = true;
                self.path(w, node, &node.props[i], name);
            }
        }
        Ok(())
    }

    /// A path with `%VARIABLE%`s expanded from this environment; why not, when this system cannot use it.
    fn usable_path(&self, v: &str) -> Result<String, String> {
        let v = expand_env(v.trim())?;
        if !self.opts.windows_paths && is_windows_path(&v) {
            return Err(format!(
                "`{v}` is a Windows path: write where that folder is on this system"
            ));
        }
        Ok(v)
    }

    fn path(&mut self, w: &mut Writer, node: &Node, p: &Prop, key: &str) {
        match self.usable_path(&p.value) {
            Ok(v) => {
                let note = if v != p.value.trim() {
                    format!(" = {} (expanded here)", p.value.trim())
                } else {
                    String::new()
                };
                self.key(w, node, p, key, v, &note);
            }
            Err(why) => {
                self.comment(w, node, p, Kind::Path, &why);
                w.note(format!("{key} = {}", p.value.trim()));
            }
        }
    }

    fn number(
        &mut self,
        w: &mut Writer,
        node: &Node,
        p: &Prop,
        form: Form,
    ) -> Result<(), ValueError> {
        let v = dword(p, &[]).map_err(|e| Self::bad(node, p, e))?;
        let name = p.name.as_str();
        match form {
            Form::Number => self.key(w, node, p, canonical(name), v.to_string(), ""),
            Form::Size if v == UNLIMITED => {
                self.key(w, node, p, canonical(name), "0".into(), " = 4294967295 (unlimited): 0 is mailroot's unlimited")
            }
            Form::Size => self.key(w, node, p, canonical(name), v.to_string(), ""),
            Form::Connections if v >= SETUP_UNLIMITED => self.comment(w, node, p, Kind::Note,
                "unlimited in IIS; mailroot keeps its cap (2000) so a flood cannot exhaust its threads"),
            Form::OutConnections if v == 0 || v == UNLIMITED => self.comment(w, node, p, Kind::Note,
                "unlimited in IIS; mailroot keeps its default, the most delivery threads it starts"),
            Form::Batch if v == 0 || v == UNLIMITED => self.key(w, node, p, canonical(name), UNLIMITED.to_string(),
                &format!(" = {}: no limit in IIS", p.value.trim())),
            Form::Connections | Form::OutConnections | Form::Batch => {
                self.key(w, node, p, canonical(name), v.to_string(), "")
            }
        }
        Ok(())
    }

    fn auth_flags(&mut self, w: &mut Writer, node: &Node, p: &Prop) -> Result<(), ValueError> {
        let v = dword(p, AUTH_FLAGS).map_err(|e| Self::bad(node, p, e))?;
        let mut code = v & 3;
        let mut notes = vec![if p.value.trim().parse::<u32>().is_ok() {
            format!(" = {} ({})", p.value.trim(), flag_names(v, AUTH_FLAGS))
        } else {
            format!(" = {}", p.value.trim())
        }];
        if v & 4 != 0 {
            notes.push("AuthNTLM (Integrated Windows authentication) is Windows-only: not converted; those clients must use AUTH LOGIN or PLAIN with a user from `mailroot user add`".into());
        }
        if v & !7 != 0 {
            notes.push(format!(
                "{} not used by SMTP: not converted",
                flag_names(v & !7, AUTH_FLAGS)
            ));
        }
        if code == 0 {
            // IIS asked for authentication (NTLM) or allowed nothing: never open it to anonymous.
            code = 2;
            notes.push("no method mailroot has: Basic required (2), the closest that still requires authentication".into());
        }
        self.key(w, node, p, "AuthFlags", code.to_string(), &notes.join("\n"));
        Ok(())
    }

    fn relay(
        &mut self,
        w: &mut Writer,
        node: &Node,
        p: Option<&Prop>,
        instance: u32,
    ) -> Result<(), ValueError> {
        let Some(p) = p else {
            w.note("RelayIpList is absent in the metabase: IIS's default, \"Only the list below\" with nothing listed:");
            w.note("no client relays by its address (RelayForAuth still applies). Written empty, since mailroot's own");
            w.note("default (127.0.0.1, ::1) would let more relay than IIS did.");
            w.key("RelayIpList", "", Vec::new());
            return Ok(());
        };
        if p.value.trim().is_empty() {
            self.key(w, node, p, "RelayIpList", "0.0.0.0/0, ::/0".into(),
                " = \"\" (empty, not absent): IIS's \"All except the list below\" with nothing listed:\nevery client may relay, an open relay. Kept as IIS had it: narrow it to your networks");
            self.conv.warnings.push(format!(
                "SmtpSvc/{instance}: RelayIpList=\"\" lets every client relay in IIS (\"All except the list below\", nothing listed); kept as 0.0.0.0/0, ::/0: narrow it"
            ));
            return Ok(());
        }
        let list = ipseclist::parse_hex(&p.value).map_err(|e| Self::bad(node, p, e.to_string()))?;
        let mut notes = vec![format!(" (IPSECLIST): {}", describe(&list))];
        let value = if list.grant_by_default {
            if !list.deny_names.is_empty() {
                self.entry(
                    node,
                    p,
                    Outcome::Refused(
                        "mailroot's RelayIpList cannot leave out clients by name".into(),
                    ),
                );
                w.note(format!("RelayIpList (IPSECLIST): {}", describe(&list)));
                w.note("refused: mailroot's RelayIpList takes addresses only and cannot leave out the names above;");
                w.note("written empty (no client relays by address) rather than let those clients relay");
                w.key("RelayIpList", "", Vec::new());
                self.conv.warnings.push(format!(
                    "SmtpSvc/{instance}: RelayIpList denies clients by name, which mailroot cannot express: written empty"
                ));
                return Ok(());
            }
            match complement(&list.deny_addrs) {
                Some(ranges) => {
                    notes.push("every address except those listed, as ranges (IPv6 clients were never listed)".into());
                    let mut v: Vec<String> = ranges.iter().map(|(a, p)| cidr(*a, *p)).collect();
                    v.push("::/0".into());
                    v.join(", ")
                }
                None => {
                    self.entry(
                        node,
                        p,
                        Outcome::Refused(format!(
                            "its complement takes more than {MAX_RANGES} ranges"
                        )),
                    );
                    w.note(format!("RelayIpList (IPSECLIST): {}", describe(&list)));
                    w.note(
                        "refused: \"all except\" these masks takes too many ranges; written empty",
                    );
                    w.key("RelayIpList", "", Vec::new());
                    return Ok(());
                }
            }
        } else {
            if !list.grant_names.is_empty() {
                notes.push(format!(
                    "the names {} are left out: mailroot's RelayIpList takes addresses only (let them AUTH instead)",
                    list.grant_names.join(", ")
                ));
            }
            list.grant_addrs
                .iter()
                .map(AddrMask::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (ia, iname) = list.ignored();
        if !ia.is_empty() || !iname.is_empty() {
            notes.push("the blob's other list is ignored by IIS in this mode, and here".into());
        }
        self.key(w, node, p, "RelayIpList", value, &notes.join("\n"));
        Ok(())
    }

    fn ip_security(&mut self, w: &mut Writer, node: &Node, p: &Prop) -> Result<(), ValueError> {
        let list = if p.value.trim().is_empty() {
            IpSecList {
                grant_by_default: true,
                ..IpSecList::default()
            }
        } else {
            ipseclist::parse_hex(&p.value).map_err(|e| Self::bad(node, p, e.to_string()))?
        };
        let i = self.entry(node, p, Outcome::Converted);
        w.note(format!(
            "IPSecurity (IPSECLIST, connection control): {}",
            describe(&list)
        ));
        if list.grant_by_default {
            w.key("IPGrantByDefault", "1", vec![i]);
        } else {
            w.key("IPGrantByDefault", "0", vec![i]);
        }
        let (addrs, names) = list.listed();
        let mut v: Vec<String> = addrs.iter().map(AddrMask::to_string).collect();
        for n in names {
            // IIS matches a name entry and every name below it; mailroot spells the two apart.
            if n.starts_with("*.") {
                v.push(n.to_ascii_lowercase());
            } else {
                v.push(n.to_ascii_lowercase());
                v.push(format!("*.{}", n.to_ascii_lowercase()));
            }
        }
        if !names.is_empty() {
            w.note("a name entry matches the name and every name below it in IIS: written as name, *.name");
        }
        let key = if list.grant_by_default {
            "IPDeny"
        } else {
            "IPGrant"
        };
        w.key(key, v.join(", "), vec![i]);
        let (ia, iname) = list.ignored();
        if !ia.is_empty() || !iname.is_empty() {
            w.note("the blob's other list is ignored by IIS in this mode, and here");
        }
        Ok(())
    }

    /// RouteAction's bits: OutboundTls from SMTP_SSL, RelayAllowed from SMTP_DOMAIN_RELAY (domains);
    /// the rest as comments.
    fn route_action(&mut self, w: &mut Writer, node: &Node, p: &Prop, v: u32, domain: bool) {
        let i = self.entry(node, p, Outcome::Converted);
        if p.value.trim().parse::<u32>().is_ok() {
            w.note(format!(
                "RouteAction = {} ({})",
                p.value.trim(),
                flag_names(v, ROUTE_FLAGS)
            ));
        } else {
            w.note(format!("RouteAction = {}", p.value.trim()));
        }
        if domain {
            w.key(
                "RelayAllowed",
                u8::from(v & DOMAIN_RELAY != 0).to_string(),
                vec![i],
            );
        }
        if v & SSL != 0 {
            w.key("OutboundTls", "required", vec![i]);
        }
        let mut handled = SSL | SMARTHOST | if domain { DOMAIN_RELAY } else { 0 };
        if v & SASL != 0 {
            w.note(
                "SMTP_SASL: outbound AUTH; its credentials are RouteUserName/RoutePassword (below)",
            );
            handled |= SASL | AUTH_CLEARTEXT;
        }
        if v & (AUTH_NTLM | AUTH_KERBEROS) != 0 {
            w.note(format!("{}: Windows-only outbound authentication, not converted: use Basic (RouteUserName, RoutePassword)",
                flag_names(v & (AUTH_NTLM | AUTH_KERBEROS), ROUTE_FLAGS)));
            handled |= AUTH_NTLM | AUTH_KERBEROS;
        }
        let rest = v & !handled;
        if rest != 0 {
            w.note(format!(
                "{}: not converted: mailroot has no per-route TURN/ETRN, protocol switches or Exchange relay flags",
                flag_names(rest, ROUTE_FLAGS)
            ));
        }
    }

    fn route_credential(&mut self, w: &mut Writer, node: &Node, p: &Prop) {
        if p.name.eq_ignore_ascii_case("RoutePassword") {
            self.comment(w, node, p, Kind::WindowsOnly,
                "encrypted with the old machine's key in the metabase; write RoutePassword, or RoutePasswordFile (and RouteUserName) yourself");
        } else {
            self.comment(w, node, p, Kind::NotSupported,
                "its password cannot be read from the metabase (encrypted); write both once you have it");
            w.note(format!("RouteUserName = {}", p.value.trim()));
        }
    }

    fn masquerade(
        &mut self,
        w: &mut Writer,
        node: &Node,
        m: Option<&Prop>,
        on: Option<&Prop>,
    ) -> Result<(), ValueError> {
        let enabled = match on {
            Some(p) => bool_value(p).map_err(|e| Self::bad(node, p, e))?,
            None => true,
        };
        if let Some(p) = on {
            self.entry(node, p, Outcome::Commented(Kind::Note));
            w.note(format!(
                "DoMasquerade = {}: folded into MasqueradeDomain",
                shown(p)
            ));
        }
        if let Some(p) = m {
            if enabled {
                self.key(w, node, p, "MasqueradeDomain", p.value.trim().into(), "");
            } else {
                self.comment(
                    w,
                    node,
                    p,
                    Kind::Note,
                    "DoMasquerade = FALSE: IIS did not use it",
                );
            }
        }
        Ok(())
    }

    fn remote_domain(&mut self, instance: u32, d: &Domain, action: u32) {
        let dn = &d.node;
        let name = d.name.trim_end_matches('.').to_ascii_lowercase();
        let mut w = Writer { lines: Vec::new() };
        w.note(format!(
            "IIS {} ({}, line {} of the metabase): a remote domain",
            dn.location, dn.key_type, dn.line
        ));
        match dn.get("RouteAction") {
            Some(p) => self.route_action(&mut w, dn, p, action, true),
            None => {
                w.note("no RouteAction: no relay to it for everyone, no route of its own");
                w.key("RelayAllowed", "0", Vec::new());
            }
        }
        for p in &dn.props {
            if p.name.eq_ignore_ascii_case("RouteAction") {
                continue;
            }
            if p.name.eq_ignore_ascii_case("RouteActionString") {
                if action & SMARTHOST != 0 {
                    self.key(
                        &mut w,
                        dn,
                        p,
                        "SmartHost",
                        p.value.trim().into(),
                        " (SMTP_SMARTHOST: forward all mail for it there)",
                    );
                } else {
                    self.comment(
                        &mut w,
                        dn,
                        p,
                        Kind::Note,
                        "SMTP_SMARTHOST is off: IIS did not use it",
                    );
                }
            } else if p.name.eq_ignore_ascii_case("RouteUserName")
                || p.name.eq_ignore_ascii_case("RoutePassword")
            {
                self.route_credential(&mut w, dn, p);
            } else if p.name.eq_ignore_ascii_case("RelayIpList") {
                self.comment(&mut w, dn, p, Kind::NotSupported, "mailroot has no per-domain relay list: RelayAllowed and the server's RelayIpList decide");
            } else {
                let (kind, why) = reason(&p.name);
                self.comment(&mut w, dn, p, kind, why);
            }
        }
        if action & SMARTHOST != 0 && dn.get("RouteActionString").is_none() {
            w.note("SMTP_SMARTHOST without RouteActionString: no smart host to write");
        }
        self.conv.sections.push(Section {
            name: format!("SmtpSvc/{instance}/Domain/{name}"),
            instance,
            lines: w.lines,
            refused: None,
        });
    }
}

/// How a number converts.
#[derive(Clone, Copy)]
enum Form {
    /// Passes through.
    Number,
    /// Bytes; 4294967295 (unlimited) is mailroot's 0.
    Size,
    /// MaxConnections: IIS's unlimited keeps mailroot's cap.
    Connections,
    /// MaxOutConnections*: 0 and unlimited keep mailroot's default.
    OutConnections,
    /// MaxBatchedMessages: 0 and unlimited are no limit.
    Batch,
}

/// mailroot's spelling of a key the metabase may write in another case.
fn canonical(name: &str) -> &str {
    crate::config::keys::server_key(name).map_or(name, |k| k.name)
}

/// A DWORD as MetaBase.xml writes it: decimal, `-1`-style signed, `0x…`, or symbolic flags joined
/// with `|` (names from `names`, numbers allowed among them).
pub fn dword(p: &Prop, names: &[(&str, u32)]) -> Result<u32, String> {
    let v = p.value.trim();
    if v.is_empty() {
        return Err("empty: a number is expected".into());
    }
    let mut total = 0u32;
    for part in v.split('|').map(str::trim) {
        let n = if let Some(h) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            u32::from_str_radix(h, 16).ok()
        } else if let Ok(n) = part.parse::<u32>() {
            Some(n)
        } else if let Ok(n) = part.parse::<i32>() {
            Some(n as u32) // -1 is 4294967295
        } else {
            names
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(part))
                .map(|(_, n)| *n)
        };
        match n {
            Some(n) => total |= n,
            None if names.is_empty() => {
                return Err(format!("`{part}` is not a number"));
            }
            None => {
                let known: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "`{part}` is neither a number nor a flag of {} ({})",
                    p.name,
                    known.join(", ")
                ));
            }
        }
    }
    Ok(total)
}

/// `TRUE`/`FALSE` as MetaBase.xml writes booleans (and 1/0/-1).
pub fn bool_value(p: &Prop) -> Result<bool, String> {
    match p.value.trim().to_ascii_uppercase().as_str() {
        "TRUE" | "1" | "-1" | "4294967295" => Ok(true),
        "FALSE" | "0" => Ok(false),
        v => Err(format!("`{v}` is not TRUE or FALSE")),
    }
}

/// The names of the bits set in `v` (unknown bits in hex).
fn flag_names(v: u32, names: &[(&str, u32)]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut left = v;
    for (name, bit) in names {
        if *bit != 0 && v & bit == *bit && left & bit != 0 {
            out.push((*name).to_string());
            left &= !bit;
        }
    }
    if left != 0 {
        out.push(format!("{left:#x}"));
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join(" | ")
    }
}

/// IIS bindings (`IP:port:host`, one per line of the MULTISZ) as mailroot writes them (`IP:port`,
/// `:port`); the notes say what was dropped.
pub fn bindings(v: &str) -> (String, String) {
    let mut out: Vec<String> = Vec::new();
    let mut notes = String::new();
    for item in v
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
    {
        let (ip, rest) = if let Some(r) = item.strip_prefix('[') {
            match r.split_once("]:") {
                Some((ip, rest)) => (format!("[{ip}]"), rest),
                None => (item.to_string(), ""),
            }
        } else {
            match item.split_once(':') {
                Some((ip, rest)) => (ip.to_string(), rest),
                None => (item.to_string(), ""),
            }
        };
        let (port, host) = rest.split_once(':').unwrap_or((rest, ""));
        let b = if rest.is_empty() {
            ip // not IIS's form: left for the loader to judge
        } else {
            format!("{ip}:{port}")
        };
        if !host.is_empty() {
            notes.push_str(&format!(
                " `{item}`: the host name `{host}` is left out (it means nothing for SMTP)"
            ));
        }
        if !out.contains(&b) {
            out.push(b);
        }
    }
    let note = if notes.is_empty() {
        String::new()
    } else {
        format!(
            " = {}:{notes}",
            v.split_whitespace().collect::<Vec<_>>().join(" ")
        )
    };
    (out.join(", "), note)
}

/// A one-line account of a decoded list.
fn describe(l: &IpSecList) -> String {
    let (addrs, names) = l.listed();
    let mut v: Vec<String> = addrs
        .iter()
        .map(|a| format!("{},{}", a.addr, a.mask))
        .collect();
    v.extend(names.iter().cloned());
    let listed = if v.is_empty() {
        "nothing listed".to_string()
    } else {
        v.join(" ")
    };
    if l.grant_by_default {
        format!("all except the list below: {listed}")
    } else {
        format!("only the list below: {listed}")
    }
}

/// Every IPv4 address outside the `deny` entries, as CIDR ranges in order; `None` when that takes
/// more than [`MAX_RANGES`] (masks that are not contiguous can split the space finely).
fn complement(deny: &[AddrMask]) -> Option<Vec<(u32, u8)>> {
    let mut out = Vec::new();
    let mut stack = vec![(0u32, 0u8)];
    while let Some((a, p)) = stack.pop() {
        let nm = if p == 0 { 0 } else { u32::MAX << (32 - p) };
        let inside = |d: &AddrMask| {
            let m = u32::from(d.mask);
            m & !nm == 0 && (a ^ u32::from(d.addr)) & m == 0
        };
        let touches = |d: &AddrMask| (a ^ u32::from(d.addr)) & u32::from(d.mask) & nm == 0;
        if deny.iter().any(inside) {
            continue;
        }
        if !deny.iter().any(touches) {
            out.push((a, p));
            if out.len() > MAX_RANGES {
                return None;
            }
            continue;
        }
        // At /32 a touching entry always contains the address, so p < 32 here.
        let bit = 1u32 << (31 - p);
        stack.push((a | bit, p + 1));
        stack.push((a, p + 1));
    }
    Some(out)
}

fn cidr(a: u32, p: u8) -> String {
    let ip = std::net::Ipv4Addr::from(a);
    if p == 32 {
        ip.to_string()
    } else {
        format!("{ip}/{p}")
    }
}

/// `%NAME%` replaced from the environment (IIS's EXPANDSZ paths such as `%SystemRoot%\System32`).
fn expand_env(v: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = v;
    while let Some(start) = rest.find('%') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('%') else { break };
        let name = &after[..end];
        match std::env::var(name) {
            Ok(val) if !name.is_empty() => {
                out.push_str(&rest[..start]);
                out.push_str(&val);
            }
            _ => {
                return Err(format!(
                    "`%{name}%` is not set on this system: write the folder `{v}` stands for"
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `C:\…`, `C:/…` or `\\server\share`.
fn is_windows_path(v: &str) -> bool {
    let b = v.as_bytes();
    (b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && (b[2] == b'\\' || b[2] == b'/'))
        || v.starts_with("\\\\")
}

/// The folder that holds `path` (either separator), when it has one.
fn parent_of(path: &str) -> Option<String> {
    let t = path.trim_end_matches(['\\', '/']);
    let i = t.rfind(['\\', '/'])?;
    let parent = &t[..i];
    // `C:\Queue` → `C:\`, `/Queue` → `/`.
    let parent = if parent.is_empty() || parent.ends_with(':') {
        &t[..=i]
    } else {
        parent
    };
    Some(parent.to_string())
}

/// Why a property without a mailroot key is not converted.
fn reason(name: &str) -> (Kind, &'static str) {
    let n = name.to_ascii_lowercase();
    let windows: &[&str] = &[
        "adminacl",
        "adminaclbin",
        "anonymoususername",
        "anonymoususerpass",
        "anonymouspasswordsync",
        "defaultlogondomain",
        "ntauthenticationproviders",
        "realm",
        "sasllogondomain",
        "sslcerthash",
        "sslstorename",
        "accessflags",
        "accesssslflags",
        "accessssl",
        "accessssl128",
        "logodbcdatasource",
        "logodbctablename",
        "logodbcusername",
        "logodbcpassword",
        "serverstate",
        "win32error",
        "disablesocketpooling",
        "serverlistenbacklog",
    ];
    let exchange: &[&str] = &[
        "smtpinboundcommandsupportoptions",
        "smtpoutboundcommandsupportoptions",
        "smtpremoteretrythreshold",
        "smtplocalretrythreshold",
        "smtpdisablerelay",
        "smtpdsnoptions",
        "smtpdsnlanguageid",
        "smtpadvqueuedll",
        "routingdll",
        "routingsources",
        "smtproutingtabletype",
        "smtpaqlocalretryminutes",
        "smtpeventloglevel",
        "smtpusetcpdns",
    ];
    if windows.contains(&n.as_str()) {
        return (
            Kind::WindowsOnly,
            "Windows accounts, security descriptors, the certificate store or the IIS Admin service",
        );
    }
    if exchange.contains(&n.as_str()) {
        return (Kind::ExchangeOnly, "reserved for Microsoft Exchange");
    }
    let why = match n.as_str() {
        "connectresponse" => "mailroot's banner is IIS's own form, not configurable",
        "shouldpipelinein" | "shouldpipelineout" => {
            "mailroot always offers PIPELINING and uses it when the next hop offers it"
        }
        "smtplocaldelayexpireminutes" | "smtplocalndrexpireminutes" => {
            "local mail is written to Drop at once: nothing waits to expire"
        }
        "localretryinterval"
        | "localretryattempts"
        | "remoteretryinterval"
        | "remoteretryattempts" => {
            "IIS 5's retry settings, superseded by SmtpRemoteProgressiveRetry"
        }
        "etrndays" | "etrnsubdomains" | "csideetrndomains" => "TURN and ETRN are not supported",
        "sendbadto" => "undeliverable mail goes to BadMailDirectory only",
        "addnoheaders" => "mailroot always adds its Received header",
        "smtpdomainvalidationflags" => "mailroot checks the EHLO name's syntax itself",
        "logextfileflags" => "mailroot writes IIS's SMTP field set, not configurable",
        "logfilelocaltimerollover" => {
            "mailroot starts new log files at UTC boundaries, as IIS's default"
        }
        "postmasteremail" | "postmastername" => {
            "reports come from postmaster@ the MasqueradeDomain or DefaultDomain"
        }
        "nameresolutiontype" => "mailroot resolves by DNS (DnsServers)",
        "alwaysusessl" | "limitremoteconnections" => {
            "set OutboundTls and MaxOutConnections instead"
        }
        "maxbandwidth" | "maxendpointconnections" | "serversize" => "mailroot has no such limit",
        _ => "no mailroot equivalent",
    };
    (Kind::NotSupported, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prop(name: &str, value: &str) -> Prop {
        Prop {
            name: name.into(),
            value: value.into(),
            line: 7,
            custom: None,
            secure: false,
            inherited: false,
        }
    }

    #[test]
    fn dwords_numeric_and_symbolic() {
        assert_eq!(
            dword(&prop("AuthFlags", "AuthBasic | AuthAnonymous"), AUTH_FLAGS),
            Ok(3)
        );
        assert_eq!(dword(&prop("AuthFlags", "authntlm|1"), AUTH_FLAGS), Ok(5));
        assert_eq!(dword(&prop("AuthFlags", "3"), AUTH_FLAGS), Ok(3));
        assert_eq!(dword(&prop("RelayForAuth", "-1"), &[]), Ok(u32::MAX));
        assert_eq!(
            dword(&prop("RelayForAuth", "4294967295"), &[]),
            Ok(u32::MAX)
        );
        assert_eq!(
            dword(&prop("RouteAction", "0x1002"), ROUTE_FLAGS),
            Ok(0x1002)
        );
        assert_eq!(
            dword(
                &prop("RouteAction", "SMTP_SMARTHOST | SMTP_DOMAIN_RELAY"),
                ROUTE_FLAGS
            ),
            Ok(0x1002)
        );
        assert_eq!(
            dword(
                &prop("LogFilePeriod", "MD_LOGFILE_PERIOD_HOURLY"),
                LOG_PERIODS
            ),
            Ok(4)
        );
        let e = dword(&prop("AuthFlags", "AuthBasic | AuthKerberos"), AUTH_FLAGS).unwrap_err();
        assert!(
            e.starts_with("`AuthKerberos` is neither a number nor a flag of AuthFlags"),
            "{e}"
        );
        assert!(dword(&prop("HopCount", "many"), &[]).is_err());
        assert!(dword(&prop("HopCount", ""), &[]).is_err());
        assert_eq!(
            flag_names(0x1006, ROUTE_FLAGS),
            "SMTP_SMARTHOST | SMTP_SSL | SMTP_DOMAIN_RELAY"
        );
        assert_eq!(
            flag_names(0x8000_0001, ROUTE_FLAGS),
            "SMTP_DROP | 0x80000000"
        );
    }

    #[test]
    fn booleans() {
        assert_eq!(bool_value(&prop("X", "TRUE")), Ok(true));
        assert_eq!(bool_value(&prop("X", "false")), Ok(false));
        assert!(bool_value(&prop("X", "maybe")).is_err());
    }

    #[test]
    fn iis_bindings() {
        assert_eq!(bindings(":25:").0, ":25");
        let (v, note) = bindings("10.0.0.5:25:\n\t\t\t:2525:mail.example.com\n:25:");
        assert_eq!(v, "10.0.0.5:25, :2525, :25");
        assert!(
            note.contains("the host name `mail.example.com` is left out"),
            "{note}"
        );
        assert_eq!(bindings("[::1]:25:").0, "[::1]:25");
        assert_eq!(bindings("nonsense").0, "nonsense");
    }

    #[test]
    fn complement_of_deny_lists() {
        let d = |a: &str, m: &str| AddrMask {
            addr: a.parse().unwrap(),
            mask: m.parse().unwrap(),
        };
        assert_eq!(complement(&[]), Some(vec![(0, 0)]));
        let c = complement(&[d("128.0.0.0", "128.0.0.0")]).unwrap();
        assert_eq!(c, vec![(0, 1)]);
        let deny = [
            d("192.0.2.7", "255.255.255.255"),
            d("10.0.0.0", "255.0.0.0"),
        ];
        let c = complement(&deny).unwrap();
        let list: Vec<String> = c.iter().map(|(a, p)| cidr(*a, *p)).collect();
        let ips = crate::config::IpList::parse(&list.join(",")).unwrap();
        for (ip, allowed) in [
            ("192.0.2.7", false),
            ("192.0.2.6", true),
            ("10.9.9.9", false),
            ("11.0.0.1", true),
            ("0.0.0.0", true),
            ("255.255.255.255", true),
        ] {
            assert_eq!(ips.contains(ip.parse().unwrap()), allowed, "{ip}");
        }
        // One sibling range per bit below the split: 31 on the way to the /32, 7 to the /8.
        assert_eq!(c.len(), 31 + 7);
        // A mask that is not contiguous still complements exactly, a range at a time.
        let odd = [d("10.0.0.0", "255.0.255.0")];
        let c = complement(&odd).unwrap();
        let list: Vec<String> = c.iter().map(|(a, p)| cidr(*a, *p)).collect();
        let ips = crate::config::IpList::parse(&list.join(",")).unwrap();
        assert!(!ips.contains("10.77.0.3".parse().unwrap()));
        assert!(ips.contains("10.77.1.3".parse().unwrap()));
        assert!(
            complement(&[d("0.0.0.1", "0.0.0.255"), d("0.1.0.0", "0.255.0.0")]).is_none(),
            "too many ranges"
        );
    }

    #[test]
    fn paths() {
        assert_eq!(
            parent_of("C:\\Inetpub\\mailroot\\Queue").as_deref(),
            Some("C:\\Inetpub\\mailroot")
        );
        assert_eq!(parent_of("C:\\Queue\\").as_deref(), Some("C:\\"));
        assert_eq!(
            parent_of("/srv/mailroot/Queue").as_deref(),
            Some("/srv/mailroot")
        );
        assert_eq!(parent_of("Queue"), None);
        assert!(is_windows_path("D:/mail"));
        assert!(is_windows_path("\\\\filer\\mail"));
        assert!(!is_windows_path("/var/spool/mailroot"));
        assert!(expand_env("%NO_SUCH_VARIABLE_HERE%\\x").is_err());
        // SAFETY-free: reading, not setting, the environment. PATH exists everywhere tests run.
        let path = std::env::var("PATH").unwrap_or_default();
        assert_eq!(expand_env("%PATH%/x").ok(), Some(format!("{path}/x")));
        assert_eq!(expand_env("50% off").ok().as_deref(), Some("50% off"));
    }

    fn metabase(server_attrs: &str, extra: &str) -> Metabase {
        Metabase::parse(&format!(
            "<configuration><MBProperty>\n<IIsSmtpService Location =\"/LM/SmtpSvc\" HopCount=\"12\"/>\n<IIsSmtpServer Location =\"/LM/SmtpSvc/1\" {server_attrs}/>\n{extra}</MBProperty></configuration>"
        ))
        .unwrap()
    }

    fn opts(windows_paths: bool) -> Options {
        Options {
            instance: None,
            source: "MetaBase.xml".into(),
            windows_paths,
        }
    }

    fn keys(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter(|l| !l.starts_with(';') && l.contains('='))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    }

    fn value(text: &str, key: &str) -> Option<String> {
        keys(text)
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    fn load(c: &Conversion) -> Config {
        let ini = IniFile::parse(Path::new("t.ini"), &c.text()).unwrap();
        Config::from_ini(&ini, Path::new("/srv"), Source::File("t.ini".into())).unwrap()
    }

    #[test]
    fn windows_paths_pass_through_where_usable() {
        let mb = metabase(
            r#"QueueDirectory="C:\Inetpub\mailroot\Queue" PickupDirectory="C:\Inetpub\mailroot\Pickup""#,
            "",
        );
        let c = convert(&mb, &opts(true)).unwrap();
        let t = c.text();
        assert_eq!(
            value(&t, "MailRoot").as_deref(),
            Some("C:\\Inetpub\\mailroot")
        );
        assert_eq!(
            value(&t, "QueueDirectory").as_deref(),
            Some("C:\\Inetpub\\mailroot\\Queue")
        );
        assert_eq!(
            value(&t, "PickupDirectory").as_deref(),
            Some("C:\\Inetpub\\mailroot\\Pickup")
        );
        let c = convert(&mb, &opts(false)).unwrap();
        let t = c.text();
        assert_eq!(value(&t, "MailRoot"), None);
        assert_eq!(value(&t, "QueueDirectory"), None);
        assert!(
            t.contains("; QueueDirectory = C:\\Inetpub\\mailroot\\Queue"),
            "{t}"
        );
        assert_eq!(c.summary().commented.get(&Kind::Path), Some(&2));
    }

    #[test]
    fn values_keep_their_meaning_through_the_loader() {
        let mb = metabase(
            r#"ConnectionTimeout="900" MaxMessageSize="4294967295" RemoteTimeout="120"
               SmtpRemoteProgressiveRetry="10, 20,30" SmtpRemoteNDRExpireMinutes="60"
               RelayForAuth="-1" AuthFlags="AuthBasic" LogFilePeriod="MD_LOGFILE_PERIOD_WEEKLY"
               EnableReverseDnsLookup="TRUE" ServerBindings="127.0.0.1:2525: :2626:""#,
            "",
        );
        let mut c = convert(&mb, &opts(false)).unwrap();
        c.validate(Path::new("/srv")).unwrap();
        let cfg = load(&c);
        let vs = &cfg.servers[0];
        use std::time::Duration;
        assert_eq!(
            vs.connection_timeout,
            Duration::from_secs(900),
            "seconds, as IIS"
        );
        assert_eq!(vs.delivery.remote_timeout, Duration::from_secs(120));
        assert_eq!(vs.max_message_size, 0, "unlimited");
        assert_eq!(
            vs.delivery.retry,
            [10, 20, 30].map(|m| Duration::from_secs(m * 60)).to_vec(),
            "minutes, as IIS"
        );
        assert_eq!(vs.delivery.ndr_expire, Duration::from_secs(3600));
        assert_eq!(vs.hop_count, 12, "inherited from the service");
        assert!(vs.security.relay_for_auth && vs.security.basic && !vs.security.anonymous);
        assert_eq!(vs.log.period, crate::config::LogPeriod::Weekly);
        assert!(vs.security.reverse_dns);
        assert_eq!(vs.bindings.len(), 2);
        assert!(
            vs.relay_ip_list.is_empty(),
            "absent RelayIpList: nobody relays by address"
        );
    }

    #[test]
    fn relay_all_except_is_the_complement() {
        let deny = IpSecList {
            grant_by_default: true,
            deny_addrs: vec![AddrMask {
                addr: "10.0.0.0".parse().unwrap(),
                mask: "255.0.0.0".parse().unwrap(),
            }],
            ..IpSecList::default()
        };
        let hex = ipseclist::to_hex(&ipseclist::encode(&deny));
        let mb = metabase(&format!("RelayIpList=\"{hex}\""), "");
        let mut c = convert(&mb, &opts(false)).unwrap();
        c.validate(Path::new("/srv")).unwrap();
        let vs = &load(&c).servers[0];
        for ip in ["10.1.2.3", "192.0.2.1", "11.0.0.0", "9.255.255.255"] {
            let v4: std::net::Ipv4Addr = ip.parse().unwrap();
            assert_eq!(
                vs.relay_ip_list.contains(v4.into()),
                deny.permits(v4, None),
                "{ip}"
            );
        }
        assert!(vs.relay_ip_list.contains("2001:db8::1".parse().unwrap()));
        // With a name in the deny list the list cannot be expressed: nobody relays by address.
        let named = IpSecList {
            deny_names: vec!["x.example".into()],
            ..deny
        };
        let hex = ipseclist::to_hex(&ipseclist::encode(&named));
        let mb = metabase(&format!("RelayIpList=\"{hex}\""), "");
        let c = convert(&mb, &opts(false)).unwrap();
        assert_eq!(value(&c.text(), "RelayIpList").as_deref(), Some(""));
        assert_eq!(c.summary().refused.len(), 1);
    }

    #[test]
    fn refused_values_become_comments() {
        let mb = metabase(
            r#"ServerBindings=":25:" SmartHost="mail_relay" HopCount="0""#,
            "<IIsSmtpServer Location=\"/LM/SmtpSvc/2\" ServerBindings=\":25:\"/>\n\
             <IIsSmtpDomain Location=\"/LM/SmtpSvc/1/Domain/bad_name.example\" RouteAction=\"4096\"/>\n",
        );
        let mut c = convert(&mb, &opts(false)).unwrap();
        c.validate(Path::new("/srv")).unwrap();
        let t = c.text();
        assert!(
            t.contains("; refused by mailroot: `mail_relay` is not a host name"),
            "{t}"
        );
        assert!(t.contains("; SmartHost = mail_relay"), "{t}");
        assert!(t.contains("; HopCount = 0"), "{t}");
        assert!(
            t.contains("; [SmtpSvc/2]"),
            "overlapping bindings: the section goes: {t}"
        );
        assert!(t.contains("; [SmtpSvc/1/Domain/bad_name.example]"), "{t}");
        let s = c.summary();
        assert_eq!(s.servers, 1);
        assert_eq!(s.domains, 0);
        let refused: Vec<&str> = s.refused.iter().map(|(_, n, _)| n.as_str()).collect();
        for name in ["SmartHost", "HopCount", "ServerBindings", "RouteAction"] {
            assert!(refused.contains(&name), "{name} in {refused:?}");
        }
        assert_eq!(load(&c).servers.len(), 1);
    }

    #[test]
    fn malformed_values_are_errors_naming_the_property() {
        let mb = metabase("RelayIpList=\"18000080\"", "");
        let e = convert(&mb, &opts(false)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "3: <IIsSmtpServer Location=\"/LM/SmtpSvc/1\">: RelayIpList: 4 bytes: shorter than the 24-byte IPSECLIST header"
        );
        let mb = metabase("AuthFlags=\"AuthBasic | AuthDigest\"", "");
        let e = convert(&mb, &opts(false)).unwrap_err();
        assert!(
            e.to_string().contains("AuthFlags: `AuthDigest` is neither"),
            "{e}"
        );
        let mb = metabase("MaxRecipients=\"lots\"", "");
        assert!(convert(&mb, &opts(false)).is_err());
    }
}
