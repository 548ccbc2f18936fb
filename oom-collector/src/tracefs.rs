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
        let raw = self.bytes.get(field.offset..field.offset + field.size)?;
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
            FieldKind::CharArray => self.bytes.get(field.offset..field.offset + field.size)?,
            FieldKind::DataLoc => {
                let loc = self.bytes.get(field.offset..field.offset + 4)?;
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
