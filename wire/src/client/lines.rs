//! Splitting a watch stream into newline-delimited JSON events, with a bounded line length.

/// Accumulates body chunks and yields complete lines (without the `\n`, `\r\n` trimmed).
/// Blank lines are skipped. A line longer than `max` bytes is an error: the stream cannot be
/// trusted past it.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LineTooLong;

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        LineSplitter { buf: Vec::new(), max }
    }

    /// Adds a chunk; appends every line it completes to `out`.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), LineTooLong> {
        while let Some(i) = chunk.iter().position(|b| *b == b'\n') {
            if self.buf.len() + i > self.max {
                return Err(LineTooLong);
            }
            self.buf.extend_from_slice(&chunk[..i]);
            chunk = &chunk[i + 1..];
            let mut line = std::mem::take(&mut self.buf);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                out.push(line);
            }
        }
        if self.buf.len() + chunk.len() > self.max {
            return Err(LineTooLong);
        }
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    /// The last line when the stream ended without a final newline.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let line = std::mem::take(&mut self.buf);
        (!line.iter().all(u8::is_ascii_whitespace)).then_some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], max: usize) -> Result<Vec<String>, LineTooLong> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out)?;
        }
        out.extend(s.finish());
        Ok(out.into_iter().map(|l| String::from_utf8(l).unwrap()).collect())
    }

    #[test]
    fn splits_across_chunk_boundaries() {
        assert_eq!(
            split(&[b"{\"a\":1}\n{\"b\"", b":2}\n", b"\n\r\n{\"c\":3}"], 100).unwrap(),
            ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]
        );
        assert_eq!(split(&[b"x\r\n", b"y\r", b"\n"], 100).unwrap(), ["x", "y"]);
        assert_eq!(split(&[b"", b"\n\n"], 100).unwrap(), Vec::<String>::new());
        let byte_at_a_time: Vec<&[u8]> = b"ab\ncd\n".chunks(1).collect();
        assert_eq!(split(&byte_at_a_time, 100).unwrap(), ["ab", "cd"]);
    }

    #[test]
    fn bounds_line_length() {
        assert_eq!(split(&[b"12345\n"], 5).unwrap(), ["12345"]);
        assert_eq!(split(&[b"123456\n"], 5), Err(LineTooLong));
        assert_eq!(split(&[b"123", b"456"], 5), Err(LineTooLong));
        assert_eq!(split(&[b"1\n123", b"45\n6"], 5).unwrap(), ["1", "12345", "6"]);
    }
}
