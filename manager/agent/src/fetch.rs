//! The fetcher: brings a task's URIs into its sandbox before its command
//! starts (Mesos's fetcher). Runs inside the supervisor, synchronously.
//!
//! * A local path (`/path`) or `file:///path` is copied. With a task user
//!   the copy runs as that user (`/bin/cp` with dropped privileges), so a
//!   task can fetch only what its user may read.
//! * `http://host[:port]/path` is downloaded (HTTP/1.1, `Content-Length`,
//!   chunked or read to the end; up to 5 redirects; hyper's client) into a
//!   temporary name
//!   and renamed when complete, then handed to the task's user.
//!
//! The file keeps the last segment of the URI's path as its name. With
//! `executable` it is made `0755`, so that a fetched program (a job's
//! binary) can be the task's command.

use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use super::supervisor::TaskUser;

/// One URI of a task, as the supervisor receives it in `launch.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchUri {
    /// A local path, `file://…` or `http://…`.
    pub value: String,
    /// Make the fetched file executable.
    #[serde(default)]
    pub executable: bool,
}

/// Why a URI could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The scheme is not one the fetcher speaks.
    #[error("unsupported URI scheme {scheme:?} (use a local path, file:// or http://)")]
    Unsupported {
        /// The URI's scheme.
        scheme: String,
    },
    /// The URI has no file name to store it under.
    #[error("the URI names no file")]
    NoFileName,
    /// The URL could not be parsed.
    #[error("malformed URL: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A file-system or network operation failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The copy as the task's user failed (its error output).
    #[error("{0}")]
    Copy(String),
    /// The server answered with an error status.
    #[error("the server answered {status} {reason}")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// The server's response could not be understood.
    #[error("malformed HTTP response: {reason}")]
    Protocol {
        /// What was wrong.
        reason: &'static str,
    },
    /// The server could not be reached, or its answer's head was not HTTP.
    #[error("cannot download: {}", causes(.source))]
    Http {
        /// The client's error.
        source: hyper_util::client::legacy::Error,
    },
    /// The answer's body broke off.
    #[error("the download broke off: {}", causes(.source))]
    Body {
        /// The error.
        source: hyper::Error,
    },
    /// More redirects than the fetcher follows.
    #[error("more than {MAX_REDIRECTS} redirects")]
    Redirects,
    /// The body ended before its announced length.
    #[error("the download ended after {got} of {expected} bytes")]
    Truncated {
        /// Bytes received.
        got: u64,
        /// Bytes announced.
        expected: u64,
    },
}

/// An error and its causes (hyper's own messages name only the stage that
/// failed).
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

fn io(action: &'static str) -> impl FnOnce(std::io::Error) -> FetchError {
    move |source| FetchError::Io { action, source }
}

/// Redirects followed at most.
pub const MAX_REDIRECTS: usize = 5;

/// How long connecting, and each read or write, may take.
const NET_TIMEOUT: Duration = Duration::from_secs(30);

/// Fetches `uri` into `sandbox`; returns the fetched file's path.
pub fn fetch(
    uri: &FetchUri,
    sandbox: &Path,
    user: Option<&TaskUser>,
) -> Result<PathBuf, FetchError> {
    let value = uri.value.as_str();
    let dest = if let Some(rest) = value.strip_prefix("http://") {
        let name = file_name(rest.split(['?', '#']).next().unwrap_or(""))?;
        let dest = sandbox.join(name);
        download(value, &dest, user)?;
        dest
    } else if value.starts_with('/') || value.starts_with("file://") {
        let path = value.strip_prefix("file://").unwrap_or(value);
        let dest = sandbox.join(file_name(path)?);
        copy_local(Path::new(path), &dest, user)?;
        dest
    } else {
        let scheme = value.split_once("://").map_or("", |(s, _)| s).to_owned();
        return Err(FetchError::Unsupported { scheme });
    };
    if uri.executable {
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))
            .map_err(io("making the file executable"))?;
    }
    Ok(dest)
}

/// The last segment of a path, if it is a usable file name.
fn file_name(path: &str) -> Result<&str, FetchError> {
    let name = path.rsplit('/').next().unwrap_or("");
    if name.is_empty() || name == "." || name == ".." || name.contains('\0') {
        return Err(FetchError::NoFileName);
    }
    Ok(name)
}

fn user_ids(user: &TaskUser) -> (libc::uid_t, libc::gid_t, Vec<libc::gid_t>) {
    let groups = user.groups.iter().map(|g| *g as libc::gid_t).collect();
    (user.uid as libc::uid_t, user.gid as libc::gid_t, groups)
}

fn copy_local(src: &Path, dest: &Path, user: Option<&TaskUser>) -> Result<(), FetchError> {
    let Some(user) = user else {
        fs::copy(src, dest).map_err(io("copying"))?;
        return Ok(());
    };
    let ids = user_ids(user);
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let mut cmd = Command::new("/bin/cp");
    cmd.arg("--")
        .arg(src)
        .arg(dest)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: only system calls on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || super::supervisor::child_setup(None, Some(&ids), parent));
    }
    let out = cmd.output().map_err(io("starting /bin/cp"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(FetchError::Copy(format!(
            "{} ({})",
            String::from_utf8_lossy(&out.stderr).trim(),
            out.status
        )))
    }
}

/// `host:port` and the request target of an `http://` URL.
fn split_url(url: &str) -> Result<(String, String), FetchError> {
    let rest = url.strip_prefix("http://").ok_or(FetchError::Malformed {
        reason: "not an http:// URL",
    })?;
    let (authority, target) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let target = target.split('#').next().unwrap_or("/");
    if authority.is_empty() || authority.contains('@') {
        return Err(FetchError::Malformed {
            reason: "no host, or credentials in the URL",
        });
    }
    let host_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.contains(']'))
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((host_port, target.to_owned()))
}

fn download(url: &str, dest: &Path, user: Option<&TaskUser>) -> Result<(), FetchError> {
    let part = dest.with_file_name(format!(
        ".{}.part",
        dest.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&part)
            .map_err(io("creating the file"))?;
        get(url, &mut file)?;
        file.sync_all().map_err(io("syncing the file"))?;
        if let Some(u) = user {
            std::os::unix::fs::fchown(&file, Some(u.uid), Some(u.gid))
                .map_err(io("handing the file to the task's user"))?;
        }
        fs::rename(&part, dest).map_err(io("renaming the file"))
    })();
    if result.is_err() {
        fs::remove_file(&part).ok();
    }
    result
}

/// GETs `url`, following redirects, and writes the body to `out`: hyper's
/// client, on a runtime of its own (the supervisor is synchronous).
fn get(url: &str, out: &mut File) -> Result<(), FetchError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("starting the download"))?;
    runtime.block_on(get_async(url, out))
}

async fn get_async(url: &str, out: &mut File) -> Result<(), FetchError> {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http::<Empty<Bytes>>();
    let bad_url = || FetchError::Malformed {
        reason: "not a valid URL",
    };
    let mut url = url.to_owned();
    for _ in 0..=MAX_REDIRECTS {
        let (host_port, target) = split_url(&url)?;
        let uri: http::Uri = format!("http://{host_port}{target}")
            .parse()
            .map_err(|_| bad_url())?;
        let request = http::Request::get(uri)
            .header(http::header::USER_AGENT, "strata-fetcher")
            .header(http::header::ACCEPT_ENCODING, "identity")
            .body(Empty::new())
            .map_err(|_| bad_url())?;
        let response = within("connecting", client.request(request))
            .await?
            .map_err(|source| FetchError::Http { source })?;
        let status = response.status();
        if status.is_redirection() && status != http::StatusCode::NOT_MODIFIED {
            let location = response
                .headers()
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or(FetchError::Protocol {
                    reason: "a redirect without a Location",
                })?;
            url = if location.starts_with("http://") {
                location.to_owned()
            } else if location.starts_with('/') {
                format!("http://{host_port}{location}")
            } else {
                return Err(FetchError::Unsupported {
                    scheme: location.split_once("://").map_or("", |(s, _)| s).to_owned(),
                });
            };
            continue;
        }
        if status != http::StatusCode::OK {
            return Err(FetchError::Status {
                status: status.as_u16(),
                reason: status.canonical_reason().unwrap_or("").to_owned(),
            });
        }
        let expected = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let mut body = response.into_body();
        let mut got = 0u64;
        while let Some(frame) = within("downloading", body.frame()).await? {
            let frame = match frame {
                Ok(f) => f,
                Err(_) if expected.is_some_and(|e| got < e) => {
                    return Err(FetchError::Truncated {
                        got,
                        expected: expected.unwrap_or(got),
                    });
                }
                Err(source) => return Err(FetchError::Body { source }),
            };
            if let Ok(data) = frame.into_data() {
                out.write_all(&data).map_err(io("writing the file"))?;
                got += data.len() as u64;
            }
        }
        return match expected {
            Some(expected) if got != expected => Err(FetchError::Truncated { got, expected }),
            _ => Ok(()),
        };
    }
    Err(FetchError::Redirects)
}

/// `f`, within the network timeout.
async fn within<T>(action: &'static str, f: impl Future<Output = T>) -> Result<T, FetchError> {
    tokio::time::timeout(NET_TIMEOUT, f)
        .await
        .map_err(|_| FetchError::Io {
            action,
            source: std::io::ErrorKind::TimedOut.into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    fn read_line(r: &mut impl BufRead) -> std::io::Result<String> {
        let mut line = String::new();
        r.read_line(&mut line)?;
        Ok(line.trim_end().to_owned())
    }

    /// Serves each response in `responses` to one connection, in order.
    fn serve(responses: Vec<Vec<u8>>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handle = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for response in responses {
                let (mut conn, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let first = read_line(&mut reader).unwrap();
                while !read_line(&mut reader).unwrap().is_empty() {}
                requests.push(first);
                conn.write_all(&response).unwrap();
            }
            requests
        });
        (addr, handle)
    }

    fn uri(value: String, executable: bool) -> FetchUri {
        FetchUri { value, executable }
    }

    #[test]
    fn http_with_length_redirect_and_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, server) = serve(vec![
            b"HTTP/1.1 302 Found\r\nLocation: /real/tool\r\nContent-Length: 0\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
                .to_vec(),
            b"HTTP/1.0 200 OK\r\n\r\nto the end".to_vec(),
        ]);
        let got = fetch(
            &uri(format!("http://{addr}/a/tool?v=1"), true),
            dir.path(),
            None,
        )
        .unwrap();
        assert_eq!(got, dir.path().join("tool"));
        assert_eq!(fs::read(&got).unwrap(), b"hello");
        assert_eq!(
            fs::metadata(&got).unwrap().permissions().mode() & 0o777,
            0o755
        );
        let got = fetch(
            &uri(format!("http://{addr}/chunked"), false),
            dir.path(),
            None,
        )
        .unwrap();
        assert_eq!(fs::read(&got).unwrap(), b"abcde");
        assert_eq!(
            fs::metadata(&got).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let got = fetch(&uri(format!("http://{addr}/eof"), false), dir.path(), None).unwrap();
        assert_eq!(fs::read(&got).unwrap(), b"to the end");
        let requests = server.join().unwrap();
        assert_eq!(
            requests,
            vec![
                "GET /a/tool?v=1 HTTP/1.1",
                "GET /real/tool HTTP/1.1",
                "GET /chunked HTTP/1.1",
                "GET /eof HTTP/1.1"
            ]
        );
    }

    #[test]
    fn http_errors_are_clear_and_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, server) = serve(vec![
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort".to_vec(),
        ]);
        let e = fetch(&uri(format!("http://{addr}/gone"), false), dir.path(), None).unwrap_err();
        assert_eq!(e.to_string(), "the server answered 404 Not Found");
        let e = fetch(
            &uri(format!("http://{addr}/short"), false),
            dir.path(),
            None,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "the download ended after 5 of 10 bytes");
        server.join().unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        let e = fetch(
            &uri("https://example.invalid/x".into(), false),
            dir.path(),
            None,
        );
        assert!(matches!(e, Err(FetchError::Unsupported { scheme }) if scheme == "https"));
        let e = fetch(&uri("http://127.0.0.1:1/".into(), false), dir.path(), None);
        assert!(matches!(e, Err(FetchError::NoFileName)));
    }

    #[test]
    fn local_files_are_copied() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.bin");
        fs::write(&src, b"x").unwrap();
        let sandbox = dir.path().join("sandbox");
        fs::create_dir(&sandbox).unwrap();
        let got = fetch(
            &uri(format!("file://{}", src.display()), true),
            &sandbox,
            None,
        )
        .unwrap();
        assert_eq!(got, sandbox.join("src.bin"));
        assert_eq!(
            fs::metadata(&got).unwrap().permissions().mode() & 0o111,
            0o111
        );
    }
}
