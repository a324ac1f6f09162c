//! The administrator's commands on a mailroot's Queue and Badmail folders: `mailroot queue list |
//! summary | show | retry | delete | hold | release` and `mailroot badmail list | resend`
//! (docs/queue.md).
//!
//! With a server running from the mailroot, a command that changes something goes to it through
//! its control endpoint (`server::control`), and its delivery service applies it without racing a
//! delivery (`delivery::admin`); reading commands read the files and ask the server what only it
//! knows (the messages in delivery now, each destination's state and window). With no server
//! running, every command works on the files (`mailroot::queue`, `mailroot::badmail`) and the
//! server finds the change at its next start.

mod print;

use std::time::Duration;

use serde_json::{Value, json};

use crate::config::{Config, VirtualServer};
use crate::delivery::admin::Select;
use crate::mailroot::queue::{self, Change};
use crate::mailroot::store::Store;
use crate::mailroot::{badmail, state::Status};
use crate::server::control::{self, Reach};

/// The usage lines of these commands (for `mailroot --help`).
pub const USAGE: &str = "  mailroot queue list [--json]              the queued messages: recipients, states, next attempt
  mailroot queue summary [--json]           per destination: count, oldest, state, window, ages
  mailroot queue show ID [--body]           one message: envelope, states, headers (and body)
  mailroot queue retry ID...|--all|--domain D     due now (dead destinations probed now)
  mailroot queue delete ID... [--ndr]       remove (--ndr: fail, with a report to the sender)
  mailroot queue hold ID...|--all|--domain D      never attempted, never expires, until released
  mailroot queue release ID...|--all|--domain D   back to delivery, due now
  mailroot badmail list [--json]            the messages in Badmail, with the reason
  mailroot badmail resend ID...             back into the Queue with the original envelope
                                            (each takes [--config PATH] [--instance N])
";

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `queue list`.
    List {
        /// As JSON.
        json: bool,
    },
    /// `queue summary`.
    Summary {
        /// As JSON.
        json: bool,
    },
    /// `queue show ID`.
    Show {
        /// The message.
        id: String,
        /// With the body.
        body: bool,
    },
    /// `queue retry`, `hold`, `release`: an operation over a selection.
    Change {
        /// `retry`, `hold` or `release`.
        op: &'static str,
        /// The messages.
        select: Vec<Select>,
    },
    /// `queue delete ID... [--ndr]`.
    Delete {
        /// The messages.
        ids: Vec<String>,
        /// With a report to the sender.
        ndr: bool,
    },
    /// `badmail list`.
    BadList {
        /// As JSON.
        json: bool,
    },
    /// `badmail resend ID...`.
    Resend {
        /// The Badmail names.
        ids: Vec<String>,
    },
}

/// A command line after `queue` or `badmail` (`group` says which), without `--config`; returns
/// the command and the virtual server named by `--instance`, if any.
pub fn parse(group: &str, args: &[String]) -> Result<(Command, Option<u32>), String> {
    let mut instance = None;
    let mut json = false;
    let mut body = false;
    let mut ndr = false;
    let mut all = false;
    let mut domains = Vec::new();
    let mut ids = Vec::new();
    let mut it = args.iter();
    let action = it
        .next()
        .ok_or_else(|| format!("{group} needs a command"))?
        .as_str();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => json = true,
            "--body" => body = true,
            "--ndr" => ndr = true,
            "--all" => all = true,
            "--domain" => domains.push(
                it.next()
                    .ok_or("--domain needs a domain")?
                    .trim_start_matches('@')
                    .to_string(),
            ),
            "--instance" => {
                instance = Some(
                    it.next()
                        .and_then(|n| n.parse().ok())
                        .ok_or("--instance needs a virtual server number")?,
                )
            }
            s if s.starts_with("--") => return Err(format!("unknown option `{s}`")),
            s => ids.push(s.to_string()),
        }
    }
    let select = || -> Result<Vec<Select>, String> {
        let mut v: Vec<Select> = ids.iter().cloned().map(Select::Id).collect();
        v.extend(domains.iter().cloned().map(Select::Domain));
        if all {
            v.push(Select::All);
        }
        if v.is_empty() {
            return Err(format!(
                "{group} {action} needs message ids, --all or --domain D"
            ));
        }
        Ok(v)
    };
    let cmd = match (group, action) {
        ("queue", "list") => Command::List { json },
        ("queue", "summary") => Command::Summary { json },
        ("queue", "show") => match ids.as_slice() {
            [id] => Command::Show {
                id: id.clone(),
                body,
            },
            _ => return Err("queue show needs one message id".into()),
        },
        ("queue", op @ ("retry" | "hold" | "release")) => Command::Change {
            op: match op {
                "retry" => "retry",
                "hold" => "hold",
                _ => "release",
            },
            select: select()?,
        },
        ("queue", "delete") if !ids.is_empty() && !all && domains.is_empty() => {
            Command::Delete { ids, ndr }
        }
        ("queue", "delete") => return Err("queue delete needs message ids".into()),
        ("badmail", "list") => Command::BadList { json },
        ("badmail", "resend") if !ids.is_empty() => Command::Resend { ids },
        ("badmail", "resend") => return Err("badmail resend needs ids".into()),
        (g, a) => return Err(format!("unknown command `{g} {a}`")),
    };
    Ok((cmd, instance))
}

/// One Queue folder: the first virtual server that uses it and its store.
struct Queue<'a> {
    vs: &'a VirtualServer,
    store: Store,
}

/// The Queue folders of `config` (each once), or only `instance`'s.
fn queues(config: &Config, instance: Option<u32>) -> Result<Vec<Queue<'_>>, String> {
    let mut out: Vec<Queue> = Vec::new();
    for vs in &config.servers {
        if out.iter().any(|q| q.vs.dirs.queue == vs.dirs.queue) {
            continue;
        }
        if instance.is_some_and(|n| n != vs.instance) {
            continue;
        }
        let store = Store::open(&vs.dirs, None).map_err(|e| e.to_string())?;
        out.push(Queue { vs, store });
    }
    if out.is_empty() {
        return Err(match instance {
            Some(n) => format!("no virtual server {n} with its own Queue folder"),
            None => "no virtual server in the configuration".into(),
        });
    }
    Ok(out)
}

/// How long a command waits for the server (a change to a message in delivery waits up to
/// `delivery::admin::LATE_WAIT` for the attempt to end).
const WAIT: Duration = Duration::from_secs(40);

/// The server's status (messages in delivery, destinations), or `None` when none runs.
fn status(config: &Config) -> Result<Option<Value>, String> {
    let Some(first) = config.servers.first() else {
        return Ok(None);
    };
    match control::request(first, json!({"op": "status"}), WAIT) {
        Ok(v) => Ok(Some(v)),
        Err(Reach::NotRunning) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs `cmd` on `config`'s mailroot; returns the process's exit code (0: done, 1: something
/// named was not found or not changed as asked).
pub fn run(config: &Config, cmd: &Command, instance: Option<u32>) -> Result<u8, String> {
    let qs = queues(config, instance)?;
    match cmd {
        Command::List { json } => {
            let st = status(config)?;
            let mut all = Vec::new();
            for q in &qs {
                let entries = queue::entries(&q.store).map_err(|e| e.to_string())?;
                all.extend(entries.into_iter().map(|e| (q.vs.instance, e)));
            }
            let flying = print::in_flight(st.as_ref());
            if *json {
                println!("{}", print::list_json(&all, &flying));
            } else {
                print!("{}", print::list_text(&all, &flying, st.is_some()));
            }
            Ok(0)
        }
        Command::Summary { json } => {
            let st = status(config)?;
            let mut rows = Vec::new();
            for q in &qs {
                let entries = queue::entries(&q.store).map_err(|e| e.to_string())?;
                rows.extend(print::summarize(q.vs, &entries));
            }
            let dests = print::destinations(st.as_ref());
            if *json {
                println!("{}", print::summary_json(&rows, &dests, st.is_some()));
            } else {
                print!("{}", print::summary_text(&rows, &dests, st.is_some()));
            }
            Ok(0)
        }
        Command::Show { id, body } => {
            let st = status(config)?;
            let flying = print::in_flight(st.as_ref());
            for q in &qs {
                if let Some(e) = queue::entry(&q.store, id).map_err(|e| e.to_string())? {
                    let msg = queue::read(&q.store, id)
                        .map_err(|e| e.to_string())?
                        .map(|(_, m)| m)
                        .unwrap_or_default();
                    print!("{}", print::show(&e, &msg, *body, flying.contains(id)));
                    return Ok(0);
                }
            }
            eprintln!("no message {id} in the Queue");
            Ok(1)
        }
        Command::Change { op, select } => {
            let mut failed = false;
            for q in &qs {
                for sel in select {
                    let lines = change(config, q, op, sel)?;
                    for (id, text, ok) in lines {
                        // A message id that is not in this Queue may be in another one.
                        if qs.len() > 1 && text.starts_with("no such message") {
                            continue;
                        }
                        failed |= !ok && matches!(sel, Select::Id(_));
                        println!("{}", line(&id, &text));
                    }
                }
            }
            Ok(u8::from(failed))
        }
        Command::Delete { ids, ndr } => {
            let mut code = 0;
            for id in ids {
                let mut found = false;
                for q in &qs {
                    let (text, ok) = delete(config, q, id, *ndr)?;
                    if text.starts_with("no such message") {
                        continue;
                    }
                    found = true;
                    code |= u8::from(!ok);
                    println!("{}", line(id, &text));
                }
                if !found {
                    println!("{}", line(id, "no such message in the Queue"));
                    code = 1;
                }
            }
            Ok(code)
        }
        Command::BadList { json } => {
            let mut all = Vec::new();
            for q in &qs {
                let list = badmail::list(&q.store).map_err(|e| e.to_string())?;
                all.extend(list.into_iter().map(|b| (q.vs.instance, b)));
            }
            if *json {
                println!("{}", print::badmail_json(&all));
            } else {
                print!("{}", print::badmail_text(&all));
            }
            Ok(0)
        }
        Command::Resend { ids } => {
            let mut code = 0;
            let first = config.servers.first().ok_or("no virtual server")?;
            for id in ids {
                let q = qs
                    .iter()
                    .find(|q| q.store.badmail_dir().join(format!("{id}.bad")).exists());
                let Some(q) = q else {
                    println!("{}", line(id, "no such message in Badmail"));
                    code = 1;
                    continue;
                };
                let req = json!({"op": "resend", "instance": q.vs.instance, "id": id});
                let (text, ok) = match control::request(first, req, WAIT) {
                    Ok(v) => first_line(&v),
                    Err(Reach::NotRunning) => match badmail::resend(&q.store, id) {
                        Ok(new) => (
                            format!("back in the Queue as {new} (delivered when mailroot starts)"),
                            true,
                        ),
                        Err(e) => (e.to_string(), false),
                    },
                    Err(e) => return Err(e.to_string()),
                };
                code |= u8::from(!ok);
                println!("{}", line(id, &text));
            }
            Ok(code)
        }
    }
}

fn line(id: &str, text: &str) -> String {
    if id.is_empty() {
        text.to_string()
    } else {
        format!("{id}: {text}")
    }
}

/// The answer's lines: (id, text, changed).
fn lines(v: &Value) -> Vec<(String, String, bool)> {
    v["lines"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|l| {
                    (
                        l["id"].as_str().unwrap_or("").to_string(),
                        l["text"].as_str().unwrap_or("").to_string(),
                        l["changed"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn first_line(v: &Value) -> (String, bool) {
    lines(v)
        .into_iter()
        .next()
        .map(|(_, t, ok)| (t, ok))
        .unwrap_or_else(|| ("no answer".into(), false))
}

fn select_json(sel: &Select) -> Value {
    match sel {
        Select::Id(id) => json!({"id": id}),
        Select::All => json!({"all": true}),
        Select::Domain(d) => json!({"domain": d}),
    }
}

/// `retry`, `hold` or `release` of `sel` in `q`: through the running server, or on the files.
fn change(
    config: &Config,
    q: &Queue,
    op: &str,
    sel: &Select,
) -> Result<Vec<(String, String, bool)>, String> {
    let first = config.servers.first().ok_or("no virtual server")?;
    let mut req = select_json(sel);
    req["op"] = json!(op);
    req["instance"] = json!(q.vs.instance);
    match control::request(first, req, WAIT) {
        Ok(v) => return Ok(lines(&v)),
        Err(Reach::NotRunning) => {}
        Err(e) => return Err(e.to_string()),
    }
    // No server: the files, which it reads at its next start.
    let entries = queue::entries(&q.store).map_err(|e| e.to_string())?;
    let ids: Vec<String> = match sel {
        Select::Id(id) => vec![id.clone()],
        Select::All => entries.iter().map(|e| e.id.clone()).collect(),
        Select::Domain(d) => entries
            .iter()
            .filter(|e| e.pending_in(d))
            .map(|e| e.id.clone())
            .collect(),
    };
    let mut out = Vec::new();
    for id in ids {
        let r = match op {
            "retry" => queue::retry(&q.store, &id),
            "hold" => queue::hold(&q.store, &id),
            _ => queue::release(&q.store, &id),
        }
        .map_err(|e| e.to_string())?;
        let held = queue::entry(&q.store, &id)
            .ok()
            .flatten()
            .is_some_and(|e| e.held());
        let (text, ok) = match (op, r) {
            (_, Change::Missing) => ("no such message in the Queue".to_string(), false),
            ("retry", _) if held => (
                "held: release it to deliver it (mailroot queue release)".into(),
                false,
            ),
            ("retry", _) => ("due as soon as mailroot starts".into(), true),
            ("hold", Change::Made) => ("held".into(), true),
            ("hold", _) => ("held already".into(), false),
            (_, Change::Made) => ("released: due as soon as mailroot starts".into(), true),
            _ => ("not held".into(), false),
        };
        out.push((id, text, ok));
    }
    Ok(out)
}

/// `delete ID [--ndr]` in `q`: (text, done).
fn delete(config: &Config, q: &Queue, id: &str, ndr: bool) -> Result<(String, bool), String> {
    let first = config.servers.first().ok_or("no virtual server")?;
    let req = json!({"op": "delete", "instance": q.vs.instance, "id": id, "ndr": ndr});
    match control::request(first, req, WAIT) {
        Ok(v) => return Ok(first_line(&v)),
        Err(Reach::NotRunning) => {}
        Err(e) => return Err(e.to_string()),
    }
    let r = if ndr {
        queue::fail_pending(&q.store, id)
    } else {
        queue::remove(&q.store, id)
    }
    .map_err(|e| e.to_string())?;
    Ok(match (r, ndr) {
        (Change::Missing, _) => ("no such message in the Queue".into(), false),
        (Change::Made, false) => ("deleted".into(), true),
        (Change::Made, true) => (
            "deleted; the non-delivery report goes to the sender when mailroot starts".into(),
            true,
        ),
        (Change::Unchanged, _) => (
            "nothing pending: it is settled when mailroot starts".into(),
            false,
        ),
    })
}

/// A recipient state's word in listings.
pub(crate) fn status_word(s: Status) -> &'static str {
    match s {
        Status::Pending => "pending",
        Status::Done => "delivered",
        Status::Failed => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn command_lines() {
        assert_eq!(
            parse("queue", &args("list --json")).unwrap(),
            (Command::List { json: true }, None)
        );
        assert_eq!(
            parse("queue", &args("retry --domain example.org --instance 2")).unwrap(),
            (
                Command::Change {
                    op: "retry",
                    select: vec![Select::Domain("example.org".into())]
                },
                Some(2)
            )
        );
        assert_eq!(
            parse("queue", &args("delete A B --ndr")).unwrap().0,
            Command::Delete {
                ids: vec!["A".into(), "B".into()],
                ndr: true
            }
        );
        assert!(parse("queue", &args("delete --all")).is_err());
        assert!(parse("queue", &args("retry")).is_err());
        assert!(parse("queue", &args("show")).is_err());
        assert!(parse("queue", &args("list --bogus")).is_err());
        assert!(parse("badmail", &args("resend")).is_err());
        assert!(parse("queue", &args("frobnicate")).is_err());
        assert!(parse("queue", &[]).is_err());
    }
}
