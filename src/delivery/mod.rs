//! Delivery: from Queue to the next hop (or the Drop folder), with retries, reports and Badmail.
//! `engine` schedules, `attempt` tries one message, `report` settles it, `cache` keeps connections,
//! `route` decides where a recipient goes, `rewrite` changes the sender a route asks for, `dns`,
//! `client` and `dsn` do the rest; `admin` applies an administrator's queue commands without racing
//! delivery.

pub mod admin;
pub mod attempt;
pub mod cache;
pub mod client;
pub mod dns;
pub mod dsn;
pub mod endpoints;
pub mod engine;
pub mod reply;
pub mod report;
pub mod rewrite;
pub mod route;
pub mod scheduler;
