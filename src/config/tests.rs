//! The loader's tests: the shipped file, unknown keys, bad values, precedence, safety rules.

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn the_shipped_config_file_parses_and_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let config = Config::read(&path).unwrap();
    config.validate().unwrap();
    assert_eq!(config.llm.provider, "mock");
    assert_eq!(config.server.listen_address, "127.0.0.1");
}

#[test]
fn unknown_keys_are_refused_with_their_path() {
    let err = parse_file(Path::new("x.toml"), "[server]\nprot = 1\n").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("`server.prot`"), "{text}");
    // What is wrong and where, not only where.
    assert!(
        text.contains("unknown field `prot`, expected one of") && text.contains("`port`"),
        "{text}"
    );
    assert!(text.contains("line 2, column 1"), "{text}");
    let err = parse_file(Path::new("x.toml"), "[sever]\n").unwrap_err();
    assert!(err.to_string().contains("`sever`"), "{err}");
}

#[test]
fn bad_values_name_their_key() {
    let err = parse_file(Path::new("x.toml"), "[server]\nport = \"high\"\n").unwrap_err();
    assert!(err.to_string().contains("`server.port`"), "{err}");
    assert!(
        err.to_string().contains("invalid type: string \"high\", expected u16"),
        "{err}"
    );
    let err = parse_file(Path::new("x.toml"), "[server]\nport = 70000\n").unwrap_err();
    assert!(
        err.to_string().contains("`server.port`") && err.to_string().contains("70000"),
        "{err}"
    );
    let cli = Cli {
        env_only: true,
        ..Cli::default()
    };
    let err = Config::load(&cli, |k| (k == "AICHAT_PORT").then(|| "99999".to_owned())).unwrap_err();
    assert!(err.to_string().contains("AICHAT_PORT"), "{err}");
    let err = Config::load(&cli, |k| (k == "AICHAT_LLM_PROVIDER").then(|| "skynet".to_owned())).unwrap_err();
    assert!(err.to_string().contains("llm.provider"), "{err}");
}

#[test]
fn precedence_is_defaults_then_file_then_env_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[server]\nport = 4000\nmax_message_chars = 10\n[log]\nlevel = \"warn\"\n",
    )
    .unwrap();
    let env = |k: &str| match k {
        "AICHAT_PORT" => Some("5000".to_owned()),
        "AICHAT_LOG_LEVEL" => Some("debug".to_owned()),
        "AICHAT_API_KEY" => Some("sk-very-secret".to_owned()),
        _ => None,
    };
    let cli = Cli {
        config: Some(path.clone()),
        port: Some(6000),
        ..Cli::default()
    };
    let config = Config::load(&cli, env).unwrap();
    assert_eq!(config.server.port, 6000);
    assert_eq!(config.log.level, "debug");
    assert_eq!(config.server.max_message_chars, 10);
    assert_eq!(config.server.max_body_bytes, ServerConfig::default().max_body_bytes);
    let shown = format!("{config:?}");
    assert!(!shown.contains("sk-very-secret"), "secret leaked into Debug output");
    assert_eq!(config.llm.api_key.as_ref().map(Secret::expose), Some("sk-very-secret"));
    let cli = Cli {
        config: Some(path),
        ..Cli::default()
    };
    assert_eq!(Config::load(&cli, no_env).unwrap().server.port, 4000);
}

#[test]
fn public_addresses_need_authentication() {
    let mut config = Config::default();
    config.server.listen_address = "0.0.0.0".into();
    assert!(config.validate().unwrap_err().to_string().contains("auth.mode"));
    config.auth.allow_header_mode_on_network = true;
    config.validate().unwrap();
    config.auth.mode = "api_key".into();
    assert!(config.validate().unwrap_err().to_string().contains("auth.api_keys"));
    config.auth.api_keys = vec![format!("sha256:{}:3", "ab".repeat(32))];
    config.validate().unwrap();
    config.auth.api_keys = vec!["sha256:nothex:3".into()];
    assert!(config.validate().is_err());
    let hashes = Config {
        auth: AuthConfig {
            api_keys: vec![format!("sha256:{}:3", "0f".repeat(32))],
            ..AuthConfig::default()
        },
        ..Config::default()
    }
    .api_key_hashes()
    .unwrap();
    assert_eq!(hashes, vec![(vec![0x0f; 32], 3)]);
}

#[test]
fn database_urls_are_sqlite_or_postgres_and_other_schemes_are_refused() {
    let mut config = Config::default();
    for bad in ["mysql://x/db", "postgres://host:notaport/db", "sqlite:"] {
        config.database.url = bad.into();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("database.url"), "{bad}: {err}");
    }
    config.database.url = "sqlite:/tmp/a.db".into();
    assert!(matches!(config.database.target().unwrap(), DatabaseTarget::Sqlite(p) if p == Path::new("/tmp/a.db")));
    for good in [
        "postgres://u@db.example:5433/chat?sslmode=require",
        "postgresql://u@localhost/chat",
    ] {
        config.database.url = good.into();
        config.validate().unwrap();
        assert!(matches!(config.database.target().unwrap(), DatabaseTarget::Postgres(_)));
    }
}

#[test]
fn the_postgres_password_comes_from_the_environment_never_from_the_file_nor_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, "[database]\nurl = \"postgres://u:hunter2@localhost/chat\"\n").unwrap();
    let cli = Cli {
        config: Some(file.clone()),
        ..Cli::default()
    };
    let err = Config::load(&cli, |_| None).unwrap_err().to_string();
    assert!(err.contains("database.url") && err.contains("PGPASSWORD"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");

    std::fs::write(
        &file,
        "[database]\nurl = \"postgres://u@localhost/chat\"\npassword_env = \"CHAT_DB_PASSWORD\"\n",
    )
    .unwrap();
    let env = |k: &str| (k == "CHAT_DB_PASSWORD").then(|| "s3cret".to_owned());
    let config = Config::load(&cli, env).unwrap();
    assert_eq!(config.database.password.as_ref().map(Secret::expose), Some("s3cret"));
    let shown = format!("{:?}", config.database);
    assert!(!shown.contains("s3cret"), "{shown}");

    // A URL from a flag may carry the password; it is never shown.
    let cli = Cli {
        database_url: Some("postgres://u:hunter2@localhost/chat".into()),
        ..Cli::default()
    };
    let config = Config::load(&cli, |_| None).unwrap();
    assert!(config.database.password.is_none());
    let shown = format!("{:?}", config.database);
    assert!(
        !shown.contains("hunter2") && shown.contains("postgres://localhost:5432/chat"),
        "{shown}"
    );
}

#[test]
fn the_vendor_key_follows_the_provider_chosen_by_any_layer() {
    let env = |k: &str| (k == "OPENAI_API_KEY").then(|| "sk-test".to_owned());
    let by_flag = Cli {
        env_only: true,
        llm_provider: Some("openai".into()),
        ..Cli::default()
    };
    let config = Config::load(&by_flag, env).expect("the flag's provider finds OPENAI_API_KEY");
    assert_eq!(config.llm.api_key.as_ref().map(Secret::expose), Some("sk-test"));
    let by_env = |k: &str| match k {
        "AICHAT_LLM_PROVIDER" => Some("openai".to_owned()),
        other => env(other),
    };
    let env_only = Cli {
        env_only: true,
        ..Cli::default()
    };
    assert!(Config::load(&env_only, by_env).is_ok());
}
