//! Configuration: one INI file (`conf/smtpsvc.ini`) with IIS metabase key names, parsed once into
//! typed [`VirtualServer`] settings. Unknown sections, unknown keys and bad values are errors that name
//! the file, line and key; the server never starts on a half-understood file.
//!
//! Sections: `[SmtpSvc]` (optional; its keys are inherited by every virtual server, as IIS inherits
//! service-level metabase values) and `[SmtpSvc/n]`, one per virtual server.
//!
//! Rooms: [`ini`] reads the file and keeps positions; [`keys`] is the table of keys and defaults;
//! [`load`] turns sections into a [`Config`]; [`outbound`] reads one route's AUTH, OAuth, sender
//! rewrite, client certificate and provider preset; [`values`] parses one value each; [`settings`] holds the
//! typed result, with [`ipnet`] and [`hosts`] for the address and host lists; [`error`] is the error.

pub mod error;
pub mod hosts;
pub mod ini;
pub mod ipnet;
pub mod keys;
pub mod live;
pub mod load;
pub mod outbound;
pub mod settings;
pub mod values;

pub use error::ConfigError;
pub use hosts::HostList;
pub use ipnet::IpList;
pub use live::Live;
pub use load::{Config, Source};
pub use outbound::{Grant, OAuth, Outbound, OutboundAuth, PasswordMechanism, Provider, Secret};
pub use settings::{
    AuthFlags, Binding, Credentials, DeliverySettings, Dirs, DomainRoute, LogPeriod, LogSettings,
    NextHop, SecuritySettings, SmartHostType, TlsPolicy, VirtualServer,
};
pub use values::{parse_bindings, parse_minutes, parse_next_hop, parse_next_hops, parse_seconds};
