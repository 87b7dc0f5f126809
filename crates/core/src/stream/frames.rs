//! Chunk bytes to items: devalue frames (re-grouped across chunks), legacy newline
//! texts, raw or `framed-v1` bytes.

use crate::error::{Error, Result};

const FRAME_HEADER: usize = 4;
const MAX_PLAUSIBLE_FRAME: u32 = 100_000_000;

/// How the chunk bytes are turned into items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamMode {
    /// devalue-framed object stream: items are the frame texts.
    Objects,
    /// raw byte stream: items are the chunk bytes as stored.
    BytesRaw,
    /// `framed-v1` byte stream: items are the frame payloads.
    BytesFramed,
}

/// One decoded item.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// devalue text to parse (the `devl` prefix already removed)
    Text(String),
    Bytes(Vec<u8>),
}

/// Turns chunk payloads into items, re-grouping frames that span chunks.
#[derive(Debug)]
pub struct FrameDecoder {
    mode: StreamMode,
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn new(mode: StreamMode) -> Self {
        FrameDecoder {
            mode,
            buf: Vec::new(),
        }
    }

    /// Decodes a format-prefixed frame body.
    fn frame_body(body: &[u8]) -> Result<Item> {
        if body.len() < 4 {
            return Err(Error::Plain(format!(
                "Data too short to contain format prefix: expected at least 4 bytes, got {}",
                body.len()
            )));
        }
        match &body[..4] {
            b"devl" => Ok(Item::Text(String::from_utf8_lossy(&body[4..]).into_owned())),
            b"encr" => Err(Error::Decryption(
                "Encrypted stream data encountered but no encryption key is available. Encryption is not configured or no key was provided for this run.".into(),
            )),
            other => Err(Error::Runtime(format!(
                "Unknown serialization format: \"{}\". Known formats: devl, encr",
                String::from_utf8_lossy(other)
            ))),
        }
    }

    fn drain_frames(&mut self, out: &mut Vec<Item>) -> Result<()> {
        let mut start = 0;
        while self.buf.len() - start >= FRAME_HEADER {
            let h = &self.buf[start..start + FRAME_HEADER];
            let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
            if self.buf.len() - start < FRAME_HEADER + len {
                break;
            }
            let body = &self.buf[start + FRAME_HEADER..start + FRAME_HEADER + len];
            match self.mode {
                StreamMode::Objects => out.push(Self::frame_body(body)?),
                _ => {
                    if !body.is_empty() {
                        out.push(Item::Bytes(body.to_vec()))
                    }
                }
            }
            start += FRAME_HEADER + len;
        }
        self.buf.drain(..start);
        Ok(())
    }

    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<Item>) -> Result<()> {
        match self.mode {
            StreamMode::BytesRaw => {
                if !chunk.is_empty() {
                    out.push(Item::Bytes(chunk.to_vec()));
                }
                Ok(())
            }
            StreamMode::BytesFramed => {
                self.buf.extend_from_slice(chunk);
                if self.buf.len() >= FRAME_HEADER {
                    let h = &self.buf[..FRAME_HEADER];
                    if u32::from_be_bytes([h[0], h[1], h[2], h[3]]) > MAX_PLAUSIBLE_FRAME {
                        return Err(Error::Plain(
                            "Byte stream frame exceeds the maximum frame size (100000000 bytes)"
                                .into(),
                        ));
                    }
                }
                self.drain_frames(out)
            }
            StreamMode::Objects => {
                if self.buf.is_empty() && chunk.len() >= FRAME_HEADER {
                    let n = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                    if n > 0 && n < MAX_PLAUSIBLE_FRAME {
                        self.buf.extend_from_slice(chunk);
                        return self.drain_frames(out);
                    }
                } else if !self.buf.is_empty() {
                    self.buf.extend_from_slice(chunk);
                    return self.drain_frames(out);
                }
                // Legacy: newline-separated devalue texts, no framing.
                let text = String::from_utf8_lossy(chunk);
                for line in text.split('\n') {
                    if !line.is_empty() {
                        out.push(Item::Text(line.to_string()));
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::fixtures::frame;

    #[test]
    fn decodes_frames_split_across_chunks() {
        let mut d = FrameDecoder::new(StreamMode::Objects);
        let mut out = Vec::new();
        let mut both = frame("[1]");
        both.extend(frame("[\"two\"]"));
        let (a, b) = both.split_at(6);
        d.push(a, &mut out).unwrap();
        assert!(out.is_empty());
        d.push(b, &mut out).unwrap();
        assert_eq!(
            out,
            vec![Item::Text("[1]".into()), Item::Text("[\"two\"]".into())]
        );
    }

    #[test]
    fn legacy_newline_chunks_are_split_into_values() {
        let mut d = FrameDecoder::new(StreamMode::Objects);
        let mut out = Vec::new();
        d.push(b"[1]\n[2]\n", &mut out).unwrap();
        assert_eq!(
            out,
            vec![Item::Text("[1]".into()), Item::Text("[2]".into())]
        );
    }

    #[test]
    fn unknown_and_encrypted_formats_are_errors() {
        let mut d = FrameDecoder::new(StreamMode::Objects);
        let mut out = Vec::new();
        let mut f = 8u32.to_be_bytes().to_vec();
        f.extend_from_slice(b"xxxx[1]!");
        let e = d.push(&f, &mut out).unwrap_err();
        assert!(e
            .to_string()
            .contains("Unknown serialization format: \"xxxx\""));
        let mut d = FrameDecoder::new(StreamMode::Objects);
        let mut f = 8u32.to_be_bytes().to_vec();
        f.extend_from_slice(b"encr1234");
        assert_eq!(
            d.push(&f, &mut out).unwrap_err().name(),
            "RuntimeDecryptionError"
        );
    }

    #[test]
    fn byte_modes() {
        let mut raw = FrameDecoder::new(StreamMode::BytesRaw);
        let mut out = Vec::new();
        raw.push(b"\x00\x01abc", &mut out).unwrap();
        assert_eq!(out, vec![Item::Bytes(b"\x00\x01abc".to_vec())]);
        let mut framed = FrameDecoder::new(StreamMode::BytesFramed);
        let mut out = Vec::new();
        let mut data = 3u32.to_be_bytes().to_vec();
        data.extend_from_slice(b"abc");
        data.extend_from_slice(&2u32.to_be_bytes());
        framed.push(&data, &mut out).unwrap();
        framed.push(b"de", &mut out).unwrap();
        assert_eq!(
            out,
            vec![Item::Bytes(b"abc".to_vec()), Item::Bytes(b"de".to_vec())]
        );
    }
}
