//! Reading and writing float32 `.npy` files (format 1.0, little-endian, C order), so a model input can
//! be compared with any other implementation (`numpy.load`).

use std::io::{self, Read, Write};

/// Writes `data` with `shape` as a `<f4` array.
pub fn write_f32(mut out: impl Write, shape: &[usize], data: &[f32]) -> io::Result<()> {
    assert_eq!(shape.iter().product::<usize>(), data.len(), "shape does not match the data");
    let dims = shape.iter().map(|d| format!("{d},")).collect::<String>();
    let dims = if shape.len() == 1 { dims } else { dims.trim_end_matches(',').to_owned() };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}");
    // magic (6) + version (2) + header length (2) + header + '\n' is a multiple of 64
    let pad = 64 - (10 + header.len() + 1) % 64;
    header.push_str(&" ".repeat(pad % 64));
    header.push('\n');
    out.write_all(b"\x93NUMPY\x01\x00")?;
    out.write_all(&(header.len() as u16).to_le_bytes())?;
    out.write_all(header.as_bytes())?;
    for v in data {
        out.write_all(&v.to_le_bytes())?;
    }
    Ok(())
}

/// Reads a `<f4`, C-order array: (shape, data).
pub fn read_f32(mut input: impl Read) -> io::Result<(Vec<usize>, Vec<f32>)> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("not a float32 .npy file: {what}"));
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic)?;
    if &magic[..6] != b"\x93NUMPY" {
        return Err(bad("magic"));
    }
    let header_len = if magic[6] == 1 {
        let mut b = [0u8; 2];
        input.read_exact(&mut b)?;
        u16::from_le_bytes(b) as usize
    } else {
        let mut b = [0u8; 4];
        input.read_exact(&mut b)?;
        u32::from_le_bytes(b) as usize
    };
    let mut header = vec![0u8; header_len];
    input.read_exact(&mut header)?;
    let header = String::from_utf8(header).map_err(|_| bad("header"))?;
    if !header.contains("'descr': '<f4'") || header.contains("'fortran_order': True") {
        return Err(bad("only little-endian float32 in C order is supported"));
    }
    let shape_text = header.split("'shape': (").nth(1).and_then(|s| s.split(')').next()).ok_or_else(|| bad("shape"))?;
    let shape = shape_text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| s.parse::<usize>().map_err(|_| bad("shape"))).collect::<Result<Vec<_>, _>>()?;
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes)?;
    if bytes.len() != shape.iter().product::<usize>() * 4 {
        return Err(bad("data length"));
    }
    Ok((shape, bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pads_the_header() {
        let mut buf = Vec::new();
        write_f32(&mut buf, &[1, 3, 2, 2], &(0..12).map(|v| v as f32).collect::<Vec<_>>()).unwrap();
        assert_eq!((buf.len() - 12 * 4) % 64, 0);
        assert!(String::from_utf8_lossy(&buf).contains("'shape': (1,3,2,2)"));
        let (shape, data) = read_f32(&buf[..]).unwrap();
        assert_eq!(shape, vec![1, 3, 2, 2]);
        assert_eq!(data[11], 11.0);
    }
}
