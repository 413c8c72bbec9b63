//! One integration-test binary (faster linking): every test starts the real server on
//! 127.0.0.1:0 with a temporary SQLite file and talks real HTTP and SSE to it.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

mod admin;
mod api;
mod approvals;
mod attachments;
mod browser;
mod cluster;
mod elicitation;
mod mcp;
mod openapi;
mod providers;
mod resilience;
mod restart;
mod security;
mod streaming;
