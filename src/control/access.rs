//! Who may reach the admin API, and where it listens by default.
//!
//! - Where: by default a Unix socket, `admin.sock`, in a folder of this
//!   user's own ([`default_dir`]): created 0700, and refused when it exists
//!   but belongs to another user or is open to group or others. The socket
//!   is created 0600 (under a 0177 umask, so it is never more open, not even
//!   for a moment), and never replaces a file that is not a socket, nor a
//!   socket another process still answers on.
//! - A TCP address must be loopback, and then a bearer token is required:
//!   from `--admin-token-file`, else generated at the first start into
//!   `admin.token` next to the default socket, where `ctl` finds it. Any
//!   other address needs `--admin-allow-remote` and a token file both.
//! - Every request's head, before its body is read: `Host` names the admin
//!   API (a browser page, DNS rebinding, a forwarded request do not), no
//!   `Origin` (browsers send one on every cross-site request), a POST is
//!   `text/plain`, and the token (compared in constant time) when one is
//!   required. [`HeadRules::check`] says which rule a head breaks.
//!
//! It does not read requests, count refusals nor serve anything: the admin
//! API ([`super::admin`]) does, with these rules.

use std::fs::File;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// File name of the admin socket in [`default_dir`].
pub const SOCKET_NAME: &str = "admin.sock";
/// File name of the generated token in [`default_dir`].
pub const TOKEN_NAME: &str = "admin.token";

/// The folder of the default admin socket and of a generated token:
/// `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=`) when set;
/// `/run/shardtls` for root; `$XDG_RUNTIME_DIR/shardtls`; else
/// `/tmp/shardtls-UID`.
pub fn default_dir() -> PathBuf {
    // SAFETY: geteuid cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    default_dir_for(
        euid,
        std::env::var_os("RUNTIME_DIRECTORY"),
        std::env::var_os("XDG_RUNTIME_DIR"),
    )
}

fn default_dir_for(
    euid: u32,
    runtime_directory: Option<std::ffi::OsString>,
    xdg_runtime_dir: Option<std::ffi::OsString>,
) -> PathBuf {
    let absolute = |v: Option<std::ffi::OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(dir) = absolute(runtime_directory) {
        return dir;
    }
    if euid == 0 {
        return PathBuf::from("/run/shardtls");
    }
    if let Some(dir) = absolute(xdg_runtime_dir) {
        return dir.join("shardtls");
    }
    PathBuf::from(format!("/tmp/shardtls-{euid}"))
}

/// The default admin endpoint: [`SOCKET_NAME`] in [`default_dir`].
pub fn default_socket() -> PathBuf {
    default_dir().join(SOCKET_NAME)
}

/// Where a token is generated for a TCP admin API without a token file, and
/// where `ctl` looks for it.
pub fn default_token_file() -> PathBuf {
    default_dir().join(TOKEN_NAME)
}

/// Where a client (`ctl`, `bench rotate`) reaches the admin API, and the
/// token it sends: `admin`, else the default socket; `token_file`, else over
/// TCP the generated token, if there is one. The operator's own token file
/// is refused only when empty: the proxy is the one to guard it.
pub fn client_target(admin: Option<&str>, token_file: Option<&Path>) -> Result<(String, Option<String>), String> {
    let endpoint = Endpoint::parse(admin)?;
    let generated = default_token_file();
    let token_file = match (token_file, &endpoint) {
        (Some(f), _) => Some(f.to_path_buf()),
        (None, Endpoint::Tcp(_)) if generated.exists() => Some(generated),
        (None, _) => None,
    };
    let token = token_file.map(|f| read_token_file(&f, true)).transpose()?;
    let admin = match endpoint {
        Endpoint::Unix(path) => path.display().to_string(),
        Endpoint::Tcp(addr) => admin.map_or_else(|| addr.to_string(), str::to_string),
    };
    Ok((admin, token))
}

/// Create `dir` 0700 if it is missing; refuse it when it is not a folder,
/// not ours, or open to group or others.
pub fn private_dir(dir: &Path) -> Result<(), String> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create the admin folder {}: {e}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("cannot inspect {}: {e}", dir.display()))?;
    // SAFETY: geteuid cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    if !meta.file_type().is_dir() {
        return Err(format!("the admin folder {} is not a folder", dir.display()));
    }
    if meta.uid() != euid {
        return Err(format!(
            "the admin folder {} belongs to uid {}, not to this user (uid {euid}); remove it or use --admin",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "the admin folder {} is open to group or others (mode {:o}); chmod 700 it",
            dir.display(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Where the admin API listens, as `--admin` gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket path (anything with a `/`).
    Unix(PathBuf),
    /// A TCP address, `host:port`.
    Tcp(SocketAddr),
}

impl Endpoint {
    /// `--admin`'s value; `None` is the default socket.
    pub fn parse(spec: Option<&str>) -> Result<Self, String> {
        match spec {
            None => Ok(Endpoint::Unix(default_socket())),
            Some(s) if s.contains('/') => Ok(Endpoint::Unix(PathBuf::from(s))),
            Some(s) => s
                .parse()
                .map(Endpoint::Tcp)
                .map_err(|_| format!("admin address {s:?} is not host:port or a socket path")),
        }
    }
}

/// Options of `run` that say who may reach the admin API.
#[derive(Clone, Debug, Default)]
pub struct AdminOptions {
    /// `--admin`: `host:port` or a socket path; `None` for the default socket.
    pub endpoint: Option<String>,
    /// `--admin-token-file`.
    pub token_file: Option<PathBuf>,
    /// `--admin-token-file-insecure`: accept a token file group or others can read.
    pub token_file_insecure: bool,
    /// `--admin-allow-remote`: a TCP address that is not loopback.
    pub allow_remote: bool,
}

/// A bearer token, kept as an HMAC tag under a random key so that a
/// presented token is compared in constant time, whatever its length.
pub struct Token {
    key: hmac::Key,
    tag: hmac::Tag,
}

impl Token {
    pub fn new(secret: &str) -> Result<Token, String> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new())
            .map_err(|_| "no randomness for the admin token key".to_string())?;
        let tag = hmac::sign(&key, secret.as_bytes());
        Ok(Token { key, tag })
    }

    /// Whether `presented` is the token (constant time).
    pub fn matches(&self, presented: &[u8]) -> bool {
        hmac::verify(&self.key, presented, self.tag.as_ref()).is_ok()
    }
}

/// The token in `path`, trimmed: refused when empty, and (unless
/// `insecure_ok`) when group or others may read it, as the opened file says.
pub fn read_token_file(path: &Path, insecure_ok: bool) -> Result<String, String> {
    let f = File::open(path).map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("cannot inspect token file {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("token file {} is not a regular file", path.display()));
    }
    if !insecure_ok && meta.mode() & 0o077 != 0 {
        return Err(format!(
            "token file {} is open to group or others (mode {:o}); chmod 600 it, or pass --admin-token-file-insecure",
            path.display(),
            meta.mode() & 0o7777
        ));
    }
    let mut text = String::new();
    f.take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("token file {} is empty", path.display()));
    }
    if token.contains(char::is_whitespace) || !token.is_ascii() {
        return Err(format!(
            "token file {} holds more than one word, or non-ASCII text",
            path.display()
        ));
    }
    Ok(token.to_string())
}

/// The token in `path`, generated (32 random bytes, hex) into a new 0600
/// file when there is none; true when it was generated now.
pub fn generated_token(path: &Path) -> Result<(String, bool), String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "no randomness for the admin token".to_string())?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(mut f) => {
            f.write_all(format!("{token}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| format!("cannot write token file {}: {e}", path.display()))?;
            Ok((token, true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok((read_token_file(path, false)?, false)),
        Err(e) => Err(format!("cannot create token file {}: {e}", path.display())),
    }
}

/// Why a request's head is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 403: not a request an operator's client sends (wrong `Host`, an
    /// `Origin`, a POST that is not `text/plain`).
    Forbidden(&'static str),
    /// 401: the token is missing or wrong.
    Unauthorized,
}

/// The `Host` values the admin API answers to.
#[derive(Clone, Debug)]
enum Hosts {
    /// A Unix socket: `localhost`, or no `Host` at all.
    Local,
    /// TCP on `port`: `127.0.0.1`, `localhost`, `[::1]` or `ip` with the
    /// port; any host with the port when `any` (`--admin-allow-remote`).
    Tcp { ip: std::net::IpAddr, port: u16, any: bool },
}

/// What every request's head must say: see the module documentation.
pub struct HeadRules {
    hosts: Hosts,
    token: Option<Token>,
}

/// The parts of a request head the rules look at.
#[derive(Debug, Default)]
pub struct Head<'a> {
    pub method: &'a str,
    pub host: Option<&'a [u8]>,
    pub origin: bool,
    pub content_type: Option<&'a [u8]>,
    pub authorization: Option<&'a [u8]>,
}

impl HeadRules {
    pub fn unix(token: Option<Token>) -> Self {
        HeadRules {
            hosts: Hosts::Local,
            token,
        }
    }

    pub fn tcp(addr: SocketAddr, token: Token, any_host: bool) -> Self {
        HeadRules {
            hosts: Hosts::Tcp {
                ip: addr.ip(),
                port: addr.port(),
                any: any_host,
            },
            token: Some(token),
        }
    }

    /// Whether a token is required.
    pub fn requires_token(&self) -> bool {
        self.token.is_some()
    }

    /// The first rule `head` breaks, if any.
    pub fn check(&self, head: &Head<'_>) -> Result<(), Refusal> {
        if !self.host_allowed(head.host) {
            return Err(Refusal::Forbidden("the Host header does not name the admin API"));
        }
        if head.origin {
            return Err(Refusal::Forbidden(
                "requests from web pages (with an Origin header) are refused",
            ));
        }
        if head.method.eq_ignore_ascii_case("POST") && !is_text_plain(head.content_type) {
            return Err(Refusal::Forbidden("commands must be sent as Content-Type: text/plain"));
        }
        if let Some(token) = &self.token {
            let presented = head.authorization.and_then(|a| strip_bearer(a));
            if !presented.is_some_and(|t| token.matches(t)) {
                return Err(Refusal::Unauthorized);
            }
        }
        Ok(())
    }

    fn host_allowed(&self, host: Option<&[u8]>) -> bool {
        let host = host.map(|h| String::from_utf8_lossy(h).trim().to_ascii_lowercase());
        match (&self.hosts, host) {
            (Hosts::Local, None) => true,
            (Hosts::Local, Some(h)) => h == "localhost",
            (Hosts::Tcp { .. }, None) => false,
            (Hosts::Tcp { ip, port, any }, Some(h)) => {
                let Some(name) = h.strip_suffix(&format!(":{port}")) else {
                    return false;
                };
                let bound = match ip {
                    std::net::IpAddr::V4(v4) => v4.to_string(),
                    std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                };
                *any || ["127.0.0.1", "localhost", "[::1]", bound.as_str()].contains(&name)
            }
        }
    }
}

/// `Bearer TOKEN` -> `TOKEN`.
fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"Bearer ").then_some(rest.trim_ascii())
}

/// `text/plain`, with or without parameters (`; charset=utf-8`).
fn is_text_plain(content_type: Option<&[u8]>) -> bool {
    let Some(ct) = content_type else { return false };
    let media = ct.split(|b| *b == b';').next().unwrap_or_default().trim_ascii();
    media.eq_ignore_ascii_case(b"text/plain")
}

/// The socket file the admin API listens on, removed on the way out only
/// while it is still the one this process created.
#[derive(Debug)]
pub struct SocketFile {
    pub path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// Remove the socket file, unless something else has replaced it.
    pub fn remove(&self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Listen on a Unix socket at `path`, created 0600. A stale socket (nobody
/// answers on it) is replaced; any other file, or a socket that still
/// answers, is refused and left untouched.
pub fn bind_unix(path: &Path) -> Result<(std::os::unix::net::UnixListener, SocketFile), String> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("admin API cannot inspect {}: {e}", path.display())),
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(format!(
                    "admin API cannot listen on {}: a file that is not a socket is there; refusing to replace it",
                    path.display()
                ));
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "admin API cannot listen on {}: another process (a running shardtls?) answers on it",
                    path.display()
                ));
            }
            std::fs::remove_file(path)
                .map_err(|e| format!("admin API cannot remove the stale socket {}: {e}", path.display()))?;
        }
    }
    // SAFETY: umask only swaps the process's file mode mask; it is put back
    // right after the bind, before any other thread creates files.
    let old = unsafe { libc::umask(0o177) };
    let bound = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(|e| format!("admin API cannot listen on {}: {e}", path.display()))?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!("the admin socket {} is not private", path.display()));
    }
    Ok((
        listener,
        SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_folder_follows_the_service_manager_then_the_user() {
        let some = |s: &str| Some(std::ffi::OsString::from(s));
        assert_eq!(
            default_dir_for(0, some("/run/unit"), some("/run/user/0")),
            PathBuf::from("/run/unit")
        );
        assert_eq!(
            default_dir_for(0, None, some("/run/user/0")),
            PathBuf::from("/run/shardtls")
        );
        assert_eq!(
            default_dir_for(1000, None, some("/run/user/1000")),
            PathBuf::from("/run/user/1000/shardtls")
        );
        assert_eq!(default_dir_for(1000, None, None), PathBuf::from("/tmp/shardtls-1000"));
        // A relative value is not trusted.
        assert_eq!(
            default_dir_for(1000, some("run"), some("x")),
            PathBuf::from("/tmp/shardtls-1000")
        );
    }

    fn head<'a>(method: &'a str, host: Option<&'a str>) -> Head<'a> {
        Head {
            method,
            host: host.map(str::as_bytes),
            content_type: Some(b"text/plain"),
            ..Head::default()
        }
    }

    #[test]
    fn a_tcp_admin_api_answers_to_its_own_names_only() {
        let rules = HeadRules::tcp("127.0.0.1:9900".parse().unwrap(), Token::new("t").unwrap(), false);
        for host in ["127.0.0.1:9900", "localhost:9900", "LOCALHOST:9900", "[::1]:9900"] {
            let mut h = head("GET", Some(host));
            h.authorization = Some(b"Bearer t");
            assert_eq!(rules.check(&h), Ok(()), "{host}");
        }
        for host in [
            None,
            Some("evil.example"),
            Some("evil.example:9900"),
            Some("127.0.0.1:9901"),
            Some("127.0.0.1"),
        ] {
            let mut h = head("GET", host);
            h.authorization = Some(b"Bearer t");
            assert!(matches!(rules.check(&h), Err(Refusal::Forbidden(_))), "{host:?}");
        }
        let remote = HeadRules::tcp("0.0.0.0:9900".parse().unwrap(), Token::new("t").unwrap(), true);
        let mut h = head("GET", Some("admin.example:9900"));
        h.authorization = Some(b"Bearer t");
        assert_eq!(remote.check(&h), Ok(()));
    }

    #[test]
    fn origin_content_type_and_token_are_checked_on_the_head() {
        let rules = HeadRules::unix(Some(Token::new("s3cret").unwrap()));
        let mut h = head("POST", Some("localhost"));
        h.authorization = Some(b"bearer s3cret");
        assert_eq!(rules.check(&h), Ok(()));
        h.content_type = Some(b"text/plain; charset=utf-8");
        assert_eq!(rules.check(&h), Ok(()));
        for ct in [
            None,
            Some(&b"application/x-www-form-urlencoded"[..]),
            Some(b"text/plainx"),
        ] {
            h.content_type = ct;
            assert!(matches!(rules.check(&h), Err(Refusal::Forbidden(_))), "{ct:?}");
        }
        h.content_type = Some(b"text/plain");
        h.origin = true;
        assert!(matches!(rules.check(&h), Err(Refusal::Forbidden(_))));
        h.origin = false;
        for auth in [
            None,
            Some(&b"Bearer wrong"[..]),
            Some(b"s3cret"),
            Some(b"Bearer s3cret-and-more"),
            Some(b"Bearer "),
        ] {
            h.authorization = auth;
            assert_eq!(rules.check(&h), Err(Refusal::Unauthorized), "{auth:?}");
        }
        let open = HeadRules::unix(None);
        assert_eq!(open.check(&head("GET", None)), Ok(()));
        assert!(matches!(
            open.check(&head("GET", Some("x"))),
            Err(Refusal::Forbidden(_))
        ));
    }

    #[test]
    fn token_files_must_be_private_and_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let write = |text: &str, mode: u32| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write("s3cret\n", 0o600);
        assert_eq!(read_token_file(&path, false), Ok("s3cret".to_string()));
        for empty in ["", "\n", "  \t\n"] {
            write(empty, 0o600);
            let err = read_token_file(&path, false).unwrap_err();
            assert!(err.contains("is empty"), "{empty:?}: {err}");
        }
        write("s3cret\n", 0o640);
        let err = read_token_file(&path, false).unwrap_err();
        assert!(
            err.contains("open to group or others") && err.contains("insecure"),
            "{err}"
        );
        assert_eq!(read_token_file(&path, true), Ok("s3cret".to_string()));
    }

    #[test]
    fn a_generated_token_is_kept_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKEN_NAME);
        let (first, created) = generated_token(&path).unwrap();
        assert!(created && first.len() == 64, "{first}");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(generated_token(&path).unwrap(), (first, false));
    }

    #[test]
    fn a_private_folder_is_created_0700_and_an_open_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mine = dir.path().join("shardtls");
        private_dir(&mine).unwrap();
        assert_eq!(std::fs::metadata(&mine).unwrap().mode() & 0o777, 0o700);
        private_dir(&mine).unwrap();
        std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = private_dir(&mine).unwrap_err();
        assert!(err.contains("open to group or others"), "{err}");
    }
}
