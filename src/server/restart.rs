//! The keys a reload cannot apply to a running server: the folders (the store, Pickup and delivery
//! are built on them), the protocol log's place and period (its writer thread), the sizes of the
//! thread pools and of the delivery machinery chosen at start-up, and MetricsBinding (the
//! exporter's listener). Everything else — limits, relay lists, connection control, routes, smart
//! hosts, OAuth, retries, the users file, the TLS certificate, the bindings — takes effect live.
//! `mailroot check` and the reload log name the keys of this list that differ from what runs.

use crate::config::VirtualServer;

/// The keys that need a restart, as written in the INI (docs/config.md marks them).
pub const KEYS: &[&str] = &[
    "MailRoot",
    "PickupDirectory",
    "QueueDirectory",
    "BadMailDirectory",
    "DropDirectory",
    "LogType",
    "LogFileDirectory",
    "LogFilePeriod",
    "LogFileTruncateSize",
    "ServerLogFile",
    "MaxConnections",
    "MaxOutConnections",
    "MaxBatchedMessages",
    "DnsServers",
    "DestinationInitialConcurrency",
    "DeadDestinationFailures",
    "MetricsBinding",
];

/// `new` with the running value of every key that needs a restart, and the keys that differed.
pub fn keep_running(
    was: &VirtualServer,
    new: &VirtualServer,
) -> (VirtualServer, Vec<&'static str>) {
    let mut vs = new.clone();
    let mut changed = Vec::new();
    if vs.dirs != was.dirs {
        changed.extend(
            [
                ("MailRoot", vs.dirs.mailroot != was.dirs.mailroot),
                ("PickupDirectory", vs.dirs.pickup != was.dirs.pickup),
                ("QueueDirectory", vs.dirs.queue != was.dirs.queue),
                ("BadMailDirectory", vs.dirs.badmail != was.dirs.badmail),
                ("DropDirectory", vs.dirs.drop != was.dirs.drop),
            ]
            .into_iter()
            .filter(|(_, d)| *d)
            .map(|(k, _)| k),
        );
        vs.dirs = was.dirs.clone();
    }
    if vs.log != was.log {
        changed.extend(
            [
                ("LogType", vs.log.enabled != was.log.enabled),
                ("LogFileDirectory", vs.log.directory != was.log.directory),
                ("LogFilePeriod", vs.log.period != was.log.period),
                (
                    "LogFileTruncateSize",
                    vs.log.truncate_size != was.log.truncate_size,
                ),
                ("ServerLogFile", vs.log.server_log != was.log.server_log),
            ]
            .into_iter()
            .filter(|(_, d)| *d)
            .map(|(k, _)| k),
        );
        vs.log = was.log.clone();
    }
    let mut keep = |key: &'static str, differs: bool| {
        if differs {
            changed.push(key);
        }
        differs
    };
    if keep("MaxConnections", vs.max_connections != was.max_connections) {
        vs.max_connections = was.max_connections;
    }
    let (d, w) = (&mut vs.delivery, &was.delivery);
    if keep("MaxOutConnections", d.max_out != w.max_out) {
        d.max_out = w.max_out;
    }
    if keep("MaxBatchedMessages", d.max_batched != w.max_batched) {
        d.max_batched = w.max_batched;
    }
    if keep("DnsServers", d.dns_servers != w.dns_servers) {
        d.dns_servers = w.dns_servers.clone();
    }
    if keep(
        "DestinationInitialConcurrency",
        d.initial_concurrency != w.initial_concurrency,
    ) {
        d.initial_concurrency = w.initial_concurrency;
    }
    if keep(
        "DeadDestinationFailures",
        d.dead_failures != w.dead_failures,
    ) {
        d.dead_failures = w.dead_failures;
    }
    if keep("MetricsBinding", vs.metrics_binding != was.metrics_binding) {
        vs.metrics_binding = was.metrics_binding;
    }
    (vs, changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::test_server;

    #[test]
    fn restart_keys_keep_running_values_and_live_keys_change() {
        let was = test_server();
        let mut new = was.clone();
        new.max_recipients = 7;
        new.delivery.max_out = 3;
        new.dirs.queue = "/elsewhere/Queue".into();
        new.log.enabled = !was.log.enabled;
        let (vs, keys) = keep_running(&was, &new);
        assert_eq!(vs.max_recipients, 7, "a live key takes the new value");
        assert_eq!(vs.delivery.max_out, was.delivery.max_out);
        assert_eq!(vs.dirs, was.dirs);
        assert_eq!(vs.log, was.log);
        assert_eq!(keys, vec!["QueueDirectory", "LogType", "MaxOutConnections"]);
        assert!(keys.iter().all(|k| KEYS.contains(k)));
        assert!(keep_running(&was, &was.clone()).1.is_empty());
    }

    #[test]
    fn metrics_binding_needs_a_restart() {
        let was = test_server();
        let mut new = was.clone();
        new.metrics_binding = Some("127.0.0.1:9325".parse().unwrap());
        let (vs, keys) = keep_running(&was, &new);
        assert_eq!(
            vs.metrics_binding, None,
            "the running exporter stays as it is"
        );
        assert_eq!(keys, vec!["MetricsBinding"]);
    }
}
