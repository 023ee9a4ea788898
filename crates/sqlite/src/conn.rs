//! The store's own connections: one writer and a few readers, each a plain
//! [`SqliteConnection`] behind an async mutex.
//!
//! Not an `sqlx::Pool`: on this project's benchmark machine, acquiring from the pool cost
//! as much as the statement itself (one `SELECT 1`: 37–48 µs through the pool, 16–20 µs on a
//! held connection). SQLite admits one writer at a time anyway, so one writer connection
//! also spares writers from waiting on each other's file locks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sqlx::{Connection, Executor, SqliteConnection};
use tenantry_store::StoreError;
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use crate::cache::Cache;
use crate::rows::{BACKEND, backend};
use tenantry_core::TenantId;

/// The writer connection and whether a transaction may be left open on it: set before a
/// batch that begins one, cleared once it committed or rolled back. A future dropped in
/// between (a cancelled request) leaves it set, and the next user rolls back first.
#[derive(Debug)]
pub(crate) struct Writer {
    conn: Option<SqliteConnection>,
    pub(crate) open_txn: bool,
    /// The cache, and the tenant whose change is in flight on the connection: its cache
    /// mark ends only when the batch is known to have finished.
    cache: Option<Arc<Cache>>,
    pending: Option<TenantId>,
}

impl Writer {
    /// The connection, once any transaction a cancelled caller left open is rolled back.
    pub(crate) async fn conn(&mut self) -> Result<&mut SqliteConnection, StoreError> {
        if self.open_txn {
            let conn = self.conn.as_mut().ok_or_else(closed)?;
            // A failure leaves the flag set, to try again next time. Once the rollback
            // returns, the batch before it has finished (the worker runs commands in order).
            rollback(conn).await.map_err(backend)?;
            self.settled();
        }
        self.conn.as_mut().ok_or_else(closed)
    }

    /// No transaction is open any more: ends the cache mark of the change that was in
    /// flight.
    fn settled(&mut self) {
        self.open_txn = false;
        if let (Some(cache), Some(tenant)) = (&self.cache, self.pending.take()) {
            cache.end(tenant);
        }
    }

    /// The connection for a batch that begins a transaction: marked open until
    /// [`Writer::committed`] or [`Writer::roll_back`] (or rolled back by the next user).
    /// A change to `tenant` marks it in flight in the cache until then.
    pub(crate) async fn begin(
        &mut self,
        tenant: Option<TenantId>,
    ) -> Result<&mut SqliteConnection, StoreError> {
        self.conn().await?;
        self.open_txn = true;
        if let (Some(cache), Some(t)) = (&self.cache, tenant) {
            cache.start(t);
            self.pending = Some(t);
        }
        self.conn.as_mut().ok_or_else(closed)
    }

    /// Records that the batch [`Writer::begin`] marked ran through its `COMMIT`.
    pub(crate) fn committed(&mut self) {
        self.settled();
    }

    /// Rolls back the transaction [`Writer::begin`] marked, after its batch failed. When
    /// the rollback itself fails, the mark stays and the next user tries again.
    pub(crate) async fn roll_back(&mut self) -> Result<(), StoreError> {
        let conn = self.conn.as_mut().ok_or_else(closed)?;
        rollback(conn).await.map_err(backend)?;
        self.settled();
        Ok(())
    }
}

/// Rolls back the open transaction; none being open (the batch failed before or at its
/// `BEGIN`) counts as done.
async fn rollback(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    match conn.execute("ROLLBACK").await {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("no transaction") => Ok(()),
        Err(e) => Err(e),
    }
}

/// The error of every call after [`Connections::close`].
fn closed() -> StoreError {
    StoreError::Backend {
        backend: BACKEND,
        source: Box::new(sqlx::Error::PoolClosed),
    }
}

/// One writer, `readers.len()` readers. An in-memory database has no readers (every
/// connection to it would be a database of its own): reads go through the writer.
#[derive(Debug)]
pub(crate) struct Connections {
    writer: Mutex<Writer>,
    readers: Vec<Mutex<Option<SqliteConnection>>>,
    next: AtomicUsize,
}

/// A connection lent for one read.
pub(crate) type ReadGuard<'a> = MappedMutexGuard<'a, SqliteConnection>;

impl Connections {
    pub(crate) fn new(
        writer: SqliteConnection,
        readers: Vec<SqliteConnection>,
        cache: Option<Arc<Cache>>,
    ) -> Self {
        Self {
            writer: Mutex::new(Writer {
                conn: Some(writer),
                open_txn: false,
                cache,
                pending: None,
            }),
            readers: readers.into_iter().map(|c| Mutex::new(Some(c))).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The writer, exclusively.
    pub(crate) async fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().await
    }

    /// A reader: the first idle one from a rotating start, else the next in turn when
    /// it frees up. Never call while holding the writer (an in-memory database reads
    /// through it).
    pub(crate) async fn reader(&self) -> Result<ReadGuard<'_>, StoreError> {
        let n = self.readers.len();
        if n == 0 {
            let mut w = self.writer.lock().await;
            w.conn().await?;
            return MutexGuard::try_map(w, |w| w.conn.as_mut()).map_err(|_| closed());
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut guard = None;
        for i in 0..n {
            if let Some(g) = self
                .readers
                .get((start + i) % n)
                .and_then(|m| m.try_lock().ok())
            {
                guard = Some(g);
                break;
            }
        }
        let guard = match guard {
            Some(g) => g,
            None => match self.readers.get(start % n) {
                Some(m) => m.lock().await,
                None => return Err(closed()),
            },
        };
        MutexGuard::try_map(guard, Option::as_mut).map_err(|_| closed())
    }

    /// Closes every connection; later calls fail.
    pub(crate) async fn close(&self) {
        for r in &self.readers {
            if let Some(c) = r.lock().await.take() {
                let _ = c.close().await;
            }
        }
        let mut w = self.writer.lock().await;
        if let Some(c) = w.conn.take() {
            let _ = c.close().await;
        }
    }
}
