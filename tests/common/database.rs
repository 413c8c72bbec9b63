//! Where a test's server keeps its history: a fresh SQLite file, or a fresh database on the
//! PostgreSQL test cluster (`scripts/test-postgres.sh`, started once per run by `scripts/test.sh`),
//! so the persistence tests run unchanged on both backends.

use std::path::{Path, PathBuf};

/// The two storage backends.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database for one test, with a directory beside it for the config file and other files.
pub struct Database {
    url: String,
    config_path: PathBuf,
}

impl Database {
    /// A fresh database of `backend` whose config file and other files go in `dir`.
    pub fn fresh(backend: Backend, dir: &Path) -> Self {
        let url = match backend {
            Backend::Sqlite => format!("sqlite:{}", dir.join("chat.db").display()),
            Backend::Postgres => fresh_postgres_database(),
        };
        Self {
            url,
            config_path: dir.join("chat.toml"),
        }
    }

    /// The database at `url`, its config file in `dir`.
    pub fn at(url: String, dir: &Path) -> Self {
        Self {
            url,
            config_path: dir.join("chat.toml"),
        }
    }

    /// The SQLite file `path` (config file beside it, named after it).
    pub fn sqlite_file(path: &Path) -> Self {
        Self {
            url: format!("sqlite:{}", path.display()),
            config_path: path.with_extension("toml"),
        }
    }

    /// The `database.url` of it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where the server's config file goes.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }
}

/// The test cluster's URL.
#[expect(
    clippy::disallowed_methods,
    reason = "the test script hands the cluster over in the environment"
)]
pub fn cluster_url() -> String {
    std::env::var("AICHAT_TEST_POSTGRES_URL").expect(
        "AICHAT_TEST_POSTGRES_URL names the PostgreSQL test cluster: run the tests with scripts/test.sh \
         (it starts one with scripts/test-postgres.sh)",
    )
}

/// A new, empty database on the test cluster; its URL.
pub fn fresh_postgres_database() -> String {
    let url = cluster_url();
    let name = format!("e2e_{}", uuid_simple());
    // On a plain thread: the sync client blocks on its own runtime, which the test's refuses.
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        })
        .join()
        .unwrap();
    });
    with_database(&url, &name)
}

/// The `host:port` of a URL.
pub fn host_port(url: &str) -> &str {
    let after_at = url.rsplit_once('@').map_or(url, |(_, rest)| rest);
    after_at.split('/').next().unwrap()
}

/// `url` with its database replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{name}?{query}")
}

fn uuid_simple() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// One test body, run as two tests: `<name>::on_sqlite` and `<name>::on_postgres`.
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[actix_web::test]
            async fn on_sqlite() {
                super::$name(crate::common::database::Backend::Sqlite).await
            }

            #[actix_web::test]
            async fn on_postgres() {
                super::$name(crate::common::database::Backend::Postgres).await
            }
        }
    };
}
pub(crate) use on_both_backends;
