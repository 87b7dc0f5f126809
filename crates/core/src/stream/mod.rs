//! Run streams on disk: chunk listing, tail index, frame decoding and a live reader.
//!
//! A stream is the set of files `streams/chunks/<name>-chnk_<ULID>.bin` in file-name
//! (= ULID) order. Each file holds one flag byte (`0x00` data; a lone `0x01` is the close
//! marker) and the chunk bytes. Object streams carry one `u32 BE length || "devl" || devalue text` frame per
//! chunk; byte streams carry raw bytes or `u32 BE length || bytes` frames (`framed-v1`).
//!
//! [`index`] lists a stream's chunk files (cached) and answers the tail index;
//! [`frames`] turns chunk bytes into items; [`cursor`] reads a stream from an index, live;
//! [`readahead`] reads ahead of the consumer on a background task.

pub mod cursor;
#[cfg(test)]
mod fixtures;
pub mod frames;
pub mod index;
pub mod readahead;

pub use cursor::{Batch, FeedInput, StreamCursor, StreamReader, MAX_BATCH_BYTES, TEMP_STALE};
pub use frames::{decode_chunk, DecodeError, Item, StreamMode};
pub use index::{list_chunk_files, ChunkIndex, Listing};
pub use readahead::PrefetchReader;
