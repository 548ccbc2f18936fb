//! The lines an output has not written yet, oldest first, bounded in
//! bytes, and how much of the oldest one is out already (a pipe or a full
//! disk may take part of a line).

use std::{collections::VecDeque, sync::Arc};

/// Lines an output has not written yet, oldest first, bounded in bytes.
/// Every line waits here until its writer has written it whole, so what a
/// stalled or failing output has not taken is always counted here.
pub(super) struct Backlog {
    lines: VecDeque<Arc<[u8]>>,
    bytes: usize,
    pub(super) limit_bytes: usize,
    /// How much of the oldest line is out already.
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
    pub(super) fn push(&mut self, line: &Arc<[u8]>) -> bool {
        if self.bytes + line.len() > self.limit_bytes {
            return false;
        }
        self.bytes += line.len();
        self.lines.push_back(Arc::clone(line));
        true
    }

    /// The oldest line and how much of it is out already.
    pub(super) fn front(&self) -> Option<(Arc<[u8]>, usize)> {
        let line = self.lines.front()?;
        Some((Arc::clone(line), self.front_written))
    }

    /// The oldest line went out up to `written` bytes: the whole of it
    /// leaves the backlog, a part is remembered for the next try.
    pub(super) fn written(&mut self, written: usize) {
        let Some(line) = self.lines.front() else {
            return;
        };
        if written < line.len() {
            self.front_written = written;
            return;
        }
        self.bytes -= line.len();
        self.lines.pop_front();
        self.front_written = 0;
    }

    pub(super) fn clear(&mut self) {
        self.lines.clear();
        self.bytes = 0;
        self.front_written = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::Backlog;

    #[test]
    fn a_line_taken_in_part_stays_first_until_the_rest_is_out() {
        let mut backlog = Backlog::new(1 << 20);
        assert!(backlog.push(&Arc::from(&b"first line\n"[..])));
        assert!(backlog.push(&Arc::from(&b"second\n"[..])));
        backlog.written(6);
        let (line, from) = backlog.front().expect("a line");
        assert_eq!((&line[from..], backlog.len()), (&b"line\n"[..], 2));
        backlog.written(line.len());
        let (line, from) = backlog.front().expect("a line");
        assert_eq!((&line[..], from), (&b"second\n"[..], 0));
        backlog.written(line.len());
        assert!(backlog.is_empty());
        assert_eq!(backlog.bytes, 0);
    }

    #[test]
    fn lines_past_the_limit_are_refused() {
        let line: Arc<[u8]> = Arc::from(&b"0123456789\n"[..]);
        let mut backlog = Backlog::new(2 * line.len());
        assert!(backlog.push(&line) && backlog.push(&line));
        assert!(!backlog.push(&line), "a third line does not fit");
        backlog.written(line.len());
        assert!(backlog.push(&line), "room again once one is out");
    }
}
