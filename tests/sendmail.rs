//! `mailroot sendmail` end to end (issue 14), with the real binary, a real server and a next hop on
//! loopback: what PHP's `mail()` runs (`sendmail -t -i`, recipients in To/Cc/Bcc), what Debian's cron
//! runs (`sendmail -FCronDaemon -i -B8BITMIME -oem user`, exactly), `-f`, the lone-dot rule with
//! and without `-i`, the binary invoked through a link named `sendmail`, a message dropped while no
//! server runs, `-bs` (SMTP on the pipes, as Laravel and Symfony Mailer run it), and the failures: a Pickup folder that cannot be written, no recipient, an unknown
//! option. Delivery is checked at the next hop.

mod common;
use common::sink::{Delivered, Sink};
use common::*;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The outcome of one run.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `program args…` with `stdin`, `$MAILROOT_CONFIG` set to `config` (None: unset), in `cwd`.
fn run(program: &Path, args: &[&str], stdin: &str, config: Option<&Path>, cwd: &Path) -> Out {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match config {
        Some(c) => cmd.env("MAILROOT_CONFIG", c),
        None => cmd.env_remove("MAILROOT_CONFIG"),
    };
    let mut child = cmd.spawn().expect("run mailroot");
    if let Some(mut input) = child.stdin.take() {
        // A failing run may exit before reading: a broken pipe is its business.
        let _ = input.write_all(stdin.as_bytes());
    }
    let out = child.wait_with_output().expect("wait");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A server whose remote mail goes to `sink`, taking Pickup files quickly.
fn server(sink: &Sink) -> Server {
    Builder::new()
        .smart_host(sink.addr.port())
        .key("PickupSettleTime", "100ms")
        .start()
}

fn config_of(srv: &Server) -> PathBuf {
    srv.dir.path().join("smtpsvc.ini")
}

/// `mailroot sendmail args…` on `srv`'s configuration (through `$MAILROOT_CONFIG`, as a caller that
/// cannot pass options would), expecting silent success.
fn send(srv: &Server, args: &[&str], stdin: &str) {
    let mut all = vec!["sendmail"];
    all.extend_from_slice(args);
    let out = run(
        Path::new(bin()),
        &all,
        stdin,
        Some(&config_of(srv)),
        srv.dir.path(),
    );
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (Some(0), "", ""),
        "sendmail {args:?} is silent and succeeds"
    );
}

/// A configuration in `dir` (no server runs) whose Pickup folder is `pickup`.
fn config_with_pickup(dir: &TempDir, pickup: &Path) -> PathBuf {
    let conf = dir.path().join("smtpsvc.ini");
    fs::write(
        &conf,
        Builder::new()
            .key("PickupDirectory", pickup.to_str().expect("utf-8"))
            .ini(),
    )
    .expect("config");
    conf
}

fn one(sink: &Sink, srv: &Server) -> Delivered {
    let m = sink.wait_messages(1);
    assert_eq!(m.len(), 1, "{}", srv.log_text());
    m.into_iter().next().expect("one message")
}

/// The login name the binary will use as the default sender.
fn login() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn php_mail_style_goes_to_to_cc_and_bcc_without_the_bcc_header() {
    let sink = Sink::start_default();
    let srv = server(&sink);
    // PHP: sendmail_path = "/usr/sbin/sendmail -t -i"; LF line endings, headers as mail() writes them.
    send(
        &srv,
        &["-t", "-i"],
        "To: alice@remote.test\nSubject: Order 42\nFrom: Shop <shop@local.test>\nCc: bob@remote.test\nBcc: audit@remote.test\nMIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\n\nThanks for your order.\n.\nA line with a dot above.\n",
    );
    let m = one(&sink, &srv);
    let mut rcpts = m.rcpt_addrs();
    rcpts.sort();
    assert_eq!(
        rcpts,
        ["alice@remote.test", "audit@remote.test", "bob@remote.test"]
    );
    assert_eq!(m.sender_addr(), format!("{}@local.test", login()));
    let t = m.text();
    assert!(!t.contains("Bcc") && !t.contains("audit"), "{t}");
    assert!(t.contains("\r\nFrom: Shop <shop@local.test>\r\n"), "{t}");
    assert!(t.contains("\r\nDate: "), "a Date is added: {t}");
    assert!(
        t.contains("\r\n\r\nThanks for your order.\r\n.\r\nA line with a dot above.\r\n"),
        "-i: the lone dot is data; LF became CRLF: {t:?}"
    );
    assert_eq!(m.subject(), "Order 42");
}

#[test]
fn debian_cron_style_is_delivered_with_its_output_intact() {
    let sink = Sink::start_default();
    let srv = server(&sink);
    // Debian's cron (config.h MAILFMT) runs exactly this, as the crontab's owner, MAILTO last.
    send(
        &srv,
        &[
            "-FCronDaemon",
            "-i",
            "-B8BITMIME",
            "-oem",
            "ops@remote.test",
        ],
        "From: root (Cron Daemon)\nTo: ops@remote.test\nSubject: Cron <root@web1> /usr/local/bin/backup\nMIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\nX-Cron-Env: <SHELL=/bin/sh>\nX-Cron-Env: <HOME=/root>\n\nbackup: 3 files\n.\n..two dots\n.one dot\nfin\n",
    );
    let m = one(&sink, &srv);
    assert_eq!(m.rcpt_addrs(), ["ops@remote.test"]);
    assert_eq!(m.sender_addr(), format!("{}@local.test", login()));
    let t = m.text();
    assert!(t.contains("\r\nFrom: root (Cron Daemon)\r\n"), "{t}");
    assert!(
        t.ends_with("\r\n\r\nbackup: 3 files\r\n.\r\n..two dots\r\n.one dot\r\nfin\r\n"),
        "every dot kept (PickupUnstuffDots = 1 is undone by the writer): {t:?}"
    );
    assert_eq!(m.subject(), "Cron <root@web1> /usr/local/bin/backup");
}

#[test]
fn dash_f_sets_the_envelope_sender_and_bare_names_get_the_default_domain() {
    let sink = Sink::start_default();
    let srv = server(&sink);
    send(
        &srv,
        &["-f", "bounces@local.test", "a@remote.test, b@remote.test"],
        "Subject: one\n\nx\n",
    );
    let m = one(&sink, &srv);
    assert_eq!(m.sender_addr(), "bounces@local.test");
    assert_eq!(m.rcpt_addrs(), ["a@remote.test", "b@remote.test"]);
    let t = m.text();
    assert!(
        t.contains("\r\nFrom: bounces@local.test\r\n"),
        "a From for a message without one: {t}"
    );

    send(
        &srv,
        &["-fjoined", "-FJoe Bloggs", "c@remote.test"],
        "Subject: two\n\nx\n",
    );
    let m = sink.wait_messages(2);
    let two = m
        .iter()
        .find(|m| m.subject() == "two")
        .expect("second message");
    assert_eq!(two.sender_addr(), "joined@local.test");
    assert!(
        two.text()
            .contains("\r\nFrom: Joe Bloggs <joined@local.test>\r\n"),
        "{}",
        two.text()
    );
}

#[test]
fn without_dash_i_a_lone_dot_ends_the_message() {
    let sink = Sink::start_default();
    let srv = server(&sink);
    send(
        &srv,
        &["r@remote.test"],
        "Subject: dots\r\n\r\nbefore\r\n.\r\nafter: never read\r\n",
    );
    let t = one(&sink, &srv).text();
    assert!(t.ends_with("\r\n\r\nbefore\r\n"), "{t:?}");
    assert!(!t.contains("after"), "{t:?}");
}

#[test]
fn invoked_through_a_link_named_sendmail() {
    let sink = Sink::start_default();
    let srv = server(&sink);
    let dir = TempDir::new("sendmail-link");
    let link = dir.path().join("sendmail");
    std::os::unix::fs::symlink(bin(), &link).expect("symlink");
    let out = run(
        &link,
        &["-t", "-i"],
        "To: linked@remote.test\nSubject: via link\n\nx\n",
        Some(&config_of(&srv)),
        dir.path(),
    );
    assert_eq!((out.code, out.stderr.as_str()), (Some(0), ""));
    let m = one(&sink, &srv);
    assert_eq!(m.rcpt_addrs(), ["linked@remote.test"]);
    // And `-C`, sendmail's own configuration flag, instead of the environment.
    let conf = config_of(&srv);
    let out = run(
        &link,
        &["-C", conf.to_str().expect("utf-8"), "-t"],
        "To: flag@remote.test\nSubject: via -C\n\nx\n",
        None,
        dir.path(),
    );
    assert_eq!((out.code, out.stderr.as_str()), (Some(0), ""));
    assert!(sink.wait_until(|s| s.delivered_to("flag@remote.test") == 1));
}

#[test]
fn a_message_dropped_while_no_server_runs_waits_and_is_sent_at_start() {
    let sink = Sink::start_default();
    let dir = TempDir::new("sendmail-offline");
    let ini = Builder::new()
        .smart_host(sink.addr.port())
        .key("PickupSettleTime", "100ms")
        .ini();
    let conf = dir.path().join("smtpsvc.ini");
    fs::write(&conf, &ini).expect("config");
    let pickup = dir.path().join("mailroot").join("Pickup");
    fs::create_dir_all(&pickup).expect("Pickup");
    // A crashed writer's temporary file, an hour old by its identifier; and an application's own.
    let stale = pickup.join(".0000000000001ABCD000001.tmp");
    fs::write(&stale, "X-Sender: a@local.test\r\n").expect("stale");
    fs::write(pickup.join(".upload.tmp"), "x").expect("foreign");

    let out = run(
        Path::new(bin()),
        &[
            "sendmail",
            "--config",
            conf.to_str().expect("utf-8"),
            "later@remote.test",
        ],
        "Subject: queued offline\n\nx\n",
        None,
        dir.path(),
    );
    assert_eq!((out.code, out.stderr.as_str()), (Some(0), ""));
    let mut names = names(&pickup);
    names.sort();
    assert_eq!(names.len(), 3, "{names:?}");
    let eml: Vec<&String> = names.iter().filter(|n| n.ends_with(".eml")).collect();
    assert_eq!(
        eml.len(),
        1,
        "one finished file, no temporary one left: {names:?}"
    );
    let text = fs::read_to_string(pickup.join(eml[0])).expect("read");
    assert!(
        text.starts_with(&format!(
            "X-Sender: <{}@local.test>\r\nX-Receiver: <later@remote.test>\r\n",
            login()
        )),
        "{text}"
    );

    let srv = Server::start_in(dir, &ini);
    let m = one(&sink, &srv);
    assert_eq!(m.subject(), "queued offline");
    assert!(
        !stale.exists(),
        "the crashed writer's file is swept at start"
    );
    assert!(srv.folder("Pickup").join(".upload.tmp").exists());
}

#[test]
fn a_pickup_folder_that_cannot_be_written_is_exit_75_naming_it() {
    let dir = TempDir::new("sendmail-unwritable");
    let missing = dir.path().join("no-such-folder");
    let conf = config_with_pickup(&dir, &missing);
    let out = run(
        Path::new(bin()),
        &["sendmail", "-t", "-i"],
        "To: a@remote.test\n\nx\n",
        Some(&conf),
        dir.path(),
    );
    assert_eq!(out.code, Some(75), "{}", out.stderr);
    assert!(
        out.stderr.starts_with("mailroot sendmail: cannot create ")
            && out.stderr.contains("no-such-folder"),
        "{}",
        out.stderr
    );

    // A folder without write permission (root writes anyway: only checked as another user).
    if login() != "root" {
        let pickup = dir.path().join("Pickup");
        fs::create_dir_all(&pickup).expect("Pickup");
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&pickup, fs::Permissions::from_mode(0o500)).expect("chmod");
        fs::write(
            &conf,
            Builder::new()
                .key("PickupDirectory", pickup.to_str().expect("utf-8"))
                .ini(),
        )
        .expect("config");
        let out = run(
            Path::new(bin()),
            &["sendmail", "a@remote.test"],
            "x\n",
            Some(&conf),
            dir.path(),
        );
        fs::set_permissions(&pickup, fs::Permissions::from_mode(0o700)).expect("chmod back");
        assert_eq!(out.code, Some(75), "{}", out.stderr);
        assert!(out.stderr.contains("Permission denied"), "{}", out.stderr);
    }
}

#[test]
fn usage_errors_are_exit_64_and_say_what_is_wrong() {
    let dir = TempDir::new("sendmail-usage");
    let conf = dir.path().join("smtpsvc.ini");
    fs::write(&conf, Builder::new().ini()).expect("config");
    let bin = Path::new(bin());
    let pickup = dir.path().join("mailroot").join("Pickup");

    let out = run(
        bin,
        &["sendmail", "-i"],
        "Subject: x\n\nx\n",
        Some(&conf),
        dir.path(),
    );
    assert_eq!(out.code, Some(64), "{}", out.stderr);
    assert!(
        out.stderr.starts_with("mailroot sendmail: no recipient"),
        "{}",
        out.stderr
    );
    let out = run(
        bin,
        &["sendmail", "-t"],
        "Subject: x\n\nx\n",
        Some(&conf),
        dir.path(),
    );
    assert_eq!(out.code, Some(64), "{}", out.stderr);
    assert!(out.stderr.contains("no recipient"), "{}", out.stderr);
    let out = run(
        bin,
        &["sendmail", "-Q", "a@b.test"],
        "x\n",
        Some(&conf),
        dir.path(),
    );
    assert_eq!(out.code, Some(64), "{}", out.stderr);
    assert!(out.stderr.contains("unknown option `-Q`"), "{}", out.stderr);
    let out = run(
        bin,
        &["sendmail", "not an address"],
        "x\n",
        Some(&conf),
        dir.path(),
    );
    assert_eq!(out.code, Some(64), "{}", out.stderr);
    assert!(out.stderr.contains("not an address"), "{}", out.stderr);
    assert!(
        names(&pickup).is_empty(),
        "nothing is written when the command fails"
    );
}

/// Runs `program args…` as the user and group `id` (no supplementary groups) under `umask 077`,
/// with `$MAILROOT_CONFIG` set to `config`.
fn as_user(id: u32, config: &Path, program: &str, args: &[&str], stdin: &str) -> Out {
    let ids = [format!("--reuid={id}"), format!("--regid={id}")];
    let mut all: Vec<&str> = vec![&ids[0], &ids[1], "--clear-groups", "sh", "-c"];
    all.extend(["umask 077; exec \"$0\" \"$@\"", program]);
    all.extend_from_slice(args);
    run(
        Path::new("setpriv"),
        &all,
        stdin,
        Some(config),
        Path::new("/"),
    )
}

/// The Debian package's Pickup folder (docs/linux.md): owned by the server's account, mode 3733
/// (sticky, set-group-ID, writable and enterable by all, listable and readable by none). Another
/// user's `sendmail`, even under `umask 077`, leaves a file the server's account can read and
/// rename and that other users can neither list nor read.
#[test]
fn another_users_file_in_a_3733_pickup_is_readable_by_the_server_only() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if login() != "root" {
        eprintln!("SKIPPED: needs root to act as three users");
        return;
    }
    // nobody (65534) stands in for the server's account, daemon (1) for www-data, bin (2) for a
    // third user.
    let (server, writer, other) = (65534u32, 1u32, 2u32);
    let dir = TempDir::new("sendmail-3733");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let pickup = dir.path().join("Pickup");
    fs::create_dir(&pickup).expect("Pickup");
    let status = Command::new("chown")
        .arg(format!("{server}:{server}"))
        .arg(&pickup)
        .status()
        .expect("chown");
    assert!(status.success());
    fs::set_permissions(&pickup, fs::Permissions::from_mode(0o3733)).expect("chmod 3733");
    let conf = config_with_pickup(&dir, &pickup);
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o644)).expect("chmod");

    let out = as_user(
        writer,
        &conf,
        bin(),
        &["sendmail", "-i", "r@remote.test"],
        "Subject: from another user\n\nsecret\n",
    );
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (Some(0), ""),
        "{}",
        out.stdout
    );
    let files: Vec<PathBuf> = entries(&pickup);
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];
    let m = fs::metadata(file).expect("stat");
    assert_eq!(
        (m.uid(), m.gid(), m.permissions().mode() & 0o7777),
        (writer, server, 0o640),
        "the writer's file, in the folder's group, readable by that group only (despite umask 077)"
    );
    let text = fs::read_to_string(file).expect("read");
    assert!(
        text.starts_with("X-Sender: <daemon@local.test>\r\n"),
        "{text}"
    );

    let path = file.to_str().expect("utf-8");
    let server_reads = as_user(server, &conf, "cat", &[path], "");
    assert_eq!(server_reads.code, Some(0), "{}", server_reads.stderr);
    assert!(server_reads.stdout.contains("secret"));
    let other_reads = as_user(other, &conf, "cat", &[path], "");
    assert_ne!(
        other_reads.code,
        Some(0),
        "a third user reads: {}",
        other_reads.stdout
    );
    let dir_s = pickup.to_str().expect("utf-8");
    let writer_lists = as_user(writer, &conf, "ls", &[dir_s], "");
    assert_ne!(
        writer_lists.code,
        Some(0),
        "the folder is listable: {}",
        writer_lists.stdout
    );
    let claimed = format!("{dir_s}/claimed.claimed");
    let server_claims = as_user(server, &conf, "mv", &[path, &claimed], "");
    assert_eq!(server_claims.code, Some(0), "{}", server_claims.stderr);
    let server_removes = as_user(server, &conf, "rm", &[&claimed], "");
    assert_eq!(server_removes.code, Some(0), "{}", server_removes.stderr);
}

/// One `sendmail -bs` conversation over the child's pipes, line by line as Laravel's and Symfony
/// Mailer's SMTP client holds it: each command waits for its reply.
struct Bs {
    child: std::process::Child,
    input: std::process::ChildStdin,
    output: std::io::BufReader<std::process::ChildStdout>,
}

impl Bs {
    fn start(srv: &Server, args: &[&str]) -> Bs {
        let mut child = Command::new(bin())
            .arg("sendmail")
            .args(args)
            .env("MAILROOT_CONFIG", config_of(srv))
            .current_dir(srv.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run mailroot sendmail -bs");
        let input = child.stdin.take().expect("stdin");
        let output = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        Bs {
            child,
            input,
            output,
        }
    }

    /// The next reply, all its lines.
    fn reply(&mut self) -> String {
        use std::io::BufRead;
        let mut all = String::new();
        for _ in 0..64 {
            let mut line = String::new();
            let n = self.output.read_line(&mut line).expect("read a reply");
            assert!(n > 0, "the pipe closed before a reply; so far: {all:?}");
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        all
    }

    /// Writes `text` and returns the reply.
    fn say(&mut self, text: &str) -> String {
        self.input.write_all(text.as_bytes()).expect("write");
        self.input.flush().expect("flush");
        self.reply()
    }

    /// After QUIT: the exit status and standard error.
    fn finish(self) -> (Option<i32>, String) {
        drop(self.input);
        let out = self.child.wait_with_output().expect("wait");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// `sendmail -bs -i` (Laravel's default; Symfony Mailer's is `-bs`): the same session as the
/// server's on a pipe, without STARTTLS or AUTH, relaying allowed for the local user; each message
/// answered 250 is in Pickup with its envelope (DSN parameters too) and the Message-ID the 250
/// names, and goes out as it came in (dot-unstuffed once, not twice).
#[test]
fn dash_bs_speaks_smtp_on_a_pipe_as_laravel_and_symfony_do() {
    let sink = Sink::start_default();
    let srv = server(&sink);
    let mut bs = Bs::start(&srv, &["-bs", "-i"]);
    let greeting = bs.reply();
    assert!(greeting.starts_with("220 "), "{greeting}");
    let ehlo = bs.say("EHLO app.local.test\r\n");
    assert!(
        ehlo.starts_with("250-") && ehlo.contains("250-PIPELINING"),
        "{ehlo}"
    );
    assert!(
        !ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "a pipe has no TLS to start and nothing to log in to: {ehlo}"
    );
    assert!(
        bs.say("MAIL FROM:<app@local.test> RET=HDRS\r\n")
            .starts_with("250 ")
    );
    assert!(
        bs.say("RCPT TO:<alice@remote.test> NOTIFY=FAILURE\r\n")
            .starts_with("250 ")
    );
    assert!(bs.say("RCPT TO:<bob@remote.test>\r\n").starts_with("250 "));
    assert!(bs.say("DATA\r\n").starts_with("354 "));
    let queued = bs.say(
        "From: App <app@local.test>\r\nTo: alice@remote.test\r\nSubject: Welcome\r\n\r\nHello.\r\n..a line that began with a dot\r\n.\r\n",
    );
    assert!(queued.starts_with("250 2.6.0 <"), "{queued}");
    let message_id = &queued[10..queued.find('>').expect("an id") + 1];

    // A second message in the same conversation (Symfony keeps the process for a batch), HELO-less
    // null sender after RSET.
    assert!(bs.say("RSET\r\n").starts_with("250 "));
    assert!(bs.say("MAIL FROM:<>\r\n").starts_with("250 "));
    assert!(
        bs.say("RCPT TO:<carol@remote.test>\r\n")
            .starts_with("250 ")
    );
    assert!(bs.say("DATA\r\n").starts_with("354 "));
    assert!(
        bs.say("Subject: Second\r\n\r\nTwo.\r\n.\r\n")
            .starts_with("250 2.6.0 ")
    );
    assert!(bs.say("QUIT\r\n").starts_with("221 "));
    let (code, stderr) = bs.finish();
    assert_eq!((code, stderr.as_str()), (Some(0), ""));

    let all = sink.wait_messages(2);
    assert_eq!(all.len(), 2, "{}", srv.log_text());
    let first = all
        .iter()
        .find(|m| m.subject() == "Welcome")
        .expect("the first message");
    assert_eq!(first.sender_addr(), "app@local.test");
    assert!(first.mail_from.contains("RET=HDRS"), "{}", first.mail_from);
    assert_eq!(first.rcpt_addrs(), ["alice@remote.test", "bob@remote.test"]);
    assert!(
        first.rcpts[0].contains("NOTIFY=FAILURE"),
        "{:?}",
        first.rcpts
    );
    let t = first.text();
    assert!(
        t.contains(&format!("\r\nMessage-ID: {message_id}\r\n")),
        "the Message-ID of the 250 reply: {t}"
    );
    assert!(
        t.contains("\r\n\r\nHello.\r\n.a line that began with a dot\r\n"),
        "{t:?}"
    );
    let second = all
        .iter()
        .find(|m| m.subject() == "Second")
        .expect("the second message");
    assert_eq!(second.sender_addr(), "");
    assert_eq!(second.rcpt_addrs(), ["carol@remote.test"]);
    assert!(second.text().contains("\r\nDate: "), "{}", second.text());
}

/// `-bs` when the Pickup folder cannot be written: the message gets 452 (the caller may try again),
/// the conversation goes on, the reason is on standard error; a conversation cut inside DATA
/// writes nothing and exits 75.
#[test]
fn dash_bs_answers_452_when_pickup_fails_and_75_when_cut_off() {
    let dir = TempDir::new("sendmail-bs-fail");
    let pickup = dir.path().join("no-such-folder");
    let conf = config_with_pickup(&dir, &pickup);
    let bs = |conversation: &str| {
        run(
            Path::new(bin()),
            &["sendmail", "-bs"],
            conversation,
            Some(&conf),
            dir.path(),
        )
    };
    let out = bs(
        "HELO a\r\nMAIL FROM:<a@local.test>\r\nRCPT TO:<b@remote.test>\r\nDATA\r\nSubject: x\r\n\r\nx\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("\r\n452 4.3.1 "), "{}", out.stdout);
    assert!(out.stdout.contains("\r\n221 "), "{}", out.stdout);
    assert!(out.stderr.contains("no-such-folder"), "{}", out.stderr);

    fs::create_dir(&pickup).expect("Pickup");
    let out = bs(
        "HELO a\r\nMAIL FROM:<a@local.test>\r\nRCPT TO:<b@remote.test>\r\nDATA\r\nSubject: x\r\n\r\nhalf a message",
    );
    assert_eq!(out.code, Some(75), "{}", out.stdout);
    assert!(out.stderr.contains("inside a message"), "{}", out.stderr);
    assert!(entries(&pickup).is_empty(), "{:?}", entries(&pickup));
}

/// The settings the server publishes for `sendmail` users who may not read its configuration
/// (`<MailRoot>/mailroot.submission.ini`): readable by all, only the submission keys (no secret,
/// no file name), absolute paths, a file that loads as a configuration (so `sendmail -C` on it
/// qualifies a bare name with the configured DefaultDomain and drops into the configured Pickup),
/// rewritten at a reload.
#[test]
fn the_server_publishes_its_submission_settings_and_sendmail_can_use_them() {
    let sink = Sink::start_default();
    let srv = Builder::new()
        .smart_host(sink.addr.port())
        .key("PickupSettleTime", "100ms")
        .key("DefaultDomain", "corp.test")
        .key("PickupDirectory", "drop-here")
        .section(
            "\n[SmtpSvc/1/Domain/partner.test]\nSmartHost = [127.0.0.1]:9\nRouteUserName = relay@corp.test\nRoutePassword = not-for-everyone\n",
        )
        .start();
    let published = srv.mailroot().join("mailroot.submission.ini");
    assert!(wait_until(|| published.is_file()), "{}", srv.log_text());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&published).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "readable by all");
    }
    let text = fs::read_to_string(&published).expect("read");
    let keys: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with(';') && l.contains(" = "))
        .map(|l| l.split(" = ").next().unwrap_or(""))
        .collect();
    assert_eq!(
        keys,
        [
            "FullyQualifiedDomainName",
            "MailRoot",
            "PickupDirectory",
            "DefaultDomain",
            "MaxMessageSize",
            "MaxSessionSize",
            "MaxRecipients",
            "AllowBareLfInCommands",
            "HopCount",
            "PickupUnstuffDots",
        ],
        "{text}"
    );
    assert!(
        !text.contains("not-for-everyone") && !text.contains("Route"),
        "{text}"
    );
    let pickup = srv.dir.path().join("drop-here");
    assert!(
        text.contains(&format!("PickupDirectory = {}\n", pickup.display())),
        "absolute: {text}"
    );

    // A user given only the published file (no configuration) sends as the server would have it.
    let out = run(
        Path::new(bin()),
        &[
            "sendmail",
            "-C",
            published.to_str().expect("utf-8"),
            "-i",
            "ops@remote.test",
        ],
        "To: ops@remote.test\nSubject: via the published settings\n\nok\n",
        None,
        Path::new("/"),
    );
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (Some(0), ""),
        "{}",
        out.stdout
    );
    let m = one(&sink, &srv);
    assert_eq!(m.sender_addr(), format!("{}@corp.test", login()));
    assert_eq!(m.subject(), "via the published settings");

    // A reload rewrites it.
    let conf = config_of(&srv);
    let ini = fs::read_to_string(&conf).expect("config");
    fs::write(
        &conf,
        ini.replace("DefaultDomain = corp.test", "DefaultDomain = new.test"),
    )
    .expect("config");
    let r = run_bin(
        &["reload", "--config", conf.to_str().expect("utf-8")],
        None,
        None,
    );
    assert!(r.ok(), "{}", r.both());
    let text = fs::read_to_string(&published).expect("read");
    assert!(text.contains("DefaultDomain = new.test\n"), "{text}");
}
