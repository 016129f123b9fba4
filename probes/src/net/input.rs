//! Reading files the user names, safely: only regular files (a FIFO or a device such as /dev/zero
//! would block or never end), and never more than a stated size or line length.

use std::io::{self, BufRead, Read};
use std::path::Path;

/// Fails unless `path` is a regular file (after following links). The error reads well after
/// "PATH: ": `cannot open: No such file or directory` or `not a regular file (...)`.
pub fn require_regular_file(path: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| io::Error::new(e.kind(), format!("cannot open: {e}")))?;
    if meta.is_file() {
        return Ok(());
    }
    let kind = if meta.is_dir() { "a directory" } else { "a FIFO, socket or device" };
    Err(io::Error::new(io::ErrorKind::InvalidInput, format!("not a regular file ({kind}): give a file")))
}

/// Reads a small file whole (a token), refusing anything that is not a regular file or is larger
/// than `max` bytes.
pub fn read_small_file(path: &Path, max: u64) -> io::Result<String> {
    require_regular_file(path)?;
    let file =
        std::fs::File::open(path).map_err(|e| io::Error::new(e.kind(), format!("cannot open: {e}")))?;
    let mut text = String::new();
    file.take(max + 1).read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("larger than {max} bytes")));
    }
    Ok(text)
}

/// Reads one line (up to and including `\n`) into `buf`, failing when it grows past `max` bytes
/// instead of growing until memory runs out. Returns the bytes read, 0 at the end.
pub fn read_bounded_line<R: BufRead>(reader: &mut R, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    let mut total = 0;
    loop {
        let available = match reader.fill_buf() {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(total);
        }
        let (used, done) = match memchr::memchr(b'\n', available) {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if total + used > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a line longer than {max} bytes"),
            ));
        }
        buf.extend_from_slice(&available[..used]);
        reader.consume(used);
        total += used;
        if done {
            return Ok(total);
        }
    }
}

/// Calls `each` with every line of `reader` (without its `\n`), in order, straight from the
/// reader's buffer when the line is whole in it (no copy), through a carry buffer when it spans two
/// reads. A line longer than `max` bytes is an error, not unbounded growth. `each` may stop the
/// reading with an error; a read error is reported as `line N: ...`.
pub fn for_each_line<R: BufRead>(
    reader: &mut R,
    max: usize,
    mut each: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let mut carry: Vec<u8> = Vec::new();
    let mut lines: u64 = 0;
    let too_long = |lines: u64| format!("line {}: a line longer than {max} bytes", lines + 1);
    loop {
        let available = match reader.fill_buf() {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("line {}: {e}", lines + 1)),
        };
        if available.is_empty() {
            if !carry.is_empty() {
                each(&carry)?;
            }
            return Ok(());
        }
        let mut used = 0;
        if !carry.is_empty() {
            match memchr::memchr(b'\n', available) {
                Some(end) => {
                    if carry.len() + end > max {
                        return Err(too_long(lines));
                    }
                    carry.extend_from_slice(&available[..end]);
                    each(&carry)?;
                    lines += 1;
                    carry.clear();
                    used = end + 1;
                }
                None => {
                    if carry.len() + available.len() > max {
                        return Err(too_long(lines));
                    }
                    carry.extend_from_slice(available);
                    let all = available.len();
                    reader.consume(all);
                    continue;
                }
            }
        }
        while let Some(end) = memchr::memchr(b'\n', &available[used..]) {
            if end > max {
                return Err(too_long(lines));
            }
            each(&available[used..used + end])?;
            lines += 1;
            used += end + 1;
        }
        let rest = &available[used..];
        if rest.len() > max {
            return Err(too_long(lines));
        }
        carry.extend_from_slice(rest);
        let all = available.len();
        reader.consume(all);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_lines() {
        let mut reader = io::BufReader::with_capacity(4, &b"ab\ncdefgh\nij"[..]);
        let mut buf = Vec::new();
        assert_eq!(read_bounded_line(&mut reader, &mut buf, 8).unwrap(), 3);
        assert_eq!(buf, b"ab\n");
        buf.clear();
        assert!(read_bounded_line(&mut reader, &mut buf, 5).is_err(), "cdefgh\\n is 7 bytes");
        let mut reader = io::BufReader::new(&b"ij"[..]);
        buf.clear();
        assert_eq!(read_bounded_line(&mut reader, &mut buf, 8).unwrap(), 2);
        buf.clear();
        assert_eq!(read_bounded_line(&mut reader, &mut buf, 8).unwrap(), 0);
    }

    #[test]
    fn every_line_once_whatever_the_buffer_size() {
        let text = b"one\ntwo\n\nthree-is-long\nlast";
        for capacity in 1..text.len() + 2 {
            let mut reader = io::BufReader::with_capacity(capacity, &text[..]);
            let mut seen = Vec::new();
            for_each_line(&mut reader, 64, |l| {
                seen.push(String::from_utf8_lossy(l).into_owned());
                Ok(())
            })
            .unwrap();
            assert_eq!(seen, vec!["one", "two", "", "three-is-long", "last"], "capacity {capacity}");
        }
        let mut reader = io::BufReader::with_capacity(4, &b"ab\ncdefghij\n"[..]);
        let err = for_each_line(&mut reader, 5, |_| Ok(())).unwrap_err();
        assert_eq!(err, "line 2: a line longer than 5 bytes");
        let mut endless = io::BufReader::new(io::repeat(b'x'));
        assert!(for_each_line(&mut endless, 1 << 16, |_| Ok(())).is_err(), "/dev/zero ends in an error");
    }

    #[test]
    fn only_regular_small_files() {
        assert!(require_regular_file(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string()
            .contains("not a regular"));
        assert!(require_regular_file(Path::new("/")).unwrap_err().to_string().contains("a directory"));
        assert!(require_regular_file(Path::new("/no/such")).unwrap_err().to_string().contains("cannot open"));
        let path = std::env::temp_dir().join(format!("netprobe-input-{}", std::process::id()));
        std::fs::write(&path, "0123456789").unwrap();
        assert_eq!(read_small_file(&path, 10).unwrap(), "0123456789");
        assert!(read_small_file(&path, 9).unwrap_err().to_string().contains("larger than 9"));
        std::fs::remove_file(&path).unwrap();
    }
}
