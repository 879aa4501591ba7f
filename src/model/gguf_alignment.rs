//! The one GGUF header value candle's reader takes on trust: `general.alignment`.
//!
//! candle 0.11 rounds the tensor data offset up to a multiple of `general.alignment`
//! without checking it, so a file that declares 0 panics inside `Content::read` (found by
//! the `gguf_header` fuzz target). This walk reads the metadata keys and skips their values,
//! and only answers what the file declares; every other check stays candle's.

use std::io::{Read, Seek, SeekFrom};

/// Deeper arrays than candle accepts are its error to report.
const MAX_DEPTH: usize = 64;

/// The integer `general.alignment` declares, or `None` where the file declares none (or is
/// too broken to walk: candle's reader then says how).
/// Give it a `BufReader`: the walk skips values with `seek_relative`, which keeps its buffer.
pub fn declared_alignment<R: Read + Seek>(reader: &mut R) -> Option<u64> {
    let file_size = reader.seek(SeekFrom::End(0)).ok()?;
    reader.seek(SeekFrom::Start(0)).ok()?;
    let mut walk = Walk {
        reader,
        file_size,
        position: 0,
    };
    walk.alignment()
}

const KEY: &[u8; 17] = b"general.alignment";

struct Walk<'a, R> {
    reader: &'a mut R,
    file_size: u64,
    position: u64,
}

impl<R: Read + Seek> Walk<'_, R> {
    fn alignment(&mut self) -> Option<u64> {
        let magic = self.u32()?;
        if magic != 0x4655_4747 && magic != 0x4747_5546 {
            return None;
        }
        let wide = match self.u32()? {
            1 => false,
            2 | 3 => true,
            _ => return None,
        };
        let _tensor_count = self.length(wide)?;
        let kv_count = self.length(wide)?;
        for _ in 0..kv_count {
            let key_len = self.length(wide)?;
            let is_alignment = if key_len == KEY.len() as u64 {
                let mut key = [0u8; 17];
                self.read(&mut key)?;
                &key == KEY
            } else {
                self.skip(key_len)?;
                false
            };
            let value_type = self.u32()?;
            if is_alignment {
                return self.integer(value_type);
            }
            self.skip_value(value_type, wide, 0)?;
        }
        None
    }

    /// The value as candle reads an alignment: unsigned or non-negative signed, up to 32 bits.
    fn integer(&mut self, value_type: u32) -> Option<u64> {
        let size = fixed_size(value_type)?;
        let mut bytes = [0u8; 8];
        self.read(&mut bytes[..size])?;
        let value = i64::from_le_bytes(bytes);
        match value_type {
            // U8, U16, U32: zero-extended above.
            0 | 2 | 4 => Some(value as u64),
            // I8, I16, I32: negative values fall back to the default in candle.
            1 | 3 | 5 => {
                let shift = 64 - 8 * size as u32;
                let signed = (value << shift) >> shift;
                u64::try_from(signed).ok()
            }
            _ => None,
        }
    }

    fn skip_value(&mut self, value_type: u32, wide: bool, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match value_type {
            8 => {
                let len = self.length(wide)?;
                self.skip(len)
            }
            9 => {
                let element_type = self.u32()?;
                let len = self.length(wide)?;
                if let Some(size) = fixed_size(element_type) {
                    return self.skip(len.checked_mul(size as u64)?);
                }
                // Every element takes at least one byte, so a walk past the end stops.
                for _ in 0..len {
                    self.skip_value(element_type, wide, depth + 1)?;
                }
                Some(())
            }
            other => self.skip(fixed_size(other)? as u64),
        }
    }

    /// Moves past `n` bytes, refusing to move past the end of the file.
    fn skip(&mut self, n: u64) -> Option<()> {
        let there = self.position.checked_add(n)?;
        if there > self.file_size {
            return None;
        }
        self.reader.seek_relative(i64::try_from(n).ok()?).ok()?;
        self.position = there;
        Some(())
    }

    fn read(&mut self, buf: &mut [u8]) -> Option<()> {
        self.reader.read_exact(buf).ok()?;
        self.position += buf.len() as u64;
        Some(())
    }

    fn u32(&mut self) -> Option<u32> {
        let mut b = [0u8; 4];
        self.read(&mut b)?;
        Some(u32::from_le_bytes(b))
    }

    fn length(&mut self, wide: bool) -> Option<u64> {
        if !wide {
            return self.u32().map(u64::from);
        }
        let mut b = [0u8; 8];
        self.read(&mut b)?;
        Some(u64::from_le_bytes(b))
    }
}

/// Bytes a scalar value type takes on disk (GGUF type ids); `None` for strings and arrays.
fn fixed_size(value_type: u32) -> Option<usize> {
    match value_type {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::gguf_file::{self, Value};

    fn header(metadata: &[(&str, Value)]) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        let refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
        gguf_file::write(&mut out, &refs, &[]).expect("writes a header");
        out.into_inner()
    }

    #[test]
    fn finds_the_alignment_behind_strings_and_arrays() {
        let bytes = header(&[
            ("general.name", Value::String("x".into())),
            (
                "tokenizer.ggml.tokens",
                Value::Array(vec![Value::String("a".into()), Value::String("bc".into())]),
            ),
            (
                "nested",
                Value::Array(vec![Value::Array(vec![Value::U64(1), Value::U64(2)])]),
            ),
            ("scores", Value::Array(vec![Value::F32(0.5); 3])),
            ("general.alignment", Value::U32(64)),
        ]);
        assert_eq!(
            declared_alignment(&mut std::io::Cursor::new(bytes)),
            Some(64)
        );
    }

    #[test]
    fn reads_a_zero_and_ignores_a_negative_signed_alignment() {
        let zero = header(&[("general.alignment", Value::I16(0))]);
        assert_eq!(declared_alignment(&mut std::io::Cursor::new(zero)), Some(0));
        let negative = header(&[("general.alignment", Value::I32(-32))]);
        assert_eq!(
            declared_alignment(&mut std::io::Cursor::new(negative)),
            None
        );
    }

    #[test]
    fn a_truncated_or_foreign_file_declares_nothing() {
        let bytes = header(&[
            ("general.name", Value::String("x".into())),
            ("general.alignment", Value::U32(0)),
        ]);
        let key_at = bytes
            .windows(KEY.len())
            .position(|w| w == KEY)
            .expect("the key is in the header");
        let value_end = key_at + KEY.len() + 4 + 4;
        assert_eq!(
            declared_alignment(&mut std::io::Cursor::new(&bytes[..value_end])),
            Some(0)
        );
        for cut in 0..value_end {
            assert_eq!(
                declared_alignment(&mut std::io::Cursor::new(&bytes[..cut])),
                None,
                "cut at {cut}"
            );
        }
        assert_eq!(
            declared_alignment(&mut std::io::Cursor::new(b"not a gguf file".to_vec())),
            None
        );
    }
}
