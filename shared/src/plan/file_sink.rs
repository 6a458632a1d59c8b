//! Native sinks: write next to the destination under a temporary name and rename only on
//! success, so a failed, cancelled or killed run never leaves a half-written file under the
//! name the user asked for.
//!
//! A temporary is `.NAME.ldmkit-XXXXXX.tmp` in the destination's folder (so the final rename
//! stays on one file system), with a random tag and created exclusively (`O_CREAT | O_EXCL`
//! through `tempfile`): a file or symlink planted under a guessable name is never opened or
//! followed, and two runs never share one. Files get the mode `File::create` would give them.
//! A run killed outright (SIGKILL, power loss) cannot remove its temporary, so the next run
//! that writes in that folder sweeps ours older than a day ([`sweep_stale`]).

use super::exec::Sink;
use crate::source::Source;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tempfile::{Builder, TempDir, TempPath};

/// Between the destination's name and the random tag of a temporary.
const TEMP_TAG: &str = ".ldmkit-";
const TEMP_SUFFIX: &str = ".tmp";
/// Random characters in a temporary's name.
const TEMP_RANDOM: usize = 6;
/// A temporary this old belongs to a run that died: no live run goes a day without writing.
const STALE_AFTER: Duration = Duration::from_secs(24 * 60 * 60);
/// Bytes of the destination's name kept in a temporary's (names are at most 255 bytes).
const NAME_KEPT: usize = 200;

/// The folder `dest` lands in.
fn folder_of(dest: &Path) -> &Path {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A builder for temporaries of `dest`: `.NAME.ldmkit-XXXXXX.tmp`, hidden.
fn temp_builder(prefix: &str) -> Builder<'_, 'static> {
    let mut b = Builder::new();
    b.prefix(prefix).suffix(TEMP_SUFFIX).rand_bytes(TEMP_RANDOM);
    b
}

fn temp_prefix(dest: &Path) -> String {
    let mut name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    if name.len() > NAME_KEPT {
        let mut end = NAME_KEPT;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    format!(".{name}{TEMP_TAG}")
}

/// Whether `name` is one of our temporaries: `.NAME.ldmkit-TAG.tmp`, TAG 1 to 16 ASCII
/// letters or digits (the random tag; a process id in older versions).
fn is_our_temp(name: &OsStr) -> bool {
    let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(TEMP_SUFFIX)) else {
        return false;
    };
    let Some((head, tag)) = stem.rsplit_once(TEMP_TAG) else {
        return false;
    };
    head.len() > 1
        && head.starts_with('.')
        && (1..=16).contains(&tag.len())
        && tag.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Remove our temporaries in `dir` older than a day: regular files matching our naming
/// pattern only, never symlinks or folders, judged by modification time (a live run's file
/// keeps changing). Best effort: anything unreadable is left alone. Returns how many went.
pub fn sweep_stale(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let Some(cutoff) = SystemTime::now().checked_sub(STALE_AFTER) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        if !is_our_temp(&entry.file_name()) {
            continue;
        }
        // `DirEntry::metadata` describes a symlink itself, never its target.
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let stale = meta.modified().is_ok_and(|m| m < cutoff);
        if meta.file_type().is_file() && stale && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// tempfile's errors end in ` at path "…"` (the random name it tried): name the folder.
fn creating_in(dir: &Path, e: std::io::Error) -> std::io::Error {
    let text = e.to_string();
    let why = text.split(" at path \"").next().unwrap_or(&text);
    std::io::Error::new(
        e.kind(),
        format!("cannot create a file in {}: {why}", dir.display()),
    )
}

/// One output file, renamed into place by [`FileSink::commit`]; dropped uncommitted, the
/// temporary file is removed.
pub struct FileSink {
    dest: PathBuf,
    /// The plain file, so errors are the OS's own (tempfile's writer appends the path).
    /// Declared before `temp`: dropped, it is closed before the temporary is removed.
    file: Option<BufWriter<File>>,
    temp: Option<TempPath>,
}

impl FileSink {
    /// A sink for `dest`, first sweeping stale temporaries from its folder.
    pub fn create(dest: &Path) -> std::io::Result<Self> {
        sweep_stale(folder_of(dest));
        Self::create_unswept(dest)
    }

    fn create_unswept(dest: &Path) -> std::io::Result<Self> {
        let dir = folder_of(dest);
        let prefix = temp_prefix(dest);
        let mut builder = temp_builder(&prefix);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // What `File::create` asks for; the umask narrows it the same way.
            builder.permissions(fs::Permissions::from_mode(0o666));
        }
        let (file, temp) = builder
            .tempfile_in(dir)
            .map_err(|e| creating_in(dir, e))?
            .into_parts();
        Ok(FileSink {
            dest: dest.to_path_buf(),
            // Small enough that the executor's 2 MiB+ chunks bypass it (no extra copy).
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            temp: Some(temp),
        })
    }

    /// Flush and move the file to its final name (a failure removes the temporary).
    pub fn commit(mut self) -> std::io::Result<()> {
        let file = self.file.take().expect("committed once");
        drop(file.into_inner().map_err(|e| e.into_error())?);
        let temp = self.temp.take().expect("committed once");
        temp.persist(&self.dest).map_err(|e| e.error)?;
        Ok(())
    }
}

impl Sink for FileSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.as_mut().expect("open").write_all(bytes)
    }

    #[cfg(target_os = "linux")]
    fn copy_range(
        &mut self,
        _input: usize,
        source: &dyn Source,
        offset: u64,
        len: u64,
    ) -> std::io::Result<bool> {
        use std::os::fd::AsRawFd;
        let Some(input) = source.as_file() else {
            return Ok(false);
        };
        let out = self.file.as_mut().expect("open");
        out.flush()?;
        let (fd_in, fd_out) = (input.as_raw_fd(), out.get_ref().as_raw_fd());
        let mut off_in = offset as libc::loff_t;
        let mut left = len as usize;
        while left > 0 {
            // SAFETY: both descriptors are open files we own for the whole call; the input
            // offset is ours, the output advances its own file position.
            let n = unsafe {
                libc::copy_file_range(fd_in, &mut off_in, fd_out, std::ptr::null_mut(), left, 0)
            };
            match n {
                n if n > 0 => left -= n as usize,
                0 if left as u64 == len => return Ok(false),
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                _ => {
                    let err = std::io::Error::last_os_error();
                    // Not supported here (old kernel, cross-device, special files): fall back.
                    let unsupported = matches!(
                        err.raw_os_error(),
                        Some(libc::ENOSYS | libc::EXDEV | libc::EINVAL | libc::EOPNOTSUPP)
                    );
                    if unsupported && left as u64 == len {
                        return Ok(false);
                    }
                    return Err(err);
                }
            }
        }
        Ok(true)
    }
}

/// A folder of outputs (diffusers layout), built under a temporary name and renamed into
/// place whole; dropped uncommitted, the temporary folder is removed.
pub struct FolderSink {
    dest: PathBuf,
    temp: Option<TempDir>,
}

impl FolderSink {
    /// Refuses a destination that exists: replacing a folder is not atomic.
    pub fn create(dest: &Path) -> std::io::Result<Self> {
        if dest.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "folder exists (remove it first)",
            ));
        }
        let dir = folder_of(dest);
        sweep_stale(dir);
        let prefix = temp_prefix(dest);
        let temp = temp_builder(&prefix)
            .tempdir_in(dir)
            .map_err(|e| creating_in(dir, e))?;
        Ok(FolderSink {
            dest: dest.to_path_buf(),
            temp: Some(temp),
        })
    }

    /// A sink for one file at `relative` inside the folder; commit it before the folder.
    pub fn file(&self, relative: &str) -> std::io::Result<FileSink> {
        let path = self.temp.as_ref().expect("open").path().join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        FileSink::create_unswept(&path)
    }

    pub fn commit(mut self) -> std::io::Result<()> {
        let temp = self.temp.take().expect("committed once");
        // Renamed first, so a failure still drops (and removes) the temporary folder.
        fs::rename(temp.path(), &self.dest)?;
        let _ = temp.keep();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn nothing_is_left_unless_committed() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let dest = dir.join("out.ckpt");
        {
            let mut sink = FileSink::create(&dest).unwrap();
            sink.write(b"half").unwrap();
            let during = names(dir);
            assert_eq!(during.len(), 1);
            assert!(is_our_temp(OsStr::new(&during[0])), "{during:?}");
            assert!(during[0].starts_with(".out.ckpt.ldmkit-"), "{during:?}");
        }
        assert!(names(dir).is_empty(), "dropped sink left a file");
        let mut sink = FileSink::create(&dest).unwrap();
        sink.write(b"whole").unwrap();
        sink.commit().unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"whole");

        let folder = dir.join("diffusers");
        {
            let f = FolderSink::create(&folder).unwrap();
            let mut s = f.file("unet/config.json").unwrap();
            s.write(b"{}").unwrap();
            s.commit().unwrap();
        }
        assert!(!folder.exists());
        assert_eq!(names(dir), ["out.ckpt"], "dropped folder left files");
        let f = FolderSink::create(&folder).unwrap();
        let mut s = f.file("unet/config.json").unwrap();
        s.write(b"{}").unwrap();
        s.commit().unwrap();
        f.commit().unwrap();
        assert_eq!(fs::read(folder.join("unet/config.json")).unwrap(), b"{}");
        assert_eq!(names(dir), ["diffusers", "out.ckpt"]);
    }

    #[test]
    #[cfg(unix)]
    fn a_planted_symlink_is_never_followed() {
        // The old name was guessable (the process id); a symlink there would have been
        // written through. The random tag makes it miss, and O_EXCL would refuse it anyway.
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let victim = dir.join("victim");
        fs::write(&victim, b"keep").unwrap();
        let planted = dir.join(format!(".out.ckpt.ldmkit-{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let mut sink = FileSink::create(&dir.join("out.ckpt")).unwrap();
        sink.write(b"new").unwrap();
        sink.commit().unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert_eq!(fs::read(dir.join("out.ckpt")).unwrap(), b"new");
        assert!(fs::symlink_metadata(&planted).unwrap().is_symlink());
    }

    #[test]
    fn our_temporary_names() {
        for ours in [
            ".out.ckpt.ldmkit-aB3xZ9.tmp",
            ".model.safetensors.ldmkit-12345.tmp",
            ".a.ldmkit-x.tmp",
        ] {
            assert!(is_our_temp(OsStr::new(ours)), "{ours}");
        }
        for not_ours in [
            "out.ckpt",
            "out.ckpt.ldmkit-aB3xZ9.tmp",
            ".ldmkit-aB3xZ9.tmp",
            ".out.ckpt.ldmkit-.tmp",
            ".out.ckpt.ldmkit-aB3-xZ.tmp",
            ".out.ckpt.ldmkit-aB3xZ9.tmp.bak",
            ".out.ckpt.ldmkit-abcdefghijklmnopq.tmp",
            ".out.ckpt.tmp",
        ] {
            assert!(!is_our_temp(OsStr::new(not_ours)), "{not_ours}");
        }
    }

    #[test]
    fn stale_temporaries_are_swept_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let old = SystemTime::now() - STALE_AFTER - Duration::from_secs(60);
        let age = |p: &Path| {
            File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(old)
                .unwrap()
        };
        let stale = dir.join(".a.ckpt.ldmkit-Ab12Cd.tmp");
        let fresh = dir.join(".b.ckpt.ldmkit-Ef34Gh.tmp");
        let other = dir.join(".c.ckpt.partial");
        let folder = dir.join(".d.ldmkit-Ij56Kl.tmp");
        for f in [&stale, &fresh, &other] {
            fs::write(f, b"x").unwrap();
        }
        age(&stale);
        age(&other);
        fs::create_dir(&folder).unwrap();
        #[cfg(unix)]
        {
            let target = dir.join("target");
            fs::write(&target, b"x").unwrap();
            age(&target);
            std::os::unix::fs::symlink(&target, dir.join(".e.ldmkit-Mn78Op.tmp")).unwrap();
        }
        // Writing in the folder sweeps it.
        let sink = FileSink::create(&dir.join("new.ckpt")).unwrap();
        sink.commit().unwrap();
        let left = names(dir);
        assert!(
            !left.contains(&".a.ckpt.ldmkit-Ab12Cd.tmp".to_string()),
            "{left:?}"
        );
        for kept in [
            ".b.ckpt.ldmkit-Ef34Gh.tmp",
            ".c.ckpt.partial",
            ".d.ldmkit-Ij56Kl.tmp",
            "new.ckpt",
        ] {
            assert!(left.contains(&kept.to_string()), "{kept}: {left:?}");
        }
        #[cfg(unix)]
        assert!(
            left.contains(&".e.ldmkit-Mn78Op.tmp".to_string()),
            "{left:?}"
        );
        assert_eq!(sweep_stale(dir), 0);
    }

    #[test]
    #[cfg(unix)]
    fn an_unwritable_folder_is_named() {
        let e = match FileSink::create(Path::new("/proc/ldmkit-test/out.ckpt")) {
            Err(e) => e.to_string(),
            Ok(_) => return,
        };
        assert!(
            e.starts_with("cannot create a file in /proc/ldmkit-test: "),
            "{e}"
        );
        assert!(!e.contains("at path"), "{e}");
    }
}
