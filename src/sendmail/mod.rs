//! `mailroot sendmail` (and the binary invoked as `sendmail`): the entry point through which cron,
//! PHP's `mail()`, monitoring scripts and daemons hand mail to `/usr/sbin/sendmail`. It reads the
//! message from standard input and drops it durably into the Pickup folder of the configured
//! virtual server (`mailroot::submit`), the Windows habit on Linux: no network, no credentials. The
//! running server takes it from there; when none runs, it waits there.
//!
//! The file is Pickup's own form (docs/mailroot.md): the envelope as `X-Sender:` / `X-Receiver:`
//! lines, then the message with CRLF line endings, dot-stuffed when the server unstuffs
//! (PickupUnstuffDots), with a From and a Date header added when it has none. Silent on success;
//! on failure one line on standard error and a sysexits code ([`SendmailError::exit_code`]).

pub mod args;
pub mod stdio;

use std::fmt;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

pub use args::Invocation;

use crate::config::{Config, Dirs, VirtualServer};
use crate::mailroot::{pickup_file, submit};
use crate::smtp::params::{MailParams, RcptParams};
use crate::time::Utc;

/// The Debian package's configuration, the third place looked at (docs/linux.md).
pub const PACKAGE_CONFIG: &str = "/etc/mailroot/smtpsvc.ini";
/// The Debian package's MailRoot: used by callers who may not read [`PACKAGE_CONFIG`].
pub const PACKAGE_MAILROOT: &str = "/var/spool/mailroot";
/// The environment variable naming the configuration, the second place looked at.
pub const CONFIG_ENV: &str = "MAILROOT_CONFIG";

/// `mailroot sendmail --help`.
pub const USAGE: &str = "\
Usage: mailroot sendmail [OPTION...] [RECIPIENT...]   (or this binary invoked as `sendmail`)

Reads a message from standard input and drops it into the Pickup folder of the configured virtual
server, which sends it (docs/linux.md). Prints nothing on success.

  -t              also send to the addresses of To, Cc and Bcc (Bcc is removed from the message;
                  on a message with Resent- fields: Resent-To, Resent-Cc and Resent-Bcc)
  -i, -oi         a line holding a single dot is data (without: it ends the message)
  -f ADDR, -r ADDR  the envelope sender (`<>` for none); default: your login name at DefaultDomain
  -F NAME         your full name, for the From header when the message has none
  -N DSN          never, or success,delay,failure: when to report on delivery
  -R full|hdrs, -V ENVID   what a report returns, and the envelope identifier
  -bs             SMTP on standard input and output instead (Laravel's and Symfony Mailer's
                  `sendmail -bs`): the envelope comes with MAIL FROM and RCPT TO, and each message
                  answered 250 is in the Pickup folder
  -C PATH, --config PATH   the configuration; default $MAILROOT_CONFIG, /etc/mailroot/smtpsvc.ini,
                  conf/smtpsvc.ini
  --instance N    the virtual server [SmtpSvc/N] (default: the first)
  --              the end of the options
Accepted and ignored: -odi -odb -odq -oem -oee -om -v -U -n -m -bm -Am -Ac -B TYPE -L TAG.

Exit status: 0 sent to Pickup; 64 a usage error or no recipient; 65 the message cannot be sent;
75 the Pickup folder or standard input failed (try again); 78 the configuration is wrong.
";

/// Headroom over MaxMessageSize while reading standard input: the lines and headers added.
const SLACK: u64 = 64 * 1024;

/// Why nothing was submitted. [`Display`](fmt::Display) gives the line printed after
/// `mailroot sendmail: `.
#[derive(Debug)]
pub enum SendmailError {
    /// A bad command line, or no recipient (EX_USAGE).
    Usage(String),
    /// A message that cannot be sent as it is (EX_DATAERR).
    Data(String),
    /// A configuration that does not load, or names no such virtual server (EX_CONFIG).
    Config(String),
    /// Standard input or the Pickup folder failed (EX_TEMPFAIL: the caller may try again).
    Io(String),
}

impl SendmailError {
    /// The exit status (sysexits.h), which callers such as cron and PHP read.
    pub fn exit_code(&self) -> u8 {
        match self {
            SendmailError::Usage(_) => 64,
            SendmailError::Data(_) => 65,
            SendmailError::Io(_) => 75,
            SendmailError::Config(_) => 78,
        }
    }
}

impl fmt::Display for SendmailError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendmailError::Usage(m)
            | SendmailError::Data(m)
            | SendmailError::Config(m)
            | SendmailError::Io(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for SendmailError {}

/// Where the settings come from (see [`locate`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// A configuration file.
    File(PathBuf),
    /// The package's configuration exists but this user may not read it (it may hold
    /// RoutePassword), and no server has published its settings yet: the package's MailRoot with
    /// the built-in settings.
    Package,
    /// No file anywhere: the built-in defaults, as `mailroot serve` runs without one.
    Defaults,
}

/// The configuration to use: `--config`/`-C`, else `$MAILROOT_CONFIG`, else [`PACKAGE_CONFIG`]
/// when it exists (when this user may not read it: the settings the server published in
/// [`PACKAGE_MAILROOT`], `submit::SETTINGS_FILE`, else [`Located::Package`]), else
/// `conf/smtpsvc.ini` when it exists (as `mailroot serve`), else the built-in defaults.
pub fn locate(explicit: Option<&Path>) -> Located {
    if let Some(p) = explicit {
        return Located::File(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
        return Located::File(PathBuf::from(p));
    }
    // /etc/mailroot is root:mailroot 0750: www-data, or a user's cron, may not even see it. They
    // get the settings the server published for them, else the package's layout.
    let published = || {
        let p = Path::new(PACKAGE_MAILROOT).join(submit::SETTINGS_FILE);
        match std::fs::File::open(&p) {
            Ok(_) => Located::File(p),
            Err(_) => Located::Package,
        }
    };
    match std::fs::metadata(PACKAGE_CONFIG) {
        Ok(_) if std::fs::File::open(PACKAGE_CONFIG).is_ok() => {
            return Located::File(PathBuf::from(PACKAGE_CONFIG));
        }
        Ok(_) => return published(),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return published(),
        Err(_) => {}
    }
    let local = Path::new("conf").join("smtpsvc.ini");
    if local.is_file() {
        return Located::File(local);
    }
    Located::Defaults
}

/// Loads the settings of `located` and picks the virtual server `instance` (default: the first).
pub fn virtual_server(
    located: &Located,
    instance: Option<u32>,
) -> Result<VirtualServer, SendmailError> {
    let exe_dir = || {
        std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."))
    };
    let config = match located {
        Located::File(p) => Config::load(p).map_err(|e| {
            if std::fs::File::open(p).is_err() {
                SendmailError::Io(format!("cannot read the configuration: {e}"))
            } else {
                SendmailError::Config(e.to_string())
            }
        })?,
        Located::Package | Located::Defaults => {
            Config::defaults(&exe_dir()).map_err(|e| SendmailError::Config(e.to_string()))?
        }
    };
    let vs = match instance {
        None => config.servers.first(),
        Some(n) => config.servers.iter().find(|vs| vs.instance == n),
    };
    let Some(vs) = vs else {
        return Err(SendmailError::Config(format!(
            "no virtual server [SmtpSvc/{}] in {}",
            instance.unwrap_or(1),
            match located {
                Located::File(p) => p.display().to_string(),
                _ => "the built-in settings".into(),
            }
        )));
    };
    let mut vs = (**vs).clone();
    if *located == Located::Package {
        vs.dirs = Dirs::under(Path::new(PACKAGE_MAILROOT));
    }
    Ok(vs)
}

/// Reads the message from `input` and writes it into the Pickup folder of the virtual server the
/// invocation names. Returns the file written.
pub fn run(inv: &Invocation, input: &mut dyn BufRead) -> Result<PathBuf, SendmailError> {
    let located = locate(inv.config.as_deref());
    let vs = virtual_server(&located, inv.instance)?;
    let content = prepare(inv, &vs, input)?;
    submit::write(&vs.dirs.pickup, &content).map_err(|e| SendmailError::Io(e.to_string()))
}

/// `-bs`: SMTP on `input` and `output` with the virtual server the invocation names; each message
/// accepted goes into its Pickup folder (see [`stdio`]).
pub fn run_smtp(
    inv: &Invocation,
    input: &mut dyn Read,
    output: &mut dyn std::io::Write,
) -> Result<stdio::Served, SendmailError> {
    let located = locate(inv.config.as_deref());
    let vs = virtual_server(&located, inv.instance)?;
    stdio::serve(&vs, input, output)
}

/// The Pickup file for the message on `input`: envelope lines, added headers, the message.
pub fn prepare(
    inv: &Invocation,
    vs: &VirtualServer,
    input: &mut dyn BufRead,
) -> Result<Vec<u8>, SendmailError> {
    let domain = vs.default_domain.as_str();
    let sender = sender(inv, domain)?;
    let mut mail = MailParams::default();
    for (key, value) in [("RET", &inv.ret), ("ENVID", &inv.envid)] {
        if let Some(v) = value {
            mail.set(key.as_bytes(), v.as_bytes()).map_err(|_| {
                SendmailError::Usage(format!("{key} `{v}` is not valid (see RFC 3461)"))
            })?;
        }
    }
    if let Some(v) = &inv.notify {
        RcptParams::default()
            .set(b"NOTIFY", v.as_bytes())
            .map_err(|_| {
                SendmailError::Usage(format!(
                    "-N `{v}` is not valid: never, or success, delay and failure separated by commas"
                ))
            })?;
    }

    let limit = (vs.max_message_size > 0).then(|| vs.max_message_size.saturating_add(SLACK));
    let raw = read_message(input, inv.ignore_dots, limit)?;
    let sub = pickup_file::submission(&raw, domain, inv.extract)
        .map_err(|e| SendmailError::Data(format!("the message: {e}")))?;

    let mut recipients: Vec<String> = Vec::new();
    for arg in &inv.recipients {
        let list = pickup_file::address_list(arg, domain)
            .map_err(|e| SendmailError::Usage(e.to_string()))?;
        recipients.extend(list);
    }
    recipients.extend(sub.recipients.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    recipients.retain(|r| seen.insert(r.to_ascii_lowercase()));
    if recipients.is_empty() {
        return Err(SendmailError::Usage(if inv.extract {
            "no recipient: the message has no address in To, Cc or Bcc, and none was given".into()
        } else {
            "no recipient: give one or more addresses, or -t to take them from To, Cc and Bcc"
                .into()
        }));
    }
    if recipients.len() > vs.max_recipients as usize {
        return Err(SendmailError::Usage(format!(
            "{} recipients; MaxRecipients is {}",
            recipients.len(),
            vs.max_recipients
        )));
    }

    let mut head = String::new();
    head.push_str(&format!("X-Sender: <{}>", sender.as_deref().unwrap_or("")));
    for (key, value) in [("RET", &inv.ret), ("ENVID", &inv.envid)] {
        if let Some(v) = value {
            head.push_str(&format!(" {key}={v}"));
        }
    }
    head.push_str("\r\n");
    for r in &recipients {
        head.push_str(&format!("X-Receiver: <{r}>"));
        if let Some(n) = &inv.notify {
            head.push_str(&format!(" NOTIFY={}", n.to_ascii_uppercase()));
        }
        head.push_str("\r\n");
    }
    assemble(vs, head.as_bytes(), &sub, sender, inv.full_name.as_deref())
}

/// A Pickup file: the envelope lines `head`, a From header (`sender`'s address, else the login
/// name's, with `full_name`) and a Date header when the message has none, then the message,
/// dot-stuffed when Pickup unstuffs. Fails when the message is over MaxMessageSize.
fn assemble(
    vs: &VirtualServer,
    head: &[u8],
    sub: &pickup_file::Submission,
    sender: Option<String>,
    full_name: Option<&str>,
) -> Result<Vec<u8>, SendmailError> {
    let mut out = Vec::with_capacity(head.len() + sub.message.len() + 256);
    out.extend_from_slice(head);
    if !sub.has_from {
        let address = match sender {
            Some(s) => s,
            None => login_address(&vs.default_domain)?,
        };
        let from = match full_name.filter(|n| !n.is_empty()) {
            Some(name) => format!("From: {} <{address}>\r\n", display_name(name)),
            None => format!("From: {address}\r\n"),
        };
        out.extend_from_slice(from.as_bytes());
    }
    if !sub.has_date {
        out.extend_from_slice(format!("Date: {}\r\n", Utc::now().rfc5322()).as_bytes());
    }
    let start = out.len();
    for l in sub.message.split_inclusive(|b| *b == b'\n') {
        // Pickup takes one leading dot off every line (IIS's rule for dot-stuffed files).
        if vs.delivery.pickup_unstuff_dots && l.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(l);
    }
    let size = (out.len() - start) as u64;
    if vs.max_message_size > 0 && size > vs.max_message_size {
        return Err(SendmailError::Data(format!(
            "the message is {size} bytes; MaxMessageSize is {}",
            vs.max_message_size
        )));
    }
    Ok(out)
}

/// The envelope sender: `-f`/`-r` (`<>` or empty for the null sender; a bare name gets the
/// default domain), else the login name at the default domain, as every sendmail does. `None` is
/// the null sender.
fn sender(inv: &Invocation, domain: &str) -> Result<Option<String>, SendmailError> {
    let Some(given) = inv.sender.as_deref() else {
        return login_address(domain).map(Some);
    };
    let given = given.trim();
    if given.is_empty() || given == "<>" {
        return Ok(None);
    }
    match pickup_file::address_list(given, domain) {
        Ok(mut list) if list.len() == 1 => Ok(list.pop()),
        _ => Err(SendmailError::Usage(format!(
            "-f `{given}` is not a valid address"
        ))),
    }
}

/// `login@domain` for the user running this process.
fn login_address(domain: &str) -> Result<String, SendmailError> {
    let login = crate::os::login_name().ok_or_else(|| {
        SendmailError::Usage(
            "cannot tell which user runs this (no passwd entry, no $LOGNAME): give the sender with -f"
                .into(),
        )
    })?;
    match pickup_file::address_list(&login, domain) {
        Ok(mut list) if list.len() == 1 => list.pop().ok_or_else(|| unreachable_sender(&login)),
        _ => Err(unreachable_sender(&login)),
    }
}

fn unreachable_sender(login: &str) -> SendmailError {
    SendmailError::Usage(format!(
        "the user name `{login}` is not a valid address: give the sender with -f"
    ))
}

/// A display name for a From header: as it is when it is plain words, else a quoted string, and an
/// RFC 2047 encoded word when it is not ASCII.
fn display_name(name: &str) -> String {
    use base64ct::Encoding;
    if !name.is_ascii() {
        return format!(
            "=?UTF-8?B?{}?=",
            base64ct::Base64::encode_string(name.as_bytes())
        );
    }
    let plain = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || " !#$%&'*+-/=?^_`{|}~".contains(c));
    if plain && !name.trim().is_empty() && name.trim() == name {
        name.to_string()
    } else {
        let escaped: String = name
            .chars()
            .filter(|c| !c.is_ascii_control())
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        format!("\"{escaped}\"")
    }
}

/// Reads standard input: up to a line holding a single `.` (unless `ignore_dots`), or its end. A
/// first line `From ` (an mbox separator) is dropped, as sendmail does. Fails past `limit` bytes.
fn read_message(
    input: &mut dyn BufRead,
    ignore_dots: bool,
    limit: Option<u64>,
) -> Result<Vec<u8>, SendmailError> {
    let mut out = Vec::new();
    let mut line = Vec::new();
    let mut first = true;
    let too_large = |limit: u64| {
        SendmailError::Data(format!(
            "the message is larger than MaxMessageSize ({} bytes)",
            limit - SLACK
        ))
    };
    loop {
        line.clear();
        let room = limit.map_or(u64::MAX, |l| (l + 1).saturating_sub(out.len() as u64));
        let n = (&mut *input)
            .take(room)
            .read_until(b'\n', &mut line)
            .map_err(|e| SendmailError::Io(format!("cannot read standard input: {e}")))?;
        if n == 0 {
            if let Some(l) = limit
                && out.len() as u64 > l
            {
                return Err(too_large(l));
            }
            break;
        }
        let bare = line.strip_suffix(b"\n").unwrap_or(&line);
        let bare = bare.strip_suffix(b"\r").unwrap_or(bare);
        if !ignore_dots && bare == b"." {
            break;
        }
        if std::mem::take(&mut first) && line.starts_with(b"From ") {
            continue;
        }
        out.extend_from_slice(&line);
        if let Some(l) = limit
            && out.len() as u64 > l
        {
            return Err(too_large(l));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vs() -> VirtualServer {
        crate::testutil::test_server()
    }

    fn inv(line: &str) -> Invocation {
        let a: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        args::parse(&a).unwrap()
    }

    fn file(line: &str, input: &str) -> String {
        let mut r = input.as_bytes();
        let out = prepare(&inv(line), &vs(), &mut r).unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8(out).unwrap()
    }

    fn fails(line: &str, input: &str) -> SendmailError {
        let mut r = input.as_bytes();
        match prepare(&inv(line), &vs(), &mut r) {
            Ok(f) => panic!("{line}: {}", String::from_utf8_lossy(&f)),
            Err(e) => e,
        }
    }

    /// What Pickup makes of the file.
    fn picked(f: &str) -> pickup_file::PickupMessage {
        pickup_file::parse(f.as_bytes(), true).unwrap_or_else(|e| panic!("{e}\n{f}"))
    }

    fn rcpts(m: &pickup_file::PickupMessage) -> Vec<&str> {
        m.envelope
            .recipients
            .iter()
            .map(|r| r.address.as_str())
            .collect()
    }

    #[test]
    fn php_style_takes_to_cc_and_bcc_and_pickup_removes_bcc() {
        let f = file(
            "-t -i -f app@example.org",
            "From: App <app@example.org>\nTo: a@x.test\nCc: B <b@x.test>, root\nBcc: c@x.test\nSubject: hi\n\nbody\n.\nmore\n",
        );
        assert!(f.starts_with("X-Sender: <app@example.org>\r\nX-Receiver: <a@x.test>\r\nX-Receiver: <b@x.test>\r\nX-Receiver: <root@local.test>\r\nX-Receiver: <c@x.test>\r\n"), "{f}");
        let m = picked(&f);
        assert_eq!(m.envelope.sender, "app@example.org");
        assert_eq!(
            rcpts(&m),
            ["a@x.test", "b@x.test", "root@local.test", "c@x.test"]
        );
        let text = String::from_utf8(m.message).unwrap();
        assert!(!text.contains("Bcc"), "{text}");
        assert!(text.contains("\r\n\r\nbody\r\n.\r\nmore\r\n"), "{text:?}");
        assert!(text.starts_with("Date: "), "a Date is added: {text}");
    }

    #[test]
    fn dash_t_on_a_resent_message_takes_the_resent_recipients_only() {
        let f = file(
            "-t -i",
            "Resent-From: ops@example.org\nResent-To: new@x.test\nResent-Bcc: hidden@x.test\nFrom: a@example.org\nTo: first@x.test\nBcc: old@x.test\nSubject: fwd\n\nbody\n",
        );
        let m = picked(&f);
        assert_eq!(rcpts(&m), ["new@x.test", "hidden@x.test"]);
        let text = String::from_utf8(m.message).unwrap();
        assert!(
            !text.contains("Resent-Bcc") && !text.contains("hidden"),
            "{text}"
        );
        assert!(text.contains("Resent-To: new@x.test\r\n"), "{text}");
        // A Resent- field of another kind (Resent-Date alone) still marks a resent message: To is
        // the first sending's, so there is no recipient.
        let e = fails(
            "-t",
            "Resent-Date: Fri, 4 Dec 2026 10:00:00 +0000\nTo: first@x.test\n\nx\n",
        );
        assert!(matches!(e, SendmailError::Usage(_)), "{e}");
        // Without -t, a Resent-Bcc stays for Pickup (which sends the message as it is).
        let f = file("r@x.test", "Resent-Bcc: keep@x.test\nSubject: s\n\nx\n");
        assert!(f.contains("Resent-Bcc: keep@x.test"), "{f}");
    }

    #[test]
    fn cron_style_gets_a_from_with_the_full_name_and_a_qualified_recipient() {
        let f = file(
            "-FCronDaemon -i -B8BITMIME -oem root",
            "To: root\nSubject: Cron <root@h> run-parts\n\n.hidden\n",
        );
        let m = picked(&f);
        assert_eq!(rcpts(&m), ["root@local.test"]);
        let text = String::from_utf8(m.message).unwrap();
        assert!(text.starts_with("From: CronDaemon <"), "{text}");
        assert!(text.contains("\r\n\r\n.hidden\r\n"), "dot kept: {text:?}");
    }

    #[test]
    fn a_lone_dot_ends_the_input_unless_i() {
        let m = picked(&file("-f s@x.test r@x.test", "Subject: a\n\none\n.\ntwo\n"));
        let t = String::from_utf8(m.message).unwrap();
        assert!(
            t.ends_with("\r\n\r\none\r\n") && !t.contains("two"),
            "{t:?}"
        );
        let m = picked(&file(
            "-f s@x.test r@x.test",
            "Subject: a\r\n\r\none\r\n.\r\ntwo\r\n",
        ));
        assert!(!String::from_utf8(m.message).unwrap().contains("two"));
        let m = picked(&file(
            "-oi -f s@x.test r@x.test",
            "Subject: a\n\none\n.\ntwo\n",
        ));
        let t = String::from_utf8(m.message).unwrap();
        assert!(t.ends_with("one\r\n.\r\ntwo\r\n"), "{t:?}");
    }

    #[test]
    fn both_command_line_and_header_recipients_once_each() {
        let f = file(
            "-t -f s@x.test a@x.test,b@x.test",
            "To: A@x.test, c@x.test\n\nx\n",
        );
        assert_eq!(rcpts(&picked(&f)), ["a@x.test", "b@x.test", "c@x.test"]);
    }

    #[test]
    fn envelope_lines_in_the_message_are_not_taken_for_the_envelope() {
        let f = file(
            "-f s@x.test r@x.test",
            "X-Sender: evil@x.test\nX-Receiver: more@x.test\nSubject: s\n\nx\n",
        );
        let m = picked(&f);
        assert_eq!(m.envelope.sender, "s@x.test");
        assert_eq!(rcpts(&m), ["r@x.test"]);
    }

    #[test]
    fn null_sender_dsn_options_and_mbox_line() {
        let f = file(
            "-f <> -N success,failure -R hdrs -V ID1 r@x.test",
            "From someone Sat Jan  3 01:05:34 1996\nFrom: a@x.test\nDate: x\n\nb\n",
        );
        assert!(f.starts_with("X-Sender: <> RET=hdrs ENVID=ID1\r\nX-Receiver: <r@x.test> NOTIFY=SUCCESS,FAILURE\r\nFrom: a@x.test\r\nDate: x\r\n"), "{f}");
        let m = picked(&f);
        assert_eq!(m.envelope.sender, "");
    }

    #[test]
    fn headerless_input_gets_from_and_date() {
        let f = file("-F Jürgen -f s@x.test r@x.test", "just text\n");
        let m = picked(&f);
        let t = String::from_utf8(m.message).unwrap();
        assert!(
            t.starts_with("From: =?UTF-8?B?SsO8cmdlbg==?= <s@x.test>\r\nDate: "),
            "{t}"
        );
        assert!(t.ends_with("\r\n\r\njust text\r\n"), "{t:?}");
        assert_eq!(display_name("Cron Daemon"), "Cron Daemon");
        assert_eq!(display_name("a \"b\", c"), "\"a \\\"b\\\", c\"");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = fails("-i", "To: a@x.test\n\nx\n");
        assert_eq!(e.exit_code(), 64);
        assert!(e.to_string().contains("no recipient"), "{e}");
        let e = fails("-t -i", "Subject: none\n\nx\n");
        assert!(e.to_string().contains("no recipient"), "{e}");
        let e = fails("-f s@x.test a@@b", "x\n");
        assert!(e.to_string().contains("a@@b"), "{e}");
        let e = fails("-f @@ r@x.test", "x\n");
        assert!(e.to_string().contains("-f `@@`"), "{e}");
        let e = fails("-N sometimes -f s@x.test r@x.test", "x\n");
        assert!(e.to_string().contains("-N `sometimes`"), "{e}");
        let big = "x".repeat(2_200_000);
        let e = fails("-f s@x.test r@x.test", &big);
        assert_eq!(e.exit_code(), 65, "{e}");
    }
}
