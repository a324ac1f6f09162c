//! The command line: flags, and the scenarios they make.

use std::net::{SocketAddr, ToSocketAddrs};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Smtp,
    Pickup,
    Backlog,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Smtp => "smtp",
            Kind::Pickup => "pickup",
            Kind::Backlog => "backlog",
        }
    }
}

/// One scenario: what is sent, how much, and over how many sessions.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub kind: Kind,
    /// Client sessions (smtp only; the pickup writer is one thread).
    pub sessions: u64,
    pub messages: u64,
    /// Body bytes per message.
    pub size: usize,
    /// One connection per session instead of one per message (smtp only).
    pub reuse: bool,
    /// Backlog only: seconds the server runs idle with the next hop down after every message was
    /// deferred, before its steady-state memory is read.
    pub down_secs: u64,
}

impl Scenario {
    fn smtp(sessions: u64, messages: u64, size: usize) -> Scenario {
        Scenario {
            kind: Kind::Smtp,
            sessions,
            messages,
            size,
            reuse: false,
            down_secs: 0,
        }
    }

    fn pickup(messages: u64, size: usize) -> Scenario {
        Scenario {
            kind: Kind::Pickup,
            sessions: 1,
            messages,
            size,
            reuse: false,
            down_secs: 0,
        }
    }

    fn backlog(messages: u64, size: usize, down_secs: u64) -> Scenario {
        Scenario {
            kind: Kind::Backlog,
            sessions: 0,
            messages,
            size,
            reuse: false,
            down_secs,
        }
    }
}

/// The backlog scenario's default queue: modest, so that a run takes well under a minute.
pub const BACKLOG_MESSAGES: u64 = 10_000;
/// The backlog scenario's default idle time with the next hop down, in seconds.
pub const BACKLOG_DOWN_SECS: u64 = 10;

/// The default set: a single sequential client, many concurrent small messages, fewer large ones,
/// and the Pickup folder.
fn default_set() -> Vec<Scenario> {
    vec![
        Scenario::smtp(1, 2000, 1024),
        Scenario::smtp(20, 5000, 1024),
        Scenario::smtp(10, 500, 100 * 1024),
        Scenario::pickup(5000, 1024),
    ]
}

pub struct Options {
    pub scenarios: Vec<Scenario>,
    /// An already running server to load instead of starting one.
    pub server: Option<SocketAddr>,
    pub sink_port: Option<u16>,
}

pub enum Parsed {
    Run(Options),
    Help,
}

/// The values of the flags, before they become scenarios.
#[derive(Default)]
struct Flags {
    quick: bool,
    kind: Option<Kind>,
    sessions: Option<u64>,
    messages: Option<u64>,
    size: Option<usize>,
    reuse: bool,
    server: Option<SocketAddr>,
    sink_port: Option<u16>,
    down_secs: Option<u64>,
}

pub fn parse_args(args: &[String]) -> Result<Parsed, String> {
    let mut f = Flags::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--quick" => f.quick = true,
            "--reuse" => f.reuse = true,
            "--scenario" => f.kind = Some(parse_kind(&value()?)?),
            "--sessions" => f.sessions = Some(parse_positive(name, &value()?)?),
            "--messages" => f.messages = Some(parse_positive(name, &value()?)?),
            "--size" => f.size = Some(parse_positive(name, &value()?)? as usize),
            "--server" => f.server = Some(parse_server(&value()?)?),
            "--sink-port" => f.sink_port = Some(parse_port(&value()?)?),
            "--down-secs" => f.down_secs = Some(parse_count(name, &value()?)?),
            n if n.starts_with("--bench") => {}
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    build_options(f).map(Parsed::Run)
}

fn parse_kind(v: &str) -> Result<Kind, String> {
    match v {
        "smtp" => Ok(Kind::Smtp),
        "pickup" => Ok(Kind::Pickup),
        "backlog" => Ok(Kind::Backlog),
        _ => Err(format!(
            "--scenario must be smtp, pickup or backlog, not `{v}`"
        )),
    }
}

fn parse_positive(name: &str, v: &str) -> Result<u64, String> {
    match v.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{name} needs a whole number above 0, not `{v}`")),
    }
}

fn parse_count(name: &str, v: &str) -> Result<u64, String> {
    v.parse::<u64>()
        .map_err(|_| format!("{name} needs a whole number, not `{v}`"))
}

fn parse_port(v: &str) -> Result<u16, String> {
    match v.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!(
            "--sink-port needs a port number (1-65535), not `{v}`"
        )),
    }
}

/// HOST:PORT, resolved; only loopback, since the sink the server must relay to is on 127.0.0.1.
fn parse_server(v: &str) -> Result<SocketAddr, String> {
    let addr = v
        .to_socket_addrs()
        .map_err(|e| format!("--server `{v}`: {e}"))?
        .next()
        .ok_or_else(|| format!("--server `{v}` resolves to no address"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "--server `{v}` is not a loopback address (the load stays on this machine)"
        ));
    }
    Ok(addr)
}

/// Turns the flags into the list of scenarios to run.
fn build_options(f: Flags) -> Result<Options, String> {
    if f.kind == Some(Kind::Backlog) {
        return backlog_options(f);
    }
    if f.down_secs.is_some() {
        return Err("--down-secs applies to the backlog scenario only".into());
    }
    let custom = f.sessions.is_some() || f.messages.is_some() || f.size.is_some();
    let mut scenarios = if custom {
        let kind = f.kind.unwrap_or(Kind::Smtp);
        if kind == Kind::Pickup && f.sessions.is_some() {
            return Err("--sessions applies to smtp only (one thread writes Pickup files)".into());
        }
        let messages = f.messages.unwrap_or(5000);
        let size = f.size.unwrap_or(1024);
        vec![match kind {
            Kind::Smtp => Scenario::smtp(f.sessions.unwrap_or(20), messages, size),
            Kind::Pickup => Scenario::pickup(messages, size),
            Kind::Backlog => unreachable!("backlog_options builds it"),
        }]
    } else {
        default_set()
            .into_iter()
            .filter(|s| f.kind.is_none_or(|k| k == s.kind))
            .collect()
    };
    if f.reuse && f.kind == Some(Kind::Pickup) {
        return Err("--reuse applies to smtp only".into());
    }
    if f.server.is_some() && f.kind == Some(Kind::Pickup) {
        return Err(
            "pickup needs the generator's own server (it writes into its mailroot); drop --server"
                .into(),
        );
    }
    for s in &mut scenarios {
        if f.quick {
            s.messages = (s.messages / 10).max(1);
        }
        s.reuse = f.reuse && s.kind == Kind::Smtp;
    }
    Ok(Options {
        scenarios,
        server: f.server,
        sink_port: f.sink_port,
    })
}

/// The backlog scenario: one run, never part of the default set (it restarts the server and, with
/// 100,000 messages, takes minutes).
fn backlog_options(f: Flags) -> Result<Options, String> {
    if f.sessions.is_some() || f.reuse {
        return Err("--sessions and --reuse apply to smtp only".into());
    }
    if f.server.is_some() || f.sink_port.is_some() {
        return Err(
            "backlog needs the generator's own server and sink (it writes the Queue, stops and \
             restarts the server, and starts the sink late); drop --server and --sink-port"
                .into(),
        );
    }
    let mut messages = f.messages.unwrap_or(BACKLOG_MESSAGES);
    if f.quick {
        messages = (messages / 10).max(1);
    }
    Ok(Options {
        scenarios: vec![Scenario::backlog(
            messages,
            f.size.unwrap_or(1024),
            f.down_secs.unwrap_or(BACKLOG_DOWN_SECS),
        )],
        server: None,
        sink_port: None,
    })
}
