//! A real Chromium (Debian's, headless) driven over WebDriver by Debian's chromedriver: the
//! protocol is JSON over HTTP, so a few calls over reqwest are the whole client. One browser per
//! test run (the browser test runs its scenarios in one session); killed on drop.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::TIMEOUT;

/// The driver process and one browser session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

/// chromedriver runs in a process group of its own, which the browser it starts joins: killing
/// the group ends them all (killing chromedriver alone left a Chromium behind per run).
impl Drop for Browser {
    fn drop(&mut self) {
        // `pkill -g` names the group plainly (a negative pid after `kill -KILL` can be read as
        // something else).
        let _ = Command::new("pkill")
            .args(["-KILL", "-g", &self.driver.id().to_string()])
            .status();
        let _ = self.driver.wait();
    }
}

/// An element, by its WebDriver id.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless Chromium session.
    pub async fn start() -> Self {
        let port = super::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; scripts/install-test-servers.sh installs it)");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().timeout(TIMEOUT).build().unwrap();
        super::eventually("chromedriver to answer", || async {
            http.get(format!("{base}/status")).send().await.is_ok()
        })
        .await;
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-quic",
            "--no-first-run",
            "--disable-sync",
            "--window-size=1100,900",
            &format!("--user-data-dir={}", profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
            "unhandledPromptBehavior": "ignore",
        }}});
        let reply: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = reply["value"]["sessionId"].as_str();
        assert!(session.is_some(), "no browser session: {reply}");
        let session = session.unwrap_or_default().to_owned();
        Self {
            driver,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply: Value = request.send().await.unwrap().json().await.unwrap();
        reply["value"].clone()
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Resizes the window.
    pub async fn resize(&self, width: u32, height: u32) {
        self.command(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }

    /// Reloads the page.
    pub async fn reload(&self) {
        self.command(reqwest::Method::POST, "/refresh", Some(json!({}))).await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Waits until `script` returns something truthy; returns it.
    pub async fn until(&self, what: &str, script: &str) -> Value {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let value = self.js(script, vec![]).await;
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
                Value::Array(a) => !a.is_empty(),
                Value::Object(o) => !o.contains_key("error"),
            };
            if truthy {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what} (last: {value})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The first element `css` matches, once there is one.
    pub async fn find(&self, css: &str) -> Element {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let found = self
                .command(
                    reqwest::Method::POST,
                    "/element",
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await;
            if let Some(id) = found
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(Value::as_str)
                && found.get("error").is_none()
            {
                return Element(id.to_owned());
            }
            assert!(tokio::time::Instant::now() < deadline, "no element {css}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks an element.
    pub async fn click(&self, element: &Element) {
        let reply = self
            .command(
                reqwest::Method::POST,
                &format!("/element/{}/click", element.0),
                Some(json!({})),
            )
            .await;
        assert!(reply.get("error").is_none(), "click failed: {reply}");
    }

    /// Types `text` into an element (WebDriver key codes: "\u{E007}" is Enter).
    pub async fn type_into(&self, element: &Element, text: &str) {
        let reply = self
            .command(
                reqwest::Method::POST,
                &format!("/element/{}/value", element.0),
                Some(json!({ "text": text })),
            )
            .await;
        assert!(reply.get("error").is_none(), "typing failed: {reply}");
    }

    /// Saves a PNG of the window as `target/browser/<name>.png` (to look at a failing run).
    pub async fn screenshot(&self, name: &str) {
        use base64::Engine;
        let data = self.command(reqwest::Method::GET, "/screenshot", None).await;
        let Some(png) = data
            .as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        else {
            return;
        };
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(format!("{name}.png")), png);
    }

    /// Clicks the element `css` matches.
    pub async fn click_on(&self, css: &str) {
        let element = self.find(css).await;
        self.click(&element).await;
    }
}
