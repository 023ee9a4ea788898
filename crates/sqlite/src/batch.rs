//! Many statements sent to SQLite in one round trip.
//!
//! A commit's statements go to the connection's worker thread as one multi-statement query.
//! Placeholders are plain `?`: sqlx hands each statement the next values of the one argument
//! list in order. (Numbered `?N` do not work across statements: SQLite counts a statement's
//! parameters up to its highest number, and sqlx takes the unnamed gaps below it as
//! positional values, running out before it reaches the named ones.) Each statement says
//! what its result must be. The results stream back in order, so the first statement that did not do what it
//! had to is known even when a later one failed.

use futures::TryStreamExt;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Arguments, Either, Encode, Sqlite, SqliteConnection, Type};
use tenantry_store::{Constraint, StoreError};

use crate::rows::backend;

/// What a statement's result must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Anything (the statement fails on its own when it must).
    Any,
    /// Exactly one row changed, else the given conflict.
    One(Constraint),
    /// Exactly one row changed, else [`StoreError::NotFound`] (the tenant is gone).
    Found,
    /// The version compare-and-set: exactly one row, else the tenant changed or is gone.
    Cas,
}

/// Why a batch did not do what it had to.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A statement's result broke its expectation.
    Expectation(Expect),
    /// A statement failed; `remap` is the conflict its statement names for a foreign key
    /// failure, if any.
    Error(sqlx::Error, Option<Constraint>),
}

/// A multi-statement query under construction.
#[derive(Default)]
pub(crate) struct Batch {
    sql: String,
    args: SqliteArguments<'static>,
    expects: Vec<(Expect, Option<Constraint>)>,
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
        self.sql.push_str(sql);
        self.sql.push_str(";\n");
        self.expects.push((expect, fk));
        self
    }

    /// Binds the next placeholder.
    pub(crate) fn bind<T>(&mut self, value: T) -> &mut Self
    where
        T: Encode<'static, Sqlite> + Type<Sqlite> + 'static,
    {
        if let Err(e) = self.args.add(value) {
            self.bind_error.get_or_insert(StoreError::Backend {
                backend: crate::rows::BACKEND,
                source: e,
            });
        }
        self
    }

    /// Runs every statement in one round trip. Returns the rows the statements returned,
    /// or the first failure in statement order.
    pub(crate) async fn run(
        self,
        conn: &mut SqliteConnection,
    ) -> Result<Result<Vec<SqliteRow>, Failure>, StoreError> {
        if let Some(e) = self.bind_error {
            return Err(e);
        }
        let mut rows = Vec::new();
        let mut done = 0usize;
        let mut failure = None;
        {
            // Deprecated in sqlx 0.8 (multi-statement queries are SQLite-only), and the one
            // way to send a commit's statements in one round trip with bound values.
            #[allow(deprecated)]
            let mut stream = sqlx::query_with(&self.sql, self.args).fetch_many(conn);
            loop {
                match stream.try_next().await {
                    Ok(Some(Either::Right(row))) => rows.push(row),
                    Ok(Some(Either::Left(result))) => {
                        if let (None, Some((expect, _))) = (&failure, self.expects.get(done))
                            && *expect != Expect::Any
                            && result.rows_affected() != 1
                        {
                            failure = Some(Failure::Expectation(*expect));
                        }
                        done += 1;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        if failure.is_none() {
                            let fk = self.expects.get(done).and_then(|(_, fk)| *fk);
                            failure = Some(Failure::Error(e, fk));
                        }
                        break;
                    }
                }
            }
        }
        if failure.is_none() && done != self.expects.len() {
            return Err(backend(std::io::Error::other(format!(
                "a batch of {} statements reported {done} results",
                self.expects.len()
            ))));
        }
        Ok(failure.map_or(Ok(rows), Err))
    }
}
