//! Operators' routes: who may use `/admin` (401 for nobody, 403 `admin_required` for a plain
//! user); `POST /admin/reload` applying a changed configuration live — providers added and
//! removed (a turn running on a removed one finishes), limits — or refusing a broken one whole;
//! providers registered, changed and removed through the API, stored across restarts.

use std::path::Path;
use std::sync::{Arc, Mutex};

use aichat::config::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::database::{Backend, Database, on_both_backends};
use crate::common::{TestApp, text_of};
use crate::restart::Binary;

const ADMIN: i64 = 9;

/// A test configuration from TOML (as a file would give it), on the database `db`.
fn config_from(db: &Path, toml: &str) -> Config {
    let text = format!(
        "[auth]\nadmin_users = [{ADMIN}]\n[mock]\nchunk_delay_ms = 50\n[approval]\ndefault = \"allow\"\n{toml}"
    );
    let mut config = aichat::config::parse_file(Path::new("test.toml"), &text).unwrap();
    config.server.port = 0;
    config.server.workers = 2;
    config.database.url = format!("sqlite:{}", db.display());
    config.finish(&|_| None).unwrap();
    config
}

fn provider_names(list: &Value) -> Vec<String> {
    list["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

#[actix_web::test]
async fn admin_reload_changes_providers_and_limits_live_and_refuses_a_broken_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let second = "[[providers]]\nname = \"second\"\nkind = \"mock\"\n";
    let first = config_from(&db, second);
    // What the next reload reads: a configuration, or (None) a file with an unknown key.
    let next = Arc::new(Mutex::new(Some(first.clone())));
    let loader = {
        let next = Arc::clone(&next);
        aichat::reload::Loader::new(
            Box::new(move || match next.lock().unwrap().clone() {
                Some(config) => Ok(config),
                None => aichat::config::parse_file(Path::new("broken.toml"), "[limits]\nturns_per_minute = 5\n"),
            }),
            |_| None,
        )
    };
    let app = TestApp::spawn_reloadable(dir, &first, loader);

    // Access: nobody → 401, a plain user → 403, the admin → 200 (nothing changed).
    let (status, body) = app.request(reqwest::Method::POST, "/admin/reload", None, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );
    let (status, body) = app.post("/admin/reload", 1, json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("admin_required")),
        "{body}"
    );
    let (status, body) = app.post("/admin/reload", ADMIN, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["changed"], json!([]));

    // A turn on `second` is running (20 words, 50 ms apart) when `second` is removed.
    let (status, started) = app
        .post(
            "/send?streaming=true",
            2,
            json!({"message": "/mock words 20", "provider": "second"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let running = started["stream_id"].as_str().unwrap().to_owned();

    let third = "[[providers]]\nname = \"third\"\nkind = \"mock\"\n[limits]\nmax_concurrent_turns_per_user = 7\n\
                 [session]\nfirst_token_timeout_secs = 1\n";
    *next.lock().unwrap() = Some(config_from(&db, third));
    let (status, report) = app.post("/admin/reload", ADMIN, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["providers_added"], json!(["third"]), "{report}");
    assert_eq!(report["providers_removed"], json!(["second"]), "{report}");
    let applied = report["applied"].as_array().unwrap();
    for section in ["providers", "limits", "session"] {
        assert!(applied.contains(&json!(section)), "{section}: {report}");
    }
    assert_eq!(report["needs_restart"], json!([]), "{report}");

    // The running turn finishes on the provider it started with.
    let events = app.sse(2, &running, None).await;
    assert_eq!(events.last().unwrap().data["type"], "done", "{events:?}");
    assert_eq!(text_of(&events).split_whitespace().count(), 20);

    // New turns see the new set: `third` answers, `second` is unknown.
    let names = provider_names(&app.get("/providers", 1).await.1);
    assert!(
        names.contains(&"third".to_owned()) && !names.contains(&"second".to_owned()),
        "{names:?}"
    );
    let (status, body) = app
        .post("/send", 3, json!({"message": "hello", "provider": "third"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .post("/send", 3, json!({"message": "hello", "provider": "second"}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_parameter")),
        "{body}"
    );

    // The new session timeouts: a first token 3 s away now times out after 1 s.
    let (_, events) = app.turn(5, "/mock slow 3000", None).await;
    let last = &events.last().unwrap().data;
    assert_eq!(
        (last["type"].as_str(), last["code"].as_str()),
        (Some("error"), Some("timeout")),
        "{events:?}"
    );

    // A broken configuration is refused with its reason; the running one stays.
    *next.lock().unwrap() = None;
    let (status, body) = app.post("/admin/reload", ADMIN, json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("config_invalid")),
        "{body}"
    );
    assert!(body["error"].as_str().unwrap().contains("turns_per_minute"), "{body}");
    let names = provider_names(&app.get("/providers", 1).await.1);
    assert!(names.contains(&"third".to_owned()), "{names:?}");
}

on_both_backends!(providers_registered_through_the_api_serve_survive_a_restart_and_leave_cleanly);

/// A provider added through the admin API serves a turn at once, is listed beside the file's,
/// survives a restart (stored in the database), and is removed while a turn on it finishes
/// cleanly. The file's providers cannot be changed through the API; bad settings say why.
async fn providers_registered_through_the_api_serve_survive_a_restart_and_leave_cleanly(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::fresh(backend, dir.path());
    let config = format!("[auth]\nadmin_users = [{ADMIN}]\n[mock]\nchunk_delay_ms = 50\n");
    let first = Binary::start_on(&db, &config, &[]);
    let app = TestApp::client_for(&first.base);

    let extra = json!({"name": "extra", "settings": {"kind": "mock", "temperature": 0.7}});
    let (status, body) = app.post("/admin/providers", 1, extra.clone()).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("admin_required"))
    );
    let (status, report) = app.post("/admin/providers", ADMIN, extra.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{report}");
    assert_eq!(report["providers_added"], json!(["extra"]));
    let refusals = [
        (extra.clone(), StatusCode::CONFLICT, "provider_exists"),
        (
            json!({"name": "mock", "settings": {"kind": "mock"}}),
            StatusCode::CONFLICT,
            "provider_exists",
        ),
        (
            json!({"name": "paid", "settings": {"kind": "openai", "api_key_env": "AICHAT_TEST_NO_SUCH_KEY"}}),
            StatusCode::CONFLICT,
            "provider_key_missing",
        ),
        (
            json!({"name": "odd name", "settings": {"kind": "mock"}}),
            StatusCode::BAD_REQUEST,
            "invalid_provider",
        ),
        (
            json!({"name": "x", "settings": {"kind": "cohere"}}),
            StatusCode::BAD_REQUEST,
            "invalid_provider",
        ),
        (
            json!({"settings": {"kind": "mock"}}),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
    ];
    for (body, status, code) in refusals {
        let (got, reply) = app.post("/admin/providers", ADMIN, body.clone()).await;
        assert_eq!((got, reply["code"].as_str()), (status, Some(code)), "{body} -> {reply}");
    }
    let (status, reply) = app.put("/admin/providers/mock", ADMIN, json!({"kind": "mock"})).await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (StatusCode::CONFLICT, Some("provider_from_file"))
    );
    let (status, reply) = app.put("/admin/providers/nobody", ADMIN, json!({"kind": "mock"})).await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("provider_not_found"))
    );

    let (status, body) = app
        .post("/send", 2, json!({"message": "hello", "provider": "extra"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, listed) = app.get("/admin/providers", ADMIN).await;
    let sources: Vec<(&str, &str)> = listed["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["source"].as_str().unwrap()))
        .collect();
    assert_eq!(sources, [("mock", "file"), ("extra", "api")], "{listed}");
    assert_eq!(listed["providers"][1]["updated_by"], json!(format!("user {ADMIN}")));
    assert_eq!(
        listed["providers"][1]["settings"]["temperature"],
        json!(0.7),
        "kept exactly"
    );
    first.kill();

    // After a restart it is still there and serves; then it leaves while a turn runs on it.
    let second = Binary::start_on(&db, &config, &[]);
    let app = TestApp::client_for(&second.base);
    let names = provider_names(&app.get("/providers", 1).await.1);
    assert_eq!(names, ["mock", "extra"]);
    let (status, started) = app
        .post(
            "/send?streaming=true",
            3,
            json!({"message": "/mock words 20", "provider": "extra"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let (status, report) = app.delete("/admin/providers/extra", ADMIN).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["providers_removed"], json!(["extra"]));
    let events = app.sse(3, started["stream_id"].as_str().unwrap(), None).await;
    assert_eq!(events.last().unwrap().data["type"], "done", "{events:?}");
    assert_eq!(text_of(&events).split_whitespace().count(), 20);
    let (status, body) = app
        .post("/send", 3, json!({"message": "hello", "provider": "extra"}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_parameter"))
    );
    assert_eq!(
        app.delete("/admin/providers/extra", ADMIN).await.0,
        StatusCode::NOT_FOUND
    );
    assert!(
        second
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("registered providers changed") && l.contains("admin user 9")),
        "the change is logged with who made it"
    );
    second.kill();
}

/// The process whose command line has `arg`, if one runs (not a zombie).
fn process_with(arg: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let has = cmdline.split(|b| *b == 0).any(|part| part == arg.as_bytes());
            let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
            let alive = status.lines().any(|l| l.starts_with("State:") && !l.contains("zombie"));
            (has && alive).then_some(pid)
        })
}

/// MCP servers change on reload too: a server added to the configuration starts and its tools
/// are offered; removed while one of its tools runs, the call finishes and the turn ends with
/// its result; then the server is gone, its process too.
#[actix_web::test]
async fn a_reload_starts_and_stops_mcp_servers_and_calls_in_flight_finish() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let exe = env!("CARGO_BIN_EXE_aichat");
    let label = format!("reload-test-{}", std::process::id());
    let demo = format!(
        "[[mcp.servers]]\nname = \"demo\"\ncommand = \"{exe}\"\nargs = [\"mcp-demo\", \"--label\", \"{label}\"]\n"
    );
    let without = config_from(&db, "");
    let next = Arc::new(Mutex::new(without.clone()));
    let loader = {
        let next = Arc::clone(&next);
        aichat::reload::Loader::new(Box::new(move || Ok(next.lock().unwrap().clone())), |_| None)
    };
    let app = TestApp::spawn_reloadable(dir, &without, loader);

    *next.lock().unwrap() = config_from(&db, &demo);
    let (status, report) = app.post("/admin/reload", ADMIN, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["mcp_servers_added"], json!(["demo"]), "{report}");
    assert!(
        report["applied"].as_array().unwrap().contains(&json!("mcp")),
        "{report}"
    );
    app.wait_for_server("demo").await;
    let process = process_with(&label).expect("the demo server's process runs");

    let call = r#"/mock tools [{"name":"demo__sleep_ms","arguments":{"ms":1500}}]"#;
    let (stream, _) = app.start_stream(4, call, None).await;
    crate::common::eventually("the call to be in flight", || async {
        let servers = app.get("/mcp/servers", 1).await.1;
        servers["servers"][0]["calls_in_flight"] == json!(1)
    })
    .await;
    *next.lock().unwrap() = without.clone();
    let (status, report) = app.post("/admin/reload", ADMIN, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["mcp_servers_removed"], json!(["demo"]), "{report}");
    let servers = app.get("/mcp/servers", 1).await.1;
    assert_eq!(servers["servers"], json!([]), "new turns see no server");

    let events = app.sse(4, &stream, None).await;
    let done = crate::common::executions(&events);
    assert_eq!(done[0]["result"], json!("slept 1500 ms"), "{done:?}");
    assert_eq!(events.last().unwrap().data["type"], "done");
    crate::common::eventually("the removed server's process to exit", || async {
        process_with(&label) != Some(process)
    })
    .await;
}

/// An MCP server registered through the admin API (HTTP only; the secret header it needs named
/// by an environment variable of the server) offers its tools, is listed without the secret,
/// survives a restart, and is removed. Programs to run are refused; a missing variable is said.
#[actix_web::test]
async fn mcp_servers_registered_through_the_api_serve_and_survive_a_restart() {
    let (_legacy, url) = crate::mcp::start_legacy_server().await;

    let dir = tempfile::tempdir().unwrap();
    let db = Database::sqlite_file(&dir.path().join("chat.db"));
    let config = format!("[auth]\nadmin_users = [{ADMIN}]\n[approval]\ndefault = \"allow\"\n");
    let secret = [("AICHAT_TEST_LEGACY_KEY", "let-me-in")];
    let first = Binary::start_on(&db, &config, &secret);
    let app = TestApp::client_for(&first.base);
    let settings = json!({"url": url, "transport": "sse", "headers_env": {"x-legacy-key": "AICHAT_TEST_LEGACY_KEY"}});
    let refusals = [
        (
            json!({"name": "nokey", "settings": {"url": url, "headers_env": {"x-legacy-key": "AICHAT_TEST_UNSET"}}}),
            StatusCode::CONFLICT,
            "mcp_server_secret_missing",
        ),
        (
            json!({"name": "local", "settings": {"url": url, "transport": "stdio"}}),
            StatusCode::BAD_REQUEST,
            "invalid_mcp_server",
        ),
    ];
    for (body, status, code) in refusals {
        let (got, reply) = app.post("/admin/mcp/servers", ADMIN, body.clone()).await;
        assert_eq!((got, reply["code"].as_str()), (status, Some(code)), "{body} -> {reply}");
    }
    let new = json!({"name": "legacy", "settings": settings});
    let (status, report) = app.post("/admin/mcp/servers", ADMIN, new.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{report}");
    assert_eq!(report["mcp_servers_added"], json!(["legacy"]));
    let (status, reply) = app.post("/admin/mcp/servers", ADMIN, new).await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (StatusCode::CONFLICT, Some("mcp_server_exists"))
    );
    app.wait_for_server("legacy").await;
    let call = r#"/mock tools [{"name":"legacy__shout","arguments":{"text":"hi"}}]"#;
    let (_, events) = app.turn(2, call, None).await;
    assert_eq!(crate::common::executions(&events)[0]["result"], json!("HI"));
    let (_, listed) = app.get("/admin/mcp/servers", ADMIN).await;
    assert_eq!(listed["servers"][0]["source"], "api", "{listed}");
    assert_eq!(
        listed["servers"][0]["settings"]["headers_env"]["x-legacy-key"],
        "AICHAT_TEST_LEGACY_KEY"
    );
    assert!(!listed.to_string().contains("let-me-in"), "the secret is never shown");
    first.kill();

    let second = Binary::start_on(&db, &config, &secret);
    let app = TestApp::client_for(&second.base);
    app.wait_for_server("legacy").await;
    let (_, events) = app.turn(2, call, None).await;
    assert_eq!(crate::common::executions(&events)[0]["result"], json!("HI"));
    let (status, report) = app.delete("/admin/mcp/servers/legacy", ADMIN).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["mcp_servers_removed"], json!(["legacy"]));
    assert_eq!(app.get("/mcp/servers", 1).await.1["servers"], json!([]));
    assert_eq!(
        app.delete("/admin/mcp/servers/legacy", ADMIN).await.0,
        StatusCode::NOT_FOUND
    );
    second.kill();
}

/// In api_key mode the admins are the holders of admin keys (stored as hashes): no key is 401, a
/// user's key 403, an admin key opens `/admin` and is a key like the others elsewhere.
#[actix_web::test]
async fn admin_keys_open_admin_routes_in_api_key_mode() {
    use sha2::Digest;
    let hash = |key: &str| {
        sha2::Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let (user_key, admin_key) = (hash("user-key"), hash("admin-key"));
    let app = TestApp::spawn_with(|c| {
        c.auth.mode = "api_key".into();
        c.auth.api_keys = vec![format!("sha256:{user_key}:3")];
        c.auth.admin_api_keys = vec![format!("sha256:{admin_key}:4")];
    })
    .await;
    let call = |key: Option<&'static str>, method: reqwest::Method, path: &str| {
        let mut req = app.client.request(method, app.url(path));
        if let Some(key) = key {
            req = req.header("Authorization", format!("Bearer {key}"));
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, body) = call(None, reqwest::Method::POST, "/admin/reload").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );
    let (status, body) = call(Some("user-key"), reqwest::Method::POST, "/admin/reload").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("admin_required"))
    );
    let (status, body) = call(Some("admin-key"), reqwest::Method::POST, "/admin/reload").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = call(Some("admin-key"), reqwest::Method::GET, "/sessions").await;
    assert_eq!(status, StatusCode::OK, "an admin key authenticates its user everywhere");
}

/// The log level changes on reload: a request logged at `info` before, not after a reload to
/// `warn` (the binary, its log read; `RUST_LOG` unset, no `--log-level` flag).
#[actix_web::test]
async fn a_reload_changes_the_log_level() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::sqlite_file(&dir.path().join("chat.db"));
    let config = |level: &str, per_minute: u32| {
        format!(
            "[auth]\nadmin_users = [{ADMIN}]\n[log]\nlevel = \"{level}\"\n[limits]\nturns_per_minute_per_user = {per_minute}\n"
        )
    };
    let server = Binary::launch(&db, &config("info", 30), &[], &[]);
    let app = TestApp::client_for(&server.base);
    let ready_lines = |log: &str| log.lines().filter(|l| l.contains("route=/v1/chat/ready")).count();
    assert_eq!(app.get("/ready", 1).await.0, StatusCode::OK);
    crate::common::eventually_log(&server.log, "the request line at info", |log| ready_lines(log) == 1).await;

    std::fs::write(db.config_path(), config("warn", 31)).unwrap();
    let (status, report) = app.post("/admin/reload", ADMIN, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert!(
        report["applied"].as_array().unwrap().contains(&json!("log")),
        "{report}"
    );
    assert_eq!(app.get("/ready", 1).await.0, StatusCode::OK);
    // A second reload logs at warn after that request: a marker that the log has caught up.
    std::fs::write(db.config_path(), config("warn", 32)).unwrap();
    assert_eq!(app.post("/admin/reload", ADMIN, json!({})).await.0, StatusCode::OK);
    crate::common::eventually_log(&server.log, "both reloads", |log| {
        log.lines().filter(|l| l.contains("configuration reloaded")).count() == 2
    })
    .await;
    let log = server.log.lock().unwrap().join("\n");
    assert_eq!(ready_lines(&log), 1, "no request line at warn:\n{log}");
    server.kill();
}
