//! Private files: directories created 0700 and files written with mode 0600,
//! durably (file and directory fsynced) and atomically, so a reader sees the
//! old content or the new, never half of it, and nobody else can read either.
//!
//! Two ways to publish a file:
//! - [`write_private_file`] replaces whatever is there (temporary file, then
//!   rename): exports and token files an operator asked to (over)write.
//! - [`create_private_file`] never replaces anything (temporary file, then a
//!   hard link, which fails if the name is taken): files that several
//!   processes may race to create, such as `master.key`, where the first one
//!   must win and every other process must use it.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use crate::{
    Error, Result,
    crypto::{b64url, random},
};

fn cannot(what: &str, path: &Path, e: &std::io::Error) -> Error {
    Error::FailedPrecondition(format!("cannot {what} {}: {e}", path.display()))
}

/// Creates `dir` (mode 0700 on Unix) if missing.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| cannot("create", dir, &e))
}

/// The directory a file lives in (`.` for a bare file name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Flushes a directory's entries, so a rename or link in it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| cannot("sync directory", dir, &e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Options that open a file for writing and create it with mode 0600.
fn private_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Writes `contents` to a new, uniquely named, fsynced 0600 file beside
/// `path`, to be moved or linked into place.
pub fn stage_private_file(path: &Path, contents: &[u8]) -> Result<PathBuf> {
    let tmp = path.with_extension(format!("tmp-{}", b64url(&random::bytes::<6>())));
    let written = private_options()
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(contents)?;
            f.sync_all()
        });
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(cannot("write", path, &e))
        }
    }
}

/// Links the staged file `staged` to `path` unless `path` exists, then
/// fsyncs the directory. Exclusive: returns `false`, touching nothing, when
/// the name is taken.
pub fn link_into_place(staged: &Path, path: &Path) -> Result<bool> {
    match std::fs::hard_link(staged, path) {
        Ok(()) => {
            sync_dir(parent_of(path))?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(cannot("create", path, &e)),
    }
}

/// Writes `contents` to `path` atomically and durably (temp file, fsync,
/// rename, fsync of the directory), mode 0600. Replaces an existing file.
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = stage_private_file(path, contents)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(cannot("write", path, &e));
    }
    sync_dir(parent_of(path))
}

/// Who, besides the writer, may read files handed over to another program
/// running as another user (OpenMetadata in its container runs as its own
/// non-root user). The default is nobody: 0700 directories and 0600 files
/// owned by whoever wrote them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Handover {
    /// New owning user id, if not the writer.
    pub owner: Option<u32>,
    /// New owning group id, if not the writer's.
    pub group: Option<u32>,
    /// Whether the owning group may read (files 0640, directories 0750).
    pub group_readable: bool,
    /// An exact file mode instead (read bits only: 0600, 0640, 0644, 0400…);
    /// directories get the matching search bits.
    pub mode: Option<u32>,
}

impl Handover {
    fn file_mode(self) -> u32 {
        match self.mode {
            Some(mode) => mode,
            None if self.group_readable => 0o640,
            None => 0o600,
        }
    }

    fn dir_mode(self) -> u32 {
        let file = self.file_mode();
        0o700
            | if file & 0o040 != 0 { 0o050 } else { 0 }
            | if file & 0o004 != 0 { 0o005 } else { 0 }
    }

    /// Gives `path` to the owner and group, then sets `mode`.
    fn apply(self, path: &Path, mode: u32) -> Result<()> {
        #[cfg(unix)]
        if self.owner.is_some() || self.group.is_some() {
            std::os::unix::fs::chown(path, self.owner, self.group).map_err(|e| {
                let to = match (self.owner, self.group) {
                    (Some(u), Some(g)) => format!("{u}:{g}"),
                    (Some(u), None) => u.to_string(),
                    (None, Some(g)) => format!(":{g}"),
                    (None, None) => String::new(),
                };
                let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                    " (giving files to another user needs root; or use --group-readable \
                     with a group you belong to)"
                } else {
                    ""
                };
                Error::FailedPrecondition(format!(
                    "cannot give {} to {to}: {e}{hint}",
                    path.display()
                ))
            })?;
        }
        restrict(path, mode)
    }
}

/// [`ensure_private_dir`], then hands `dir` over as `to` says. Refuses a
/// path through a symbolic link anywhere.
pub fn ensure_handover_dir(dir: &Path, to: Handover) -> Result<()> {
    refuse_symlinked_path(dir)?;
    ensure_private_dir(dir)?;
    to.apply(dir, to.dir_mode())
}

/// Creates the directory `path` lives in, handed over as `to` says, if it is
/// missing; an existing one (a shared volume) is left as it is.
pub fn ensure_parent_dir(path: &Path, to: Handover) -> Result<()> {
    let dir = parent_of(path);
    if dir.exists() {
        return Ok(());
    }
    ensure_handover_dir(dir, to)
}

/// [`write_private_file`] for a file another user reads: the staged copy gets
/// its owner and mode before it is renamed into place, so no reader ever sees
/// it with other permissions.
pub fn write_handover_file(path: &Path, contents: &[u8], to: Handover) -> Result<()> {
    let tmp = stage_private_file(path, contents)?;
    let placed = to
        .apply(&tmp, to.file_mode())
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| cannot("write", path, &e)));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(parent_of(path))
}

/// Creates `path` with `contents` (mode 0600) unless it exists. Atomic,
/// durable and exclusive: of several processes racing, exactly one creates the
/// file and the others get `false` and leave it untouched.
pub fn create_private_file(path: &Path, contents: &[u8]) -> Result<bool> {
    let tmp = stage_private_file(path, contents)?;
    let linked = link_into_place(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked
}

/// Refuses `dir` if it is a symbolic link: writing keys through one would put
/// them (and change the mode of) wherever the link points.
pub fn refuse_symlinked_dir(dir: &Path) -> Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.file_type().is_symlink() => Err(Error::FailedPrecondition(format!(
            "{} is a symbolic link; give the real directory (keys are not written through links)",
            dir.display()
        ))),
        _ => Ok(()),
    }
}

/// Refuses `path` if it, or any directory on the way to it, is a symbolic
/// link: an output an operator names (a backup, exported keys, a token) is
/// written exactly where the path says, never wherever a link someone else
/// can change points.
pub fn refuse_symlinked_path(path: &Path) -> Result<()> {
    let mut walked = PathBuf::new();
    for component in path.components() {
        walked.push(component);
        if matches!(
            component,
            std::path::Component::RootDir | std::path::Component::Prefix(_)
        ) {
            continue;
        }
        if std::fs::symlink_metadata(&walked).is_ok_and(|m| m.file_type().is_symlink()) {
            let real = std::fs::canonicalize(&walked)
                .map(|r| format!(" (it points to {})", r.display()))
                .unwrap_or_default();
            return Err(Error::FailedPrecondition(format!(
                "{} is a symbolic link{real}; give a path without links (outputs are not \
                 written through links)",
                walked.display()
            )));
        }
    }
    Ok(())
}

/// Creates `dir` if missing and makes it mode 0700 even if it existed.
/// Refuses a symbolic link.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    refuse_symlinked_dir(dir)?;
    create_private_dir(dir)?;
    restrict(dir, 0o700)
}

/// Sets `path`'s permission bits to `mode` (Unix).
pub fn restrict(path: &Path, mode: u32) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| cannot("restrict", path, &e))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// `path`'s permission bits, when it exists (Unix).
pub fn mode_of(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Makes `path` (a file) mode 0600 if it exists and is readable by group or
/// others; returns whether it had to.
pub fn tighten_file(path: &Path) -> Result<bool> {
    match mode_of(path) {
        Some(mode) if mode & 0o077 != 0 => {
            restrict(path, 0o600)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Creates `path` empty with mode 0600 unless it exists (so a program that
/// then opens it, such as SQLite, keeps that mode and gives it to its
/// companion files).
pub fn touch_private(path: &Path) -> Result<()> {
    match private_options().create_new(true).open(path) {
        Ok(_) => sync_dir(parent_of(path)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(cannot("create", path, &e)),
    }
}

/// Opens `path` for writing, creating it with mode 0600 if missing; never
/// truncates (a lock file, say).
pub fn open_private_file(path: &Path) -> Result<std::fs::File> {
    private_options()
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| cannot("open", path, &e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_path_through_a_symbolic_link_is_refused_anywhere() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        refuse_symlinked_path(&real.join("backup.db")).unwrap();
        for through in [
            dir.path().join("link"),
            dir.path().join("link/backup.db"),
            dir.path().join("link/deeper/backup.db"),
        ] {
            let err = refuse_symlinked_path(&through).unwrap_err().to_string();
            assert!(
                err.contains("symbolic link") && err.contains("real"),
                "{err}"
            );
        }
    }

    #[test]
    fn create_private_file_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        assert!(create_private_file(&path, b"first").unwrap());
        assert!(!create_private_file(&path, b"second").unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        assert_eq!(mode_of(&path), Some(0o600));
        // Only the file remains: no staged leftovers.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn racing_creators_agree_on_one_file() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("master.key");
            let winners: Vec<bool> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8u8)
                    .map(|i| {
                        let path = &path;
                        s.spawn(move || create_private_file(path, &[i; 32]).unwrap())
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(winners.iter().filter(|w| **w).count(), 1);
            assert_eq!(std::fs::read(&path).unwrap().len(), 32);
        }
    }

    #[cfg(unix)]
    #[test]
    fn symlinked_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        restrict(&target, 0o755).unwrap();
        let link = dir.path().join("out");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = ensure_private_dir(&link).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(mode_of(&target), Some(0o755), "the target was not touched");
    }

    #[cfg(unix)]
    #[test]
    fn handed_over_files_get_their_mode_before_they_appear() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("om-keys");
        let to = Handover {
            group_readable: true,
            ..Handover::default()
        };
        ensure_handover_dir(&out, to).unwrap();
        assert_eq!(mode_of(&out), Some(0o750));
        let path = out.join("private_key.der");
        write_handover_file(&path, b"key", to).unwrap();
        assert_eq!(mode_of(&path), Some(0o640));
        // An exact mode beats group_readable; the directory follows it.
        let world = Handover {
            mode: Some(0o644),
            ..to
        };
        write_handover_file(&path, b"key", world).unwrap();
        assert_eq!(mode_of(&path), Some(0o644));
        let shared = dir.path().join("shared").join("token");
        ensure_parent_dir(&shared, world).unwrap();
        assert_eq!(mode_of(shared.parent().unwrap()), Some(0o755));
        // The default hands nothing over.
        write_handover_file(&path, b"key", Handover::default()).unwrap();
        assert_eq!(mode_of(&path), Some(0o600));
        assert_eq!(
            std::fs::read_dir(&out).unwrap().count(),
            1,
            "no staged leftovers"
        );
    }

    #[cfg(unix)]
    #[test]
    fn loose_files_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyward.db");
        std::fs::write(&path, b"").unwrap();
        restrict(&path, 0o644).unwrap();
        assert!(tighten_file(&path).unwrap());
        assert_eq!(mode_of(&path), Some(0o600));
        assert!(!tighten_file(&path).unwrap());
    }
}
