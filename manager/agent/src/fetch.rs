//! The fetcher: brings a task's URIs into its sandbox before its command
//! starts (Mesos's fetcher). Runs inside the supervisor, synchronously.
//!
//! * A local path (`/path`) or `file:///path` is copied. With a task user
//!   the copy runs as that user (`/bin/cp` with dropped privileges), so a
//!   task can fetch only what its user may read.
//! * `http://host[:port]/path` is downloaded (HTTP/1.1, `Content-Length`,
//!   chunked or read to the end; up to 5 redirects) into a temporary name
//!   and renamed when complete, then handed to the task's user.
//!
//! The file keeps the last segment of the URI's path as its name. With
//! `executable` it is made `0755`, so that a fetched program (a job's
//! binary) can be the task's command.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

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
        let _ = fs::remove_file(&part);
    }
    result
}

/// GETs `url`, following redirects, and writes the body to `out`.
fn get(url: &str, out: &mut File) -> Result<(), FetchError> {
    let mut url = url.to_owned();
    for _ in 0..=MAX_REDIRECTS {
        let (host_port, target) = split_url(&url)?;
        let addr = host_port
            .to_socket_addrs()
            .map_err(io("resolving the host"))?
            .next()
            .ok_or(FetchError::Malformed {
                reason: "the host has no address",
            })?;
        let stream = TcpStream::connect_timeout(&addr, NET_TIMEOUT).map_err(io("connecting"))?;
        stream
            .set_read_timeout(Some(NET_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(NET_TIMEOUT)))
            .map_err(io("setting timeouts"))?;
        let host = host_port.strip_suffix(":80").unwrap_or(&host_port);
        (&stream)
            .write_all(
                format!(
                    "GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: strata-fetcher\r\n\
                     Accept-Encoding: identity\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .map_err(io("sending the request"))?;
        let mut reader = BufReader::new(stream);
        let head = read_head(&mut reader)?;
        if (300..400).contains(&head.status) && head.status != 304 {
            let location = head.location.ok_or(FetchError::Protocol {
                reason: "a redirect without a Location",
            })?;
            url = if location.starts_with("http://") {
                location
            } else if location.starts_with('/') {
                format!("http://{host_port}{location}")
            } else {
                return Err(FetchError::Unsupported {
                    scheme: location.split_once("://").map_or("", |(s, _)| s).to_owned(),
                });
            };
            continue;
        }
        if head.status != 200 {
            return Err(FetchError::Status {
                status: head.status,
                reason: head.reason,
            });
        }
        if head.chunked {
            copy_chunked(&mut reader, out)?;
        } else if let Some(expected) = head.length {
            let got =
                std::io::copy(&mut (&mut reader).take(expected), out).map_err(io("downloading"))?;
            if got != expected {
                return Err(FetchError::Truncated { got, expected });
            }
        } else {
            std::io::copy(&mut reader, out).map_err(io("downloading"))?;
        }
        return Ok(());
    }
    Err(FetchError::Redirects)
}

/// The status line and the headers the fetcher needs.
struct Head {
    status: u16,
    reason: String,
    length: Option<u64>,
    chunked: bool,
    location: Option<String>,
}

fn read_line(r: &mut impl BufRead) -> Result<String, FetchError> {
    let mut line = String::new();
    let n = r
        .by_ref()
        .take(16 << 10)
        .read_line(&mut line)
        .map_err(io("reading the response"))?;
    if n == 0 || !line.ends_with('\n') {
        return Err(FetchError::Protocol {
            reason: "the response head ended early or a line is too long",
        });
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn read_head(r: &mut impl BufRead) -> Result<Head, FetchError> {
    let status_line = read_line(r)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(FetchError::Protocol {
            reason: "not an HTTP/1.x status line",
        });
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or(FetchError::Protocol {
            reason: "no status code",
        })?;
    let mut head = Head {
        status,
        reason: parts.next().unwrap_or("").to_owned(),
        length: None,
        chunked: false,
        location: None,
    };
    for _ in 0..200 {
        let line = read_line(r)?;
        if line.is_empty() {
            return Ok(head);
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                head.length = Some(value.parse().map_err(|_| FetchError::Protocol {
                    reason: "a bad Content-Length",
                })?);
            }
            "transfer-encoding" => {
                head.chunked = value.to_ascii_lowercase().contains("chunked");
            }
            "location" => head.location = Some(value.to_owned()),
            _ => {}
        }
    }
    Err(FetchError::Protocol {
        reason: "too many headers",
    })
}

fn copy_chunked(r: &mut impl BufRead, out: &mut impl Write) -> Result<(), FetchError> {
    loop {
        let line = read_line(r)?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size, 16).map_err(|_| FetchError::Protocol {
            reason: "a bad chunk size",
        })?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !read_line(r)?.is_empty() {}
            return Ok(());
        }
        let got = std::io::copy(&mut r.by_ref().take(size), out).map_err(io("downloading"))?;
        if got != size {
            return Err(FetchError::Truncated {
                got,
                expected: size,
            });
        }
        if !read_line(r)?.is_empty() {
            return Err(FetchError::Protocol {
                reason: "a chunk longer than its size",
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

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
