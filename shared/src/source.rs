//! Random-access byte sources.
//!
//! Every reader in ldmkit-core works over a [`Source`]: a length and positional reads. That one
//! seam lets the same parsing code run on a native file (positional `pread`, no shared cursor),
//! an in-memory buffer (tests, fuzzing) and, in the browser, a `File` read through
//! `FileReaderSync` in a Web Worker. Readers never pull a whole file in to learn its structure:
//! they read headers, directories and pickles, and leave tensor bytes where they are.

use std::fmt;
use std::sync::Arc;

/// A read-only, random-access byte source.
pub trait Source: Send + Sync {
    /// Total length in bytes.
    fn len(&self) -> u64;

    /// Fill `buf` from `offset`; fails if the range runs past the end.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;

    /// Whether the source holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The file behind the source, when there is one: lets a native sink copy unchanged
    /// ranges inside the kernel instead of through our buffers.
    #[cfg(not(target_arch = "wasm32"))]
    fn as_file(&self) -> Option<&std::fs::File> {
        None
    }
}

/// A shared handle to a source, cheap to clone into tensor references.
pub type SharedSource = Arc<dyn Source>;

/// Read `len` bytes at `offset` into a fresh vector, refusing ranges outside the source.
pub fn read_vec(source: &dyn Source, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let end = offset.checked_add(len);
    if end.is_none_or(|end| end > source.len()) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "range {offset}+{len} is past the end of the {}-byte input",
                source.len()
            ),
        ));
    }
    let len = usize::try_from(len)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "range too large"))?;
    let mut buf = vec![0; len];
    source.read_at(offset, &mut buf)?;
    Ok(buf)
}

/// An in-memory source: tests, fuzzing, and small files already in hand.
#[derive(Clone)]
pub struct MemSource {
    bytes: Arc<[u8]>,
}

impl MemSource {
    pub fn new(bytes: impl Into<Arc<[u8]>>) -> Self {
        MemSource {
            bytes: bytes.into(),
        }
    }
}

impl fmt::Debug for MemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemSource({} bytes)", self.bytes.len())
    }
}

impl Source for MemSource {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let start = usize::try_from(offset).ok();
        let range = start.and_then(|s| Some(s..s.checked_add(buf.len())?));
        match range.and_then(|r| self.bytes.get(r)) {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "read past the end of the input",
            )),
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub use native::FileSource;

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use super::Source;
    use std::fs::File;
    use std::path::Path;

    /// A file on disk read with positional reads, so many readers can share one handle.
    #[derive(Debug)]
    pub struct FileSource {
        file: File,
        len: u64,
    }

    impl FileSource {
        pub fn open(path: &Path) -> std::io::Result<Self> {
            let file = File::open(path)?;
            let meta = file.metadata()?;
            if meta.is_dir() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "is a directory",
                ));
            }
            Ok(FileSource {
                len: meta.len(),
                file,
            })
        }
    }

    impl Source for FileSource {
        fn len(&self) -> u64 {
            self.len
        }

        fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
            if offset
                .checked_add(buf.len() as u64)
                .is_none_or(|e| e > self.len)
            {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "read past the end of the file",
                ));
            }
            read_exact_at(&self.file, offset, buf)
        }

        fn as_file(&self) -> Option<&File> {
            Some(&self.file)
        }
    }

    #[cfg(unix)]
    fn read_exact_at(file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }

    #[cfg(windows)]
    fn read_exact_at(file: &File, mut offset: u64, mut buf: &mut [u8]) -> std::io::Result<()> {
        use std::os::windows::fs::FileExt;
        while !buf.is_empty() {
            match file.seek_read(buf, offset)? {
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                n => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
            }
        }
        Ok(())
    }
}

/// A forward cursor over a window of a source with a small read-ahead buffer.
///
/// Pickle streams are read byte by byte; going to the source for each byte would be a
/// system call (or a `FileReaderSync` slice) per opcode, so reads are batched here.
pub struct Cursor<'a> {
    source: &'a dyn Source,
    pos: u64,
    end: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

const CURSOR_CHUNK: usize = 64 * 1024;

impl<'a> Cursor<'a> {
    /// A cursor over `source[start..end]`.
    pub fn new(source: &'a dyn Source, start: u64, end: u64) -> Self {
        let end = end.min(source.len());
        Cursor {
            source,
            pos: start.min(end),
            end,
            buf: Vec::new(),
            buf_start: start,
        }
    }

    /// Absolute position in the source.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Bytes left before the window's end.
    pub fn remaining(&self) -> u64 {
        self.end - self.pos
    }

    /// Move past the next `n` bytes without reading them.
    pub fn skip(&mut self, n: u64) -> std::io::Result<()> {
        if n > self.remaining() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "skip past the end",
            ));
        }
        self.pos += n;
        Ok(())
    }

    /// Borrow the next `n` bytes, or `None` if the window ends first.
    pub fn take(&mut self, n: usize) -> std::io::Result<Option<&[u8]>> {
        if (n as u64) > self.remaining() {
            return Ok(None);
        }
        let buf_end = self.buf_start + self.buf.len() as u64;
        if self.pos < self.buf_start || self.pos + n as u64 > buf_end {
            let want = (n.max(CURSOR_CHUNK) as u64).min(self.remaining()) as usize;
            self.buf.resize(want, 0);
            self.source.read_at(self.pos, &mut self.buf)?;
            self.buf_start = self.pos;
        }
        let at = (self.pos - self.buf_start) as usize;
        self.pos += n as u64;
        Ok(Some(&self.buf[at..at + n]))
    }
}
