//! The failure contract in the module doc, held against real files, a
//! symlink to /dev/full and a FIFO whose reader goes away.

use std::{
    fs::{self, OpenOptions},
    os::unix::fs::{symlink, OpenOptionsExt},
    path::Path,
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

fn messages(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
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

#[test]
fn rotates_by_size_and_keeps_the_newest_files() {
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
    fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn a_file_moved_or_deleted_away_is_started_again_at_its_path() {
    let dir = scratch_dir("moved");
    let path = dir.join("events.ndjson");
    let mut sink = Sink::open(std::slice::from_ref(&path), Format::Json, NEVER).expect("open");
    sink.write(&document("before the move")).expect("write");
    let moved = dir.join("events.ndjson.1");
    fs::rename(&path, &moved).expect("mv");
    sink.write(&document("after the move")).expect("write");
    assert_eq!(messages(&moved), ["before the move"]);
    assert_eq!(messages(&path), ["after the move"]);

    fs::remove_file(&path).expect("rm");
    sink.write(&document("after the rm")).expect("write");
    sink.finish().expect("finish");
    assert_eq!(messages(&path), ["after the rm"]);
    fs::remove_dir_all(&dir).expect("clean up");
}

/// A path that points at /dev/full fails every write with ENOSPC, as a
/// full disk does; pointing it at a real file frees the space.
#[test]
fn lines_a_full_disk_refused_are_written_in_order_once_it_has_room() {
    let dir = scratch_dir("full");
    let path = dir.join("events.ndjson");
    let real = dir.join("real.ndjson");
    symlink("/dev/full", &path).expect("symlink to /dev/full");
    let mut sink = Sink::open(std::slice::from_ref(&path), Format::Json, NEVER).expect("open");
    for n in 0..3 {
        sink.write(&document(&n.to_string()))
            .expect("a refused line is kept, not an error");
    }
    sink.retry();

    fs::remove_file(&path).expect("rm the symlink");
    fs::write(&real, "").expect("create the real file");
    symlink(&real, &path).expect("symlink to the real file");
    sink.retry();
    assert_eq!(
        messages(&real),
        ["0", "1", "2"],
        "all of them, in order, once"
    );
    sink.write(&document("3")).expect("write");
    sink.finish().expect("finish");
    assert_eq!(messages(&real), ["0", "1", "2", "3"]);
    fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn lines_past_the_backlog_limit_are_dropped_and_said_so() {
    let dir = scratch_dir("bounded");
    let path = dir.join("events.ndjson");
    symlink("/dev/full", &path).expect("symlink to /dev/full");
    let line_len = serde_json::to_string(&document("0")).expect("json").len() + 1;
    let file = FileOutput::open(&path).expect("open");
    let output = Output::with_backlog(Destination::File(file), 2 * line_len);
    let mut sink = Sink::new(vec![output], Format::Json, NEVER);
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

#[test]
fn an_output_closed_by_its_reader_is_dropped_and_the_last_one_stops() {
    let dir = scratch_dir("closed");
    let fifo = dir.join("reader.fifo");
    let file = dir.join("events.ndjson");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo: {made}");
    let reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .expect("open the fifo's read end");
    let mut sink =
        Sink::open(&[fifo.clone(), file.clone()], Format::Json, NEVER).expect("open both outputs");
    sink.write(&document("0")).expect("write");
    drop(reader);
    sink.write(&document("1"))
        .expect("the file still takes lines");
    sink.finish().expect("finish");
    assert_eq!(messages(&file), ["0", "1"]);

    let reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .expect("open the fifo's read end");
    let mut sink =
        Sink::open(std::slice::from_ref(&fifo), Format::Json, NEVER).expect("open the fifo");
    drop(reader);
    match sink.write(&document("2")) {
        Err(SinkError::Closed { output }) => assert_eq!(output, fifo.display().to_string()),
        other => panic!("the only output closed stops the sink: {other:?}"),
    }
    sink.finish().expect("nothing left to finish");
    fs::remove_dir_all(&dir).expect("clean up");
}
