//! Frames on pipes and sockets: a 4-byte little-endian length, then a MessagePack payload.
//!
//! MessagePack is self-describing, so [`crate::Value`]'s one serde implementation serves both
//! the engines' serde conversions and the wire (a non-self-describing format such as postcard
//! cannot drive `deserialize_any`). A frame is written with one `write_all` into a reused
//! buffer, and a reader never trusts a length beyond [`MAX_FRAME`]: a blocking reader reads
//! one frame at a time ([`read_frame`]), a non-blocking one pushes what arrives into a
//! [`FrameBuf`] and takes the whole frames out.

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

/// Whether `bytes` start with a whole frame (its length prefix and all of its payload), so
/// that reading it from a buffer that holds `bytes` cannot block.
pub fn holds_whole_frame(bytes: &[u8]) -> bool {
    payload_len(bytes).is_some_and(|len| bytes.len() - 4 >= len)
}

/// The payload length a frame starting at `bytes` announces, once its prefix has arrived.
fn payload_len(bytes: &[u8]) -> Option<usize> {
    bytes
        .first_chunk::<4>()
        .map(|prefix| u32::from_le_bytes(*prefix) as usize)
}

/// Reads and decodes one frame.
pub fn read_frame<T: DeserializeOwned>(
    r: &mut impl Read,
    buf: &mut Vec<u8>,
) -> Result<T, CodecError> {
    read_payload(r, buf)?;
    decode(buf)
}

/// Frames assembled from bytes as they arrive, for a reader that cannot block (a pool's
/// supervisor, which polls many pipes): [`FrameBuf::push`] what a read returned, then take
/// every whole frame's payload with [`FrameBuf::next_frame`]. A partial frame waits for the
/// rest; a length beyond [`MAX_FRAME`] is refused before its bytes are waited for.
#[derive(Default)]
pub struct FrameBuf {
    buf: Vec<u8>,
    /// Where the first frame not taken yet starts.
    start: usize,
}

impl FrameBuf {
    /// Appends bytes read from the channel.
    pub fn push(&mut self, bytes: &[u8]) {
        // Drop what was taken before growing: the buffer stays as large as one read plus the
        // one frame in progress.
        if self.start == self.buf.len() {
            self.buf.clear();
        } else if self.start > 0 {
            self.buf.drain(..self.start);
        }
        self.start = 0;
        self.buf.extend_from_slice(bytes);
    }

    /// The payload of the next whole frame, `None` until all of it has arrived; an error if
    /// its length prefix exceeds [`MAX_FRAME`] (the channel is out of step, and the frames
    /// after it are garbage too).
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, CodecError> {
        let rest = &self.buf[self.start..];
        let Some(len) = payload_len(rest) else {
            return Ok(None);
        };
        if len > MAX_FRAME {
            return Err(CodecError::Malformed(format!(
                "frame length {len} exceeds the limit"
            )));
        }
        if rest.len() - 4 < len {
            return Ok(None);
        }
        let payload = self.start + 4..self.start + 4 + len;
        self.start = payload.end;
        Ok(Some(&self.buf[payload]))
    }

    /// Bytes pushed and not yet taken as a whole frame.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
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

    /// A buffer holds a whole frame only with all of its payload: every shorter prefix of two
    /// framed messages holds none, and the first frame is whole from its own end on.
    #[test]
    fn a_whole_frame_is_its_prefix_and_all_of_its_payload() {
        let mut wire = Vec::new();
        encode_into(&mut wire, &"first").unwrap();
        let first = wire.len();
        encode_into(&mut wire, &"second").unwrap();
        for end in 0..=wire.len() {
            assert_eq!(holds_whole_frame(&wire[..end]), end >= first, "{end} bytes");
        }
        assert!(holds_whole_frame(&wire[first..]));
        assert!(!holds_whole_frame(&wire[first..wire.len() - 1]));
    }

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

    /// Decodes every whole frame `frames` holds now.
    fn drain(frames: &mut FrameBuf) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(payload) = frames.next_frame().unwrap() {
            out.push(decode(payload).unwrap());
        }
        out
    }

    /// A frame split over reads, at every byte, comes out once it is whole, and only then.
    #[test]
    fn a_frame_buf_joins_a_frame_split_over_reads() {
        let mut wire = Vec::new();
        write_frame(&mut wire, &mut Vec::new(), &sample()).unwrap();
        for cut in 0..=wire.len() {
            let mut frames = FrameBuf::default();
            frames.push(&wire[..cut]);
            let early = drain(&mut frames);
            if cut < wire.len() {
                assert!(early.is_empty(), "a frame came out after {cut} bytes");
            }
            frames.push(&wire[cut..]);
            let late = drain(&mut frames);
            assert_eq!([early, late].concat(), [sample()], "cut at {cut}");
            assert_eq!(frames.pending(), 0);
        }
        // One byte per read.
        let mut frames = FrameBuf::default();
        let mut got = Vec::new();
        for byte in &wire {
            frames.push(std::slice::from_ref(byte));
            got.extend(drain(&mut frames));
        }
        assert_eq!(got, [sample()]);
    }

    /// Several frames in one read all come out, in order; the start of the next one waits.
    #[test]
    fn a_frame_buf_splits_several_frames_in_one_read() {
        let values: Vec<Value> = (0..5)
            .map(Value::Int)
            .chain([
                sample(),
                Value::Str(String::new()),
                Value::Array(Vec::new()),
            ])
            .collect();
        let mut wire = Vec::new();
        for v in &values {
            encode_into(&mut wire, v).unwrap();
        }
        let mut next = Vec::new();
        encode_into(&mut next, &Value::Int(99)).unwrap();
        let mut frames = FrameBuf::default();
        frames.push(&wire);
        frames.push(&next[..3]);
        assert_eq!(drain(&mut frames), values);
        assert_eq!(frames.pending(), 3);
        frames.push(&next[3..]);
        assert_eq!(drain(&mut frames), [Value::Int(99)]);
        assert_eq!(frames.pending(), 0);
    }

    /// A length prefix beyond the limit is refused at once, not waited for.
    #[test]
    fn a_frame_buf_refuses_a_too_large_length() {
        let mut frames = FrameBuf::default();
        frames.push(&((MAX_FRAME + 1) as u32).to_le_bytes());
        assert!(matches!(frames.next_frame(), Err(CodecError::Malformed(_))));
        let mut frames = FrameBuf::default();
        frames.push(&(MAX_FRAME as u32).to_le_bytes());
        assert!(
            matches!(frames.next_frame(), Ok(None)),
            "the limit itself is allowed"
        );
    }

    /// A bounded fuzz of the decoder: arbitrary bytes never panic or hang, they decode or fail.
    #[test]
    fn garbage_never_panics() {
        fuzz_frames(&sample(), 20_000, |mut bytes| {
            let _ = read_frame::<Value>(&mut bytes, &mut Vec::new());
        });
        // The same bytes through a frame buffer, in reads of a few bytes.
        fuzz_frames(&sample(), 20_000, |bytes| {
            let mut frames = FrameBuf::default();
            for piece in bytes.chunks(3) {
                frames.push(piece);
                while let Ok(Some(payload)) = frames.next_frame() {
                    let _ = decode::<Value>(payload);
                }
            }
        });
    }
}
