//! PyTorch's on-disk formats, read into an [`ObjectGraph`](crate::value::ObjectGraph).
//!
//! Both formats are a pickle describing the object plus raw storage bytes. They differ in
//! where the storages are: zip entries `data/<key>` (`zip_format`) or a run of
//! `[count][bytes]` records after five stacked pickles (`legacy`). The shared piece is
//! `rebuild`: the pickle hooks that turn torch's storage persistent ids and tensor rebuild
//! calls into typed references. The PyTorch 0.1 tar format (`tar_format`) keeps its tensors
//! in records of its own.

pub(crate) mod legacy;
pub(crate) mod rebuild;
pub(crate) mod tar_format;
pub(crate) mod zip_format;
