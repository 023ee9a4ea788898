//! Many statements sent to SQLite in one round trip.
//!
//! A change's statements, from its `BEGIN IMMEDIATE` to its `COMMIT`, go to the connection's
//! worker thread as one multi-statement query.
//! Placeholders are plain `?`: sqlx hands each statement the next values of the one argument
//! list in order. (Numbered `?N` do not work across statements: SQLite counts a statement's
//! parameters up to its highest number, and sqlx takes the unnamed gaps below it as
//! positional values, running out before it reaches the named ones.) A statement that must
//! change exactly one row is followed by a guard that fails the batch when it did not (see
//! [`Expect`]), so the batch stops before its `COMMIT` whatever went wrong, and the caller
//! rolls back.

use futures::TryStreamExt;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Arguments, Either, Encode, Sqlite, SqliteConnection, Type};
use tenantry_store::{Constraint, StoreError};

use crate::rows::backend;

/// What a statement's result must be. Anything but [`Expect::Any`] adds a guard statement
/// after it: an insert into the always-empty `batch_guard` table of a row naming the rule,
/// made only when the statement did not change exactly one row, which that rule's CHECK
/// refuses. The batch stops at the error, before its `COMMIT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Anything (the statement fails on its own when it must).
    Any,
    /// Exactly one row, else [`Constraint::MissingRow`] (`guard_missing_row`).
    Row,
    /// Exactly one row, else [`StoreError::NotFound`]: the tenant is gone (`guard_tenant`).
    Found,
    /// The version compare-and-set: exactly one row, else the tenant changed or is gone
    /// (`guard_version`).
    Cas,
    /// The counters the triggers kept equal the change's, else [`Constraint::Counters`]
    /// (`guard_counters`).
    Counters,
}

impl Expect {
    fn rule(self) -> Option<&'static str> {
        match self {
            Expect::Any => None,
            Expect::Row => Some("missing_row"),
            Expect::Found => Some("tenant"),
            Expect::Cas => Some("version"),
            Expect::Counters => Some("counters"),
        }
    }
}

/// A statement of the batch failed; `remap` is the conflict its statement names for a
/// foreign key failure, if any.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: sqlx::Error,
    pub(crate) remap: Option<Constraint>,
}

/// A multi-statement query under construction.
#[derive(Default)]
pub(crate) struct Batch {
    sql: String,
    args: SqliteArguments<'static>,
    /// Per statement, the conflict a foreign key failure of it means.
    remaps: Vec<Option<Constraint>>,
    /// The guard of the statement last pushed, appended once its values are bound.
    pending_guard: Option<&'static str>,
    bind_error: Option<StoreError>,
}

impl Batch {
    /// Appends one statement whose `?` placeholders (plain, not numbered) take the values
    /// bound next, in order.
    pub(crate) fn push(&mut self, sql: &str, expect: Expect) -> &mut Self {
        self.push_remapped(sql, expect, None)
    }

    /// As [`Batch::push`]; a foreign key failure of this statement means `fk` instead.
    pub(crate) fn push_remapped(
        &mut self,
        sql: &str,
        expect: Expect,
        fk: Option<Constraint>,
    ) -> &mut Self {
        self.flush_guard();
        self.sql.push_str(sql);
        self.sql.push_str(";\n");
        self.remaps.push(fk);
        self.pending_guard = expect.rule();
        self
    }

    /// Appends the guard of the statement pushed last, if it has one.
    fn flush_guard(&mut self) {
        if let Some(rule) = self.pending_guard.take() {
            self.sql
                .push_str("INSERT INTO batch_guard (rule) SELECT ? WHERE changes() <> 1;\n");
            self.remaps.push(None);
            self.add(rule);
        }
    }

    /// Binds the next placeholder.
    pub(crate) fn bind<T>(&mut self, value: T) -> &mut Self
    where
        T: Encode<'static, Sqlite> + Type<Sqlite> + 'static,
    {
        self.add(value);
        self
    }

    fn add<T>(&mut self, value: T)
    where
        T: Encode<'static, Sqlite> + Type<Sqlite> + 'static,
    {
        if let Err(e) = self.args.add(value) {
            self.bind_error.get_or_insert(StoreError::Backend {
                backend: crate::rows::BACKEND,
                source: e,
            });
        }
    }

    /// Runs every statement in one round trip. Returns the rows the statements returned,
    /// or the first statement's failure (the statements after it did not run).
    pub(crate) async fn run(
        mut self,
        conn: &mut SqliteConnection,
    ) -> Result<Result<Vec<SqliteRow>, Failure>, StoreError> {
        self.flush_guard();
        if let Some(e) = self.bind_error {
            return Err(e);
        }
        let mut rows = Vec::new();
        let mut done = 0usize;
        // Deprecated in sqlx 0.8 (multi-statement queries are SQLite-only), and the one
        // way to send a change's statements in one round trip with bound values.
        #[allow(deprecated)]
        let mut stream = sqlx::query_with(&self.sql, self.args).fetch_many(conn);
        loop {
            match stream.try_next().await {
                Ok(Some(Either::Right(row))) => rows.push(row),
                Ok(Some(Either::Left(_))) => done += 1,
                Ok(None) => break,
                Err(error) => {
                    let remap = self.remaps.get(done).copied().flatten();
                    return Ok(Err(Failure { error, remap }));
                }
            }
        }
        if done != self.remaps.len() {
            return Err(backend(std::io::Error::other(format!(
                "a batch of {} statements reported {done} results",
                self.remaps.len()
            ))));
        }
        Ok(Ok(rows))
    }
}
