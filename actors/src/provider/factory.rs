//! Building providers from their configuration: the vendor defaults (model, API root) and the
//! factory each provider actor builds its adapter with.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;

use super::config::{HttpProviderConfig, ProviderConfig, Vendor};
use super::{
    ChatProvider, CompletionRequest, HttpProvider, MockProvider, ProviderError, ProviderEvent, ProviderFactory,
};

/// The default model of each vendor, as PMM's deployment set them.
pub fn default_model(vendor: Vendor) -> &'static str {
    match vendor {
        Vendor::OpenAi => "gpt-4o-mini",
        Vendor::Anthropic => "claude-3-5-haiku-20241022",
        Vendor::Gemini => "gemini-2.5-flash",
        Vendor::Ollama => "llama3.1:8b",
    }
}

/// Builds the factory a provider actor makes (and remakes, on restart) its adapter with. `Err`
/// when the HTTP client cannot be built: a bad setting fails at start-up.
pub fn provider_factory(provider: &ProviderConfig, mock_delay: Duration) -> Result<ProviderFactory, String> {
    let Some(vendor) = provider.kind.vendor() else {
        return Ok(Arc::new(move || {
            Arc::new(MockProvider::new(mock_delay)) as Arc<dyn ChatProvider>
        }));
    };
    let settings = HttpProviderConfig {
        name: provider.name.clone(),
        vendor,
        base_url: if provider.base_url.is_empty() {
            vendor.default_base_url().to_owned()
        } else {
            provider.base_url.clone()
        },
        model: if provider.model.is_empty() {
            default_model(vendor).to_owned()
        } else {
            provider.model.clone()
        },
        api_key: provider.api_key.as_ref().map(|k| k.expose().to_owned()),
        temperature: provider.temperature,
        max_tokens: (provider.max_tokens > 0).then_some(provider.max_tokens),
        connect_timeout: Duration::from_secs(provider.connect_timeout_secs),
        max_retries: provider.max_retries,
        retry_base: Duration::from_millis(500),
    };
    // Built once here so a bad setting fails at start-up, then again on each actor restart.
    HttpProvider::new(settings.clone())?;
    Ok(Arc::new(move || match HttpProvider::new(settings.clone()) {
        Ok(provider) => Arc::new(provider) as Arc<dyn ChatProvider>,
        Err(reason) => Arc::new(Unavailable(reason)),
    }))
}

/// A provider whose client could not be built: every call fails.
pub struct Unavailable(pub String);

impl ChatProvider for Unavailable {
    fn stream(&self, _: CompletionRequest) -> BoxStream<'static, Result<ProviderEvent, ProviderError>> {
        tracing::error!(reason = %self.0, "provider unavailable");
        futures::stream::once(async { Err(ProviderError::Unavailable) }).boxed()
    }
}
