//! Store-owned connections for the hot statements (issue 14).
//!
//! sqlx's pool costs more than the statement for a one-row read: each acquire goes through
//! the pool's semaphore and each release spawns a task that hands the connection back
//! (measured: a primary-key read 58.7 µs on a held connection, 193.7 µs through the pool).
//! The one-row reads (a check's subject above all), the snapshot a use case decides on, the
//! page of users and the commit of a change therefore run on a few connections the
//! store opens itself, from the pool's own connect options, and keeps in a free list: taking
//! one is a pop under a mutex held for nothing else, giving it back a push, both in the
//! caller's task. Each connection keeps its prepared statements (sqlx caches them per
//! connection). When every one is busy the statement goes through the pool, as before; a
//! connection that broke (I/O error, the server ended it) is dropped and the next statement
//! opens a fresh one. A read is then sent again on the pool; a write is not (it may have run:
//! its error is returned, as the pool's would be).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use sqlx::postgres::{PgArguments, PgQueryResult, PgRow};
use sqlx::query::Query;
use sqlx::{Connection as _, PgConnection, PgPool, Postgres};

/// How many connections of its own a store opens for its hot statements, unless told
/// otherwise ([`PostgresStore::with_hot_connections`](crate::PostgresStore::with_hot_connections)).
pub const DEFAULT_HOT_CONNECTIONS: usize = 2;

/// The store-owned connections: those idle, and how many are open (idle or leased).
#[derive(Debug)]
pub(crate) struct Hot {
    max: usize,
    free: Mutex<Vec<PgConnection>>,
    open: AtomicUsize,
    closed: AtomicBool,
}

/// An open slot that is given back unless the connection it was taken for arrives (so a
/// connect whose future is dropped does not use a slot up for good).
struct Slot<'a> {
    hot: &'a Hot,
    armed: bool,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.hot.open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// A store-owned connection lent to one statement; it goes back to the free list when
/// dropped (also when the statement's future is dropped: sqlx finishes reading the
/// interrupted reply before the connection's next statement).
pub(crate) struct Lease<'a> {
    hot: &'a Hot,
    conn: Option<PgConnection>,
}

impl Lease<'_> {
    /// Drops the connection instead of giving it back: it is broken.
    fn discard(mut self) {
        if self.conn.take().is_some() {
            self.hot.open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.hot.give_back(conn);
        }
    }
}

/// Whether an error says the connection itself is unusable (rather than the statement).
fn broken(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) => true,
        // connection_exception (08…) and operator_intervention (57P…: the server was shut
        // down or ended this backend).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

impl Hot {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            free: Mutex::new(Vec::with_capacity(max)),
            open: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        }
    }

    fn give_back(&self, conn: PgConnection) {
        if self.closed.load(Ordering::SeqCst) {
            self.open.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
    }

    /// An idle connection, or a new one while fewer than `max` are open; `None` when all
    /// are busy (or cannot be opened): the caller uses the pool.
    async fn lease(&self, pool: &PgPool) -> Option<Lease<'_>> {
        if self.closed.load(Ordering::SeqCst) {
            return None;
        }
        let idle = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        if let Some(conn) = idle {
            return Some(Lease {
                hot: self,
                conn: Some(conn),
            });
        }
        self.open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        let mut slot = Slot {
            hot: self,
            armed: true,
        };
        let conn = connect(pool).await.ok()?;
        slot.armed = false;
        Some(Lease {
            hot: self,
            conn: Some(conn),
        })
    }

    /// Closes the idle connections; those leased are dropped when given back.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let idle = std::mem::take(&mut *self.free.lock().unwrap_or_else(PoisonError::into_inner));
        for conn in idle {
            self.open.fetch_sub(1, Ordering::SeqCst);
            let _ = conn.close().await;
        }
    }

    /// How many store-owned connections are open (idle or leased).
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// One row (or none) of the statement `make` builds: on a store-owned connection when
    /// one is free, else on the pool. A connection that broke is dropped and the statement
    /// sent again on the pool (these are reads).
    pub(crate) async fn fetch_optional<'q, F>(
        &self,
        pool: &PgPool,
        make: F,
    ) -> Result<Option<PgRow>, sqlx::Error>
    where
        F: Fn() -> Query<'q, Postgres, PgArguments>,
    {
        if let Some(mut lease) = self.lease(pool).await
            && let Some(conn) = lease.conn.as_mut()
        {
            match make().fetch_optional(&mut *conn).await {
                Err(e) if broken(&e) => lease.discard(),
                other => return other,
            }
        }
        make().fetch_optional(pool).await
    }

    /// Runs the write `query` once: on a store-owned connection when one is free, else on
    /// the pool. Never sent twice: when the connection broke, it is dropped and the error
    /// returned (the server may have run the statement).
    pub(crate) async fn execute_once<'q>(
        &self,
        pool: &PgPool,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Result<PgQueryResult, sqlx::Error> {
        if let Some(mut lease) = self.lease(pool).await
            && let Some(conn) = lease.conn.as_mut()
        {
            let out = query.execute(&mut *conn).await;
            if out.as_ref().is_err_and(broken) {
                lease.discard();
            }
            return out;
        }
        query.execute(pool).await
    }

    /// Every row of the statement `make` builds, as [`Hot::fetch_optional`] reads one: on a
    /// store-owned connection when one is free, else on the pool.
    pub(crate) async fn fetch_all<'q, F>(
        &self,
        pool: &PgPool,
        make: F,
    ) -> Result<Vec<PgRow>, sqlx::Error>
    where
        F: Fn() -> Query<'q, Postgres, PgArguments>,
    {
        if let Some(mut lease) = self.lease(pool).await
            && let Some(conn) = lease.conn.as_mut()
        {
            match make().fetch_all(&mut *conn).await {
                Err(e) if broken(&e) => lease.discard(),
                other => return other,
            }
        }
        make().fetch_all(pool).await
    }
}

/// A connection like the pool's: its connect options (server, user, TLS, `options` such as
/// `search_path` or `lock_timeout`), then the `search_path` a connection of the pool has, so
/// that one set by the host's `after_connect` hook holds here too.
async fn connect(pool: &PgPool) -> Result<PgConnection, sqlx::Error> {
    let options = pool.connect_options();
    let path: String = sqlx::query_scalar("SELECT current_setting('search_path')")
        .fetch_one(pool)
        .await?;
    let mut conn = PgConnection::connect_with(&options).await?;
    sqlx::query("SELECT set_config('search_path', $1, false)")
        .bind(path)
        .execute(&mut conn)
        .await?;
    Ok(conn)
}
