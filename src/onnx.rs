//! Just enough of the ONNX protobuf format to list a model's initializers: their names, dims,
//! types and where their data lives. Used to bind initializers whose data was stripped (they
//! reference a `.safetensors` file as external data) by name from the folder's weights, and to
//! tell a file that is not ONNX from one ONNX Runtime rejects for other reasons; and to move
//! initializers' external data within its file ([`relocate_external_data`]).

use crate::error::{Error, Result};

/// ONNX `TensorProto.DataType` values we read.
pub const FLOAT: i32 = 1;
pub const FLOAT16: i32 = 10;
pub const BFLOAT16: i32 = 16;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Initializer {
    pub name: String,
    pub dims: Vec<i64>,
    pub data_type: i32,
    /// `data_location == EXTERNAL`.
    pub external: bool,
    /// The `location` entry of `external_data`, if any.
    pub location: Option<String>,
    /// The `offset` entry of `external_data`, if any (and a number).
    pub offset: Option<u64>,
}

/// The parts of a ModelProto this library looks at.
#[derive(Debug, Clone, Default)]
pub struct ModelInfo {
    pub ir_version: i64,
    pub initializers: Vec<Initializer>,
    /// Graph input names in order (older IR versions also list initializers here).
    pub inputs: Vec<String>,
}

/// Parses a ModelProto far enough to list initializers and inputs; errors mean "not an ONNX model".
pub fn scan(bytes: &[u8]) -> Result<ModelInfo> {
    scan_model(bytes).map_err(|why| {
        Error::invalid_model(format!("model.onnx is not a valid ONNX model ({why})"))
    })
}

type R<T> = std::result::Result<T, String>;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
    fn varint(&mut self) -> R<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }
    fn field(&mut self) -> R<(u64, Field<'a>)> {
        let key = self.varint()?;
        let (num, wire) = (key >> 3, key & 7);
        if num == 0 {
            return Err("field number 0".into());
        }
        let f = match wire {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.skip(8)?;
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length overflow")?;
                let start = self.pos;
                self.skip(len)?;
                Field::Bytes(&self.buf[start..start + len])
            }
            5 => {
                self.skip(4)?;
                Field::Fixed
            }
            w => return Err(format!("unsupported wire type {w}")),
        };
        Ok((num, f))
    }
    /// The next field with its whole encoding (key, length and payload), to copy it unchanged.
    fn raw_field(&mut self) -> R<(u64, Field<'a>, &'a [u8])> {
        let start = self.pos;
        let (num, f) = self.field()?;
        Ok((num, f, &self.buf[start..self.pos]))
    }
    fn skip(&mut self, n: usize) -> R<()> {
        let end = self.pos.checked_add(n).ok_or("length overflow")?;
        if end > self.buf.len() {
            return Err("truncated field".into());
        }
        self.pos = end;
        Ok(())
    }
}

fn scan_model(bytes: &[u8]) -> R<ModelInfo> {
    let mut r = Reader::new(bytes);
    let mut info = ModelInfo::default();
    let mut saw_graph = false;
    while !r.done() {
        match r.field()? {
            (1, Field::Varint(v)) => info.ir_version = v as i64,
            (7, Field::Bytes(g)) => {
                saw_graph = true;
                scan_graph(g, &mut info)?;
            }
            _ => {}
        }
    }
    if !saw_graph || info.ir_version <= 0 {
        return Err("no graph or IR version".into());
    }
    Ok(info)
}

fn scan_graph(bytes: &[u8], info: &mut ModelInfo) -> R<()> {
    let mut r = Reader::new(bytes);
    while !r.done() {
        match r.field()? {
            (5, Field::Bytes(t)) => info.initializers.push(scan_tensor(t)?),
            // ValueInfoProto: field 1 is the name.
            (11, Field::Bytes(v)) => {
                let mut vr = Reader::new(v);
                while !vr.done() {
                    if let (1, Field::Bytes(n)) = vr.field()? {
                        info.inputs.push(String::from_utf8_lossy(n).into_owned());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn scan_tensor(bytes: &[u8]) -> R<Initializer> {
    let mut r = Reader::new(bytes);
    let mut t = Initializer::default();
    while !r.done() {
        match r.field()? {
            (1, Field::Varint(v)) => t.dims.push(v as i64),
            (1, Field::Bytes(packed)) => {
                let mut p = Reader::new(packed);
                while !p.done() {
                    t.dims.push(p.varint()? as i64);
                }
            }
            (2, Field::Varint(v)) => t.data_type = v as i32,
            (8, Field::Bytes(s)) => {
                t.name =
                    String::from_utf8(s.to_vec()).map_err(|_| "initializer name is not UTF-8")?
            }
            (13, Field::Bytes(kv)) => {
                let (k, v) = string_pair(kv)?;
                match k.as_str() {
                    "location" => t.location = Some(v),
                    "offset" => t.offset = v.parse().ok(),
                    _ => {}
                }
            }
            (14, Field::Varint(v)) => t.external = v == 1,
            _ => {}
        }
    }
    Ok(t)
}

fn string_pair(bytes: &[u8]) -> R<(String, String)> {
    let mut r = Reader::new(bytes);
    let (mut k, mut v) = (String::new(), String::new());
    while !r.done() {
        match r.field()? {
            (1, Field::Bytes(s)) => k = String::from_utf8_lossy(s).into_owned(),
            (2, Field::Bytes(s)) => v = String::from_utf8_lossy(s).into_owned(),
            _ => {}
        }
    }
    Ok((k, v))
}

/// Rewrites the external data offsets of a model's top-level initializers and of the prepacked
/// blobs ONNX Runtime saves beside them (`prepacked_N` entries: `key|offset;length;checksum|...`,
/// in the tensor's file): `place(location, offset, length)` returns each extent's new offset in
/// its file (the caller moves the bytes). Every other byte of the model is kept as it is.
/// Tensors are visited in file order, each before its blobs.
pub fn relocate_external_data(
    bytes: &[u8],
    place: &mut dyn FnMut(&str, u64, u64) -> Result<u64>,
) -> Result<Vec<u8>> {
    let bad =
        |why: String| Error::invalid_model(format!("model.onnx is not a valid ONNX model ({why})"));
    // ModelProto.graph (7), then GraphProto.initializer (5).
    rewrite_fields(bytes, 7, &bad, &mut |graph| {
        rewrite_fields(graph, 5, &bad, &mut |tensor| {
            relocate_tensor(tensor, place, &bad)
        })
    })
}

/// `bytes` with each length-delimited field `num` replaced by `f(payload)`; every other field
/// is copied as it is.
fn rewrite_fields(
    bytes: &[u8],
    num: u64,
    bad: &dyn Fn(String) -> Error,
    f: &mut dyn FnMut(&[u8]) -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut r = Reader::new(bytes);
    while !r.done() {
        match r.raw_field().map_err(bad)? {
            (n, Field::Bytes(payload), _) if n == num => put_bytes(num, &f(payload)?, &mut out),
            (_, _, raw) => out.extend_from_slice(raw),
        }
    }
    Ok(out)
}

fn relocate_tensor(
    bytes: &[u8],
    place: &mut dyn FnMut(&str, u64, u64) -> Result<u64>,
    bad: &dyn Fn(String) -> Error,
) -> Result<Vec<u8>> {
    let (mut location, mut offset, mut length) = (None, None, None);
    let mut r = Reader::new(bytes);
    while !r.done() {
        if let (13, Field::Bytes(kv)) = r.field().map_err(bad)? {
            let (k, v) = string_pair(kv).map_err(bad)?;
            let number = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| bad(format!("external data {k} `{v}` is not a number")))
            };
            match k.as_str() {
                "location" => location = Some(v),
                "offset" => offset = Some(number(&v)?),
                "length" => length = Some(number(&v)?),
                _ => {}
            }
        }
    }
    let (Some(location), Some(offset), Some(length)) = (location, offset, length) else {
        return Ok(bytes.to_vec());
    };
    let moved = place(&location, offset, length)?.to_string();
    let entry = |k: &str, v: &str, out: &mut Vec<u8>| {
        let mut e = Vec::new();
        put_bytes(1, k.as_bytes(), &mut e);
        put_bytes(2, v.as_bytes(), &mut e);
        put_bytes(13, &e, out);
    };
    let mut out = Vec::with_capacity(bytes.len() + 8);
    let mut r = Reader::new(bytes);
    while !r.done() {
        match r.raw_field().map_err(bad)? {
            (13, Field::Bytes(kv), raw) => match string_pair(kv).map_err(bad)? {
                (k, _) if k == "offset" => entry(&k, &moved, &mut out),
                (k, v) if k.starts_with("prepacked") => {
                    let v = relocate_blobs(&v, &location, place, bad)?;
                    entry(&k, &v, &mut out)
                }
                _ => out.extend_from_slice(raw),
            },
            (_, _, raw) => out.extend_from_slice(raw),
        }
    }
    Ok(out)
}

/// A `prepacked_N` value (`key|offset;length;checksum|...`) with each blob's offset placed anew.
fn relocate_blobs(
    value: &str,
    location: &str,
    place: &mut dyn FnMut(&str, u64, u64) -> Result<u64>,
    bad: &dyn Fn(String) -> Error,
) -> Result<String> {
    let mut fields = value.split('|');
    let mut out = fields.next().unwrap_or_default().to_string();
    for blob in fields {
        let parts: Vec<&str> = blob.split(';').collect();
        let [offset, length, checksum] = parts[..] else {
            return Err(bad(format!(
                "prepacked blob `{blob}` is not offset;length;checksum"
            )));
        };
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| bad(format!("prepacked blob `{blob}` has a non-numeric field")))
        };
        let at = place(location, number(offset)?, number(length)?)?;
        out.push_str(&format!("|{at};{length};{checksum}"));
    }
    Ok(out)
}

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field.
fn put_bytes(num: u64, data: &[u8], out: &mut Vec<u8>) {
    put_varint(num << 3 | 2, out);
    put_varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::{put_bytes as bytes_field, put_varint as varint};

    /// A ModelProto whose initializers are `(name, external data entries)`.
    fn model_with(tensors: &[(&str, &[(&str, &str)])]) -> Vec<u8> {
        let mut g = Vec::new();
        for (name, entries) in tensors {
            let mut t = Vec::new();
            bytes_field(8, name.as_bytes(), &mut t);
            for (k, v) in *entries {
                let mut kv = Vec::new();
                bytes_field(1, k.as_bytes(), &mut kv);
                bytes_field(2, v.as_bytes(), &mut kv);
                bytes_field(13, &kv, &mut t);
            }
            varint(14 << 3, &mut t);
            varint(1, &mut t);
            bytes_field(5, &t, &mut g);
        }
        bytes_field(1, b"a node stays as it is", &mut g);
        let mut m = Vec::new();
        varint(1 << 3, &mut m);
        varint(8, &mut m);
        bytes_field(7, &g, &mut m);
        bytes_field(8, b"opset", &mut m);
        m
    }

    #[test]
    fn relocation_rewrites_only_external_offsets() {
        let m = model_with(&[
            (
                "a",
                &[("location", "w.bin"), ("offset", "0"), ("length", "100")],
            ),
            ("inline", &[]),
            (
                "b",
                &[("location", "w.bin"), ("offset", "100"), ("length", "28")],
            ),
        ]);
        let mut seen = Vec::new();
        let out = relocate_external_data(&m, &mut |loc, off, len| {
            seen.push((loc.to_string(), off, len));
            Ok(off * 1000 + 64)
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![("w.bin".into(), 0, 100), ("w.bin".into(), 100, 28)]
        );
        let info = scan(&out).unwrap();
        let offsets: Vec<_> = info.initializers.iter().map(|i| i.offset).collect();
        assert_eq!(offsets, vec![Some(64), None, Some(100_064)]);
        let names: Vec<_> = info.initializers.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["a", "inline", "b"]);
        assert!(info.initializers.iter().all(|i| i.external));
        assert_eq!(info.ir_version, 8);
        // Unchanged offsets give the same bytes back.
        let same = relocate_external_data(&m, &mut |_, off, _| Ok(off)).unwrap();
        assert_eq!(same, m);
    }

    #[test]
    fn relocation_moves_prepacked_blobs_with_their_tensor() {
        let m = model_with(&[(
            "a",
            &[
                ("location", "w.bin"),
                ("offset", "0"),
                ("length", "100"),
                ("prepacked_2", "MatMul+7|100;40;0|160;8;0"),
            ],
        )]);
        let mut seen = Vec::new();
        let out = relocate_external_data(&m, &mut |loc, off, len| {
            seen.push((loc.to_string(), off, len));
            Ok(off + 1000)
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                ("w.bin".into(), 0, 100),
                ("w.bin".into(), 100, 40),
                ("w.bin".into(), 160, 8)
            ]
        );
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("MatMul+7|1100;40;0|1160;8;0"),
            "blob offsets not rewritten: {text}"
        );
        let same = relocate_external_data(&m, &mut |_, off, _| Ok(off)).unwrap();
        assert_eq!(same, m);
    }

    #[test]
    fn relocation_refuses_a_non_numeric_offset() {
        let m = model_with(&[(
            "a",
            &[("location", "w.bin"), ("offset", "x"), ("length", "4")],
        )]);
        let e = relocate_external_data(&m, &mut |_, off, _| Ok(off)).unwrap_err();
        assert!(e.message().contains("is not a number"), "{e}");
    }

    #[test]
    fn reads_stripped_initializer() {
        let mut kv = Vec::new();
        bytes_field(1, b"location", &mut kv);
        bytes_field(2, b"model.safetensors", &mut kv);
        let mut t = Vec::new();
        let mut dims = Vec::new();
        varint(8, &mut dims);
        varint(3, &mut dims);
        bytes_field(1, &dims, &mut t);
        varint(2 << 3, &mut t);
        varint(1, &mut t);
        bytes_field(8, b"fc.weight", &mut t);
        bytes_field(13, &kv, &mut t);
        varint(14 << 3, &mut t);
        varint(1, &mut t);
        let mut g = Vec::new();
        bytes_field(5, &t, &mut g);
        let mut m = Vec::new();
        varint(1 << 3, &mut m);
        varint(8, &mut m);
        bytes_field(7, &g, &mut m);
        let info = scan(&m).unwrap();
        let init = &info.initializers[0];
        assert_eq!(init.name, "fc.weight");
        assert_eq!(init.dims, vec![8, 3]);
        assert_eq!(init.data_type, FLOAT);
        assert!(init.external);
        assert_eq!(init.location.as_deref(), Some("model.safetensors"));
    }

    #[test]
    fn garbage_is_not_onnx() {
        for junk in [
            &b""[..],
            b"hello world, not a protobuf",
            &[0xff; 64],
            b"\x0a\xff\xff\xff\xff\x0f",
        ] {
            let e = scan(junk).unwrap_err();
            assert!(e.message().contains("not a valid ONNX model"), "{e}");
        }
    }
}
