//! Native sinks: write next to the destination under a temporary name and rename only on
//! success, so a failed, cancelled or killed run never leaves a half-written file under the
//! name the user asked for.

use super::exec::Sink;
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
            file: Some(BufWriter::with_capacity(4 << 20, file)),
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
