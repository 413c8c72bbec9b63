//! `POST /send-with-files`: a message with files as `multipart/form-data` (the PMM UI's
//! attachments). The body is read part by part under the attachment limits; nothing is stored
//! for a refused request.

use std::time::Duration;

use actix_multipart::{Field, Multipart};
use actix_web::{HttpRequest, HttpResponse, post, web};
use actors::attachment::{Attachment, AttachmentError};
use futures::{StreamExt, TryStreamExt};

use super::AppState;
use super::auth::AuthUser;
use super::chat::{answer, message_text, named_session};
use super::dto::{ChatOrStream, ErrorBody, FilesForm, SendQuery};
use super::error::ApiError;
use actors::Submission;

/// Longest time a whole upload may take to arrive.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest text part (`message`, `session_id`, `provider`), in bytes, before the character limit.
const MAX_TEXT_PART: usize = 4 * 1024 * 1024;

/// A message with files, as `/send` answers it. Parts: `message` (required), `session_id` and
/// `provider` (optional), and one file per part whose name starts with `file` (`file0..fileN`).
/// Images (PNG, JPEG, GIF, WebP), PDFs and UTF-8 text files reach the model in its vendor's own
/// format and stay in the session's history.
#[utoipa::path(
    tag = "chat",
    params(SendQuery),
    request_body(content = FilesForm, content_type = "multipart/form-data", description = "`message`, `session_id`?, `provider`?, `file0..fileN`"),
    responses(
        (status = 200, description = "The answer (non-streaming) or the stream to read (`?streaming=true`)", body = ChatOrStream),
        (status = 400, description = "`missing_field`, `invalid_multipart`, `message_too_long`", body = ErrorBody),
        (status = 413, description = "`attachment_too_large`, `attachments_too_large` or `too_many_attachments`", body = ErrorBody),
        (status = 415, description = "`unsupported_attachment`: not an image, a PDF or UTF-8 text, or not what its type says", body = ErrorBody),
        (status = 422, description = "`attachment_not_supported_by_provider`: e.g. a PDF for a provider that reads none", body = ErrorBody),
        (status = 429, description = "`too_many_turns`", body = ErrorBody),
    )
)]
#[post("/send-with-files")]
pub async fn send_with_files(
    user: AuthUser,
    req: HttpRequest,
    query: web::Query<SendQuery>,
    multipart: Multipart,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let streaming = query.streaming()?;
    let limits = Upload::new(&state);
    if content_length(&req).is_some_and(|len| len > limits.max_body()) {
        return Err(ApiError::AttachmentsTooLarge(limits.total));
    }
    let read = tokio::time::timeout(UPLOAD_TIMEOUT, limits.read(multipart))
        .await
        .map_err(|_| ApiError::InvalidMultipart("the upload took too long".into()))??;
    let submission = Submission {
        text: message_text(read.message.as_deref(), state.limits.max_message_chars)?,
        session_id: named_session(read.session_id.as_deref()),
        provider: read.provider.filter(|p| !p.is_empty()),
        attachments: read.files,
    };
    let started = state.chat.send(user.0, submission).await?;
    answer(started, streaming, &state).await
}

fn content_length(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get(actix_web::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The limits one upload is read under.
struct Upload {
    per_file: usize,
    total: usize,
    count: usize,
    /// Bytes read past a refusal (bounded by `max_body`, with or without a Content-Length).
    drained: std::cell::Cell<usize>,
}

/// What the parts said.
#[derive(Default)]
struct Parts {
    message: Option<String>,
    session_id: Option<String>,
    provider: Option<String>,
    files: Vec<Attachment>,
}

impl Upload {
    fn new(state: &AppState) -> Self {
        Self {
            per_file: state.limits.max_file_bytes,
            total: state.limits.max_files_bytes,
            count: state.limits.max_files,
            drained: std::cell::Cell::new(0),
        }
    }

    /// The largest body worth reading: the files, the text parts and their headers.
    fn max_body(&self) -> usize {
        self.total.saturating_add(MAX_TEXT_PART).saturating_add(1024 * 1024)
    }

    async fn read(&self, mut multipart: Multipart) -> Result<Parts, ApiError> {
        let mut parts = Parts::default();
        let mut total = 0usize;
        let mut refusal = None;
        while let Some(field) = multipart.try_next().await.map_err(invalid)? {
            if refusal.is_some() {
                self.drain(field).await?;
                continue;
            }
            let name = field.name().unwrap_or("").to_owned();
            match name.as_str() {
                "message" => parts.message = Some(text(field, "message").await?),
                "session_id" => parts.session_id = Some(text(field, "session_id").await?),
                "provider" => parts.provider = Some(text(field, "provider").await?),
                // The original's JSON `context` is accepted and ignored here too.
                "context" => drop(text(field, "context").await?),
                file if file.starts_with("file") => {
                    let filename = field
                        .content_disposition()
                        .and_then(|cd| cd.get_filename())
                        .map(str::to_owned)
                        .ok_or_else(|| ApiError::InvalidMultipart(format!("part `{file}` is not a file")))?;
                    let mime = field.content_type().map(ToString::to_string).unwrap_or_default();
                    if parts.files.len() == self.count {
                        refusal = Some(ApiError::TooManyAttachments(self.count));
                        self.drain(field).await?;
                        continue;
                    }
                    match self.file(field, &filename, total).await? {
                        Ok(bytes) => {
                            total += bytes.len();
                            parts
                                .files
                                .push(Attachment::from_upload(&filename, &mime, &bytes).map_err(unsupported)?);
                        }
                        Err(too_large) => refusal = Some(too_large),
                    }
                }
                // Parts of other names are ignored, as unknown JSON keys are by `/send`.
                _ => self.drain(field).await?,
            }
        }
        match refusal {
            Some(err) => Err(err),
            None => Ok(parts),
        }
    }

    /// A file's bytes, or the limit it broke (the rest of the part is read and dropped).
    async fn file(
        &self,
        mut field: Field,
        filename: &str,
        before: usize,
    ) -> Result<Result<Vec<u8>, ApiError>, ApiError> {
        let mut bytes = Vec::new();
        while let Some(chunk) = field.try_next().await.map_err(invalid)? {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > self.per_file {
                self.drain(field).await?;
                return Ok(Err(ApiError::AttachmentTooLarge {
                    filename: filename.to_owned(),
                    limit: self.per_file,
                }));
            }
            if before + bytes.len() > self.total {
                self.drain(field).await?;
                return Ok(Err(ApiError::AttachmentsTooLarge(self.total)));
            }
        }
        Ok(Ok(bytes))
    }
}

async fn text(mut field: Field, name: &'static str) -> Result<String, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.try_next().await.map_err(invalid)? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > MAX_TEXT_PART {
            return Err(ApiError::InvalidMultipart(format!("part `{name}` is too long")));
        }
    }
    String::from_utf8(bytes).map_err(|_| ApiError::InvalidMultipart(format!("part `{name}` is not UTF-8 text")))
}

impl Upload {
    /// Reads the rest of a part and drops it, so the client gets the answer rather than a reset;
    /// past `max_body` bytes in all it stops reading (the connection is then closed).
    async fn drain(&self, mut field: Field) -> Result<(), ApiError> {
        while let Some(chunk) = field.next().await {
            self.drained.set(self.drained.get() + chunk.map_err(invalid)?.len());
            if self.drained.get() > self.max_body() {
                return Err(ApiError::AttachmentsTooLarge(self.total));
            }
        }
        Ok(())
    }
}

fn invalid(err: actix_multipart::MultipartError) -> ApiError {
    ApiError::InvalidMultipart(err.to_string())
}

fn unsupported(err: AttachmentError) -> ApiError {
    ApiError::UnsupportedAttachment(err.to_string())
}
