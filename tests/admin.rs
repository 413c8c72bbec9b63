//! Operators' routes: who may use `/admin` (401 for nobody, 403 `admin_required` for a plain
//! user), and `POST /admin/reload` applying a changed configuration live — providers added and
//! removed (a turn running on a removed one finishes), limits — or refusing a broken one whole.

use std::path::Path;
use std::sync::{Arc, Mutex};

use aichat::config::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestApp, text_of};

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
    let loader: aichat::reload::Loader = {
        let next = Arc::clone(&next);
        Box::new(move || match next.lock().unwrap().clone() {
            Some(config) => Ok(config),
            None => aichat::config::parse_file(Path::new("broken.toml"), "[limits]\nturns_per_minute = 5\n"),
        })
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

    let third = "[[providers]]\nname = \"third\"\nkind = \"mock\"\n[limits]\nmax_concurrent_turns_per_user = 7\n";
    *next.lock().unwrap() = Some(config_from(&db, third));
    let (status, report) = app.post("/admin/reload", ADMIN, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["providers_added"], json!(["third"]), "{report}");
    assert_eq!(report["providers_removed"], json!(["second"]), "{report}");
    let applied = report["applied"].as_array().unwrap();
    assert!(
        applied.contains(&json!("providers")) && applied.contains(&json!("limits")),
        "{report}"
    );
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
