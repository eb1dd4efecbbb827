//! Private files: directories created 0700 and files written atomically
//! (temporary file, then rename) with mode 0600, so a reader sees the old
//! content or the new, never half of it, and nobody else can read either.

use std::{io::Write as _, path::Path};

use crate::{
    Error, Result,
    crypto::{b64url, random},
};

/// Creates `dir` (mode 0700 on Unix) if missing.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| Error::FailedPrecondition(format!("cannot create {}: {e}", dir.display())))
}

/// Writes `contents` to `path` atomically (temp file + rename), mode 0600.
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    let fail = |e: std::io::Error| {
        Error::FailedPrecondition(format!("cannot write {}: {e}", path.display()))
    };
    let tmp = path.with_extension(format!("tmp-{}", b64url(&random::bytes::<6>())));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = options
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(contents)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(fail)
}

/// Creates `dir` if missing and makes it mode 0700 even if it existed.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    create_private_dir(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            Error::FailedPrecondition(format!("cannot restrict {}: {e}", dir.display()))
        })?;
    }
    Ok(())
}
