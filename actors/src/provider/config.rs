//! Provider configuration: the kinds of provider a config may name ([`ProviderKind`]), the HTTP
//! vendors ([`Vendor`]) and one HTTP provider's settings ([`HttpProviderConfig`]).

use std::time::Duration;

use serde::Deserialize;

/// The kinds of provider a config may name (`[llm].provider`, `[[providers]].kind`), with the
/// aliases the original accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// The built-in mock (no network).
    Mock,
    /// OpenAI Chat Completions.
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic Messages (`claude` too).
    #[serde(alias = "claude")]
    Anthropic,
    /// Google Gemini (`google` too).
    #[serde(alias = "google")]
    Gemini,
    /// Ollama.
    Ollama,
}

impl ProviderKind {
    /// The names a config may use, for error messages.
    pub const NAMES: &'static str = "mock, openai, gemini|google, claude|anthropic, ollama";

    /// The kind a name stands for, aliases included (the same names the config file takes).
    pub fn parse(name: &str) -> Option<Self> {
        use serde::de::IntoDeserializer;
        let name: serde::de::value::StrDeserializer<'_, serde::de::value::Error> = name.into_deserializer();
        Self::deserialize(name).ok()
    }

    /// The HTTP vendor it speaks (`None` for the mock).
    pub fn vendor(self) -> Option<Vendor> {
        match self {
            ProviderKind::Mock => None,
            ProviderKind::OpenAi => Some(Vendor::OpenAi),
            ProviderKind::Anthropic => Some(Vendor::Anthropic),
            ProviderKind::Gemini => Some(Vendor::Gemini),
            ProviderKind::Ollama => Some(Vendor::Ollama),
        }
    }

    /// Whether it cannot work without an API key (the hosted vendors).
    pub fn needs_key(self) -> bool {
        matches!(
            self,
            ProviderKind::OpenAi | ProviderKind::Anthropic | ProviderKind::Gemini
        )
    }

    /// The variable the vendor's own tools read the key from (the original read `ANTHROPIC_API_KEY`).
    pub fn key_variable(self) -> Option<&'static str> {
        match self {
            ProviderKind::OpenAi => Some("OPENAI_API_KEY"),
            ProviderKind::Anthropic => Some("ANTHROPIC_API_KEY"),
            ProviderKind::Gemini => Some("GEMINI_API_KEY"),
            ProviderKind::Mock | ProviderKind::Ollama => None,
        }
    }
}

/// The vendors spoken over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// OpenAI Chat Completions (and compatible servers).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini `streamGenerateContent`.
    Gemini,
    /// Ollama `/api/chat`.
    Ollama,
}

impl Vendor {
    /// Whether its API reads PDF documents (Ollama's chat API takes images only).
    pub fn reads_pdf(self) -> bool {
        self != Vendor::Ollama
    }

    /// The API root the vendor's official SDK uses by default.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Vendor::OpenAi => "https://api.openai.com/v1",
            Vendor::Anthropic => "https://api.anthropic.com",
            Vendor::Gemini => "https://generativelanguage.googleapis.com",
            Vendor::Ollama => "http://localhost:11434",
        }
    }
}

/// One HTTP provider's settings.
#[derive(Clone)]
pub struct HttpProviderConfig {
    /// The provider's name (for log lines).
    pub name: String,
    /// Which wire format.
    pub vendor: Vendor,
    /// API root (the SDK convention: OpenAI `…/v1`, the others the API root).
    pub base_url: String,
    /// Model name.
    pub model: String,
    /// API key (never logged).
    pub api_key: Option<String>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Output token limit.
    pub max_tokens: Option<u32>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Retries before the response starts.
    pub max_retries: u32,
    /// Base of the exponential backoff.
    pub retry_base: Duration,
}

impl std::fmt::Debug for HttpProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProviderConfig")
            .field("vendor", &self.vendor)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// A secret value: its `Debug` and `Display` never show it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One `[[providers]]` entry: a provider besides the default one of `[llm]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Unique name (requests and `llm.fallback` use it).
    pub name: String,
    /// Which kind of provider.
    pub kind: ProviderKind,
    /// Model name (empty = the vendor's default).
    #[serde(default)]
    pub model: String,
    /// API root (empty = the vendor's default).
    #[serde(default)]
    pub base_url: String,
    /// Environment variable holding the API key.
    #[serde(default)]
    pub api_key_env: String,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Output token limit (0 = vendor default).
    #[serde(default)]
    pub max_tokens: u32,
    /// Retries before the answer starts.
    #[serde(default = "defaults::max_retries")]
    pub max_retries: u32,
    /// TCP connect timeout.
    #[serde(default = "defaults::connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// The key, read from `api_key_env`.
    #[serde(skip)]
    pub api_key: Option<Secret>,
}

impl ProviderConfig {
    /// The model it answers with: the configured one, else its vendor's default.
    pub fn model_name(&self) -> String {
        match (self.kind.vendor(), self.model.is_empty()) {
            (_, false) => self.model.clone(),
            (Some(vendor), true) => super::factory::default_model(vendor).to_owned(),
            (None, true) => "mock-model".to_owned(),
        }
    }

    /// The kind's canonical name (`mock`, `openai`, `anthropic`, `gemini`, `ollama`).
    pub fn vendor_name(&self) -> String {
        format!("{:?}", self.kind).to_ascii_lowercase()
    }
}

/// The defaults of a provider's settings (the configuration file's and the admin API's).
pub mod defaults {
    /// Retries before the answer starts.
    pub fn max_retries() -> u32 {
        2
    }
    /// TCP connect timeout in seconds.
    pub fn connect_timeout_secs() -> u64 {
        10
    }
}
