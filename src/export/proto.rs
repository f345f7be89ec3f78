//! A protobuf encoder for the few ONNX messages the exporter writes: fields are appended in
//! order, nested messages are encoded first and copied in with their length.

/// Protobuf wire types.
const VARINT: u64 = 0;
const FIXED32: u64 = 5;
const LEN: u64 = 2;

/// One message being encoded.
#[derive(Debug, Default, Clone)]
pub struct Msg {
    pub buf: Vec<u8>,
}

pub fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// Bytes `varint(v)` takes.
pub fn varint_len(v: u64) -> usize {
    (64 - v.max(1).leading_zeros() as usize).div_ceil(7)
}

/// The key and length prefix of a length-delimited field of `len` bytes.
pub fn len_prefix(field: u32, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    varint(u64::from(field) << 3 | LEN, &mut out);
    varint(len as u64, &mut out);
    out
}

impl Msg {
    pub fn new() -> Self {
        Self::default()
    }

    fn key(&mut self, field: u32, wire: u64) {
        varint(u64::from(field) << 3 | wire, &mut self.buf);
    }

    /// An int32/int64/enum field (negative values as ten-byte two's complement, as protobuf does).
    pub fn int(&mut self, field: u32, v: i64) -> &mut Self {
        self.key(field, VARINT);
        varint(v as u64, &mut self.buf);
        self
    }

    pub fn float(&mut self, field: u32, v: f32) -> &mut Self {
        self.key(field, FIXED32);
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn bytes(&mut self, field: u32, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(&len_prefix(field, b.len()));
        self.buf.extend_from_slice(b);
        self
    }

    pub fn str(&mut self, field: u32, s: &str) -> &mut Self {
        self.bytes(field, s.as_bytes())
    }

    pub fn msg(&mut self, field: u32, m: &Msg) -> &mut Self {
        self.bytes(field, &m.buf)
    }

    /// A packed repeated int64 field.
    pub fn ints(&mut self, field: u32, v: &[i64]) -> &mut Self {
        let mut packed = Vec::new();
        for &x in v {
            varint(x as u64, &mut packed);
        }
        self.bytes(field, &packed)
    }

    /// A packed repeated float field.
    pub fn floats(&mut self, field: u32, v: &[f32]) -> &mut Self {
        let packed: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.bytes(field, &packed)
    }
}

/// A decoded field: its number, its value and the bytes it spans (key included), so callers
/// can copy fields they do not change verbatim.
pub struct Field<'a> {
    pub num: u32,
    pub value: Value<'a>,
    pub raw: &'a [u8],
}

pub enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// Splits a message into its fields; `Err` for malformed input.
pub fn fields(buf: &[u8]) -> std::result::Result<Vec<Field<'_>>, String> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    let read_varint = |pos: &mut usize| -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *buf.get(*pos).ok_or("truncated varint")?;
            *pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    };
    while pos < buf.len() {
        let start = pos;
        let key = read_varint(&mut pos)?;
        let num = u32::try_from(key >> 3).map_err(|_| "field number too large")?;
        if num == 0 {
            return Err("field number 0".into());
        }
        let skip = |pos: &mut usize, n: usize| -> std::result::Result<(), String> {
            let end = pos
                .checked_add(n)
                .filter(|&e| e <= buf.len())
                .ok_or("truncated field")?;
            *pos = end;
            Ok(())
        };
        let value = match key & 7 {
            0 => Value::Varint(read_varint(&mut pos)?),
            1 => {
                skip(&mut pos, 8)?;
                Value::Fixed
            }
            2 => {
                let len = usize::try_from(read_varint(&mut pos)?).map_err(|_| "length overflow")?;
                let s = pos;
                skip(&mut pos, len)?;
                Value::Bytes(&buf[s..pos])
            }
            5 => {
                skip(&mut pos, 4)?;
                Value::Fixed
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        out.push(Field {
            num,
            value,
            raw: &buf[start..pos],
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_length_matches_encoding() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            varint(v, &mut out);
            assert_eq!(out.len(), varint_len(v), "{v}");
        }
    }

    #[test]
    fn fields_round_trip() {
        let mut m = Msg::new();
        m.int(1, 300).str(2, "ab").float(3, 1.5);
        let f = fields(&m.buf).unwrap();
        assert_eq!(f.len(), 3);
        assert!(matches!(f[0].value, Value::Varint(300)));
        assert!(matches!(f[1].value, Value::Bytes(b"ab")));
        let joined: Vec<u8> = f.iter().flat_map(|x| x.raw.to_vec()).collect();
        assert_eq!(joined, m.buf);
        assert!(fields(&[0x0a, 0x05, 1]).is_err());
    }

    #[test]
    fn negative_ints_take_ten_bytes() {
        let mut m = Msg::new();
        m.int(1, -1);
        assert_eq!(m.buf.len(), 11);
        assert_eq!(m.buf[0], 0x08);
    }
}
