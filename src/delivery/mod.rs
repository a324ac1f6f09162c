//! Delivery: Pickup and Queue to the next hop, with retries, reports and Badmail.

pub mod attempt;
pub mod client;
pub mod dns;
pub mod dsn;
pub mod engine;
pub mod reply;
pub mod route;
pub mod scheduler;
