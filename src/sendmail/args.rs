//! The command line of `sendmail` as real callers write it: PHP's `mail()` (`-t -i`), Debian's cron
//! (`-FCronDaemon -i -B8BITMIME -oem user`), cronie (`-FCronDaemon -i -odi -oem -oi -t -f root`),
//! systemd-cron (`-i -B 8BITMIME user`), BusyBox-style groups (`-ti`). Options that steer a
//! sendmail's own delivery (`-odi`, `-oem`, `-B8BITMIME`, `-v` …) mean nothing for a drop into Pickup
//! and are accepted and ignored; anything else unknown is an error naming it.

use std::path::PathBuf;

use super::SendmailError;

/// What the command line asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Invocation {
    /// `-t`: the recipients of To, Cc and Bcc too.
    pub extract: bool,
    /// `-i` / `-oi`: a line holding a single `.` is data, not the end of the input.
    pub ignore_dots: bool,
    /// `-f` / `-r`: the envelope sender, as written.
    pub sender: Option<String>,
    /// `-F`: the sender's full name, for a From header the message lacks.
    pub full_name: Option<String>,
    /// `-N`: DSN NOTIFY for every recipient (`never`, or `success,delay,failure`).
    pub notify: Option<String>,
    /// `-R`: DSN RET (`full` or `hdrs`).
    pub ret: Option<String>,
    /// `-V`: DSN ENVID.
    pub envid: Option<String>,
    /// `-bs`: SMTP on standard input and output (`stdio`); the envelope comes with MAIL and RCPT.
    pub smtp: bool,
    /// The recipient arguments, as written.
    pub recipients: Vec<String>,
    /// `--config` / `-C`: the configuration file.
    pub config: Option<PathBuf>,
    /// `--instance`: the virtual server whose Pickup folder takes the message.
    pub instance: Option<u32>,
}

/// Single-letter flags that may be grouped (`-ti`); only `t` and `i` mean anything here.
const GROUPABLE: &str = "tivUmn";

/// Parses the arguments after `sendmail` (or after argv[0] when invoked as `sendmail`).
pub fn parse(args: &[String]) -> Result<Invocation, SendmailError> {
    let mut inv = Invocation::default();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if a == "--" {
            inv.recipients.extend(args[i + 1..].iter().cloned());
            break;
        }
        if !a.starts_with('-') || a == "-" {
            inv.recipients.push(a.to_string());
            i += 1;
            continue;
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let value = match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    next_value(args, i, a)?
                }
            };
            match name {
                "config" => inv.config = Some(PathBuf::from(value)),
                "instance" => {
                    inv.instance = Some(value.parse().map_err(|_| {
                        SendmailError::Usage(format!("--instance needs a number, not `{value}`"))
                    })?)
                }
                _ => return Err(unknown(a)),
            }
            i += 1;
            continue;
        }
        let flag = &a[1..];
        let letter = flag.chars().next().unwrap_or('-');
        let rest = &flag[letter.len_utf8()..];
        // An option's value: the rest of the argument (`-fuser`), else the next one (`-f user`).
        let value = |i: &mut usize| -> Result<String, SendmailError> {
            if rest.is_empty() {
                *i += 1;
                next_value(args, *i, a)
            } else {
                Ok(rest.to_string())
            }
        };
        match letter {
            'f' | 'r' => inv.sender = Some(value(&mut i)?),
            'F' => inv.full_name = Some(value(&mut i)?),
            'N' => inv.notify = Some(value(&mut i)?),
            'R' => inv.ret = Some(value(&mut i)?),
            'V' => inv.envid = Some(value(&mut i)?),
            'C' => inv.config = Some(PathBuf::from(value(&mut i)?)),
            // Body type and a log tag: the message is taken as it is, and logged by mailroot.
            'B' | 'L' => {
                value(&mut i)?;
            }
            'o' => match rest {
                "i" => inv.ignore_dots = true,
                // Delivery mode (-odi, -odb, -odq) and error mode (-oem, -oee, -oep, -oeq, -oew):
                // the Pickup folder is the only mode, and errors come back as reports.
                r if r.starts_with('d') || r.starts_with('e') || r == "m" => {}
                _ => return Err(unknown(a)),
            },
            'b' => match rest {
                "m" => {}
                "s" => inv.smtp = true,
                "p" => {
                    return Err(SendmailError::Usage(
                        "-bp: use `mailq` or `mailroot queue list`".into(),
                    ));
                }
                _ => return Err(unknown(a)),
            },
            // Submission or MTA mode of sendmail 8.12: the same here.
            'A' if rest == "m" || rest == "c" => {}
            _ if !flag.is_empty() && flag.chars().all(|c| GROUPABLE.contains(c)) => {
                inv.extract |= flag.contains('t');
                inv.ignore_dots |= flag.contains('i');
            }
            _ => return Err(unknown(a)),
        }
        i += 1;
    }
    if inv.smtp && !inv.recipients.is_empty() {
        return Err(SendmailError::Usage(
            "-bs takes no recipient arguments: they come with RCPT TO".into(),
        ));
    }
    Ok(inv)
}

fn next_value(args: &[String], i: usize, option: &str) -> Result<String, SendmailError> {
    args.get(i)
        .cloned()
        .ok_or_else(|| SendmailError::Usage(format!("{option} needs a value")))
}

fn unknown(option: &str) -> SendmailError {
    SendmailError::Usage(format!("unknown option `{option}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Invocation {
        let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        match parse(&args) {
            Ok(i) => i,
            Err(e) => panic!("{line}: {e}"),
        }
    }

    fn e(args: &[&str]) -> String {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse(&args) {
            Ok(i) => panic!("{args:?} parsed: {i:?}"),
            Err(e) => {
                assert_eq!(e.exit_code(), 64, "{e}");
                e.to_string()
            }
        }
    }

    #[test]
    fn php_mail() {
        let i = p("-t -i");
        assert!(i.extract && i.ignore_dots);
        assert!(i.recipients.is_empty() && i.sender.is_none());
        let i = p("-t -i -fbounce@example.org");
        assert_eq!(i.sender.as_deref(), Some("bounce@example.org"));
    }

    #[test]
    fn debian_cron() {
        let i = p("-FCronDaemon -i -B8BITMIME -oem root");
        assert_eq!(
            i,
            Invocation {
                ignore_dots: true,
                full_name: Some("CronDaemon".into()),
                recipients: vec!["root".into()],
                ..Invocation::default()
            }
        );
    }

    #[test]
    fn cronie_systemd_cron_and_groups() {
        let i = p("-FCronDaemon -i -odi -oem -oi -t -f root");
        assert!(i.extract && i.ignore_dots);
        assert_eq!(i.sender.as_deref(), Some("root"));
        let i = p("-i -B 8BITMIME user@example.org");
        assert!(i.ignore_dots);
        assert_eq!(i.recipients, ["user@example.org"]);
        let i = p("-ti");
        assert!(i.extract && i.ignore_dots);
        let i = p("-oi -odb -oee -om -v -U -bm -Am -L tag -B7BIT a@b.test");
        assert!(i.ignore_dots && !i.extract);
        assert_eq!(i.recipients, ["a@b.test"]);
    }

    #[test]
    fn values_joined_or_apart_and_the_end_of_options() {
        let i =
            p("-r old@x.test -F Full -N success,failure -R hdrs -V E1 -C /etc/x.ini --instance 2");
        assert_eq!(i.sender.as_deref(), Some("old@x.test"));
        assert_eq!(i.full_name.as_deref(), Some("Full"));
        assert_eq!(i.notify.as_deref(), Some("success,failure"));
        assert_eq!(i.ret.as_deref(), Some("hdrs"));
        assert_eq!(i.envid.as_deref(), Some("E1"));
        assert_eq!(i.config, Some(PathBuf::from("/etc/x.ini")));
        assert_eq!(i.instance, Some(2));
        let i = p("--config=/a.ini a@b.test -- -odd@b.test");
        assert_eq!(i.config, Some(PathBuf::from("/a.ini")));
        assert_eq!(i.recipients, ["a@b.test", "-odd@b.test"]);
    }

    #[test]
    fn unknown_options_and_missing_values_are_usage_errors() {
        assert!(e(&["-X", "a@b.test"]).contains("`-X`"));
        assert!(e(&["-ox"]).contains("`-ox`"));
        assert!(e(&["-tx"]).contains("`-tx`"));
        assert!(e(&["--frobnicate=1"]).contains("`--frobnicate=1`"));
        assert!(e(&["-f"]).contains("-f needs a value"));
        assert!(e(&["--instance", "one"]).contains("number"));
        assert!(e(&["-bs", "a@b.test"]).contains("no recipient arguments"));
    }

    #[test]
    fn bs_is_smtp_on_standard_input_as_laravel_and_symfony_start_it() {
        assert!(p("-bs -i").smtp);
        assert!(p("-bs").smtp);
        assert!(!p("-t -i").smtp);
    }
}
