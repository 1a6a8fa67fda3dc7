//! A ZIP archive written as a stream: entries are stored (MP3 does not
//! compress), each followed by a data descriptor with its CRC-32 and size,
//! so nothing is buffered beyond the chunk in hand. ZIP64 records are added
//! when the archive passes 4 GiB or 65 535 entries (a busy day's bulk
//! download can).

struct Entry {
    name: String,
    crc: u32,
    size: u64,
    offset: u64,
    time: u16,
    date: u16,
}

/// Builds the archive's framing around the entries' bytes.
#[derive(Default)]
pub struct ZipWriter {
    offset: u64,
    entries: Vec<Entry>,
    open: Option<Entry>,
}

const U32_MAX: u64 = 0xffff_ffff;

fn u16le(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn u32le(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn u64le(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// MS-DOS time and date of a `YYYYMMDDTHHMMSS` stamp (the recording's start).
pub fn dos_time(stamp: &str) -> (u16, u16) {
    let n = |r: std::ops::Range<usize>| stamp.get(r).and_then(|s| s.parse::<u16>().ok());
    match (n(0..4), n(4..6), n(6..8), n(9..11), n(11..13), n(13..15)) {
        (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(s)) if y >= 1980 => (
            (h << 11) | (mi << 5) | (s / 2),
            ((y - 1980) << 9) | (mo << 5) | d,
        ),
        _ => (0, (1 << 5) | 1),
    }
}

impl ZipWriter {
    /// The local header of the next entry; its bytes follow, then [`end`](Self::end).
    pub fn begin(&mut self, name: &str, (time, date): (u16, u16)) -> Vec<u8> {
        let mut h = Vec::with_capacity(30 + name.len());
        u32le(&mut h, 0x0403_4b50);
        u16le(&mut h, 20);
        // Bit 3: sizes and CRC in the data descriptor; bit 11: UTF-8 name.
        u16le(&mut h, 0x0808);
        u16le(&mut h, 0);
        u16le(&mut h, time);
        u16le(&mut h, date);
        u32le(&mut h, 0);
        u32le(&mut h, 0);
        u32le(&mut h, 0);
        u16le(&mut h, name.len() as u16);
        u16le(&mut h, 0);
        h.extend_from_slice(name.as_bytes());
        self.open = Some(Entry {
            name: name.to_owned(),
            crc: 0,
            size: 0,
            offset: self.offset,
            time,
            date,
        });
        self.offset += h.len() as u64;
        h
    }

    /// The data descriptor after an entry's `size` bytes with CRC-32 `crc`.
    /// Entries are under 4 GiB each (a recording's MP3 is).
    pub fn end(&mut self, crc: u32, size: u64) -> Vec<u8> {
        let mut e = self.open.take().expect("end without begin");
        e.crc = crc;
        e.size = size;
        let mut d = Vec::with_capacity(16);
        u32le(&mut d, 0x0807_4b50);
        u32le(&mut d, crc);
        u32le(&mut d, size.min(U32_MAX) as u32);
        u32le(&mut d, size.min(U32_MAX) as u32);
        self.offset += size + d.len() as u64;
        self.entries.push(e);
        d
    }

    /// The central directory and end records.
    pub fn finish(self) -> Vec<u8> {
        let mut cd = Vec::new();
        for e in &self.entries {
            let far = e.offset >= U32_MAX;
            u32le(&mut cd, 0x0201_4b50);
            u16le(&mut cd, (3 << 8) | 45);
            u16le(&mut cd, if far { 45 } else { 20 });
            u16le(&mut cd, 0x0808);
            u16le(&mut cd, 0);
            u16le(&mut cd, e.time);
            u16le(&mut cd, e.date);
            u32le(&mut cd, e.crc);
            u32le(&mut cd, e.size as u32);
            u32le(&mut cd, e.size as u32);
            u16le(&mut cd, e.name.len() as u16);
            u16le(&mut cd, if far { 12 } else { 0 });
            u16le(&mut cd, 0);
            u16le(&mut cd, 0);
            u16le(&mut cd, 0);
            // A regular file, rw-r--r--.
            u32le(&mut cd, 0o100644 << 16);
            u32le(&mut cd, if far { U32_MAX as u32 } else { e.offset as u32 });
            cd.extend_from_slice(e.name.as_bytes());
            if far {
                u16le(&mut cd, 0x0001);
                u16le(&mut cd, 8);
                u64le(&mut cd, e.offset);
            }
        }
        let cd_offset = self.offset;
        let cd_size = cd.len() as u64;
        let count = self.entries.len() as u64;
        let mut out = cd;
        if count >= 0xffff || cd_offset >= U32_MAX || cd_size >= U32_MAX {
            let zip64_at = cd_offset + cd_size;
            u32le(&mut out, 0x0606_4b50);
            u64le(&mut out, 44);
            u16le(&mut out, 45);
            u16le(&mut out, 45);
            u32le(&mut out, 0);
            u32le(&mut out, 0);
            u64le(&mut out, count);
            u64le(&mut out, count);
            u64le(&mut out, cd_size);
            u64le(&mut out, cd_offset);
            u32le(&mut out, 0x0706_4b50);
            u32le(&mut out, 0);
            u64le(&mut out, zip64_at);
            u32le(&mut out, 1);
        }
        u32le(&mut out, 0x0605_4b50);
        u16le(&mut out, 0);
        u16le(&mut out, 0);
        u16le(&mut out, count.min(0xffff) as u16);
        u16le(&mut out, count.min(0xffff) as u16);
        u32le(&mut out, cd_size.min(U32_MAX) as u32);
        u32le(&mut out, cd_offset.min(U32_MAX) as u32);
        u16le(&mut out, 0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dos_time_of_a_stamp() {
        let (t, d) = dos_time("20261202T121757");
        assert_eq!((t >> 11, (t >> 5) & 63, (t & 31) * 2), (12, 17, 56));
        assert_eq!((1980 + (d >> 9), (d >> 5) & 15, d & 31), (2026, 12, 2));
    }

    #[test]
    fn a_small_archive_has_the_standard_framing() {
        let mut z = ZipWriter::default();
        let mut out = z.begin("a.txt", dos_time("20261202T121757"));
        out.extend_from_slice(b"hello");
        out.extend(z.end(crc32fast::hash(b"hello"), 5));
        out.extend(z.finish());
        // Local header, data, descriptor, central header, end record.
        assert_eq!(&out[..4], b"PK\x03\x04");
        assert_eq!(&out[35..40], b"hello");
        assert_eq!(&out[40..44], b"PK\x07\x08");
        assert_eq!(&out[56..60], b"PK\x01\x02");
        let end = &out[out.len() - 22..];
        assert_eq!(&end[..4], b"PK\x05\x06");
        assert_eq!(u16::from_le_bytes([end[10], end[11]]), 1);
        assert_eq!(u32::from_le_bytes([end[16], end[17], end[18], end[19]]), 56);
    }
}
