//! End-to-end tests of the `ldmkit` binary.
//!
//! - `inspect`, `scan`: command behaviour on the committed fixtures (made by real torch,
//!   Lightning and safetensors; see tests/fixtures/README.md).
//! - `interop`: for every fixture, `inspect --json` lists exactly the tensors a Python walk
//!   of `torch.load` finds (golden files from tests/python/walk.py; live when LDMKIT_PYTHON
//!   names a Python with torch, as CI does).
//! - `rewrite`: strip, merge, graft, casts and A1111 merges equal the seed's Python method
//!   (tests/python/seed.py) bit for bit, outputs load in torch (weights-only, mmap) and
//!   safetensors, a graft resumes in Lightning, `convert` equals diffusers' own converters,
//!   and `apply` equals every shortcut byte for byte. The Python checks run when
//!   LDMKIT_PYTHON names the test venv's Python (CI sets it).
//! - `trainer`: `pre-encode` on generated kohya / metadata.jsonl / webdataset data with
//!   corrupt entries, resume, buckets, diffusers-folder models and broken models; latents and
//!   text states equal diffusers / transformers (tests/python/encode_ref.py), and `tokenize`
//!   equals transformers' CLIPTokenizer.
//! - `writing`: writing safely: random exclusive temporaries, removed on an error, SIGTERM
//!   or SIGHUP and swept when stale; a failing output is named as a write error.
//! - `adapters`: LoRA / LyCORIS files recognised and inspected, baked exactly as diffusers'
//!   fuse_lora and LyCORIS define it, hashed as A1111 and kohya do, metadata edited with the
//!   tensor bytes kept, malformed adapters refused in one line.
//! - `hostile`: the hostile corpus: nothing executes, every file gets a clear one-line error
//!   or a correct report, within bounded memory.

mod adapters;
mod data_parallel;
mod hostile;
mod inspect;
mod interop;
mod rewrite;
mod scan;
mod trainer;
mod training;
mod util;
mod writing;
