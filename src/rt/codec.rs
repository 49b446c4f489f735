//! Frames on pipes and sockets: a 4-byte little-endian length, then a MessagePack payload.
//!
//! MessagePack is self-describing, so [`crate::Value`]'s one serde implementation serves both
//! the engines' serde conversions and the wire (a non-self-describing format such as postcard
//! cannot drive `deserialize_any`). A frame is written with one `write_all` into a reused
//! buffer, and a reader never trusts a length beyond [`MAX_FRAME`].

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest frame a reader accepts (1 GiB): a longer length prefix is garbage.
pub const MAX_FRAME: usize = 1 << 30;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("the other side closed the channel")]
    Closed,
    #[error("i/o error on the channel: {0}")]
    Io(#[from] io::Error),
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Appends one frame holding `msg` to `buf`.
pub fn encode_into<T: Serialize>(buf: &mut Vec<u8>, msg: &T) -> Result<(), CodecError> {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    rmp_serde::encode::write(buf, msg).map_err(|e| CodecError::Malformed(e.to_string()))?;
    let len = buf.len() - start - 4;
    if len > MAX_FRAME {
        buf.truncate(start);
        return Err(CodecError::Malformed(format!(
            "a message of {len} bytes is larger than the {MAX_FRAME}-byte frame limit"
        )));
    }
    buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Writes one frame holding `msg`, using `buf` as scratch space.
pub fn write_frame<T: Serialize>(
    w: &mut impl Write,
    buf: &mut Vec<u8>,
    msg: &T,
) -> Result<(), CodecError> {
    buf.clear();
    encode_into(buf, msg)?;
    w.write_all(buf)?;
    Ok(())
}

/// Decodes one frame's payload.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CodecError> {
    rmp_serde::from_slice(payload).map_err(|e| CodecError::Malformed(e.to_string()))
}

/// Reads one whole frame's payload into `buf`. End of input before a frame starts is
/// [`CodecError::Closed`]; inside a frame it is malformed (a truncated frame).
pub fn read_payload(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<(), CodecError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Err(CodecError::Closed),
            Ok(0) => return Err(CodecError::Malformed("truncated length prefix".into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(CodecError::Malformed(format!(
            "frame length {len} exceeds the limit"
        )));
    }
    buf.clear();
    // Grow with the data that really arrives: a garbage length must not allocate a gigabyte.
    buf.reserve(len.min(1 << 20));
    let got = r.take(len as u64).read_to_end(buf)?;
    if got < len {
        return Err(CodecError::Malformed(format!(
            "truncated frame: {got} of {len} bytes"
        )));
    }
    Ok(())
}

/// Reads and decodes one frame.
pub fn read_frame<T: DeserializeOwned>(
    r: &mut impl Read,
    buf: &mut Vec<u8>,
) -> Result<T, CodecError> {
    read_payload(r, buf)?;
    decode(buf)
}

/// Feeds `decode` `cases` byte strings: `valid` framed and then mutated, or random bytes. A
/// bounded, seeded fuzz for the decoders of every message type (see the tests of `pool`,
/// `link` and this module).
#[cfg(test)]
pub(crate) fn fuzz_frames<T: Serialize>(valid: &T, cases: usize, mut decode: impl FnMut(&[u8])) {
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut framed = Vec::new();
    write_frame(&mut framed, &mut Vec::new(), valid).unwrap();
    for _ in 0..cases {
        let mut bytes = if next() % 2 == 0 {
            framed.clone()
        } else {
            (0..next() % 64).map(|_| next() as u8).collect()
        };
        if next() % 4 == 0 {
            let keep = (next() as usize) % (bytes.len() + 1);
            bytes.truncate(keep);
        }
        for _ in 0..(next() % 4) {
            if !bytes.is_empty() {
                let i = (next() as usize) % bytes.len();
                bytes[i] = next() as u8;
            }
        }
        decode(&bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn sample() -> Value {
        Value::Map(vec![
            (Value::Int(1), Value::Float(1.0)),
            (Value::Str("b".into()), Value::Bytes(vec![0, 159, 146, 150])),
            (
                Value::Float(2.5),
                Value::Array(vec![Value::Nil, Value::Bool(true)]),
            ),
        ])
    }

    #[test]
    fn frames_round_trip_and_keep_types() {
        let mut wire = Vec::new();
        let mut scratch = Vec::new();
        for v in [
            Value::Int(3),
            Value::Float(3.0),
            Value::Str("3".into()),
            sample(),
        ] {
            write_frame(&mut wire, &mut scratch, &v).unwrap();
        }
        let mut r = &wire[..];
        let mut buf = Vec::new();
        assert_eq!(
            read_frame::<Value>(&mut r, &mut buf).unwrap(),
            Value::Int(3)
        );
        assert_eq!(
            read_frame::<Value>(&mut r, &mut buf).unwrap(),
            Value::Float(3.0)
        );
        assert_eq!(
            read_frame::<Value>(&mut r, &mut buf).unwrap(),
            Value::Str("3".into())
        );
        assert_eq!(read_frame::<Value>(&mut r, &mut buf).unwrap(), sample());
        assert!(matches!(
            read_frame::<Value>(&mut r, &mut buf),
            Err(CodecError::Closed)
        ));
    }

    /// A char stays a char on the wire, alone and inside arrays and maps (MessagePack itself
    /// would make it a string), and a frame that claims to be a char but is not one is refused.
    #[test]
    fn chars_cross_the_wire_as_chars() {
        let v = Value::Array(vec![
            Value::Char('x'),
            Value::Char('é'),
            Value::Char('€'),
            Value::Char('🦀'),
            Value::Str("x".into()),
            Value::Map(vec![(Value::Str("c".into()), Value::Char('\0'))]),
        ]);
        let mut wire = Vec::new();
        write_frame(&mut wire, &mut Vec::new(), &v).unwrap();
        assert_eq!(
            read_frame::<Value>(&mut &wire[..], &mut Vec::new()).unwrap(),
            v
        );

        // MessagePack fixext 2 and fixext 1: marker, extension type, data.
        let ext = crate::value::CHAR_EXT as u8;
        for (payload, why) in [
            (vec![0xd5, ext, b'a', b'b'], "two characters"),
            (vec![0xd4, ext, 0xff], "not UTF-8"),
        ] {
            assert!(decode::<Value>(&payload).is_err(), "{why} decoded");
        }
        assert_eq!(
            decode::<Value>(&[0xd4, ext, b'z']).unwrap(),
            Value::Char('z')
        );
    }

    #[test]
    fn truncated_and_oversized_frames_are_rejected() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &mut Vec::new(), &sample()).unwrap();
        for cut in 1..wire.len() {
            let mut r = &wire[..cut];
            let err = read_frame::<Value>(&mut r, &mut Vec::new()).unwrap_err();
            assert!(
                matches!(err, CodecError::Malformed(_)),
                "cut at {cut}: {err}"
            );
        }
        let mut huge = &u32::MAX.to_le_bytes()[..];
        assert!(matches!(
            read_frame::<Value>(&mut huge, &mut Vec::new()),
            Err(CodecError::Malformed(_))
        ));
    }

    /// A bounded fuzz of the decoder: arbitrary bytes never panic or hang, they decode or fail.
    #[test]
    fn garbage_never_panics() {
        fuzz_frames(&sample(), 20_000, |mut bytes| {
            let _ = read_frame::<Value>(&mut bytes, &mut Vec::new());
        });
    }
}
