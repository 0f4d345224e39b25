//! Where the services scheduler keeps its state: one document, read whole
//! when the scheduler starts and written whole after each change.
//!
//! With one manager the document is `services.json` in its work directory
//! ([`FileDocument`]). With several managers it lives beside the registry
//! in their shared store (the server implements [`DocumentStore`] over
//! etcd, its writes fenced on the leader's epoch), so a manager that takes
//! over the leadership finds the apps, their instances and deployments
//! where the last leader left them.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

/// An error of a document store, with what it was doing.
#[derive(Debug, thiserror::Error)]
#[error("{doing} {document}: {source}")]
pub struct DocumentError {
    /// What failed (`reading`, `writing`).
    pub doing: &'static str,
    /// The document, as [`DocumentStore::describe`] names it.
    pub document: String,
    /// The cause.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// A future of a store's answer.
pub type DocumentFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, DocumentError>> + Send + 'a>>;

/// One document, read and written whole.
pub trait DocumentStore: Send + Sync {
    /// Names the document in messages (a path, a key).
    fn describe(&self) -> String;
    /// The document, or `None` when there is none yet.
    fn read(&self) -> DocumentFuture<'_, Option<Vec<u8>>>;
    /// Replaces the document, durably, before returning.
    fn write(&self, bytes: Vec<u8>) -> DocumentFuture<'_, ()>;
    /// Keeps a document that could not be parsed aside (never deleted), so
    /// starting afresh loses nothing an operator could recover.
    fn set_aside(&self, bytes: Vec<u8>) -> DocumentFuture<'_, String>;
}

/// The document as a file, written atomically.
pub struct FileDocument {
    path: PathBuf,
}

impl FileDocument {
    /// The document at `path`.
    pub fn new(path: PathBuf) -> FileDocument {
        FileDocument { path }
    }

    fn error(&self, doing: &'static str, e: std::io::Error) -> DocumentError {
        DocumentError {
            doing,
            document: self.describe(),
            source: Box::new(e),
        }
    }
}

impl DocumentStore for FileDocument {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn read(&self) -> DocumentFuture<'_, Option<Vec<u8>>> {
        Box::pin(async move {
            match std::fs::read(&self.path) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(self.error("reading", e)),
            }
        })
    }

    fn write(&self, bytes: Vec<u8>) -> DocumentFuture<'_, ()> {
        Box::pin(async move {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| self.error("writing", e))?;
            }
            strata_proto::fsutil::write_atomic(&self.path, &bytes)
                .map_err(|e| self.error("writing", e))
        })
    }

    fn set_aside(&self, _bytes: Vec<u8>) -> DocumentFuture<'_, String> {
        Box::pin(async move {
            let bad = self.path.with_extension("json.bad");
            std::fs::rename(&self.path, &bad).map_err(|e| self.error("setting aside", e))?;
            Ok(bad.display().to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_document_is_absent_then_written_then_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let doc = FileDocument::new(dir.path().join("sub/services.json"));
        assert!(doc.read().await.unwrap().is_none());
        doc.write(b"{}".to_vec()).await.unwrap();
        assert_eq!(doc.read().await.unwrap().as_deref(), Some(&b"{}"[..]));
        let aside = doc.set_aside(Vec::new()).await.unwrap();
        assert!(aside.ends_with("services.json.bad"), "{aside}");
        assert!(doc.read().await.unwrap().is_none());
    }
}
