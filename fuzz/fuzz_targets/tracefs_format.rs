//! A tracepoint's `format` file, then a raw record read with the layout it
//! gives.
//!
//! The input is the format's text, a NUL, then the record's bytes (a format
//! file holds no NUL). Whatever a kernel writes in its format file, and
//! whatever record comes with it, reading a field gives a value or `None`:
//! never a panic, never a byte outside the record.

#![no_main]

use libfuzzer_sys::fuzz_target;
use oom_collector::tracefs::{FieldKind, RecordView, TracepointFormat};

fuzz_target!(|input: &[u8]| {
    let (text, bytes) = match input.iter().position(|&b| b == 0) {
        Some(nul) => (&input[..nul], &input[nul + 1..]),
        None => (input, &[][..]),
    };
    let Ok(format) = TracepointFormat::parse(&String::from_utf8_lossy(text)) else {
        return;
    };
    let view = RecordView {
        format: &format,
        bytes,
    };
    for field in &format.fields {
        assert!(
            !field.name.starts_with("common_"),
            "the common header is left out"
        );
        let found = format.field(&field.name).expect("a parsed field is found");
        if view.integer(&field.name).is_some() {
            assert!(matches!(found.kind, FieldKind::Integer { .. }));
            assert!(
                found.offset + found.size <= bytes.len(),
                "read past the record"
            );
        }
        if let Some(text) = view.bytes_str(&field.name) {
            assert!(!text.contains(&0), "a string ends at its first NUL");
        }
    }
});
