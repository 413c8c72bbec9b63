//! The chat page in a real headless Chromium against a real server: streaming and Markdown,
//! markup in a model answer or a tool result never running, tool cards in call order,
//! approve and deny from the page, a tool's question answered in a form, Stop, a reload mid-answer that continues without duplicated
//! text, rename and delete, attachments, errors in words, the status view, a 360 px wide window,
//! API-key sign-in. One browser for all of them.

use actors::approval::{ApprovalRule, Policy};
use actors::mcp::McpServerConfig;
use serde_json::json;

use crate::common::TestApp;
use crate::common::browser::Browser;

const ENTER: &str = "\u{E007}";

/// The text of every element `css` matches, in order.
async fn texts(browser: &Browser, css: &str) -> Vec<String> {
    let found = browser
        .js(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent);",
            vec![json!(css)],
        )
        .await;
    found
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap_or("").to_owned())
        .collect()
}

/// How many turns the page has seen end.
async fn ended(browser: &Browser) -> u64 {
    let n = browser
        .js("return Number(document.body.dataset.turnsEnded || 0);", vec![])
        .await;
    n.as_u64().unwrap_or(0)
}

/// Puts a message in the box (line breaks and all) and sends it with the Enter key; returns how
/// many turns had ended before.
async fn say(browser: &Browser, text: &str) -> u64 {
    let before = ended(browser).await;
    let input = browser.find("#input").await;
    browser
        .js(
            "document.querySelector('#input').value = arguments[0];",
            vec![json!(text)],
        )
        .await;
    browser.type_into(&input, ENTER).await;
    before
}

/// Waits until more than `before` turns have ended.
async fn ended_after(browser: &Browser, before: u64) {
    let script = format!(
        "return Number(document.body.dataset.turnsEnded || 0) > {before} && !document.querySelector('#send').disabled;"
    );
    browser.until("the turn to end", &script).await;
}

/// Sends a message and waits for its turn to end.
async fn turn(browser: &Browser, text: &str) {
    let before = say(browser, text).await;
    ended_after(browser, before).await;
}

#[actix_web::test]
async fn the_chat_page_in_a_real_browser() {
    let app = TestApp::spawn_with(|c| {
        c.mock.chunk_delay_ms = 15;
        c.mcp.servers = vec![McpServerConfig::stdio(
            "demo",
            env!("CARGO_BIN_EXE_aichat"),
            &["mcp-demo"],
        )];
        c.approval.default = Policy::Ask;
        c.approval.rules = ["demo__echo", "demo__reserve_table"]
            .into_iter()
            .map(|tool| ApprovalRule {
                tool: tool.into(),
                policy: Policy::Allow,
            })
            .collect();
        c.mcp.elicitation.enabled = true;
        c.limits.turns_per_minute_per_user = 1000;
        c.providers = vec![
            toml::from_str(
                r#"name = "offline"
kind = "ollama"
base_url = "http://127.0.0.1:1"
max_retries = 0"#,
            )
            .unwrap(),
        ];
    })
    .await;
    app.wait_for_server("demo").await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/", app.base)).await;
    browser
        .until("the page to load", "return document.querySelector('#input') !== null;")
        .await;
    // A flag markup from a model or a tool would set if it ever ran.
    let pwned = "return window.__pwned === true || document.title !== 'aichat';";

    // 1. A turn streams and renders as Markdown; markup in it stays text.
    let answer = "# Plan\n\n- **bold** item\n- `code` item\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n\
                  <img src=x onerror=\"window.__pwned=true\"><script>window.__pwned=true</script>";
    turn(&browser, &format!("/mock say {answer}")).await;
    let rendered = browser
        .js(
            "const m = document.querySelector('.bubble.assistant .markdown'); return {
                h: m.querySelector('h3')?.textContent, strong: m.querySelector('li strong')?.textContent,
                code: m.querySelector('li code')?.textContent, cells: [...m.querySelectorAll('td')].map(c => c.textContent),
                imgs: document.querySelectorAll('#messages img, #messages script').length, text: m.textContent };",
            vec![],
        )
        .await;
    assert_eq!(rendered["h"], "Plan", "{rendered}");
    assert_eq!(rendered["strong"], "bold");
    assert_eq!(rendered["code"], "code");
    assert_eq!(rendered["cells"], json!(["1", "2"]));
    assert_eq!(rendered["imgs"], 0, "markup became elements: {rendered}");
    assert!(
        rendered["text"]
            .as_str()
            .unwrap()
            .contains("<script>window.__pwned=true</script>")
    );
    assert_eq!(browser.js(pwned, vec![]).await, json!(false));
    browser.screenshot("1-markdown").await;
    let session = browser
        .until(
            "the session in the sidebar",
            "return document.querySelector('#sessions li.current')?.dataset.session;",
        )
        .await;
    let session = session.as_str().unwrap().to_owned();

    // 2. Tool cards in call order; a tool result carrying markup stays text.
    let calls = json!([
        {"name": "demo__echo", "arguments": {"text": "first"}},
        {"name": "demo__echo", "arguments": {"text": "<img src=x onerror=\"window.__pwned=true\">"}},
        {"name": "demo__echo", "arguments": {"text": "third"}},
    ]);
    turn(&browser, &format!("/mock tools {calls}")).await;
    let results = texts(&browser, "details.tool .result").await;
    assert_eq!(
        results,
        ["first", "<img src=x onerror=\"window.__pwned=true\">", "third"]
    );
    assert_eq!(browser.js(pwned, vec![]).await, json!(false));
    browser.screenshot("2-tool-cards").await;

    // 3. Approve and deny from the page (calculator needs approval).
    let ask = json!([{"name": "demo__calculator", "arguments": {"a": 2, "b": 3, "op": "add"}}]);
    turn(&browser, &format!("/mock tools {ask}")).await;
    let before = ended(&browser).await;
    browser.click_on(".approval button.approve").await;
    browser
        .until(
            "the approved call's card",
            "return [...document.querySelectorAll('details.tool .result')].some(e => e.textContent === '5');",
        )
        .await;
    ended_after(&browser, before).await;
    turn(&browser, &format!("/mock tools {ask}")).await;
    let before = ended(&browser).await;
    browser.click_on(".approval:last-of-type button.deny").await;
    browser
        .until(
            "the denied call's card",
            "return [...document.querySelectorAll('details.tool.failed .result')].some(e => /denied/i.test(e.textContent));",
        )
        .await;
    ended_after(&browser, before).await;
    let decided = texts(&browser, ".approval .decided").await;
    assert!(decided.iter().any(|d| d.contains("approved")), "{decided:?}");
    assert!(decided.iter().any(|d| d.contains("denied")), "{decided:?}");
    // Opened again from the sidebar, the history's cards say who decided.
    browser.click_on("#sessions li.current .session-title").await;
    browser
        .until(
            "the deciders in the history",
            "const d = [...document.querySelectorAll('.approval .decided')].map(e => e.textContent); \
             return d.some(t => t === 'Decision: approved by user 1') && d.some(t => t === 'Decision: denied by user 1');",
        )
        .await;
    browser.screenshot("3-approvals").await;

    // 3b. A tool asks the person (the demo's reserve_table): the page shows its form; a missing
    // required field is named, then the answer resumes the tool.
    let reserve = json!([{"name": "demo__reserve_table", "arguments": {"restaurant": "Chez Test"}}]);
    turn(&browser, &format!("/mock tools {reserve}")).await;
    browser
        .until(
            "the question's form",
            "return document.querySelector('.elicitation input[name=date]') !== null;",
        )
        .await;
    // Opened again, the page shows the question that waits (it is not in the history).
    // (Clicked in the page in one step: the sidebar is drawn again when the turn's title
    // arrives, which can leave a WebDriver element reference stale.)
    browser
        .js(
            "document.querySelector('.elicitation').dataset.before = 'yes'; \
             document.querySelector('#sessions li.current .session-title').click();",
            vec![],
        )
        .await;
    browser
        .until(
            "the question shown again",
            "return !document.querySelector('.elicitation[data-before]') \
             && document.querySelectorAll('.elicitation input[name=date]').length === 1;",
        )
        .await;
    browser.click_on(".elicitation button.approve").await;
    browser
        .until(
            "the missing date named",
            "return /\\/content\\/date/.test(document.querySelector('.elicitation .problem')?.textContent || '');",
        )
        .await;
    browser
        .js(
            "document.querySelector('.elicitation input[name=date]').value = '2026-12-24';              document.querySelector('.elicitation input[name=guests]').value = '3';",
            vec![],
        )
        .await;
    let before = ended(&browser).await;
    browser.click_on(".elicitation button.approve").await;
    browser
        .until(
            "the reservation's card",
            "return [...document.querySelectorAll('details.tool .result')].some(e => e.textContent === 'Reserved a table at Chez Test for 3 on 2026-12-24');",
        )
        .await;
    ended_after(&browser, before).await;
    browser.screenshot("3b-elicitation").await;

    // 4. Reload mid-answer: the answer continues where it was, without duplicated text.
    let _ = say(&browser, "/mock words 120").await;
    browser
        .until(
            "part of the answer",
            "const b = [...document.querySelectorAll('.bubble.assistant')].pop(); return b && b.textContent.includes('w10 ');",
        )
        .await;
    browser.reload().await;
    // A fresh page: its first ended turn is the resumed one.
    ended_after(&browser, 0).await;
    let last = texts(&browser, ".bubble.assistant .markdown").await;
    let expected: Vec<String> = (1..=120).map(|i| format!("w{i}")).collect();
    assert_eq!(last.last().unwrap().trim(), expected.join(" "), "the whole answer once");
    browser.screenshot("4-resumed").await;

    // 5. Stop: the turn ends as stopped and the partial answer stays.
    let before = say(&browser, "/mock words 2000").await;
    browser
        .until(
            "the long answer to start",
            "const b = [...document.querySelectorAll('.bubble.assistant')].pop(); return b && b.textContent.includes('w5 ');",
        )
        .await;
    browser.click_on("#stop").await;
    browser
        .until(
            "the turn to be stopped",
            "return [...document.querySelectorAll('.turn-error.cancelled')].some(e => e.textContent === 'Stopped.');",
        )
        .await;
    ended_after(&browser, before).await;
    browser.screenshot("5-stopped").await;

    // 6. Attachments: a file picked in the page reaches the model.
    let file = tempfile::Builder::new().suffix(".txt").tempfile().unwrap();
    std::fs::write(file.path(), "notes for the model").unwrap();
    let picker = browser.find("#file").await;
    browser.type_into(&picker, &file.path().display().to_string()).await;
    turn(&browser, "/mock attachments").await;
    let last = texts(&browser, ".bubble.assistant .markdown").await;
    let name = file.path().file_name().unwrap().to_string_lossy().into_owned();
    assert!(last.last().unwrap().contains(&name), "{last:?}");
    assert!(
        texts(&browser, ".bubble.user .files li")
            .await
            .iter()
            .any(|f| f.contains(&name))
    );
    browser.screenshot("6-attachments").await;

    // 7. Errors in words: a provider that rate limits.
    let before = say(&browser, "/mock error 429").await;
    browser
        .until(
            "the error in words",
            "return [...document.querySelectorAll('.turn-error')].some(e => /rate limiting/.test(e.textContent));",
        )
        .await;
    ended_after(&browser, before).await;

    // The provider picker: a message sent to a provider that is down says which and why.
    browser
        .until(
            "the provider picker",
            "const s = document.querySelector('#provider'); return !s.hidden && s.options.length === 2;",
        )
        .await;
    browser
        .js(
            "const s = document.querySelector('#provider'); s.value = 'offline';",
            vec![],
        )
        .await;
    let before = say(&browser, "hello offline").await;
    browser
        .until(
            "the provider's failure in words",
            "return [...document.querySelectorAll('.turn-error')].some(e => /offline: .*connection refused/.test(e.textContent));",
        )
        .await;
    ended_after(&browser, before).await;
    browser
        .js("document.querySelector('#provider').value = '';", vec![])
        .await;
    browser.screenshot("7-errors").await;

    // 8. Rename and delete from the sidebar.
    browser
        .js(
            "window.prompt = () => 'Renamed in the browser'; window.confirm = () => true;",
            vec![],
        )
        .await;
    browser
        .click_on(&format!(
            "#sessions li[data-session='{session}'] button[aria-label^='Rename']"
        ))
        .await;
    browser
        .until(
            "the new title",
            "return [...document.querySelectorAll('#sessions .session-title')].some(e => e.textContent === 'Renamed in the browser');",
        )
        .await;
    let (_, stored) = app.get(&format!("/sessions/{session}"), 1).await;
    assert_eq!(stored["title"], "Renamed in the browser");
    browser
        .click_on(&format!(
            "#sessions li[data-session='{session}'] button[aria-label^='Delete']"
        ))
        .await;
    browser
        .until(
            "the session to leave the list",
            &format!("return !document.querySelector(\"#sessions li[data-session='{session}']\");"),
        )
        .await;
    assert_eq!(
        app.get(&format!("/sessions/{session}"), 1).await.0,
        reqwest::StatusCode::NOT_FOUND
    );
    assert_eq!(browser.js(pwned, vec![]).await, json!(false));
    browser.screenshot("8-sessions").await;

    // Status: providers and MCP servers with their tools.
    browser.click_on("#open-status").await;
    browser
        .until(
            "the status view",
            "const t = document.querySelector('#status-body').textContent; return /demo: ready/.test(t) && /echo/.test(t) && /mock: \\w+/.test(t);",
        )
        .await;
    browser.screenshot("8b-status").await;
    browser.click_on("#close-status").await;

    // 360 px wide: nothing sticks out sideways; the chats open from the menu button.
    browser.resize(360, 740).await;
    browser
        .until(
            "the narrow layout",
            "return document.documentElement.scrollWidth <= window.innerWidth && getComputedStyle(document.querySelector('#menu')).display !== 'none';",
        )
        .await;
    browser.click_on("#menu").await;
    browser
        .until(
            "the chats panel",
            "return document.body.classList.contains('sidebar-open') && document.querySelector('nav').getBoundingClientRect().left >= 0;",
        )
        .await;
    browser.screenshot("8c-narrow").await;
    browser.resize(1100, 900).await;

    // 9. API-key mode: the page asks for a key, refuses a wrong one in words, works with the right one.
    let keyed = TestApp::spawn_with(|c| {
        c.auth.mode = "api_key".into();
        c.auth.api_keys = vec![crate::security::hash_entry(KEY, 9)];
    })
    .await;
    browser.goto(&format!("{}/", keyed.base)).await;
    browser
        .until(
            "the sign-in prompt",
            "return document.querySelector('#auth-dialog').open;",
        )
        .await;
    browser.click_on("#auth-mode-key").await;
    let field = browser.find("#auth-key").await;
    browser.type_into(&field, "not-the-key").await;
    // The prompt's first reason is gone: the one after the wrong key must be new.
    browser
        .js("document.querySelector('#auth-reason').textContent = '';", vec![])
        .await;
    browser.click_on("#auth-form button[type=submit]").await;
    browser
        .until(
            "the wrong key refused in words",
            "return document.querySelector('#auth-dialog').open && /did not accept/.test(document.querySelector('#auth-reason').textContent);",
        )
        .await;
    browser.screenshot("9-wrong-key").await;
    browser
        .js("document.querySelector('#auth-key').value = '';", vec![])
        .await;
    browser.type_into(&field, KEY).await;
    browser.click_on("#auth-form button[type=submit]").await;
    browser
        .until(
            "the dialog to close",
            "return !document.querySelector('#auth-dialog').open;",
        )
        .await;
    turn(&browser, "hello with a key").await;
    let answer = texts(&browser, ".bubble.assistant .markdown").await;
    assert!(answer.last().unwrap().contains("hello with a key"), "{answer:?}");
    assert_eq!(
        keyed.get("/sessions", 9).await.0,
        reqwest::StatusCode::UNAUTHORIZED,
        "header mode is off"
    );
    let stored = browser
        .js(
            "return sessionStorage.getItem('aichat.key') === arguments[0] && !localStorage.getItem('aichat.key');",
            vec![json!(KEY)],
        )
        .await;
    assert_eq!(stored, json!(true), "the key is kept for the tab only");
    browser.screenshot("10-api-key").await;
}

const KEY: &str = "browser-test-key-0123456789";
