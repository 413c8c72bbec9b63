//! Files sent with a message: what kinds the model can be given (images, PDFs, text), how an
//! upload is classified, and the text block a text file becomes. Each vendor adapter maps the
//! kinds to its own format; storage keeps the bytes once per content hash.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// A file attached to a user message, in the original's JSON shape (`content` is base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Attachment {
    /// `attachment_<uuid>`.
    pub id: String,
    /// The file's name as uploaded.
    pub filename: String,
    /// Its MIME type (as classified: a text file sent as `application/octet-stream` is `text/plain`).
    pub mime_type: String,
    /// Its size in bytes.
    pub size: i64,
    /// The bytes, base64.
    pub content: String,
}

/// What the model is given for an attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachmentKind {
    /// PNG, JPEG, GIF or WebP: an image block.
    Image,
    /// A PDF document, for the vendors that read them.
    Pdf,
    /// UTF-8 text (plain, CSV, JSON, YAML, source code): inlined with its file name.
    Text,
}

/// Why an upload cannot be given to a model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachmentError {
    /// Neither an image, a PDF, nor UTF-8 text.
    #[error("{filename}: {mime_type} files are not supported (images: PNG, JPEG, GIF, WebP; PDF; UTF-8 text)")]
    Unsupported {
        /// The file.
        filename: String,
        /// Its declared type.
        mime_type: String,
    },
    /// Declared as an image or a PDF, but the bytes are something else.
    #[error("{filename}: the content is not a valid {mime_type} file")]
    Mismatch {
        /// The file.
        filename: String,
        /// Its declared type.
        mime_type: String,
    },
}

const IMAGE_TYPES: [(&str, &[u8]); 4] = [
    ("image/png", b"\x89PNG\r\n\x1a\n"),
    ("image/jpeg", b"\xff\xd8\xff"),
    ("image/gif", b"GIF8"),
    ("image/webp", b"RIFF"),
];

/// MIME types outside `text/*` whose content is text.
const TEXT_TYPES: [&str; 12] = [
    "application/json",
    "application/x-ndjson",
    "application/xml",
    "application/yaml",
    "application/x-yaml",
    "application/toml",
    "application/csv",
    "application/sql",
    "application/javascript",
    "application/x-sh",
    "application/x-python",
    "image/svg+xml",
];

/// Types browsers send when they do not know: the content decides.
const UNKNOWN_TYPES: [&str; 3] = ["", "application/octet-stream", "binary/octet-stream"];

fn essence(mime: &str) -> String {
    mime.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// The image or PDF type the bytes start like, for a file sent without a usable type.
fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"%PDF-") {
        return Some("application/pdf");
    }
    IMAGE_TYPES
        .iter()
        .find(|(mime, magic)| bytes.starts_with(magic) && (*mime != "image/webp" || bytes.get(8..12) == Some(b"WEBP")))
        .map(|(mime, _)| *mime)
}

fn is_text(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|text| !text.contains('\0'))
}

impl Attachment {
    /// Classifies an upload: images and PDFs by their declared type (checked against the bytes),
    /// text by type and by being valid UTF-8 (a file of unknown type that is UTF-8 is text).
    pub fn from_upload(filename: &str, declared: &str, bytes: &[u8]) -> Result<Self, AttachmentError> {
        let mut declared = essence(declared);
        if UNKNOWN_TYPES.contains(&declared.as_str())
            && let Some(sniffed) = sniff(bytes)
        {
            declared = sniffed.to_owned();
        }
        let filename = if filename.trim().is_empty() {
            "file"
        } else {
            filename.trim()
        };
        let refuse = |mismatch: bool| {
            let (filename, mime_type) = (filename.to_owned(), declared.clone());
            if mismatch {
                AttachmentError::Mismatch { filename, mime_type }
            } else {
                AttachmentError::Unsupported { filename, mime_type }
            }
        };
        let mime_type = if let Some((mime, magic)) = IMAGE_TYPES.iter().find(|(m, _)| *m == declared) {
            if !bytes.starts_with(magic) || (declared == "image/webp" && bytes.get(8..12) != Some(b"WEBP")) {
                return Err(refuse(true));
            }
            (*mime).to_owned()
        } else if declared == "application/pdf" {
            if !bytes.starts_with(b"%PDF-") {
                return Err(refuse(true));
            }
            declared.clone()
        } else if declared.starts_with("text/")
            || TEXT_TYPES.contains(&declared.as_str())
            || declared.ends_with("+json")
        {
            if !is_text(bytes) {
                return Err(refuse(true));
            }
            declared.clone()
        } else if UNKNOWN_TYPES.contains(&declared.as_str()) && is_text(bytes) {
            "text/plain".to_owned()
        } else {
            return Err(refuse(false));
        };
        Ok(Self {
            id: crate::ids::prefixed_id("attachment"),
            filename: filename.chars().take(255).collect(),
            mime_type,
            size: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
            content: BASE64.encode(bytes),
        })
    }

    /// What the model is given for it.
    pub fn kind(&self) -> AttachmentKind {
        if self.mime_type.starts_with("image/") && self.mime_type != "image/svg+xml" {
            AttachmentKind::Image
        } else if self.mime_type == "application/pdf" {
            AttachmentKind::Pdf
        } else {
            AttachmentKind::Text
        }
    }

    /// The content's SHA-256, hex: the same file sent twice is stored once.
    pub fn content_hash(&self) -> String {
        Sha256::digest(self.content.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// `data:<mime>;base64,<content>`.
    pub fn data_url(&self) -> String {
        format!("data:{};base64,{}", self.mime_type, self.content)
    }

    /// A text file as the model reads it: its name, then its content in a fence.
    pub fn as_text_block(&self) -> String {
        let text = BASE64
            .decode(self.content.as_bytes())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .unwrap_or_default();
        format!("File: {} ({})\n```\n{text}\n```", self.filename, self.mime_type)
    }

    /// What a vendor that cannot read this kind is told instead.
    pub fn as_placeholder(&self) -> String {
        format!(
            "[Attachment {} ({}, {} bytes) is not readable by this model]",
            self.filename, self.mime_type, self.size
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_are_classified_by_type_and_content() {
        let png = Attachment::from_upload("a.png", "image/png", b"\x89PNG\r\n\x1a\n....").unwrap();
        assert_eq!(
            (png.kind(), png.mime_type.as_str(), png.size),
            (AttachmentKind::Image, "image/png", 12)
        );
        let pdf = Attachment::from_upload("r.pdf", "application/pdf", b"%PDF-1.7 ...").unwrap();
        assert_eq!(pdf.kind(), AttachmentKind::Pdf);
        let code = Attachment::from_upload("main.rs", "application/octet-stream", "fn main() {}".as_bytes()).unwrap();
        assert_eq!(
            (code.kind(), code.mime_type.as_str()),
            (AttachmentKind::Text, "text/plain")
        );
        assert!(
            code.as_text_block()
                .contains("File: main.rs (text/plain)\n```\nfn main() {}\n```")
        );
        let csv = Attachment::from_upload("x.csv", "text/csv; charset=utf-8", b"a,b\n1,2").unwrap();
        assert_eq!(csv.mime_type, "text/csv");
        assert!(matches!(
            Attachment::from_upload("fake.png", "image/png", b"not a png"),
            Err(AttachmentError::Mismatch { .. })
        ));
        assert!(matches!(
            Attachment::from_upload("a.zip", "application/zip", b"PK\x03\x04"),
            Err(AttachmentError::Unsupported { .. })
        ));
        let sniffed = Attachment::from_upload("x.gif", "", b"GIF89a....").unwrap();
        assert_eq!(
            (sniffed.kind(), sniffed.mime_type.as_str()),
            (AttachmentKind::Image, "image/gif")
        );
        assert!(matches!(
            Attachment::from_upload("blob", "application/octet-stream", b"\xff\xfe\x00"),
            Err(AttachmentError::Unsupported { .. })
        ));
        assert!(matches!(
            Attachment::from_upload("t.txt", "text/plain", b"\xff\xfe"),
            Err(AttachmentError::Mismatch { .. })
        ));
        assert_eq!(
            png.content_hash(),
            Attachment::from_upload("b.png", "image/png", b"\x89PNG\r\n\x1a\n....")
                .unwrap()
                .content_hash()
        );
    }
}
