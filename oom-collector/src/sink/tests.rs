//! The failure contract in the module doc, held against real files, real
//! pipes nobody reads or whose reader goes away, and paths that are
//! symbolic links or FIFOs.

use std::{
    fs::{self, OpenOptions},
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::fs::{symlink, OpenOptionsExt, PermissionsExt},
    },
    path::Path,
    time::Instant,
};

use super::*;
use crate::document::{Action, Ecs, Event, Host, HostBoot, HostOs};

fn document(message: &str) -> Document {
    Document {
        timestamp: "2026-11-29T00:00:00.000000Z".into(),
        message: message.into(),
        event: Event {
            id: "x".into(),
            kind: "event",
            category: vec!["host"],
            event_type: vec!["info"],
            action: Action::EventsLost,
            module: "oom",
            dataset: "oom.events",
            created: "2026-11-29T00:00:00.000000Z".into(),
            start: None,
            end: None,
            outcome: None,
        },
        host: Host {
            name: "n".into(),
            boot: HostBoot { id: "b".into() },
            os: HostOs { kernel: "k".into() },
        },
        ecs: Ecs::default(),
        process: None,
        container: None,
        kubernetes: None,
        oom: None,
        error: None,
    }
}

fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("oom-sink-{test}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The messages of the whole lines of `path`: a line an output's thread
/// is writing right now, without its newline yet, is not one.
fn messages(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .split_inclusive('\n')
        .filter_map(|l| l.strip_suffix('\n'))
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("a whole JSON line ({e}): {l:?}"))["message"]
                .as_str()
                .expect("message")
                .to_owned()
        })
        .collect()
}

const NEVER: Rotation = Rotation {
    max_bytes: None,
    keep: 0,
};

/// Waits, at most a few seconds, until `path` holds `expected`.
fn wait_for_messages(path: &Path, expected: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while messages(path) != expected {
        assert!(
            Instant::now() < deadline,
            "{} holds {:?}, not {expected:?}",
            path.display(),
            messages(path)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A pipe whose write end is an output standing for stdout; a pipe of one
/// page, so that a few lines fill it.
fn small_pipe() -> (std::io::PipeReader, OwnedFd) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    // SAFETY: F_SETPIPE_SZ only resizes the pipe behind a valid descriptor.
    let size = unsafe { libc::fcntl(writer.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    assert!(
        size >= 4096,
        "F_SETPIPE_SZ: {}",
        std::io::Error::last_os_error()
    );
    (reader, writer.into())
}

fn file_output(path: &Path) -> Output {
    Output::start(
        Destination::File(FileOutput::open(path).expect("open")),
        NEVER,
    )
    .expect("start the writer")
}

/// Group may read, others nothing: 0640 or tighter.
fn assert_private(path: &Path) {
    let mode = fs::metadata(path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode & 0o027, 0, "{} is {mode:o}", path.display());
}

#[test]
fn rotates_by_size_and_keeps_the_newest_files_each_private() {
    let dir = scratch_dir("rotate");
    let path = dir.join("events.ndjson");
    let line_len = serde_json::to_string(&document("0")).expect("json").len() as u64 + 1;
    let mut sink = Sink::open(
        std::slice::from_ref(&path),
        Format::Json,
        Rotation {
            max_bytes: Some(2 * line_len),
            keep: 2,
        },
    )
    .expect("open");
    for n in 0..7 {
        sink.write(&document(&n.to_string())).expect("write");
    }
    sink.finish().expect("finish");
    assert_eq!(messages(&path), ["6"], "the live file has what came after");
    assert_eq!(messages(&dir.join("events.ndjson.1")), ["4", "5"]);
    assert_eq!(messages(&dir.join("events.ndjson.2")), ["2", "3"]);
    assert!(
        !dir.join("events.ndjson.3").exists(),
        "only --output-keep files"
    );
    for file in ["events.ndjson", "events.ndjson.1", "events.ndjson.2"] {
        assert_private(&dir.join(file));
    }
    fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn a_file_moved_or_deleted_away_is_started_again_at_its_path() {
    let dir = scratch_dir("moved");
    let path = dir.join("events.ndjson");
    let mut sink = Sink::open(std::slice::from_ref(&path), Format::Json, NEVER).expect("open");
    sink.write(&document("before the move")).expect("write");
    wait_for_messages(&path, &["before the move"]);
    let moved = dir.join("events.ndjson.1");
    fs::rename(&path, &moved).expect("mv");
    sink.write(&document("after the move")).expect("write");
    wait_for_messages(&path, &["after the move"]);
    assert_eq!(messages(&moved), ["before the move"]);

    fs::remove_file(&path).expect("rm");
    sink.write(&document("after the rm")).expect("write");
    sink.finish().expect("finish");
    assert_eq!(messages(&path), ["after the rm"]);
    fs::remove_dir_all(&dir).expect("clean up");
}

/// A symbolic link put at the path is refused, as a failing disk would
/// fail: the lines wait, and go to the path once it is a file again.
#[test]
fn lines_a_refused_path_could_not_take_are_written_in_order_once_it_can() {
    let dir = scratch_dir("refused");
    let path = dir.join("events.ndjson");
    let elsewhere = dir.join("elsewhere");
    fs::write(&elsewhere, "").expect("create the file elsewhere");
    let mut sink = Sink::open(std::slice::from_ref(&path), Format::Json, NEVER).expect("open");
    fs::remove_file(&path).expect("rm");
    symlink(&elsewhere, &path).expect("symlink");
    for n in 0..3 {
        sink.write(&document(&n.to_string()))
            .expect("a refused line is kept, not an error");
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(messages(&elsewhere), Vec::<String>::new(), "never followed");

    fs::remove_file(&path).expect("rm the symlink");
    wait_for_messages(&path, &["0", "1", "2"]);
    sink.write(&document("3")).expect("write");
    sink.finish().expect("finish");
    assert_eq!(messages(&path), ["0", "1", "2", "3"], "each once, in order");
    fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn lines_past_the_backlog_limit_are_dropped_and_said_so() {
    let dir = scratch_dir("bounded");
    let path = dir.join("events.ndjson");
    let file = FileOutput::open(&path).expect("open");
    fs::remove_file(&path).expect("rm");
    symlink("/dev/null", &path).expect("a symlink the output refuses");
    let line_len = serde_json::to_string(&document("0")).expect("json").len() + 1;
    let output = Output::start_with_backlog(Destination::File(file), NEVER, 2 * line_len)
        .expect("start the writer");
    let mut sink = Sink::new(vec![output], Format::Json);
    sink.write(&document("0")).expect("kept");
    sink.write(&document("1")).expect("kept");
    match sink.write(&document("2")) {
        Err(SinkError::Dropped { outputs }) => {
            assert_eq!(outputs, [path.display().to_string()])
        }
        other => panic!("the third line does not fit and is dropped: {other:?}"),
    }
    match sink.finish() {
        Err(SinkError::Unwritten { lines, .. }) => assert_eq!(lines, 2),
        other => panic!("finishing with lines unwritten says so: {other:?}"),
    }
    fs::remove_dir_all(&dir).expect("clean up");
}

/// The defect this layout fixes: a write to a full pipe blocked the
/// collector, and the file after it got nothing.
#[test]
fn a_pipe_nobody_reads_holds_up_neither_the_writes_nor_the_file() {
    let dir = scratch_dir("stalled");
    let path = dir.join("events.ndjson");
    let (_reader, pipe) = small_pipe();
    let stdout = Output::start(Destination::Stdout(pipe), NEVER).expect("start the writer");
    let mut sink = Sink::new(vec![stdout, file_output(&path)], Format::Json);
    let expected: Vec<String> = (0..100)
        .map(|n| format!("{n} {}", "x".repeat(200)))
        .collect();
    let started = Instant::now();
    for message in &expected {
        sink.write(&document(message)).expect("kept for the pipe");
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "handing 100 lines over took {:?}",
        started.elapsed()
    );
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    wait_for_messages(&path, &expected);

    let started = Instant::now();
    let mut reported = None;
    let finished = sink.finish_reporting(|lines, outputs| {
        reported = Some((lines, outputs.to_vec()));
        Some(document(&format!("{lines} lost")))
    });
    assert!(
        started.elapsed() < 2 * FINISH_TIMEOUT + Duration::from_secs(1),
        "finishing took {:?}",
        started.elapsed()
    );
    let Err(SinkError::Unwritten { output, lines }) = finished else {
        panic!("lines the pipe never took are reported: {finished:?}");
    };
    assert_eq!(output, "stdout");
    assert!(lines > 0 && lines < 100, "{lines} lines left for the pipe");
    assert_eq!(
        reported,
        Some((lines as u64, vec!["stdout".to_owned()])),
        "the report counts the same lines"
    );
    let written = messages(&path);
    assert_eq!(written.len(), 101, "every line once, then the report");
    assert_eq!(written[100], format!("{lines} lost"));
    fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn an_output_closed_by_its_reader_is_dropped_and_the_last_one_stops() {
    let dir = scratch_dir("closed");
    let path = dir.join("events.ndjson");
    let (reader, pipe) = small_pipe();
    let stdout = Output::start(Destination::Stdout(pipe), NEVER).expect("start the writer");
    let mut sink = Sink::new(vec![stdout, file_output(&path)], Format::Json);
    drop(reader);
    for n in 0..3 {
        sink.write(&document(&n.to_string()))
            .expect("the file still takes lines");
    }
    sink.finish().expect("finish");
    assert_eq!(messages(&path), ["0", "1", "2"]);

    let (reader, pipe) = small_pipe();
    let stdout = Output::start(Destination::Stdout(pipe), NEVER).expect("start the writer");
    let mut sink = Sink::new(vec![stdout], Format::Json);
    drop(reader);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match sink.write(&document("n")) {
            Err(SinkError::Closed { output }) => {
                assert_eq!(output, "stdout");
                break;
            }
            Ok(()) => assert!(Instant::now() < deadline, "the closed pipe is never said"),
            Err(other) => panic!("the only output closed stops the sink: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    sink.finish().expect("nothing left to finish");
    fs::remove_dir_all(&dir).expect("clean up");
}

fn refusal(path: &Path) -> String {
    match Sink::open(&[path.to_owned()], Format::Json, NEVER) {
        Err(error @ SinkError::Open { .. }) => crate::error_chain(&error),
        Err(other) => panic!("{} refused as an open error: {other:?}", path.display()),
        Ok(_) => panic!("{} is refused", path.display()),
    }
}

#[test]
fn a_symlink_a_fifo_or_a_directory_at_the_path_is_refused_and_said_why() {
    let dir = scratch_dir("refusals");
    let elsewhere = dir.join("elsewhere");
    fs::write(&elsewhere, "kept\n").expect("create the file elsewhere");
    let link = dir.join("link.ndjson");
    symlink(&elsewhere, &link).expect("symlink");
    let why = refusal(&link);
    assert!(why.contains("symbolic link"), "{why}");
    assert_eq!(fs::read_to_string(&elsewhere).expect("read"), "kept\n");

    let fifo = dir.join("fifo.ndjson");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo: {made}");
    let why = refusal(&fifo);
    assert!(why.contains("FIFO"), "{why}");
    // With a reader there, opening would succeed: it is refused all the same.
    let _reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .expect("open the fifo's read end");
    assert!(refusal(&fifo).contains("FIFO"));

    let why = refusal(&dir);
    assert!(why.contains("directory"), "{why}");
    // A character device named as the path is what the user asked for.
    let mut null = Sink::open(&[PathBuf::from("/dev/null")], Format::Json, NEVER)
        .expect("/dev/null is an output");
    null.write(&document("0")).expect("write");
    null.finish().expect("finish");
    fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn a_new_file_is_private_and_an_existing_one_keeps_its_mode() {
    let dir = scratch_dir("modes");
    let new = dir.join("new.ndjson");
    let existing = dir.join("existing.ndjson");
    fs::write(&existing, "").expect("create");
    fs::set_permissions(&existing, fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut sink = Sink::open(&[new.clone(), existing.clone()], Format::Json, NEVER).expect("open");
    sink.write(&document("0")).expect("write");
    sink.finish().expect("finish");
    assert_private(&new);
    let mode = fs::metadata(&existing).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "the owner's choice for a file that was there");
    fs::remove_dir_all(&dir).expect("clean up");
}

/// A receipt settles when some output wrote the line whole: not while the
/// only output is a pipe nobody reads, at once when a file wrote it too,
/// and when the pipe that kept it is closed (nothing will write it).
#[test]
fn a_receipt_settles_once_a_line_is_written_or_can_never_be() {
    let (reader, pipe) = small_pipe();
    let stdout = Output::start(Destination::Stdout(pipe), NEVER).expect("start the writer");
    let mut sink = Sink::new(vec![stdout], Format::Json);
    let receipts = sink.receipts();
    // Fill the pipe, then one more line that stays in the backlog.
    let mut last = None;
    for n in 0..100 {
        sink.write(&document(&format!("{n} {}", "x".repeat(200))))
            .expect("kept");
        last = receipts.take();
    }
    let last = last.expect("a receipt for each line");
    std::thread::sleep(Duration::from_millis(200));
    assert!(!last.is_settled(), "a line still waiting for the pipe");
    drop(reader);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !last.is_settled() {
        assert!(
            Instant::now() < deadline,
            "the closed pipe settles the receipt"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = sink.finish();

    let dir = scratch_dir("receipt");
    let path = dir.join("events.ndjson");
    let (_reader, pipe) = small_pipe();
    let stdout = Output::start(Destination::Stdout(pipe), NEVER).expect("start the writer");
    let mut sink = Sink::new(vec![stdout, file_output(&path)], Format::Json);
    let receipts = sink.receipts();
    for n in 0..100 {
        sink.write(&document(&format!("{n} {}", "x".repeat(200))))
            .expect("kept");
    }
    let last = receipts.take().expect("a receipt");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !last.is_settled() {
        assert!(Instant::now() < deadline, "the file wrote the line");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(messages(&path).len(), 100);
    let _ = sink.finish();
    fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn auto_is_pretty_only_for_a_terminal_that_is_the_only_output() {
    let stdout = [PathBuf::from(STDOUT)];
    let file = [PathBuf::from("/var/log/oom-collector/events.ndjson")];
    let both = [PathBuf::from(STDOUT), file[0].clone()];
    assert_eq!(Format::Auto.resolve(&stdout, true), Format::Pretty);
    assert_eq!(Format::Auto.resolve(&stdout, false), Format::Json, "a pipe");
    assert_eq!(Format::Auto.resolve(&file, true), Format::Json, "a file");
    assert_eq!(
        Format::Auto.resolve(&both, true),
        Format::Json,
        "a file too"
    );
    assert_eq!(Format::Json.resolve(&stdout, true), Format::Json);
    assert_eq!(Format::Pretty.resolve(&file, false), Format::Pretty);
}
