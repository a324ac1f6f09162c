//! The body pipeline of one message: bytes from the DATA scanner (or BDAT chunks) pass the size limit
//! and the header inspector on their way into the spool file. Kept apart from the socket loop so the
//! connection stays a thin shuttle between socket, session and store.

use crate::mailroot::error::StoreError;
use crate::mailroot::store::{Spool, Store};
use crate::smtp::data::{ChunkCheck, Flaws};
use crate::smtp::headers::HeaderScan;
use crate::smtp::session::{MessageEnd, MessagePlan};

/// A message being received.
pub struct Intake {
    spool: Spool,
    headers: HeaderScan,
    size: u64,
    limit: u64,
    chunks: Option<ChunkCheck>,
}

impl Intake {
    /// Opens the message file(s) of `plan`.
    pub fn open(store: &Store, plan: &MessagePlan) -> Result<Intake, StoreError> {
        let spool = store.begin(&plan.id, plan.envelope.clone(), &plan.trace)?;
        Ok(Intake {
            spool,
            headers: HeaderScan::new(plan.message_id_line.clone()),
            size: 0,
            limit: plan.limit,
            chunks: if plan.binary {
                None
            } else {
                Some(ChunkCheck::default())
            },
        })
    }

    /// Appends message bytes (already dot-unstuffed). Past the size limit nothing more is stored;
    /// the bytes are only counted, so the session can still read to the end and answer 552.
    pub fn push(&mut self, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        if self.size > self.limit {
            return;
        }
        let spool = &mut self.spool;
        self.headers.feed(bytes, &mut |b| spool.write(b));
    }

    /// Appends a BDAT chunk, checking its line endings unless the message is BINARYMIME.
    pub fn push_chunk(&mut self, bytes: &[u8]) {
        if let Some(c) = self.chunks.as_mut() {
            c.scan(bytes);
        }
        self.push(bytes);
    }

    /// Ends the message; `data_flaws` are the DATA scanner's (empty for BDAT).
    pub fn finish(&mut self, data_flaws: Flaws) -> MessageEnd {
        if self.size <= self.limit {
            let spool = &mut self.spool;
            self.headers.finish(&mut |b| spool.write(b));
        }
        let mut flaws = data_flaws;
        if let Some(c) = &self.chunks {
            let f = c.finish();
            flaws.bare_lf |= f.bare_lf;
            flaws.bare_cr |= f.bare_cr;
            flaws.nul |= f.nul;
        }
        MessageEnd {
            size: self.size,
            flaws,
            hops: self.headers.received(),
            store_failed: self.spool.failed(),
        }
    }

    /// The client's Message-ID, if the message had one.
    pub fn client_message_id(&self) -> Option<String> {
        self.headers.message_id()
    }

    /// Commits the message durably (see `mailroot::store`).
    pub fn commit(self) -> Result<Vec<std::path::PathBuf>, StoreError> {
        self.spool.commit()
    }
}
