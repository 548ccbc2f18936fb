//! tracefs: where it is mounted, and the layout of a tracepoint's record as
//! the kernel describes it in `events/<category>/<name>/format`.
//!
//! Tracepoint records change across kernels (`oom/mark_victim` carries only
//! `pid` on 5.10 and nine fields on 6.1+), so the collector never hard-codes
//! an offset: it reads the `format` file at start-up and decodes with that.

use std::{
    collections::HashMap,
    fs, io,
    path::{Path, PathBuf},
};

/// Mount points the kernel documents for tracefs, in order of preference.
pub const TRACEFS_CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted (looked in {}); mount it with \
         `mount -t tracefs tracefs /sys/kernel/tracing`",
        TRACEFS_CANDIDATES.join(" and ")
    )]
    NotMounted,
    #[error("tracepoint {category}/{name} not found in {tracefs}: this kernel does not have it")]
    NoSuchTracepoint {
        category: String,
        name: String,
        tracefs: PathBuf,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("malformed tracepoint format in {path}: {reason}")]
    Malformed { path: PathBuf, reason: String },
}

/// Finds the tracefs mount: a candidate directory that holds `events/`.
pub fn find_tracefs() -> Result<PathBuf, TracefsError> {
    TRACEFS_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|dir| dir.join("events").is_dir())
        .ok_or(TracefsError::NotMounted)
}

/// Reads and parses the format of tracepoint `category/name`.
pub fn read_format(
    tracefs: &Path,
    category: &str,
    name: &str,
) -> Result<TracepointFormat, TracefsError> {
    let dir = tracefs.join("events").join(category).join(name);
    let path = dir.join("format");
    let text = fs::read_to_string(&path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            TracefsError::NoSuchTracepoint {
                category: category.to_owned(),
                name: name.to_owned(),
                tracefs: tracefs.to_owned(),
            }
        } else {
            TracefsError::Read {
                path: path.clone(),
                source,
            }
        }
    })?;
    TracepointFormat::parse(&text).map_err(|reason| TracefsError::Malformed { path, reason })
}

/// How a field's bytes are to be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// An integer of `size` bytes (1, 2, 4 or 8).
    Integer { signed: bool },
    /// A fixed-size `char name[N]` array, NUL-padded.
    CharArray,
    /// `__data_loc`: a u32 whose low 16 bits are the offset of the data from
    /// the start of the record and high 16 bits its length.
    DataLoc,
    /// Anything else (structs, arrays of integers): not decoded.
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// The C declaration, e.g. `unsigned long` or `__data_loc char[]`.
    pub c_type: String,
    pub offset: usize,
    pub size: usize,
    pub kind: FieldKind,
}

/// A tracepoint's record layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracepointFormat {
    pub name: String,
    pub id: u32,
    /// The tracepoint's own fields, without the `common_*` header.
    pub fields: Vec<Field>,
    by_name: HashMap<String, usize>,
}

impl TracepointFormat {
    /// Parses the text of a `format` file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut name = None;
        let mut id = None;
        let mut fields = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(value) = line.strip_prefix("name:") {
                name = Some(value.trim().to_owned());
            } else if let Some(value) = line.strip_prefix("ID:") {
                id = Some(
                    value
                        .trim()
                        .parse()
                        .map_err(|_| format!("bad ID line {line:?}"))?,
                );
            } else if line.starts_with("field:") {
                let field = parse_field(line)?;
                if !field.name.starts_with("common_") {
                    fields.push(field);
                }
            }
        }
        let name = name.ok_or("no name: line")?;
        let id = id.ok_or("no ID: line")?;
        let by_name = fields
            .iter()
            .enumerate()
            .map(|(index, field)| (field.name.clone(), index))
            .collect();
        Ok(Self {
            name,
            id,
            fields,
            by_name,
        })
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.by_name.get(name).map(|&index| &self.fields[index])
    }
}

/// Parses `field:unsigned long total_vm;\toffset:16;\tsize:8;\tsigned:0;`.
fn parse_field(line: &str) -> Result<Field, String> {
    let mut declaration = None;
    let mut offset = None;
    let mut size = None;
    let mut signed = None;
    for part in line
        .split(';')
        .map(str::trim)
        .filter(|part| !part.is_empty())
    {
        let (key, value) = part
            .split_once(':')
            .ok_or_else(|| format!("no ':' in {part:?} of {line:?}"))?;
        let number = || {
            value
                .trim()
                .parse::<usize>()
                .map_err(|_| format!("bad {key} in {line:?}"))
        };
        match key.trim() {
            "field" => declaration = Some(value.trim()),
            "offset" => offset = Some(number()?),
            "size" => size = Some(number()?),
            "signed" => signed = Some(number()? != 0),
            _ => {}
        }
    }
    let declaration = declaration.ok_or_else(|| format!("no declaration in {line:?}"))?;
    let (c_type, name, is_array) = split_declaration(declaration)
        .ok_or_else(|| format!("cannot read declaration {declaration:?}"))?;
    let size = size.ok_or_else(|| format!("no size in {line:?}"))?;
    let kind = if c_type.starts_with("__data_loc") {
        FieldKind::DataLoc
    } else if is_array {
        if c_type == "char" || c_type == "unsigned char" {
            FieldKind::CharArray
        } else {
            FieldKind::Other
        }
    } else if matches!(size, 1 | 2 | 4 | 8) {
        FieldKind::Integer {
            signed: signed.unwrap_or(false),
        }
    } else {
        FieldKind::Other
    };
    Ok(Field {
        name: name.to_owned(),
        c_type: c_type.to_owned(),
        offset: offset.ok_or_else(|| format!("no offset in {line:?}"))?,
        size,
        kind,
    })
}

/// Splits `unsigned long total_vm`, `char comm[16]` and
/// `__data_loc char[] comm` into (type, name, is_array).
fn split_declaration(declaration: &str) -> Option<(&str, &str, bool)> {
    let (c_type, name) = declaration.rsplit_once(char::is_whitespace)?;
    let (name, is_array) = match name.split_once('[') {
        Some((name, _)) => (name, true),
        None => (name, false),
    };
    let c_type = c_type.trim();
    let c_type = c_type.strip_suffix("[]").map_or(c_type, str::trim);
    (!name.is_empty()).then_some((c_type, name, is_array))
}

/// Reads decoded fields out of one raw record.
pub struct RecordView<'a> {
    pub format: &'a TracepointFormat,
    pub bytes: &'a [u8],
}

impl RecordView<'_> {
    /// An integer field, sign-extended per the format; `None` if the kernel
    /// has no such field or the record is too short for it.
    pub fn integer(&self, name: &str) -> Option<i64> {
        let field = self.format.field(name)?;
        let FieldKind::Integer { signed } = field.kind else {
            return None;
        };
        if field.size > 8 {
            return None;
        }
        let raw = self
            .bytes
            .get(field.offset..field.offset.checked_add(field.size)?)?;
        let mut buf = [0u8; 8];
        buf[..raw.len()].copy_from_slice(raw);
        let value = u64::from_ne_bytes(buf);
        let bits = 8 * field.size as u32;
        Some(if signed && bits < 64 {
            let shift = 64 - bits;
            ((value << shift) as i64) >> shift
        } else {
            value as i64
        })
    }

    /// A string field (`char[N]` or `__data_loc char[]`), up to its first NUL.
    pub fn bytes_str(&self, name: &str) -> Option<&[u8]> {
        let field = self.format.field(name)?;
        let raw = match field.kind {
            FieldKind::CharArray => self
                .bytes
                .get(field.offset..field.offset.checked_add(field.size)?)?,
            FieldKind::DataLoc => {
                let loc = self.bytes.get(field.offset..field.offset.checked_add(4)?)?;
                let loc = u32::from_ne_bytes(loc.try_into().ok()?);
                let (start, len) = ((loc & 0xffff) as usize, (loc >> 16) as usize);
                self.bytes.get(start..start.checked_add(len)?)?
            }
            _ => return None,
        };
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        Some(&raw[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/tracefs/",
                $name
            ))
        };
    }

    const MARK_VICTIM_5_10_218: &str = fixture!("mark_victim-5.10.0-30-cloud-amd64.format");
    const MARK_VICTIM_5_10_251: &str = fixture!("mark_victim-5.10.0-43-cloud-amd64.format");
    const MARK_VICTIM_6_1: &str = fixture!("mark_victim-6.1.0-57-cloud-amd64.format");
    const MARK_VICTIM_6_12: &str = fixture!("mark_victim-6.12.117+deb12-cloud-amd64.format");
    const MARK_VICTIM_6_18: &str = fixture!("mark_victim-6.18.44-fc-v669.format");

    fn parse(text: &str) -> TracepointFormat {
        TracepointFormat::parse(text).unwrap_or_else(|e| panic!("fixture should parse: {e}"))
    }

    #[test]
    fn old_5_10_mark_victim_has_only_pid() {
        let format = parse(MARK_VICTIM_5_10_218);
        assert_eq!(format.name, "mark_victim");
        assert_eq!(format.id, 485);
        let names: Vec<&str> = format.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["pid"], "common_* fields are left out");
        let pid = format.field("pid").expect("pid");
        assert_eq!((pid.offset, pid.size), (8, 4));
        assert_eq!(pid.kind, FieldKind::Integer { signed: true });
        assert!(format.field("comm").is_none());
    }

    #[test]
    fn extended_mark_victim_layout_is_the_same_from_5_10_251_to_6_18() {
        for text in [
            MARK_VICTIM_5_10_251,
            MARK_VICTIM_6_1,
            MARK_VICTIM_6_12,
            MARK_VICTIM_6_18,
        ] {
            let format = parse(text);
            let layout: Vec<(&str, usize, usize)> = format
                .fields
                .iter()
                .map(|f| (f.name.as_str(), f.offset, f.size))
                .collect();
            assert_eq!(
                layout,
                [
                    ("pid", 8, 4),
                    ("comm", 12, 4),
                    ("total_vm", 16, 8),
                    ("anon_rss", 24, 8),
                    ("file_rss", 32, 8),
                    ("shmem_rss", 40, 8),
                    ("uid", 48, 4),
                    ("pgtables", 56, 8),
                    ("oom_score_adj", 64, 2),
                ]
            );
            let comm = format.field("comm").expect("comm");
            assert_eq!(comm.kind, FieldKind::DataLoc, "comm is __data_loc");
            assert_eq!(comm.c_type, "__data_loc char");
            assert_eq!(
                format.field("oom_score_adj").map(|f| f.kind.clone()),
                Some(FieldKind::Integer { signed: true })
            );
            assert_eq!(
                format.field("uid").map(|f| f.kind.clone()),
                Some(FieldKind::Integer { signed: false })
            );
        }
    }

    #[test]
    fn other_events_parse_including_data_loc_and_typedefs() {
        let exec = parse(fixture!(
            "sched_process_exec-6.12.117+deb12-cloud-amd64.format"
        ));
        let filename = exec.field("filename").expect("filename");
        assert_eq!(
            (filename.offset, filename.kind.clone()),
            (8, FieldKind::DataLoc)
        );
        assert_eq!(exec.field("old_pid").map(|f| f.offset), Some(16));

        let alloc_5_10 = parse(fixture!("mm_page_alloc-5.10.0-30-cloud-amd64.format"));
        let alloc_6_12 = parse(fixture!("mm_page_alloc-6.12.117+deb12-cloud-amd64.format"));
        let gfp = |f: &TracepointFormat| {
            let field = f.field("gfp_flags").expect("gfp_flags");
            (field.c_type.clone(), field.offset, field.size)
        };
        assert_eq!(gfp(&alloc_5_10), ("gfp_t".to_owned(), 20, 4));
        assert_eq!(gfp(&alloc_6_12), ("unsigned long".to_owned(), 24, 8));
    }

    #[test]
    fn char_arrays_and_malformed_lines() {
        let text =
            "name: x\nID: 7\nformat:\n\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:1;\n";
        let format = parse(text);
        assert_eq!(
            format.field("comm").map(|f| f.kind.clone()),
            Some(FieldKind::CharArray)
        );

        let bad = "name: x\nID: 7\nformat:\n\tfield:int pid;\toffset:eight;\tsize:4;\tsigned:1;\n";
        let error = TracepointFormat::parse(bad).expect_err("a bad offset is an error");
        assert!(error.contains("offset"), "{error}");
        assert!(
            TracepointFormat::parse("format:\n").is_err(),
            "no name or ID"
        );
    }

    /// Offsets and sizes from a hostile or corrupt format file: found by
    /// the `tracefs_format` fuzz target (fuzz/regressions/).
    #[test]
    fn record_view_refuses_fields_beyond_any_record() {
        let far = "name: x\nID: 1\nformat:\n\
            \tfield:int pid;\toffset:18446744073709551615;\tsize:4;\tsigned:1;\n\
            \tfield:__data_loc char[] comm;\toffset:18446744073709551614;\tsize:4;\tsigned:0;\n\
            \tfield:char name[16];\toffset:18446744073709551610;\tsize:16;\tsigned:0;\n\
            \tfield:u8 wide[16];\toffset:0;\tsize:16;\tsigned:0;\n";
        let format = parse(far);
        let bytes = [1u8; 64];
        let view = RecordView {
            format: &format,
            bytes: &bytes,
        };
        assert_eq!(view.integer("pid"), None);
        assert_eq!(view.bytes_str("comm"), None);
        assert_eq!(view.bytes_str("name"), None);
        assert_eq!(view.integer("wide"), None, "no integer wider than 8 bytes");
    }

    #[test]
    fn record_view_reads_integers_with_sign_and_data_loc_strings() {
        let format = parse(MARK_VICTIM_6_18);
        let mut bytes = vec![0u8; 96];
        bytes[8..12].copy_from_slice(&4242i32.to_ne_bytes());
        // comm at offset 72, 6 bytes with its NUL: (len << 16) | offset.
        bytes[12..16].copy_from_slice(&((6u32 << 16) | 72).to_ne_bytes());
        bytes[72..78].copy_from_slice(b"hog-1\0");
        bytes[64..66].copy_from_slice(&(-1000i16).to_ne_bytes());
        bytes[48..52].copy_from_slice(&u32::MAX.to_ne_bytes());
        let view = RecordView {
            format: &format,
            bytes: &bytes,
        };
        assert_eq!(view.integer("pid"), Some(4242));
        assert_eq!(view.integer("oom_score_adj"), Some(-1000));
        assert_eq!(
            view.integer("uid"),
            Some(i64::from(u32::MAX)),
            "unsigned: no sign extension"
        );
        assert_eq!(view.bytes_str("comm"), Some(&b"hog-1"[..]));
        assert_eq!(view.integer("no_such_field"), None);

        let short = RecordView {
            format: &format,
            bytes: &bytes[..20],
        };
        assert_eq!(
            short.integer("total_vm"),
            None,
            "a truncated record is not misread"
        );
    }
}
