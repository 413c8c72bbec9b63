//! Pooled connections that keep their prepared statements: a statement is parsed once per
//! connection, after which each use is one round trip instead of two (prepare, then execute).

use std::collections::HashMap;

use postgres::types::ToSql;
use postgres::{Client, GenericClient, IsolationLevel, Row, Statement, Transaction};
use r2d2::ManageConnection;
use r2d2_postgres::PostgresConnectionManager;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::storage::StorageError;

/// Parameters of one statement.
pub(super) type Params<'p> = [&'p (dyn ToSql + Sync)];

/// The r2d2 manager: `r2d2_postgres`'s, with a statement cache on each connection.
pub(super) struct CachingManager(pub(super) PostgresConnectionManager<MakeRustlsConnect>);

impl std::fmt::Debug for CachingManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CachingManager")
    }
}

/// A client and the statements prepared on it (they live as long as its session).
pub(super) struct CachedClient {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl ManageConnection for CachingManager {
    type Connection = CachedClient;
    type Error = postgres::Error;

    fn connect(&self) -> Result<CachedClient, postgres::Error> {
        Ok(CachedClient {
            client: self.0.connect()?,
            statements: HashMap::new(),
        })
    }

    fn is_valid(&self, conn: &mut CachedClient) -> Result<(), postgres::Error> {
        self.0.is_valid(&mut conn.client)
    }

    fn has_broken(&self, conn: &mut CachedClient) -> bool {
        self.0.has_broken(&mut conn.client)
    }
}

/// The statement for `sql` on this connection, prepared on first use.
fn prepared(
    client: &mut impl GenericClient,
    statements: &mut HashMap<String, Statement>,
    sql: &str,
) -> Result<Statement, StorageError> {
    if let Some(statement) = statements.get(sql) {
        return Ok(statement.clone());
    }
    let statement = client.prepare(sql)?;
    statements.insert(sql.to_owned(), statement.clone());
    Ok(statement)
}

/// The queries both a connection and a transaction answer, through the statement cache.
pub(super) trait Queries {
    fn execute(&mut self, sql: &str, params: &Params<'_>) -> Result<u64, StorageError>;
    fn query(&mut self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, StorageError>;
    fn query_opt(&mut self, sql: &str, params: &Params<'_>) -> Result<Option<Row>, StorageError>;

    fn query_one(&mut self, sql: &str, params: &Params<'_>) -> Result<Row, StorageError> {
        self.query_opt(sql, params)?
            .ok_or_else(|| StorageError::Unavailable("a query that returns one row returned none".into()))
    }
}

macro_rules! cached_queries {
    ($type:ty, $client:ident) => {
        impl Queries for $type {
            fn execute(&mut self, sql: &str, params: &Params<'_>) -> Result<u64, StorageError> {
                let statement = prepared(&mut self.$client, &mut self.statements, sql)?;
                Ok(self.$client.execute(&statement, params)?)
            }

            fn query(&mut self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, StorageError> {
                let statement = prepared(&mut self.$client, &mut self.statements, sql)?;
                Ok(self.$client.query(&statement, params)?)
            }

            fn query_opt(&mut self, sql: &str, params: &Params<'_>) -> Result<Option<Row>, StorageError> {
                let statement = prepared(&mut self.$client, &mut self.statements, sql)?;
                Ok(self.$client.query_opt(&statement, params)?)
            }
        }
    };
}

cached_queries!(CachedClient, client);
cached_queries!(Tx<'_>, tx);

impl CachedClient {
    /// Opens a transaction whose statements go through this connection's cache.
    pub(super) fn begin(&mut self, isolation: IsolationLevel) -> Result<Tx<'_>, StorageError> {
        let tx = self.client.build_transaction().isolation_level(isolation).start()?;
        Ok(Tx {
            tx,
            statements: &mut self.statements,
        })
    }

    /// A statement without parameters, not cached (a health probe).
    pub(super) fn simple_query(&mut self, sql: &str) -> Result<(), StorageError> {
        self.client.simple_query(sql)?;
        Ok(())
    }
}

/// An open transaction on a cached connection.
pub(super) struct Tx<'c> {
    tx: Transaction<'c>,
    statements: &'c mut HashMap<String, Statement>,
}

impl Tx<'_> {
    pub(super) fn commit(self) -> Result<(), StorageError> {
        Ok(self.tx.commit()?)
    }
}
