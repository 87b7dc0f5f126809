//! The CBOR of world-postgres's `bytea` columns, as cbor-x 1.6 (default encoder) writes
//! it, to and from the JSON encoding the rest of the core uses (world-local's: binary as
//! `{"__type":"Uint8Array","data":<base64>}`, dates as ISO strings).
//!
//! Written by hand because the bytes must be cbor-x's, not a canonical CBOR: objects get
//! a 16-bit length header (`b9 00 nn`) whatever their size, binary values are tag 64 +
//! byte string, dates tag 1 + epoch seconds, integers outside the 32-bit ranges float64.
//! The decoder accepts any well-formed CBOR a JS writer may have produced (every header
//! width, indefinite lengths, half/single floats, `undefined`).

use base64::Engine;
use serde_json::{Map, Number, Value};

/// A value to encode: JSON plus the two JS types the JSON form cannot say by itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Cbor {
    Undefined,
    Null,
    Bool(bool),
    Number(f64),
    Text(String),
    /// a JS `Uint8Array` (tag 64)
    Bytes(Vec<u8>),
    /// a JS `Date`, epoch milliseconds (tag 1)
    Date(f64),
    Array(Vec<Cbor>),
    Map(Vec<(String, Cbor)>),
}

fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if n < 0x100 {
        out.extend_from_slice(&[m | 24, n as u8]);
    } else if n < 0x1_0000 {
        out.push(m | 25);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n < 0x1_0000_0000 {
        out.push(m | 26);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn number(out: &mut Vec<u8>, v: f64) {
    // cbor-x: integers in [0, 2^32) and [-2^31, 0) as CBOR integers, the rest float64
    if v.fract() == 0.0
        && (0.0..4_294_967_296.0).contains(&v)
        && !(v == 0.0 && v.is_sign_negative())
    {
        head(out, 0, v as u64);
    } else if v.fract() == 0.0 && (-2_147_483_648.0..0.0).contains(&v) {
        head(out, 1, (-1.0 - v) as u64);
    } else {
        out.push(0xfb);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

impl Cbor {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Cbor::Undefined => out.push(0xf7),
            Cbor::Null => out.push(0xf6),
            Cbor::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
            Cbor::Number(v) => number(out, *v),
            Cbor::Text(s) => {
                head(out, 3, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            Cbor::Bytes(b) => {
                out.extend_from_slice(&[0xd8, 64]);
                head(out, 2, b.len() as u64);
                out.extend_from_slice(b);
            }
            Cbor::Date(ms) => {
                out.push(0xc1);
                number(out, ms / 1000.0);
            }
            Cbor::Array(items) => {
                head(out, 4, items.len() as u64);
                for i in items {
                    i.write(out);
                }
            }
            Cbor::Map(entries) => {
                // cbor-x reserves a 16-bit count for objects below 65536 keys
                if entries.len() < 0x1_0000 {
                    out.push(0xb9);
                    out.extend_from_slice(&(entries.len() as u16).to_be_bytes());
                } else {
                    head(out, 5, entries.len() as u64);
                }
                for (k, v) in entries {
                    Cbor::Text(k.clone()).write(out);
                    v.write(out);
                }
            }
        }
    }

    /// From the core's JSON: `{"__type":"Uint8Array","data":…}` becomes binary; keys named
    /// in `dates` (at any depth) holding ISO strings become dates.
    pub fn from_json(v: &Value, dates: &[&str]) -> Cbor {
        match v {
            Value::Null => Cbor::Null,
            Value::Bool(b) => Cbor::Bool(*b),
            Value::Number(n) => Cbor::Number(n.as_f64().unwrap_or(0.0)),
            Value::String(s) => Cbor::Text(s.clone()),
            Value::Array(a) => Cbor::Array(a.iter().map(|x| Cbor::from_json(x, dates)).collect()),
            Value::Object(m) => {
                if let Some(bytes) = tagged_bytes(m) {
                    return Cbor::Bytes(bytes);
                }
                Cbor::Map(
                    m.iter()
                        .map(|(k, x)| {
                            let date = dates
                                .contains(&k.as_str())
                                .then(|| {
                                    x.is_string()
                                        .then(|| crate::world::fsio::parse_date_ms(x))
                                        .flatten()
                                })
                                .flatten();
                            let c = match date {
                                Some(ms) => Cbor::Date(ms),
                                None => Cbor::from_json(x, dates),
                            };
                            (k.clone(), c)
                        })
                        .collect(),
                )
            }
        }
    }

    /// To the core's JSON. `undefined` map entries are dropped (JSON cannot hold them);
    /// `undefined` elsewhere becomes `null`.
    pub fn to_json(&self) -> Value {
        match self {
            Cbor::Undefined | Cbor::Null => Value::Null,
            Cbor::Bool(b) => Value::Bool(*b),
            Cbor::Number(v) => json_number(*v),
            Cbor::Text(s) => Value::String(s.clone()),
            Cbor::Bytes(b) => bytes_json(b),
            Cbor::Date(ms) => Value::String(crate::world::fsio::iso_from_ms(*ms)),
            Cbor::Array(a) => Value::Array(a.iter().map(Cbor::to_json).collect()),
            Cbor::Map(m) => Value::Object(
                m.iter()
                    .filter(|(_, v)| *v != Cbor::Undefined)
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

fn json_number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
        Value::Number(Number::from(v as i64))
    } else {
        Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
}

/// `{"__type":"Uint8Array","data":<base64>}`
pub fn bytes_json(b: &[u8]) -> Value {
    let mut m = Map::new();
    m.insert("__type".into(), Value::String("Uint8Array".into()));
    m.insert(
        "data".into(),
        Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
    );
    Value::Object(m)
}

fn tagged_bytes(m: &Map<String, Value>) -> Option<Vec<u8>> {
    if m.len() != 2 || m.get("__type")?.as_str()? != "Uint8Array" {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(m.get("data")?.as_str()?)
        .ok()
}

/// Why a column's bytes are not CBOR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

/// Decodes one whole CBOR item (trailing bytes are an error).
pub fn decode(bytes: &[u8]) -> Result<Cbor, DecodeError> {
    let mut d = Decoder { b: bytes, at: 0 };
    let v = d.item(0)?;
    if d.at != bytes.len() {
        return Err(DecodeError(format!(
            "{} trailing bytes after the CBOR value",
            bytes.len() - d.at
        )));
    }
    Ok(v)
}

struct Decoder<'a> {
    b: &'a [u8],
    at: usize,
}

const MAX_DEPTH: usize = 256;

impl Decoder<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| DecodeError(format!("truncated at byte {}", self.at)))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    /// The argument of a head; `None` for an indefinite length (info 31).
    fn arg(&mut self, info: u8) -> Result<Option<u64>, DecodeError> {
        Ok(Some(match info {
            0..=23 => info as u64,
            24 => self.byte()? as u64,
            25 => u16::from_be_bytes([self.byte()?, self.byte()?]) as u64,
            26 => {
                let s = self.take(4)?;
                u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as u64
            }
            27 => {
                let s = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(s);
                u64::from_be_bytes(a)
            }
            31 => return Ok(None),
            _ => return Err(DecodeError(format!("reserved header info {info}"))),
        }))
    }

    fn len(&mut self, info: u8) -> Result<Option<usize>, DecodeError> {
        match self.arg(info)? {
            None => Ok(None),
            Some(n) if n as usize > self.b.len() => {
                Err(DecodeError(format!("length {n} exceeds the data")))
            }
            Some(n) => Ok(Some(n as usize)),
        }
    }

    fn is_break(&mut self) -> bool {
        if self.b.get(self.at) == Some(&0xff) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn string_bytes(&mut self, major: u8, info: u8) -> Result<Vec<u8>, DecodeError> {
        match self.len(info)? {
            Some(n) => Ok(self.take(n)?.to_vec()),
            None => {
                let mut out = Vec::new();
                while !self.is_break() {
                    let h = self.byte()?;
                    if h >> 5 != major || h & 31 == 31 {
                        return Err(DecodeError("bad indefinite string chunk".into()));
                    }
                    let n = self.len(h & 31)?.unwrap_or(0);
                    out.extend_from_slice(self.take(n)?);
                }
                Ok(out)
            }
        }
    }

    fn item(&mut self, depth: usize) -> Result<Cbor, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError("nested too deeply".into()));
        }
        let h = self.byte()?;
        let (major, info) = (h >> 5, h & 31);
        match major {
            0 => Ok(Cbor::Number(self.arg(info)?.ok_or_else(|| bad(h))? as f64)),
            1 => Ok(Cbor::Number(
                -1.0 - self.arg(info)?.ok_or_else(|| bad(h))? as f64,
            )),
            2 => Ok(Cbor::Bytes(self.string_bytes(2, info)?)),
            3 => String::from_utf8(self.string_bytes(3, info)?)
                .map(Cbor::Text)
                .map_err(|_| DecodeError("text is not UTF-8".into())),
            4 => {
                let mut items = Vec::new();
                match self.len(info)? {
                    Some(n) => {
                        for _ in 0..n {
                            items.push(self.item(depth + 1)?);
                        }
                    }
                    None => {
                        while !self.is_break() {
                            items.push(self.item(depth + 1)?);
                        }
                    }
                }
                Ok(Cbor::Array(items))
            }
            5 => {
                let mut entries = Vec::new();
                let n = self.len(info)?;
                let mut i = 0;
                loop {
                    match n {
                        Some(n) if i >= n => break,
                        None if self.is_break() => break,
                        _ => {}
                    }
                    let k = match self.item(depth + 1)? {
                        Cbor::Text(s) => s,
                        Cbor::Number(v) => crate::machine::json::js_number_text(v),
                        other => return Err(DecodeError(format!("unsupported map key {other:?}"))),
                    };
                    let v = self.item(depth + 1)?;
                    entries.retain(|(x, _): &(String, Cbor)| *x != k);
                    entries.push((k, v));
                    i += 1;
                }
                Ok(Cbor::Map(entries))
            }
            6 => {
                let tag = self.arg(info)?.ok_or_else(|| bad(h))?;
                let inner = self.item(depth + 1)?;
                Ok(match (tag, inner) {
                    (1, Cbor::Number(s)) => Cbor::Date(s * 1000.0),
                    (0, Cbor::Text(t)) => {
                        match crate::world::fsio::parse_date_ms(&Value::String(t.clone())) {
                            Some(ms) => Cbor::Date(ms),
                            None => Cbor::Text(t),
                        }
                    }
                    // typed arrays: tag 64 is Uint8Array; other views kept as bytes
                    (64..=87, Cbor::Bytes(b)) => Cbor::Bytes(b),
                    (_, other) => other,
                })
            }
            7 => match info {
                20 => Ok(Cbor::Bool(false)),
                21 => Ok(Cbor::Bool(true)),
                22 => Ok(Cbor::Null),
                23 => Ok(Cbor::Undefined),
                25 => {
                    let s = self.take(2)?;
                    Ok(Cbor::Number(half(u16::from_be_bytes([s[0], s[1]]))))
                }
                26 => {
                    let s = self.take(4)?;
                    Ok(Cbor::Number(
                        f32::from_be_bytes([s[0], s[1], s[2], s[3]]) as f64
                    ))
                }
                27 => {
                    let s = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(s);
                    Ok(Cbor::Number(f64::from_be_bytes(a)))
                }
                0..=19 | 24 => {
                    if info == 24 {
                        self.byte()?;
                    }
                    Ok(Cbor::Undefined)
                }
                _ => Err(bad(h)),
            },
            _ => Err(bad(h)),
        }
    }
}

fn bad(h: u8) -> DecodeError {
    DecodeError(format!("unexpected header byte 0x{h:02x}"))
}

fn half(h: u16) -> f64 {
    let exp = (h >> 10) & 0x1f;
    let mant = (h & 0x3ff) as f64;
    let v = match exp {
        0 => mant * 2f64.powi(-24),
        31 => {
            if mant == 0.0 {
                f64::INFINITY
            } else {
                f64::NAN
            }
        }
        e => (1.0 + mant / 1024.0) * 2f64.powi(e as i32 - 15),
    };
    if h & 0x8000 != 0 {
        -v
    } else {
        v
    }
}

/// Decodes a column's CBOR straight to the core's JSON.
pub fn decode_json(bytes: &[u8]) -> Result<Value, DecodeError> {
    decode(bytes).map(|c| c.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_get_a_16_bit_count_and_bytes_tag_64() {
        let v = json!({"a": 1, "b": {"__type": "Uint8Array", "data": "AQID"}});
        let bytes = Cbor::from_json(&v, &[]).encode();
        assert_eq!(
            bytes,
            vec![0xb9, 0, 2, 0x61, b'a', 1, 0x61, b'b', 0xd8, 0x40, 0x43, 1, 2, 3]
        );
        assert_eq!(decode_json(&bytes).unwrap(), v);
    }

    #[test]
    fn dates_are_tag_1_epoch_seconds() {
        let v = json!({"resumeAt": "2026-01-01T00:00:00.500Z"});
        let c = Cbor::from_json(&v, &["resumeAt"]);
        let bytes = c.encode();
        assert_eq!(&bytes[..7], &[0xb9, 0, 1, 0x68, b'r', b'e', b's']);
        assert_eq!(bytes[12], 0xc1);
        assert_eq!(bytes[13], 0xfb);
        assert_eq!(decode_json(&bytes).unwrap(), v);
    }

    #[test]
    fn numbers_follow_cbor_x_ranges() {
        assert_eq!(Cbor::Number(23.0).encode(), vec![0x17]);
        assert_eq!(Cbor::Number(-1.0).encode(), vec![0x20]);
        assert_eq!(Cbor::Number(65536.0).encode(), vec![0x1a, 0, 1, 0, 0]);
        assert_eq!(Cbor::Number(4_294_967_296.0).encode()[0], 0xfb);
        assert_eq!(Cbor::Number(1.5).encode()[0], 0xfb);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for b in [
            &[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..],
            &[0xb9],
            &[0x1c],
            &[0x01, 0x02],
        ] {
            assert!(decode(b).is_err(), "{b:?}");
        }
    }
}
