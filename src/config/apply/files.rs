//! Where the files a command names (certificates, keys) are read from, and
//! which of them may be read.
//!
//! Reading never blocks and never grows without bound: a file is opened
//! with `O_NONBLOCK | O_NOCTTY | O_CLOEXEC`, checked on the open descriptor
//! (`fstat`) to be a regular file of at most [`MAX_PEM_BYTES`], and only
//! then read. A FIFO, a device such as `/dev/zero`, a socket or a directory
//! is refused with its kind named, so a wrong path can never stall the
//! control thread (the one answering the admin API and signals).
//!
//! A private key must belong to this process's user (or root) and be
//! readable by nobody else (no group or other permission bits), checked
//! on the open descriptor, not on the path, so the file read is the file
//! checked. [`DirFileSource::allow_insecure_key_mode`] turns that refusal
//! into a warning (`shardtls run --allow-insecure-key-mode`).
//!
//! Paths given in the configuration file are the operator's own and may
//! point anywhere. Paths given at run time (admin API, `ctl`) may only
//! resolve, symlinks and `..` followed, into the folders of
//! [`DirFileSource::confined_to`] (the config file's folder and each
//! `run --allow-dir`); any other path is refused with the same words
//! whether or not a file is there.
//!
//! The bytes read are returned in a buffer that is zeroed when dropped.
//! This module does not parse them: [`crate::config::material`] does.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// The largest certificate or key file read, in bytes (1 MiB: a long chain
/// or a CA bundle of a few hundred certificates is well under it).
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// A file's bytes, zeroed when dropped.
pub type FileBytes = Zeroizing<Vec<u8>>;

/// What a file is read for: a private key gets its owner and mode checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Certificate,
    PrivateKey,
}

/// Where certificate and key files come from. Relative paths are resolved
/// against the config file's folder by the implementation.
pub trait FileSource {
    /// The whole file, or a reason naming the path and the cause.
    fn read(&self, path: &Path, kind: FileKind) -> Result<FileBytes, String>;
}

/// Reads real files; relative paths are taken from `base` (the config file's folder).
#[derive(Clone, Debug)]
pub struct DirFileSource {
    pub base: PathBuf,
    /// `Some`: the canonical folders every path must resolve into.
    confined_to: Option<Vec<PathBuf>>,
    allow_insecure_key_mode: bool,
}

impl DirFileSource {
    /// Paths anywhere; private keys must be private.
    pub fn new(base: impl Into<PathBuf>) -> Self {
        DirFileSource {
            base: base.into(),
            confined_to: None,
            allow_insecure_key_mode: false,
        }
    }

    /// Only paths that resolve into one of `dirs` (each canonical, see
    /// [`canonical_dirs`]) are read.
    pub fn confined_to(mut self, dirs: Vec<PathBuf>) -> Self {
        self.confined_to = Some(dirs);
        self
    }

    /// With `allow`, a private key readable by others, or owned by another
    /// user, is read with a warning instead of refused.
    pub fn allow_insecure_key_mode(mut self, allow: bool) -> Self {
        self.allow_insecure_key_mode = allow;
        self
    }

    /// `path` made absolute against `base`, then, when confined, resolved
    /// and checked to lie in an allowed folder.
    fn resolve(&self, path: &Path) -> Result<PathBuf, String> {
        let full = self.base.join(path);
        let Some(dirs) = &self.confined_to else {
            return Ok(full);
        };
        let refused = || {
            let list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            format!(
                "cannot read {}: no such file in the folders allowed for run-time changes ({}; see shardtls run --allow-dir)",
                full.display(),
                list.join(", ")
            )
        };
        // Missing, unreachable and outside all read the same: a caller
        // of the admin API learns nothing about files outside.
        let canonical = std::fs::canonicalize(&full).map_err(|_| refused())?;
        if dirs.iter().any(|d| canonical.starts_with(d)) {
            Ok(canonical)
        } else {
            Err(refused())
        }
    }

    /// Owner and mode of an open private key, refused or warned about.
    fn check_key(&self, path: &Path, meta: &Metadata) -> Result<(), String> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        let mut problems = Vec::new();
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            let how = if mode & 0o044 != 0 { "readable by" } else { "open to" };
            problems.push(format!("is {how} group or others (mode {mode:o}; chmod 600 it)"));
        }
        if meta.uid() != me && meta.uid() != 0 {
            problems.push(format!(
                "belongs to uid {}, neither this process's user (uid {me}) nor root (chown it)",
                meta.uid()
            ));
        }
        if problems.is_empty() {
            return Ok(());
        }
        let what = format!("private key file {} {}", path.display(), problems.join(" and "));
        if self.allow_insecure_key_mode {
            tracing::warn!("{what}; loaded anyway (--allow-insecure-key-mode)");
            Ok(())
        } else {
            Err(format!(
                "{what}; refused (shardtls run --allow-insecure-key-mode accepts it)"
            ))
        }
    }
}

impl FileSource for DirFileSource {
    fn read(&self, path: &Path, kind: FileKind) -> Result<FileBytes, String> {
        let full = self.resolve(path)?;
        let (file, meta) =
            open_regular(&full, MAX_PEM_BYTES).map_err(|e| format!("cannot read {}: {e}", full.display()))?;
        if let Some(dirs) = &self.confined_to {
            // The path may have changed between resolving and opening: the
            // open descriptor says which file was opened.
            if let Some(opened) = opened_path(&file) {
                if !dirs.iter().any(|d| opened.starts_with(d)) {
                    return Err(format!(
                        "cannot read {}: it moved out of the allowed folders",
                        full.display()
                    ));
                }
            }
        }
        if kind == FileKind::PrivateKey {
            self.check_key(&full, &meta)?;
        }
        read_all(file, &meta, MAX_PEM_BYTES).map_err(|e| format!("cannot read {}: {e}", full.display()))
    }
}

/// `dirs` resolved (symlinks, `..`), for [`DirFileSource::confined_to`].
pub fn canonical_dirs(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    dirs.iter()
        .map(|d| {
            let c = std::fs::canonicalize(d).map_err(|e| format!("allowed folder {}: {e}", d.display()))?;
            if c.is_dir() {
                Ok(c)
            } else {
                Err(format!("allowed folder {}: not a folder", d.display()))
            }
        })
        .collect()
}

/// Open `path` for reading without blocking, and refuse anything but a
/// regular file of at most `limit` bytes (checked on the descriptor).
pub fn open_regular(path: &Path, limit: u64) -> Result<(File, Metadata), String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    let t = meta.file_type();
    let kind = if t.is_file() {
        None
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a plain file")
    };
    if let Some(kind) = kind {
        return Err(format!("{kind}, not a regular file"));
    }
    if meta.len() > limit {
        return Err(too_big(limit));
    }
    Ok((file, meta))
}

/// The rest of `file` (opened by [`open_regular`]), at most `limit` bytes
/// even if it grew since, in a buffer zeroed when dropped.
pub fn read_all(file: File, meta: &Metadata, limit: u64) -> Result<FileBytes, String> {
    // One byte beyond the size seen, so that reading to the end never
    // reallocates (which would leave a copy behind) unless the file grew.
    let mut buf = Zeroizing::new(Vec::with_capacity(meta.len().min(limit) as usize + 1));
    file.take(limit + 1).read_to_end(&mut buf).map_err(|e| e.to_string())?;
    if buf.len() as u64 > limit {
        return Err(too_big(limit));
    }
    Ok(buf)
}

/// A regular file of at most `limit` bytes, read without blocking (see the module docs).
pub fn read_regular(path: &Path, limit: u64) -> Result<FileBytes, String> {
    let (file, meta) = open_regular(path, limit)?;
    read_all(file, &meta, limit)
}

fn too_big(limit: u64) -> String {
    format!("larger than the {limit} bytes allowed")
}

/// The path the kernel has for an open file, where /proc says.
fn opened_path(file: &File) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: c is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn only_regular_files_of_bounded_size_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let files = DirFileSource::new(dir.path());
        mkfifo(&dir.path().join("fifo.pem"));
        let err = files.read(Path::new("fifo.pem"), FileKind::Certificate).unwrap_err();
        assert!(err.contains("a FIFO, not a regular file"), "{err}");
        let err = files.read(Path::new("/dev/zero"), FileKind::Certificate).unwrap_err();
        assert!(err.contains("a character device"), "{err}");
        let err = files.read(Path::new("/"), FileKind::Certificate).unwrap_err();
        assert!(err.contains("a directory"), "{err}");
        std::fs::write(dir.path().join("big.pem"), vec![b'A'; MAX_PEM_BYTES as usize + 1]).unwrap();
        let err = files.read(Path::new("big.pem"), FileKind::Certificate).unwrap_err();
        assert!(err.contains("larger than the 1048576 bytes allowed"), "{err}");
        std::fs::write(dir.path().join("fits.pem"), vec![b'A'; MAX_PEM_BYTES as usize]).unwrap();
        assert_eq!(
            files.read(Path::new("fits.pem"), FileKind::Certificate).unwrap().len(),
            MAX_PEM_BYTES as usize
        );
    }

    #[test]
    fn private_keys_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.key");
        std::fs::write(&key, "key").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let strict = DirFileSource::new(dir.path());
        let err = strict.read(Path::new("k.key"), FileKind::PrivateKey).unwrap_err();
        assert!(err.contains("is readable by group or others (mode 640"), "{err}");
        assert!(err.contains("--allow-insecure-key-mode"), "{err}");
        // A certificate may be world-readable.
        assert!(strict.read(Path::new("k.key"), FileKind::Certificate).is_ok());
        let lax = DirFileSource::new(dir.path()).allow_insecure_key_mode(true);
        assert_eq!(&lax.read(Path::new("k.key"), FileKind::PrivateKey).unwrap()[..], b"key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(strict.read(Path::new("k.key"), FileKind::PrivateKey).is_ok());
    }

    #[test]
    fn confined_paths_stay_in_the_allowed_folders() {
        let root = tempfile::tempdir().unwrap();
        let conf = root.path().join("conf");
        let extra = root.path().join("extra");
        let outside = root.path().join("outside");
        for d in [&conf, &extra, &outside] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(conf.join("a.pem"), "a").unwrap();
        std::fs::write(extra.join("b.pem"), "b").unwrap();
        std::fs::write(outside.join("secret.pem"), "s").unwrap();
        std::os::unix::fs::symlink(outside.join("secret.pem"), conf.join("link.pem")).unwrap();
        std::os::unix::fs::symlink(&outside, conf.join("linkdir")).unwrap();
        let dirs = canonical_dirs(&[conf.clone(), extra.clone()]).unwrap();
        let files = DirFileSource::new(&conf).confined_to(dirs);
        let read = |p: &str| files.read(Path::new(p), FileKind::Certificate).map(|b| b.to_vec());
        assert_eq!(read("a.pem").unwrap(), b"a");
        assert_eq!(read("../extra/b.pem").unwrap(), b"b");
        assert_eq!(read(extra.join("b.pem").to_str().unwrap()).unwrap(), b"b");
        let refused = "no such file in the folders allowed for run-time changes";
        for p in [
            "../outside/secret.pem",
            "link.pem",
            "linkdir/secret.pem",
            outside.join("secret.pem").to_str().unwrap(),
            "/etc/passwd",
        ] {
            let err = read(p).unwrap_err();
            assert!(err.contains(refused), "{p}: {err}");
        }
        // Present or missing, outside reads the same.
        let present = read("../outside/secret.pem").unwrap_err();
        let missing = read("../outside/missing.pem").unwrap_err();
        assert_eq!(present.replace("secret.pem", "X"), missing.replace("missing.pem", "X"));
        // Unconfined (the config file's own paths), anything goes.
        let anywhere = DirFileSource::new(&conf);
        assert_eq!(
            &anywhere.read(Path::new("link.pem"), FileKind::Certificate).unwrap()[..],
            b"s"
        );
    }
}
