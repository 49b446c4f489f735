//! A digest of a value's contents, for telling whether a value changed without keeping a copy
//! of it (a pool function's upvalues or captured variables, checked at each submission).

use std::hash::Hasher;

/// A fast 64-bit mix, one multiply per word. Each step is a bijection of the state for a given
/// word, so two inputs that differ in a single word (a value changed in place, the common
/// edit) always give different digests; several changes collide only by chance (2^-64), and
/// nothing here is adversarial (the script reads its own tables).
pub(crate) struct Mix(u64);

impl Default for Mix {
    fn default() -> Self {
        Mix(0x5172_7275_6e00_0001)
    }
}

impl Hasher for Mix {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.write_u64(u64::from_le_bytes(word.try_into().unwrap_or_default()));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            // The last bytes as a little-endian word padded with zeros, built in a register: a
            // copy into a buffer is a call to memcpy, which keeps the state in memory.
            let last = rest
                .iter()
                .rev()
                .fold(0u64, |word, &byte| (word << 8) | u64::from(byte));
            self.write_u64(last);
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0 ^ word)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }

    fn write_u8(&mut self, byte: u8) {
        self.write_u64(byte.into())
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64)
    }

    fn write_i64(&mut self, word: i64) {
        self.write_u64(word as u64)
    }
}

/// Asks the CPU to fetch the memory at `address` into its cache, for a digest that will read
/// it soon; does nothing where there is no such instruction. Any address will do: a prefetch
/// does not fault.
pub(crate) fn prefetch<T>(address: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and does not fault.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(address.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of_bytes(bytes: &[u8]) -> u64 {
        let mut mix = Mix::default();
        mix.write(bytes);
        mix.finish()
    }

    /// Bytes are read as little-endian words, the last one padded with zeros.
    #[test]
    fn bytes_read_as_padded_little_endian_words() {
        for len in 0..20 {
            let bytes: Vec<u8> = (1..=len as u8).map(|b| b.wrapping_mul(37)).collect();
            let mut words = Mix::default();
            for chunk in bytes.chunks(8) {
                let mut word = [0u8; 8];
                word[..chunk.len()].copy_from_slice(chunk);
                words.write_u64(u64::from_le_bytes(word));
            }
            assert_eq!(of_bytes(&bytes), words.finish(), "{len} bytes");
        }
        assert_ne!(of_bytes(b"ab"), of_bytes(b"ba"));
    }
}
