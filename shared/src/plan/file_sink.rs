//! Native sinks: write next to the destination under a temporary name and rename only on
//! success, so a failed, cancelled or killed run never leaves a half-written file under the
//! name the user asked for.

use super::exec::Sink;
use crate::source::Source;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Temporary sibling of `dest`: hidden, and named after our process so that two runs never
/// share one.
fn temp_sibling(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    dest.with_file_name(format!(".{name}.ldmkit-{}.tmp", std::process::id()))
}

/// One output file, renamed into place by [`FileSink::commit`]; dropped uncommitted, the
/// temporary file is removed.
pub struct FileSink {
    dest: PathBuf,
    temp: PathBuf,
    file: Option<BufWriter<File>>,
}

impl FileSink {
    pub fn create(dest: &Path) -> std::io::Result<Self> {
        let temp = temp_sibling(dest);
        let file = File::create(&temp)?;
        Ok(FileSink {
            dest: dest.to_path_buf(),
            temp,
            // Small enough that the executor's 2 MiB+ chunks bypass it (no extra copy).
            file: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// Flush and move the file to its final name.
    pub fn commit(mut self) -> std::io::Result<()> {
        let file = self.file.take().expect("committed once");
        let file = file.into_inner().map_err(|e| e.into_error())?;
        drop(file);
        fs::rename(&self.temp, &self.dest)
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

impl Drop for FileSink {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// A folder of outputs (diffusers layout), built under a temporary name and renamed into
/// place whole.
pub struct FolderSink {
    dest: PathBuf,
    temp: PathBuf,
    committed: bool,
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
        let temp = temp_sibling(dest);
        let _ = fs::remove_dir_all(&temp);
        fs::create_dir_all(&temp)?;
        Ok(FolderSink {
            dest: dest.to_path_buf(),
            temp,
            committed: false,
        })
    }

    /// A sink for one file at `relative` inside the folder; commit it before the folder.
    pub fn file(&self, relative: &str) -> std::io::Result<FileSink> {
        let path = self.temp.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        FileSink::create(&path)
    }

    pub fn commit(mut self) -> std::io::Result<()> {
        fs::rename(&self.temp, &self.dest)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for FolderSink {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_left_unless_committed() {
        let dir = std::env::temp_dir().join(format!("ldmkit-sink-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("out.ckpt");
        {
            let mut sink = FileSink::create(&dest).unwrap();
            sink.write(b"half").unwrap();
        }
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            0,
            "dropped sink left a file"
        );
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
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "dropped folder left files"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
