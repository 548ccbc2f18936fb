//! The lines an output could not take yet, oldest first, bounded in
//! bytes, and the line a pipe or a full disk took only part of.

use std::{collections::VecDeque, io};

use super::line::Failure;

/// Lines an output could not take yet, oldest first, bounded in bytes.
pub(super) struct Backlog {
    lines: VecDeque<Vec<u8>>,
    bytes: usize,
    pub(super) limit_bytes: usize,
    /// How much of the oldest line is out already (a pipe took part of it).
    front_written: usize,
}

impl Backlog {
    pub(super) fn new(limit_bytes: usize) -> Self {
        Self {
            lines: VecDeque::new(),
            bytes: 0,
            limit_bytes,
            front_written: 0,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.lines.len()
    }

    /// Keeps `line` unless that would pass the limit.
    pub(super) fn push(&mut self, line: &[u8]) -> bool {
        if self.bytes + line.len() > self.limit_bytes {
            return false;
        }
        self.bytes += line.len();
        self.lines.push_back(line.to_vec());
        true
    }

    /// Keeps the line whose first `written` bytes are out, whatever the
    /// limit: the rest of it must follow them.
    pub(super) fn push_partly_written(&mut self, line: &[u8], written: usize) {
        debug_assert!(
            self.is_empty(),
            "only the oldest line can be partly written"
        );
        self.bytes += line.len();
        self.lines.push_back(line.to_vec());
        self.front_written = written;
    }

    pub(super) fn clear(&mut self) {
        self.lines.clear();
        self.bytes = 0;
        self.front_written = 0;
    }

    /// Hands the lines, oldest first, to `write_line` (a line and how much
    /// of it is out already) until one fails or none are left.
    pub(super) fn write(
        &mut self,
        mut write_line: impl FnMut(&[u8], usize) -> Result<(), Failure>,
    ) -> Result<(), io::Error> {
        while let Some(line) = self.lines.front() {
            if let Err(failure) = write_line(line, self.front_written) {
                self.front_written = failure.written;
                return Err(failure.error);
            }
            self.bytes -= line.len();
            self.lines.pop_front();
            self.front_written = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::Backlog;
    use crate::sink::line::{write_from, Failure};

    /// Takes what fits in `room`, as a pipe or a nearly full disk does.
    struct Pipe {
        room: usize,
        taken: Vec<u8>,
    }

    impl Pipe {
        fn take(&mut self, line: &[u8], from: usize) -> Result<(), Failure> {
            write_from(line, from, |bytes| {
                if self.room == 0 {
                    return Err(io::ErrorKind::StorageFull.into());
                }
                let n = bytes.len().min(self.room);
                self.room -= n;
                self.taken.extend_from_slice(&bytes[..n]);
                Ok(n)
            })
        }
    }

    #[test]
    fn a_backlog_resumes_a_line_a_pipe_took_part_of() {
        let mut backlog = Backlog::new(1 << 20);
        backlog.push_partly_written(b"first line\n", 6);
        assert!(backlog.push(b"second\n"));
        let mut pipe = Pipe {
            room: 3,
            taken: Vec::new(),
        };
        let error = backlog
            .write(|line, from| pipe.take(line, from))
            .expect_err("runs out of room");
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
        pipe.room = 100;
        backlog
            .write(|line, from| pipe.take(line, from))
            .expect("room again");
        assert_eq!(
            pipe.taken, b"line\nsecond\n",
            "the rest of the first line, then the second"
        );
        assert!(backlog.is_empty());
        assert_eq!(backlog.bytes, 0);
    }
}
