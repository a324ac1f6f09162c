//! The settings a long-lived part of the server reads while it runs (delivery, Pickup): a shared,
//! replaceable `Arc<VirtualServer>`. A reload puts the new settings in; each reader takes a snapshot
//! when it starts a piece of work (an attempt, a Pickup scan), so one piece never sees two versions.

use std::sync::{Arc, RwLock};

use super::VirtualServer;

/// A virtual server's current settings.
#[derive(Debug, Clone)]
pub struct Live(Arc<RwLock<Arc<VirtualServer>>>);

impl Live {
    /// Starts with `vs`.
    pub fn new(vs: Arc<VirtualServer>) -> Live {
        Live(Arc::new(RwLock::new(vs)))
    }

    /// The settings now.
    pub fn get(&self) -> Arc<VirtualServer> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the settings (a reload).
    pub fn set(&self, vs: Arc<VirtualServer>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = vs;
    }
}
