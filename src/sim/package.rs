//! The file a test plan's upgrade and install commands point at (the `file` object of
//! CMD_SYS_UPGRADE, CMD_APP_INSTALL and CMD_APP_UPGRADE: name, url, md5, size), the
//! HTTP server that offers it from the tester's machine (`sim platform --package`),
//! and the download the reference edge makes of it.
//!
//! HTTP is hyper 0.14 (server and client, HTTP/1 only): it is already in the build
//! through rumqttd's axum, so serving and downloading add no crate. The served file
//! is held in memory, which suits firmware and app packages of a lab.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::HttpBody;
use md5::{Digest, Md5};
use serde::Serialize;
use serde_json::{json, Value};

use super::SimError;

/// Host of the placeholder URLs: the reference edge pretends to download from it.
pub const PLACEHOLDER_HOST: &str = "repo.local";

/// The `file` object of a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileRef {
    pub name: String,
    pub url: String,
    pub md5: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl FileRef {
    /// A placeholder that no edge can download (no `--package` given).
    pub fn placeholder(name: &str) -> FileRef {
        FileRef {
            name: name.into(),
            url: format!("http://{PLACEHOLDER_HOST}/{name}"),
            md5: "d41d8cd98f00b204e9800998ecf8427e".into(),
            size: Some(1024),
        }
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({"name": self.name, "url": self.url, "md5": self.md5});
        if let Some(s) = self.size {
            v["size"] = json!(s);
        }
        v
    }

    /// Reads a command's `file` object; `None` when it has no `url` string.
    pub fn from_json(v: &Value) -> Option<FileRef> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
        Some(FileRef {
            url: s("url")?,
            name: s("name").unwrap_or_default(),
            md5: s("md5").unwrap_or_default(),
            size: v.get("size").and_then(Value::as_u64),
        })
    }

    /// A URL the reference edge really downloads: `http://` and not the placeholder.
    pub fn downloadable(&self) -> bool {
        let Some(rest) = self.url.strip_prefix("http://") else {
            return false;
        };
        let host = rest.split(['/', ':']).next().unwrap_or("");
        host != PLACEHOLDER_HOST
    }
}

/// Where the plan's package comes from.
#[derive(Debug, Clone, Default)]
pub enum PackageSource {
    /// Placeholder URLs on repo.local: only the exchange is tested, no download.
    #[default]
    Placeholder,
    /// Serve this file over HTTP from the tester's machine.
    Serve {
        path: PathBuf,
        /// Where to listen (port 0: any free port).
        listen: SocketAddr,
        /// Host put in the URL; default: the listen address, or when that is
        /// unspecified (0.0.0.0, ::) the address this machine uses to reach the broker.
        advertise: Option<String>,
        /// Announce this md5 instead of the file's own (to check that the edge verifies it).
        md5: Option<String>,
    },
    /// The tester's own server.
    Url {
        url: String,
        md5: String,
        size: Option<u64>,
    },
}

/// What the report says about the package.
#[derive(Debug, Clone, Serialize)]
pub struct PackageNote {
    /// "placeholder", "served" or "url".
    pub source: String,
    pub file: FileRef,
    /// GET requests answered with the file (served packages only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downloads: Option<u64>,
}

impl PackageNote {
    pub fn line(&self) -> String {
        let f = &self.file;
        match self.source.as_str() {
            "placeholder" => format!(
                "Package: placeholder URLs (http://{PLACEHOLDER_HOST}/…): no edge can download them, \
                 so upgrades and installs are tested as exchanges only; give --package FILE or \
                 --package-url URL --package-md5 HEX to test real downloads"
            ),
            "served" => format!(
                "Package: {} served at {} (md5 {}, {} bytes), downloaded {} times",
                f.name,
                f.url,
                f.md5,
                f.size.unwrap_or(0),
                self.downloads.unwrap_or(0)
            ),
            _ => format!("Package: {} (md5 {})", f.url, f.md5),
        }
    }
}

/// A running package server; stops on drop.
pub struct PackageServer {
    pub file: FileRef,
    downloads: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl PackageServer {
    pub fn downloads(&self) -> u64 {
        self.downloads.load(Ordering::Relaxed)
    }
}

impl Drop for PackageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The plan's file object, and the server behind it when the plan serves the file.
pub async fn prepare(
    src: &PackageSource,
    broker: &str,
) -> Result<(Option<FileRef>, Option<PackageServer>), SimError> {
    match src {
        PackageSource::Placeholder => Ok((None, None)),
        PackageSource::Url { url, md5, size } => {
            check_md5(md5)?;
            let name = url
                .rsplit('/')
                .next()
                .filter(|n| !n.is_empty())
                .unwrap_or("package");
            let f = FileRef {
                name: name.into(),
                url: url.clone(),
                md5: md5.to_ascii_lowercase(),
                size: *size,
            };
            Ok((Some(f), None))
        }
        PackageSource::Serve {
            path,
            listen,
            advertise,
            md5,
        } => {
            if let Some(m) = md5 {
                check_md5(m)?;
            }
            let server = serve(path, *listen, advertise.as_deref(), broker, md5.as_deref()).await?;
            Ok((Some(server.file.clone()), Some(server)))
        }
    }
}

fn check_md5(m: &str) -> Result<(), SimError> {
    if m.len() == 32 && m.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(SimError::Usage(format!(
            "--package-md5 {m:?} is not 32 hexadecimal digits"
        )))
    }
}

/// Lower-case hex md5 of `data`.
pub fn md5_hex(data: &[u8]) -> String {
    hex(&Md5::digest(data))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Reads the package whole (it is served from memory).
async fn read_package(path: &Path) -> Result<(String, bytes::Bytes), SimError> {
    let p = path.to_path_buf();
    let data = tokio::task::spawn_blocking(move || std::fs::read(&p))
        .await
        .map_err(|e| SimError::Io(std::io::Error::other(e.to_string())))?
        .map_err(|e| SimError::Package {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "package".into());
    Ok((name, bytes::Bytes::from(data)))
}

/// Starts the HTTP server that offers `path` at `/{name}`.
async fn serve(
    path: &Path,
    listen: SocketAddr,
    advertise: Option<&str>,
    broker: &str,
    md5_override: Option<&str>,
) -> Result<PackageServer, SimError> {
    let (name, data) = read_package(path).await?;
    let url_path = format!("/{}", percent_encode(&name));
    let builder = hyper::Server::try_bind(&listen)
        .map_err(|e| SimError::Usage(format!("--http-listen {listen}: {e}")))?;
    let downloads = Arc::new(AtomicU64::new(0));
    let (d, p, body) = (downloads.clone(), url_path.clone(), data.clone());
    let make = hyper::service::make_service_fn(move |_conn| {
        let (d, p, body) = (d.clone(), p.clone(), body.clone());
        async move {
            Ok::<_, Infallible>(hyper::service::service_fn(move |req| {
                let r = answer_get(&req, &p, &body, &d);
                async move { Ok::<_, Infallible>(r) }
            }))
        }
    });
    let server = builder.serve(make);
    let bound = server.local_addr();
    let task = tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::warn!("package server: {e}");
        }
    });
    let host = advertise_host(bound, advertise, broker).await?;
    let file = FileRef {
        name,
        url: format!("http://{}:{}{url_path}", url_host(&host), bound.port()),
        md5: md5_override
            .map(str::to_ascii_lowercase)
            .unwrap_or_else(|| md5_hex(&data)),
        size: Some(data.len() as u64),
    };
    Ok(PackageServer {
        file,
        downloads,
        task,
    })
}

/// GET or HEAD of the package path: 200 with the file; anything else 404/405.
fn answer_get(
    req: &hyper::Request<hyper::Body>,
    path: &str,
    body: &bytes::Bytes,
    downloads: &AtomicU64,
) -> hyper::Response<hyper::Body> {
    use hyper::{Method, StatusCode};
    let status = if req.uri().path() != path {
        StatusCode::NOT_FOUND
    } else if req.method() == Method::GET {
        downloads.fetch_add(1, Ordering::Relaxed);
        return hyper::Response::builder()
            .header("content-type", "application/octet-stream")
            .header("content-length", body.len())
            .body(hyper::Body::from(body.clone()))
            .unwrap_or_default();
    } else if req.method() == Method::HEAD {
        return hyper::Response::builder()
            .header("content-length", body.len())
            .body(hyper::Body::empty())
            .unwrap_or_default();
    } else {
        StatusCode::METHOD_NOT_ALLOWED
    };
    let mut r = hyper::Response::new(hyper::Body::empty());
    *r.status_mut() = status;
    r
}

/// The host the edge is told to download from: `--http-advertise`, else the bound
/// address when it is specific, else the local address of the route to the broker
/// (the interface the edge most likely shares with this machine).
async fn advertise_host(
    bound: SocketAddr,
    advertise: Option<&str>,
    broker: &str,
) -> Result<String, SimError> {
    if let Some(h) = advertise {
        return Ok(h.to_string());
    }
    if !bound.ip().is_unspecified() {
        return Ok(bound.ip().to_string());
    }
    route_to(broker)
        .await
        .map(|ip| ip.to_string())
        .ok_or_else(|| {
            SimError::Usage(format!(
                "cannot tell which address of this machine the edge can reach (no route to the broker {broker}): give --http-advertise HOST"
            ))
        })
}

/// The local address this machine uses to reach `broker` (a UDP connect sends nothing).
async fn route_to(broker: &str) -> Option<IpAddr> {
    let target = tokio::net::lookup_host(broker).await.ok()?.next()?;
    let any: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let s = std::net::UdpSocket::bind(any).ok()?;
    s.connect(target).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

fn url_host(h: &str) -> String {
    if h.contains(':') && !h.starts_with('[') {
        format!("[{h}]")
    } else {
        h.to_string()
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Downloads `f.url` and checks its md5 (and size when given). `Err` is the
/// failure description an edge puts in its job result.
pub async fn download(f: &FileRef, limit: Duration) -> Result<u64, String> {
    let url = &f.url;
    let fetch = async {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("download of {url} failed: bad URL: {e}"))?;
        let resp = hyper::Client::new()
            .get(uri)
            .await
            .map_err(|e| format!("download of {url} failed: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("download of {url} failed: HTTP {}", resp.status()));
        }
        let mut body = resp.into_body();
        let mut h = Md5::new();
        let mut n = 0u64;
        while let Some(chunk) = body.data().await {
            let c = chunk.map_err(|e| format!("download of {url} failed: {e}"))?;
            h.update(&c);
            n += c.len() as u64;
        }
        Ok((hex(&h.finalize()), n))
    };
    let (md5, n) = tokio::time::timeout(limit, fetch)
        .await
        .map_err(|_| format!("download of {url} timed out after {} s", limit.as_secs()))??;
    if !md5.eq_ignore_ascii_case(&f.md5) {
        return Err(format!(
            "md5 check failed for {}: downloaded {md5}, expected {}",
            f.name, f.md5
        ));
    }
    if let Some(s) = f.size.filter(|s| *s != n) {
        return Err(format!(
            "size check failed for {}: downloaded {n} bytes, expected {s}",
            f.name
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_of_known_text() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn placeholder_is_not_downloadable_but_other_http_urls_are() {
        assert!(!FileRef::placeholder("a.bin").downloadable());
        let mut f = FileRef::placeholder("a.bin");
        f.url = "http://10.0.0.5:8080/a.bin".into();
        assert!(f.downloadable());
        f.url = "https://example.org/a.bin".into();
        assert!(!f.downloadable());
    }

    #[test]
    fn bad_md5_is_a_usage_error() {
        assert!(check_md5("d41d8cd98f00b204e9800998ecf8427e").is_ok());
        let e = check_md5("xyz").unwrap_err().to_string();
        assert!(e.contains("--package-md5"), "{e}");
    }

    #[test]
    fn names_are_percent_encoded() {
        assert_eq!(percent_encode("a b+c.tar"), "a%20b%2Bc.tar");
        assert_eq!(url_host("::1"), "[::1]");
    }

    #[tokio::test]
    async fn served_file_downloads_with_its_md5_and_a_missing_file_is_named() {
        let dir = std::env::temp_dir().join(format!("edgetap-pkg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fw 1.bin");
        std::fs::write(&path, b"firmware bytes").unwrap();
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let s = serve(&path, listen, None, "127.0.0.1:1883", None)
            .await
            .unwrap();
        assert_eq!(s.file.md5, md5_hex(b"firmware bytes"));
        assert_eq!(download(&s.file, Duration::from_secs(5)).await, Ok(14));
        assert_eq!(s.downloads(), 1);
        let mut wrong = s.file.clone();
        wrong.md5 = "00000000000000000000000000000000".into();
        let e = download(&wrong, Duration::from_secs(5)).await.unwrap_err();
        assert!(e.contains("md5 check failed"), "{e}");
        let missing = dir.join("nope.bin");
        let e = serve(&missing, listen, None, "127.0.0.1:1883", None)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("nope.bin"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
