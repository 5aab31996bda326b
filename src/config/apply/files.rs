//! Where the files a command names (certificates, keys) are read from.

use std::path::{Path, PathBuf};

/// Where certificate and key files come from. Relative paths are resolved
/// against the config file's folder by the implementation.
pub trait FileSource {
    /// The whole file, or a reason naming the path and the cause.
    fn read(&self, path: &Path) -> Result<Vec<u8>, String>;

    /// Permission bits of a file, where the source has them (used to warn
    /// about private keys readable by group or others).
    fn mode(&self, _path: &Path) -> Option<u32> {
        None
    }
}

/// Reads real files; relative paths are taken from `base` (the config file's folder).
#[derive(Clone, Debug)]
pub struct DirFileSource {
    pub base: PathBuf,
}

impl DirFileSource {
    pub fn new(base: impl Into<PathBuf>) -> Self {
        DirFileSource { base: base.into() }
    }
}

impl FileSource for DirFileSource {
    fn read(&self, path: &Path) -> Result<Vec<u8>, String> {
        let full = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        };
        std::fs::read(&full).map_err(|e| format!("cannot read {}: {e}", full.display()))
    }

    fn mode(&self, path: &Path) -> Option<u32> {
        use std::os::unix::fs::PermissionsExt;
        let full = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        };
        std::fs::metadata(full).ok().map(|m| m.permissions().mode())
    }
}
