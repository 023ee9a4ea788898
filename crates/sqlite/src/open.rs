//! Opening a store: connection options, the claim on the file (its lock file), migrations
//! (sqlx's migrator, on a connection of its own that is closed after), the writer thread,
//! the readers and the host pool; and closing it.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, SqliteConnection};

use crate::SqliteStore;
use crate::cache::Cache;
use crate::conn::Connections;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The file could not be opened or created.
    #[error("cannot open the SQLite database: {0}")]
    Connect(#[source] sqlx::Error),
    /// The database was written by a newer tenantry (it has migration `version`, which this
    /// build does not know); it is left untouched.
    #[error(
        "the database was written by a newer version of tenantry (schema migration {version} is unknown to this build)"
    )]
    NewerSchema {
        /// The unknown migration.
        version: i64,
    },
    /// Another store (in this process or another) holds the database: an owning store
    /// ([`SqliteStore::open`]) excludes every other, shared ones
    /// ([`SqliteStore::open_shared`]) exclude owning ones.
    #[error(
        "the SQLite database {path} is in use by another tenantry store (lock file {path}.lock)"
    )]
    InUse {
        /// The database file.
        path: String,
    },
    /// The lock file next to the database could not be created or locked.
    #[error("cannot lock the SQLite database: {0}")]
    Lock(#[source] std::io::Error),
    /// A migration failed.
    #[error("cannot migrate the SQLite database: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// The store's own connections (or its writer thread) could not be set up.
    #[error("cannot open the SQLite database: {0}")]
    Engine(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// Whether a store owns its database (lock and cache) or shares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sharing {
    Owned,
    Shared,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path` with four readers, claims it
    /// (see [the type's docs](SqliteStore)), and applies pending migrations.
    ///
    /// # Errors
    /// [`OpenError`]: [`OpenError::InUse`] when another store holds it; a database from a
    /// newer version is refused untouched.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        Self::open_with(Self::file_options(path), 4).await
    }

    /// Opens the database file at `path` for hosts that write one file from several
    /// processes: no cache (every read is a round trip), and a shared lock on
    /// `<file>.lock`, so shared stores coexist but none opens while an owning store
    /// ([`SqliteStore::open`]) holds the file, nor an owning one while shared ones do.
    ///
    /// # Errors
    /// [`OpenError`].
    pub async fn open_shared(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        Self::open_inner(Self::file_options(path), 4, Sharing::Shared).await
    }

    fn file_options(path: impl AsRef<Path>) -> SqliteConnectOptions {
        SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
    }

    /// A private in-memory database, gone when the last clone is dropped. For tests and
    /// demos. It has no readers of its own: every call goes through its one connection.
    ///
    /// # Errors
    /// [`OpenError`].
    pub async fn in_memory() -> Result<Self, OpenError> {
        // sqlx names each `sqlite::memory:` options a shared-cache database of its own, so
        // the host pool below reaches the same database.
        let options =
            SqliteConnectOptions::from_str("sqlite::memory:").map_err(OpenError::Connect)?;
        Self::open_inner(options, 0, Sharing::Owned).await
    }

    /// Opens and claims with explicit connection options and `readers` reader connections
    /// besides the writer (0: reads run on the writer thread). WAL, `synchronous=NORMAL`,
    /// foreign keys, a 10 s busy timeout and a 16 MiB page cache are always set. The options
    /// are those of the migrating connection and of [`SqliteStore::pool`]; the store's own
    /// connections (rusqlite) take the file name from them and set the settings above.
    ///
    /// # Errors
    /// [`OpenError`].
    pub async fn open_with(options: SqliteConnectOptions, readers: u32) -> Result<Self, OpenError> {
        Self::open_inner(options, readers, Sharing::Owned).await
    }

    async fn open_inner(
        options: SqliteConnectOptions,
        readers: u32,
        sharing: Sharing,
    ) -> Result<Self, OpenError> {
        let name = options.get_filename().to_owned();
        let in_memory = name.to_string_lossy().contains("sqlx-in-memory");
        let lock = if in_memory {
            None
        } else {
            Some(claim(&name, sharing)?)
        };
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("cache_size", CACHE_SIZE);
        // An in-memory database lives while a connection to it is open: the writer opens it
        // (joining sqlx's shared-cache name) before the migrator's connection comes and goes.
        let early = if in_memory {
            Some(connect(&name, true).map_err(engine)?)
        } else {
            None
        };
        let mut migrating = SqliteConnection::connect_with(&options)
            .await
            .map_err(OpenError::Connect)?;
        MIGRATOR
            .run_direct(&mut migrating)
            .await
            .map_err(|e| match e {
                sqlx::migrate::MigrateError::VersionMissing(version) => {
                    OpenError::NewerSchema { version }
                }
                other => OpenError::Migrate(other),
            })?;
        let _ = migrating.close().await;
        let writer = match early {
            Some(w) => w,
            None => connect(&name, false).map_err(engine)?,
        };
        let mut conns = Vec::new();
        if !in_memory {
            for _ in 0..readers {
                conns.push(connect(&name, false).map_err(engine)?);
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .connect_lazy_with(options);
        let cache = (sharing == Sharing::Owned).then(|| Arc::new(Cache::default()));
        let lock = Arc::new(std::sync::Mutex::new(lock));
        let conns = Connections::new(writer, conns, cache.clone(), lock.clone())
            .map_err(|e| OpenError::Engine(Box::new(e)))?;
        Ok(Self {
            conns: Arc::new(conns),
            pool,
            cache,
            lock,
        })
    }

    /// A pool on the same database for the host's own queries (connections open on first
    /// use). Writes through it bypass the store's checks; the schema's constraints and
    /// triggers still apply.
    #[must_use]
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes every connection and gives up the claim on the file; later calls fail with
    /// [`StoreError::Backend`](tenantry_store::StoreError::Backend).
    pub async fn close(&self) {
        self.pool.close().await;
        self.conns.close().await;
        let lock = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(lock);
    }
}

/// SQLite's page cache per connection, in KiB when negative: 16 MiB (SQLite's default is
/// 2 MiB); an invite touches a page in each of about twenty B-trees.
const CACHE_SIZE: &str = "-16384";

fn engine(e: rusqlite::Error) -> OpenError {
    OpenError::Engine(Box::new(e))
}

/// One of the store's own connections to the database `name` (a file, or sqlx's name of a
/// shared-cache in-memory database): WAL (for a file), `synchronous=NORMAL`, foreign keys,
/// a 10 s busy timeout, the page cache, and room for every statement the store prepares.
fn connect(name: &Path, in_memory: bool) -> Result<rusqlite::Connection, rusqlite::Error> {
    use rusqlite::OpenFlags;
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if in_memory {
        flags |= OpenFlags::SQLITE_OPEN_MEMORY | OpenFlags::SQLITE_OPEN_SHARED_CACHE;
    }
    let conn = rusqlite::Connection::open_with_flags(name, flags)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    if !in_memory {
        conn.pragma_update(None, "journal_mode", "WAL")?;
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA cache_size = {CACHE_SIZE};"
    ))?;
    conn.set_prepared_statement_cache_capacity(crate::conn::STATEMENT_CACHE);
    Ok(conn)
}

/// Claims the database at `path`: creates `<path>.lock` and locks it, exclusively for an
/// owning store, shared for a sharing one (so owners and sharers exclude each other, while
/// sharers coexist). The lock is held while the returned file is open.
fn claim(path: &Path, sharing: Sharing) -> Result<std::fs::File, OpenError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&name)
        .map_err(OpenError::Lock)?;
    let locked = match sharing {
        Sharing::Owned => file.try_lock(),
        Sharing::Shared => file.try_lock_shared(),
    };
    match locked {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpenError::InUse {
            path: path.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(OpenError::Lock(e)),
    }
}
