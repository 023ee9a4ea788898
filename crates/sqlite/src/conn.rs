//! The store's own connections: one writer connection owned by a thread of its own, and a
//! few reader connections; all plain rusqlite connections with cached prepared statements.
//!
//! # The writer thread
//! Every write is a [`Job`] sent to the writer thread over a channel; the caller awaits a
//! oneshot answer. The thread runs the job from its `BEGIN IMMEDIATE` to its `COMMIT` (or
//! `ROLLBACK`, on any error) in one go, then brings the cache up to date (the change applied
//! to the rows it holds, see [`crate::cache`]), and only then answers. A caller whose future
//! is dropped (a cancelled request) does not stop its job: it runs to its end all the same,
//! the cache is updated all the same, and the answer is dropped. Nothing can split a change.
//!
//! Why a thread and not sqlx: sqlx runs every SQLite statement on a worker thread of the
//! connection, one hop each way per statement; a change of ten statements paid ten round
//! trips (or, sent as one multi-statement query, relied on a deprecated sqlx API and on a
//! guard table to stop the batch when a row count was wrong). Here a change pays one hop
//! each way, row counts are checked in Rust between statements, and a dropped future
//! cannot leave a transaction open.
//!
//! # Readers
//! A read locks one of the reader connections (an async mutex) and runs inline on the
//! caller's thread: a point read costs a few microseconds of SQLite's work, less than the
//! two thread hops a reader thread would add (see `BENCHMARKS.md`, "SQLite at the floor").
//! An in-memory database has no readers (each connection would be a database of its own
//! unless it joins the shared cache, whose table locks make readers fail while the writer
//! writes): its reads run on the writer thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tenantry_core::TenantId;
use tenantry_store::StoreError;
use tokio::sync::{Mutex, oneshot};

use crate::cache::{Cache, Entry};
use crate::rows::backend;
use crate::write::map_err;

/// Prepared statements each connection keeps (rusqlite's default is 16; a commit alone uses
/// up to a dozen and the reads another twenty).
pub(crate) const STATEMENT_CACHE: usize = 128;

/// One write: a transaction's statements, and what it does to the cached rows.
pub(crate) trait Job: Send + 'static {
    /// What the caller gets.
    type Out: Send + 'static;

    /// The tenant whose cached rows the job changes, if any: nothing of it is served from
    /// the cache while the job runs.
    fn tenant(&self) -> Option<TenantId>;

    /// The statements, inside the job's `BEGIN IMMEDIATE` transaction. An error rolls it
    /// back.
    fn run(&mut self, tx: &Transaction<'_>) -> Result<Self::Out, StoreError>;

    /// Brings the tenant's cached rows up to what the committed transaction wrote. `false`:
    /// the job cannot tell, forget the tenant's rows.
    fn update(&self, entry: &mut Entry, out: &Self::Out) -> bool;
}

type Task = Box<dyn FnOnce(&mut Connection) + Send>;

/// The writer thread's end of a change to a tenant: the cache's in-flight mark, ended when
/// dropped (forgetting the tenant's rows unless told what the job did).
struct Mark<'a> {
    cache: &'a Cache,
    tenant: TenantId,
    /// Ended already (else the drop ends it, forgetting).
    done: bool,
}

impl Drop for Mark<'_> {
    fn drop(&mut self) {
        // Reached without `done` only if the job panicked: forget the tenant's rows.
        if !self.done {
            self.cache.end(self.tenant, |_| false);
        }
    }
}

/// Runs one job on the writer connection, cache marks included.
fn run_job<J: Job>(
    conn: &mut Connection,
    cache: Option<&Cache>,
    mut job: J,
) -> Result<J::Out, StoreError> {
    // A transaction left open (a rollback that failed) is ended before the next one.
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    let mut mark = match (cache, job.tenant()) {
        (Some(cache), Some(tenant)) => {
            cache.start(tenant);
            Some(Mark {
                cache,
                tenant,
                done: false,
            })
        }
        _ => None,
    };
    let result = (|| {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(map_err)?;
        let out = job.run(&tx)?;
        tx.commit().map_err(map_err)?;
        Ok(out)
    })();
    if let Some(m) = &mut mark {
        match &result {
            Ok(out) => {
                m.done = true;
                m.cache.end(m.tenant, |e| job.update(e, out));
            }
            Err(_) => {
                // Rolled back (the connection is out of its transaction): the cached rows
                // still equal the database's. Otherwise forget them.
                let unchanged = conn.is_autocommit();
                m.done = true;
                m.cache.end(m.tenant, |_| unchanged);
            }
        }
    }
    result
}

/// The error of every call after [`Connections::close`].
pub(crate) fn closed() -> StoreError {
    backend(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "the SQLite store is closed",
    ))
}

impl Drop for Connections {
    /// Stops the writer thread once the jobs already sent have run, and waits for it, so
    /// that dropping a store releases its claim on the file as closing it does.
    fn drop(&mut self) {
        let jobs = self
            .jobs
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        drop(jobs.take());
        let thread = self
            .thread
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(t) = thread
            && t.thread().id() != std::thread::current().id()
        {
            let _ = t.join();
        }
    }
}

/// The writer thread and the readers.
#[derive(Debug)]
pub(crate) struct Connections {
    /// The writer thread, joined when the last clone of the store is dropped.
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    jobs: std::sync::Mutex<Option<mpsc::Sender<Task>>>,
    readers: Vec<Mutex<Option<Connection>>>,
    next: AtomicUsize,
    cache: Option<Arc<Cache>>,
}

impl Connections {
    /// Starts the writer thread on `writer`. The thread holds `claim` (the store's lock on
    /// the file) until it ends: a store dropped with jobs still queued keeps the file
    /// claimed until they have run, so no new owner caches rows a late job then changes.
    pub(crate) fn new(
        writer: Connection,
        readers: Vec<Connection>,
        cache: Option<Arc<Cache>>,
        claim: Arc<std::sync::Mutex<Option<std::fs::File>>>,
    ) -> Result<Self, std::io::Error> {
        let (tx, rx) = mpsc::channel::<Task>();
        let thread = std::thread::Builder::new()
            .name("tenantry-sqlite-writer".into())
            .spawn(move || {
                let mut conn = writer;
                // Runs every job sent until the store is closed or dropped. A job that
                // panicked has dropped its answer (its caller gets an error) and ended its
                // cache mark; the thread goes on with the next.
                while let Ok(task) = rx.recv() {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        task(&mut conn);
                    }));
                }
                drop(conn);
                let file = claim
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                drop(file);
            })?;
        Ok(Self {
            thread: std::sync::Mutex::new(Some(thread)),
            jobs: std::sync::Mutex::new(Some(tx)),
            readers: readers.into_iter().map(|c| Mutex::new(Some(c))).collect(),
            next: AtomicUsize::new(0),
            cache,
        })
    }

    fn send(&self, task: Task) -> Result<(), StoreError> {
        let jobs = self
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        jobs.as_ref()
            .ok_or_else(closed)?
            .send(task)
            .map_err(|_| closed())
    }

    /// Runs `f` on the writer thread and awaits its answer; `f` runs to its end even if
    /// this future is dropped.
    pub(crate) async fn on_writer<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Box::new(move |conn| {
            let _ = tx.send(f(conn));
        }))?;
        rx.await.map_err(|_| closed())?
    }

    /// Runs a write job on the writer thread (see the module's docs).
    pub(crate) async fn write<J: Job>(&self, job: J) -> Result<J::Out, StoreError> {
        let cache = self.cache.clone();
        self.on_writer(move |conn| run_job(conn, cache.as_deref(), job))
            .await
    }

    /// Runs a read on a reader connection (the first idle one from a rotating start, else
    /// the next in turn when it frees up), inline; without readers, on the writer thread.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let n = self.readers.len();
        if n == 0 {
            return self.on_writer(move |conn| f(conn)).await;
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
        f(guard.as_ref().ok_or_else(closed)?)
    }

    /// Waits for every job sent so far, stops the writer thread (closing its connection)
    /// and closes the readers; later calls fail.
    pub(crate) async fn close(&self) {
        let last = {
            let mut jobs = self
                .jobs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            jobs.take().map(|tx| {
                let (done, wait) = oneshot::channel::<()>();
                let _ = tx.send(Box::new(move |_| {
                    let _ = done.send(());
                }));
                wait
            })
        };
        if let Some(wait) = last {
            let _ = wait.await;
        }
        for r in &self.readers {
            drop(r.lock().await.take());
        }
    }
}
