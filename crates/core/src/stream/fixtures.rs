//! Test fixtures: chunk files as writers produce them.

use std::path::Path;

/// An object-stream frame: `u32 BE length || "devl" || text`.
pub fn frame(text: &str) -> Vec<u8> {
    let body = format!("devl{text}");
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body.as_bytes());
    v
}

/// Writes `<name>-chnk_<id>.bin`: the flag byte, then the payload.
pub fn write_chunk(dir: &Path, name: &str, id: &str, flag: u8, payload: &[u8]) {
    let mut data = vec![flag];
    data.extend_from_slice(payload);
    std::fs::write(dir.join(format!("{name}-chnk_{id}.bin")), data).unwrap();
}

/// The i-th chunk ULID of a fixed instant (sorts by `i`).
pub fn ulid_at(i: u64) -> String {
    ulid::Ulid::from_parts(1_700_000_000_000 + i, 7).to_string()
}
