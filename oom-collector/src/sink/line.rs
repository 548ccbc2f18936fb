//! Writing one line, which a descriptor may take in parts: whole, or how
//! much of it went and why not, so the rest can follow later.

use std::io;

/// A line that did not go out whole: how much of it did, and why not.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) written: usize,
    pub(super) error: io::Error,
}

/// Writes `line[from..]` through `write`, which may take part of it.
pub(super) fn write_from(
    line: &[u8],
    from: usize,
    mut write: impl FnMut(&[u8]) -> io::Result<usize>,
) -> Result<(), Failure> {
    let mut written = from;
    while written < line.len() {
        match write(&line[written..]) {
            Ok(0) => {
                return Err(Failure {
                    written,
                    error: io::ErrorKind::WriteZero.into(),
                })
            }
            Ok(n) => written += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(Failure { written, error }),
        }
    }
    Ok(())
}
