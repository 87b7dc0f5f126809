//! Chunk bytes to items: devalue frames, legacy newline texts, raw or `framed-v1` bytes.
//!
//! Every writer of the local format (world-local through `@workflow/core`'s serializer,
//! which writes one frame per chunk; this package; the embedded engine) puts whole frames
//! in each chunk file, so a chunk is decoded on its own: a frame that runs past the end of
//! its chunk is a truncated file, reported at that file, instead of swallowing the next
//! chunk's bytes as its body (the official reader would carry the partial frame over).

const FRAME_HEADER: usize = 4;
/// The largest frame any writer produces (`@workflow/core`'s `MAX_FRAME_SIZE`).
pub const MAX_FRAME: u32 = 100_000_000;

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

/// Why a chunk's payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes cannot be what a writer produced: the file is corrupt. The text says why.
    Corrupt(String),
    /// A frame whose format prefix is not one we know (`WorkflowRuntimeError` upstream).
    UnknownFormat(String),
    /// An `encr` frame: nothing here holds a key (`RuntimeDecryptionError` upstream).
    Encrypted,
}

impl DecodeError {
    /// The message `@workflow/core` gives for the same data (for the kinds it has one).
    pub fn message(&self) -> String {
        match self {
            DecodeError::Corrupt(detail) => detail.clone(),
            DecodeError::UnknownFormat(f) => {
                format!("Unknown serialization format: \"{f}\". Known formats: devl, encr")
            }
            DecodeError::Encrypted => "Encrypted stream data encountered but no encryption key is available. Encryption is not configured or no key was provided for this run.".into(),
        }
    }
}

/// Whether `text` is one devalue value as `devalue.parse` needs it: a JSON text (devalue's
/// output always is). Only the syntax is checked, without building anything.
fn check_devalue_text(text: &str) -> Result<(), DecodeError> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|e| DecodeError::Corrupt(format!("a value is not valid devalue text ({e})")))
}

/// Text as the official reader decodes it (`TextDecoder`: invalid sequences become U+FFFD).
/// Valid UTF-8 — every text a writer makes — is checked by the standard validator, which
/// passes ASCII a word at a time; only invalid bytes take the slower replacing decoder.
fn utf8_text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// The body of one object-stream frame (format prefix + payload) as an item.
fn object_frame(body: &[u8]) -> Result<Item, DecodeError> {
    if body.len() < 4 {
        return Err(DecodeError::Corrupt(format!(
            "a frame of {} bytes is too short to hold a format prefix (4 bytes)",
            body.len()
        )));
    }
    match &body[..4] {
        b"devl" => {
            let text = utf8_text(&body[4..]).into_owned();
            check_devalue_text(&text)?;
            Ok(Item::Text(text))
        }
        b"encr" => Err(DecodeError::Encrypted),
        other => Err(DecodeError::UnknownFormat(
            String::from_utf8_lossy(other).into_owned(),
        )),
    }
}

/// Splits `payload` into `u32 BE length || body` frames that must end exactly at its end.
fn frames(
    payload: &[u8],
    mut each: impl FnMut(&[u8]) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let mut rest = payload;
    while !rest.is_empty() {
        let Some(header) = rest.get(..FRAME_HEADER) else {
            return Err(DecodeError::Corrupt(format!(
                "the chunk ends inside a frame header ({} of 4 bytes)",
                rest.len()
            )));
        };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        if len > MAX_FRAME {
            return Err(DecodeError::Corrupt(format!(
                "frame length {len} exceeds the maximum frame size ({MAX_FRAME} bytes)"
            )));
        }
        let body_len = len as usize;
        let Some(body) = rest.get(FRAME_HEADER..FRAME_HEADER + body_len) else {
            return Err(DecodeError::Corrupt(format!(
                "truncated: a frame of {len} bytes has only {} bytes left in the chunk",
                rest.len() - FRAME_HEADER
            )));
        };
        each(body)?;
        rest = &rest[FRAME_HEADER + body_len..];
    }
    Ok(())
}

/// Decodes one chunk's payload (the file without its flag byte) into `out`. On error,
/// `out` may hold the items decoded before the fault; callers discard them.
pub fn decode_chunk(
    mode: StreamMode,
    payload: &[u8],
    out: &mut Vec<Item>,
) -> Result<(), DecodeError> {
    match mode {
        StreamMode::BytesRaw => {
            if !payload.is_empty() {
                out.push(Item::Bytes(payload.to_vec()));
            }
            Ok(())
        }
        StreamMode::BytesFramed => frames(payload, |body| {
            if !body.is_empty() {
                out.push(Item::Bytes(body.to_vec()));
            }
            Ok(())
        }),
        StreamMode::Objects => {
            // The official reader's rule: a plausible first length means frames, anything
            // else is the legacy format (newline-separated devalue texts, no framing).
            let first = payload
                .get(..FRAME_HEADER)
                .map(|h| u32::from_be_bytes([h[0], h[1], h[2], h[3]]));
            if first.is_some_and(|n| n > 0 && n < MAX_FRAME) {
                return frames(payload, |body| {
                    out.push(object_frame(body)?);
                    Ok(())
                });
            }
            let text = utf8_text(payload);
            for line in text.split('\n') {
                if line.is_empty() {
                    continue;
                }
                if let Err(DecodeError::Corrupt(why)) = check_devalue_text(line) {
                    return Err(DecodeError::Corrupt(match first {
                        Some(n) if n >= MAX_FRAME => format!(
                            "length prefix {n} exceeds the maximum frame size ({MAX_FRAME} bytes), and the chunk is not legacy devalue text either: {why}"
                        ),
                        _ => format!("neither frames nor legacy devalue text: {why}"),
                    }));
                }
                out.push(Item::Text(line.to_string()));
            }
            Ok(())
        }
    }
}

/// What a chunk file is, from its flag byte: `0x01` is world-local's close marker, written
/// alone; any other flag is data, as world-local reads it (its writers use `0x00`). A file
/// with no byte at all, or a close marker followed by bytes, is not something a writer
/// makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    Data,
    Close,
}

/// The kind of a chunk file from its bytes (only the first two are looked at).
pub fn chunk_kind(file: &[u8]) -> Result<ChunkKind, DecodeError> {
    match file {
        [] => Err(DecodeError::Corrupt(
            "empty chunk file (a chunk file holds at least its flag byte: 0 data, 1 close marker)"
                .into(),
        )),
        [1] => Ok(ChunkKind::Close),
        [1, ..] => Err(DecodeError::Corrupt(
            "a close marker (flag byte 1) followed by more bytes".into(),
        )),
        _ => Ok(ChunkKind::Data),
    }
}

/// Decodes a whole chunk file (flag byte + payload) into `out`; returns its kind (a close
/// marker yields nothing).
pub fn decode_chunk_file(
    mode: StreamMode,
    file: &[u8],
    out: &mut Vec<Item>,
) -> Result<ChunkKind, DecodeError> {
    let kind = chunk_kind(file)?;
    if kind == ChunkKind::Data {
        decode_chunk(mode, &file[1..], out)?;
    }
    Ok(kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::fixtures::frame;
    use proptest::prelude::*;

    fn objects(payload: &[u8]) -> Result<Vec<Item>, DecodeError> {
        let mut out = Vec::new();
        decode_chunk(StreamMode::Objects, payload, &mut out).map(|()| out)
    }

    fn is_corrupt(r: Result<Vec<Item>, DecodeError>) -> bool {
        matches!(r, Err(DecodeError::Corrupt(_)))
    }

    #[test]
    fn texts_decode_as_text_decoder_does_invalid_bytes_included() {
        let framed = |body: &[u8]| {
            let mut v = ((body.len() + 4) as u32).to_be_bytes().to_vec();
            v.extend_from_slice(b"devl");
            v.extend_from_slice(body);
            v
        };
        // valid UTF-8, ASCII or not, is taken as it is
        for text in ["[\"plain\"]", "[\"ünïcödé ✓ 𝄞\"]"] {
            assert_eq!(
                objects(&framed(text.as_bytes())).unwrap(),
                vec![Item::Text(text.to_string())]
            );
        }
        // an invalid byte becomes U+FFFD, in frames and in legacy newline-separated text
        let invalid = b"[\"a\xffb\"]";
        let want = vec![Item::Text("[\"a\u{fffd}b\"]".to_string())];
        assert_eq!(objects(&framed(invalid)).unwrap(), want);
        let mut legacy = invalid.to_vec();
        legacy.push(b'\n');
        assert_eq!(objects(&legacy).unwrap(), want);
    }

    #[test]
    fn a_chunk_holding_two_frames_yields_both() {
        let mut both = frame("[1]");
        both.extend(frame("[\"two\"]"));
        assert_eq!(
            objects(&both).unwrap(),
            vec![Item::Text("[1]".into()), Item::Text("[\"two\"]".into())]
        );
    }

    #[test]
    fn a_frame_cut_short_is_corrupt_not_carried_into_the_next_chunk() {
        let f = frame("[\"a longer value\"]");
        for cut in 1..f.len() {
            let r = objects(&f[..cut]);
            // 1..=3 bytes: legacy text that is not devalue; 4..: a truncated frame.
            assert!(is_corrupt(r.clone()), "cut at {cut}: {r:?}");
        }
        let Err(DecodeError::Corrupt(why)) = objects(&f[..10]) else {
            unreachable!()
        };
        assert!(why.starts_with("truncated: a frame of 22 bytes"), "{why}");
    }

    #[test]
    fn an_implausible_length_prefix_is_corrupt() {
        let mut f = vec![0xFF, 0xFF, 0xFF, 0xFF];
        f.extend_from_slice(b"devl[1]");
        let Err(DecodeError::Corrupt(why)) = objects(&f) else {
            panic!("not corrupt")
        };
        assert!(why.contains("length prefix 4294967295 exceeds"), "{why}");
        let mut framed = Vec::new();
        assert!(matches!(
            decode_chunk(StreamMode::BytesFramed, &f, &mut framed),
            Err(DecodeError::Corrupt(_))
        ));
    }

    #[test]
    fn garbage_is_corrupt() {
        assert!(is_corrupt(objects(b"\x00\x01not json at all")));
        assert!(is_corrupt(objects(b"[1,2")));
        // a frame whose devalue text is cut (the length matches what is there)
        assert!(is_corrupt(objects(&frame("[1,"))));
        assert!(is_corrupt(objects(&frame(""))));
    }

    #[test]
    fn legacy_newline_chunks_are_split_into_values() {
        assert_eq!(
            objects(b"[1]\n[2]\n").unwrap(),
            vec![Item::Text("[1]".into()), Item::Text("[2]".into())]
        );
        assert_eq!(objects(b"-1").unwrap(), vec![Item::Text("-1".into())]);
    }

    #[test]
    fn empty_payload_is_a_chunk_without_values() {
        assert!(objects(b"").unwrap().is_empty());
    }

    #[test]
    fn devalue_texts_json_parse_accepts_are_accepted() {
        // Escaped lone surrogates and huge exponents: JSON.parse takes them.
        assert!(objects(&frame(r#"["\ud800",1e400]"#)).is_ok());
        // Deep nesting does not hit a recursion limit.
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(objects(&frame(&deep)).is_ok());
    }

    #[test]
    fn unknown_and_encrypted_formats_keep_the_official_errors() {
        let mut f = 8u32.to_be_bytes().to_vec();
        f.extend_from_slice(b"xxxx[1]!");
        let e = objects(&f).unwrap_err();
        assert_eq!(e, DecodeError::UnknownFormat("xxxx".into()));
        assert_eq!(
            e.message(),
            "Unknown serialization format: \"xxxx\". Known formats: devl, encr"
        );
        let mut f = 8u32.to_be_bytes().to_vec();
        f.extend_from_slice(b"encr1234");
        assert_eq!(objects(&f).unwrap_err(), DecodeError::Encrypted);
    }

    #[test]
    fn byte_modes() {
        let mut out = Vec::new();
        decode_chunk(StreamMode::BytesRaw, b"\x00\x01abc", &mut out).unwrap();
        assert_eq!(out, vec![Item::Bytes(b"\x00\x01abc".to_vec())]);
        let mut out = Vec::new();
        let mut data = 3u32.to_be_bytes().to_vec();
        data.extend_from_slice(b"abc");
        data.extend_from_slice(&2u32.to_be_bytes());
        data.extend_from_slice(b"de");
        decode_chunk(StreamMode::BytesFramed, &data, &mut out).unwrap();
        assert_eq!(
            out,
            vec![Item::Bytes(b"abc".to_vec()), Item::Bytes(b"de".to_vec())]
        );
        let mut out = Vec::new();
        assert!(matches!(
            decode_chunk(StreamMode::BytesFramed, &data[..8], &mut out),
            Err(DecodeError::Corrupt(_))
        ));
    }

    fn any_mode() -> impl Strategy<Value = StreamMode> {
        prop_oneof![
            Just(StreamMode::Objects),
            Just(StreamMode::BytesRaw),
            Just(StreamMode::BytesFramed)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Any bytes: a typed outcome, never a panic; an accepted object chunk yields only
        /// JSON texts.
        #[test]
        fn any_payload_decodes_or_is_a_typed_error(mode in any_mode(), payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut out = Vec::new();
            match decode_chunk(mode, &payload, &mut out) {
                Ok(()) => {
                    for item in &out {
                        if let Item::Text(t) = item {
                            prop_assert!(serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok());
                        }
                    }
                }
                Err(DecodeError::Corrupt(why)) => prop_assert!(!why.is_empty()),
                Err(DecodeError::UnknownFormat(_) | DecodeError::Encrypted) => {
                    prop_assert_eq!(mode, StreamMode::Objects)
                }
            }
        }

        /// Whole chunk files, any bytes: a kind or a typed error, never a panic; only data
        /// files yield items.
        #[test]
        fn any_chunk_file_decodes_or_is_a_typed_error(mode in any_mode(), file in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut out = Vec::new();
            match decode_chunk_file(mode, &file, &mut out) {
                Ok(ChunkKind::Close) => prop_assert!(out.is_empty() && file == [1]),
                Ok(ChunkKind::Data) => prop_assert_ne!(file[0], 1),
                Err(DecodeError::Corrupt(_)) => {}
                Err(_) => prop_assert!(mode == StreamMode::Objects && file.first() != Some(&1)),
            }
        }

        /// Well-formed chunks (the frames writers produce, several per chunk) round-trip;
        /// every cut of them is reported as corrupt or yields a prefix of the values.
        #[test]
        fn frames_round_trip_and_cuts_never_invent_values(values in proptest::collection::vec(-1000i64..1000, 1..6), cut in any::<prop::sample::Index>()) {
            let texts: Vec<String> = values.iter().map(|v| format!("[{v}]")).collect();
            let payload: Vec<u8> = texts.iter().flat_map(|t| frame(t)).collect();
            let mut out = Vec::new();
            decode_chunk(StreamMode::Objects, &payload, &mut out).unwrap();
            let expected: Vec<Item> = texts.iter().map(|t| Item::Text(t.clone())).collect();
            prop_assert_eq!(&out, &expected);
            let at = cut.index(payload.len());
            let mut out = Vec::new();
            match decode_chunk(StreamMode::Objects, &payload[..at], &mut out) {
                Ok(()) => prop_assert!(expected.starts_with(&out) && out.len() < expected.len()),
                Err(e) => prop_assert!(matches!(e, DecodeError::Corrupt(_)), "{:?}", e),
            }
        }
    }
}
