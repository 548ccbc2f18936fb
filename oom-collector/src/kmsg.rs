//! The kernel's own account of each OOM, from `/dev/kmsg`.
//!
//! Where no hook on `oom_kill_process()` is available (kprobes and fentry
//! are not on every kernel), the kernel still says, in its log, what the
//! tracepoint does not carry. For each OOM, under the global `oom_lock`, so
//! two OOMs' lines never interleave:
//!
//! ```text
//! tail invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
//! ...
//! oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,task_memcg=/a/b,task=tail,pid=4242,uid=0
//! Memory cgroup out of memory: Killed process 4242 (tail) total-vm:...
//! Tasks in /a/b are going to be killed due to memory.oom.group set
//! Memory cgroup out of memory: Killed process 4243 (tail) total-vm:...
//! ```
//!
//! The first two lines are rate-limited by the kernel (10 per 5 s); the
//! "Killed process" and "Tasks in" lines are not. So every kill can be put
//! in its incident (one OOM: the chosen victim and, with
//! `memory.oom.group`, the rest of its cgroup), and the constraint, the
//! memory cgroup whose limit was hit and the failing allocation are known
//! whenever the kernel printed them, and left out otherwise.
//!
//! Reading `/dev/kmsg` needs CAP_SYSLOG (or root); without it these fields
//! are left out.

use std::{
    collections::{HashMap, VecDeque},
    fs::{File, OpenOptions},
    io::{self, Read, Seek, SeekFrom},
    os::unix::fs::OpenOptionsExt,
};

/// Kills remembered for lookup; the collector asks within milliseconds.
const REMEMBERED_KILLS: usize = 4096;

/// What the kernel logged about the OOM that killed one process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OomContext {
    /// The kernel log sequence number that opened the incident: the same
    /// for every victim of one OOM.
    pub incident_seq: u64,
    /// `memcg`, `global`, `cpuset` or `memory_policy`.
    pub constraint: Option<&'static str>,
    /// The memory cgroup whose limit was hit (`oom_memcg=`).
    pub oom_memcg: Option<String>,
    /// The failing allocation's GFP flags, by the kernel's names.
    pub gfp_flags: Option<Vec<String>>,
    pub order: Option<u32>,
    /// The cgroup `memory.oom.group` killed whole, when it did.
    pub group: Option<String>,
}

/// One line of the kernel log, as far as OOMs are concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OomLine {
    /// `<comm> invoked oom-killer: gfp_mask=0x..(FLAGS), order=N, ...`
    Invoked {
        gfp_flags: Vec<String>,
        order: Option<u32>,
    },
    /// `oom-kill:constraint=...,oom_memcg=...,pid=N,...`
    Summary {
        constraint: Option<&'static str>,
        oom_memcg: Option<String>,
        pid: Option<u32>,
    },
    /// `...: Killed process N (comm) ...`
    Killed { pid: u32 },
    /// `Tasks in <cgroup> are going to be killed due to memory.oom.group set`
    GroupKill { cgroup: String },
}

/// Parses one log message (the text after `;` in a `/dev/kmsg` record).
pub fn parse_line(text: &str) -> Option<OomLine> {
    if let Some((_, rest)) = text.split_once(" invoked oom-killer: ") {
        let gfp_flags = rest
            .split_once('(')
            .and_then(|(_, after)| after.split_once(')'))
            .map(|(flags, _)| {
                flags
                    .split('|')
                    .filter(|f| !f.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let order = rest
            .split_once("order=")
            .and_then(|(_, after)| after.split(',').next())
            .and_then(|n| n.trim().parse().ok());
        return Some(OomLine::Invoked { gfp_flags, order });
    }
    if let Some(rest) = text.strip_prefix("oom-kill:") {
        let constraint = rest
            .strip_prefix("constraint=")
            .and_then(|c| c.split(',').next())
            .and_then(constraint_name);
        // Paths may hold commas; the fields after them are fixed, so cut
        // from the right.
        let (rest, _uid) = rest.rsplit_once(",uid=").unwrap_or((rest, ""));
        let (rest, pid) = rest.rsplit_once(",pid=").unwrap_or((rest, ""));
        let (rest, _task) = rest.rsplit_once(",task=").unwrap_or((rest, ""));
        let (rest, _task_memcg) = rest.rsplit_once(",task_memcg=").unwrap_or((rest, ""));
        let oom_memcg = rest
            .rsplit_once(",oom_memcg=")
            .map(|(_, path)| path.to_owned());
        return Some(OomLine::Summary {
            constraint,
            oom_memcg,
            pid: pid.parse().ok(),
        });
    }
    if let Some((_, rest)) = text.split_once("Killed process ") {
        let pid = rest.split(' ').next()?.parse().ok()?;
        return Some(OomLine::Killed { pid });
    }
    if let Some(rest) = text.strip_prefix("Tasks in ") {
        let cgroup = rest.strip_suffix(" are going to be killed due to memory.oom.group set")?;
        return Some(OomLine::GroupKill {
            cgroup: cgroup.to_owned(),
        });
    }
    None
}

fn constraint_name(kernel: &str) -> Option<&'static str> {
    Some(match kernel {
        "CONSTRAINT_NONE" => "global",
        "CONSTRAINT_CPUSET" => "cpuset",
        "CONSTRAINT_MEMORY_POLICY" => "memory_policy",
        "CONSTRAINT_MEMCG" => "memcg",
        _ => return None,
    })
}

/// Splits a `/dev/kmsg` record, `prio,seq,usec,flags;text\n[ dict...]`,
/// into its sequence number and first text line; `None` for a record that
/// is not the kernel's own.
///
/// Anyone who can write `/dev/kmsg` can log lines that read like the OOM
/// killer's. The kernel gives every line written from user space a
/// facility other than 0 (`LOG_KERN`), forcing `LOG_USER` on one that asks
/// for 0 (`devkmsg_write()`), so the facility in `prio` (`prio >> 3`) tells
/// them apart, and only the kernel's supply OOM context.
pub fn parse_record(record: &str) -> Option<(u64, &str)> {
    let (header, text) = record.split_once(';')?;
    let mut fields = header.split(',');
    let prio: u32 = fields.next()?.parse().ok()?;
    if prio >> 3 != LOG_KERN {
        return None;
    }
    let seq = fields.next()?.parse().ok()?;
    let text = text.split('\n').next().unwrap_or(text);
    Some((seq, text))
}

/// The kernel's own syslog facility.
const LOG_KERN: u32 = 0;

/// Groups OOM log lines into incidents and remembers, per killed pid, what
/// the kernel said about its OOM.
#[derive(Debug, Default)]
pub struct OomLog {
    /// The incident the latest lines belong to.
    current: Option<OomContext>,
    /// Whether the current incident already has its chosen victim.
    current_has_victim: bool,
    kills: HashMap<u32, OomContext>,
    order: VecDeque<u32>,
}

impl OomLog {
    /// Feeds one log line with its sequence number.
    pub fn feed(&mut self, seq: u64, line: OomLine) {
        match line {
            OomLine::Invoked { gfp_flags, order } => {
                self.current = Some(OomContext {
                    incident_seq: seq,
                    gfp_flags: Some(gfp_flags).filter(|f| !f.is_empty()),
                    order,
                    ..OomContext::default()
                });
                self.current_has_victim = false;
            }
            OomLine::Summary {
                constraint,
                oom_memcg,
                ..
            } => {
                if let Some(current) = self.current.as_mut().filter(|_| !self.current_has_victim) {
                    current.constraint = constraint;
                    current.oom_memcg = oom_memcg;
                }
            }
            OomLine::Killed { pid } => {
                let in_group = self.current.as_ref().is_some_and(|c| c.group.is_some());
                if self.current_has_victim && !in_group || self.current.is_none() {
                    // A kill with no header of its own: the kernel rate-
                    // limited the header, so only the incident is known.
                    self.current = Some(OomContext {
                        incident_seq: seq,
                        ..OomContext::default()
                    });
                }
                self.current_has_victim = true;
                let context = self.current.clone().expect("set above");
                self.remember(pid, context);
            }
            OomLine::GroupKill { cgroup } => {
                if let Some(current) = self.current.as_mut() {
                    current.group = Some(cgroup.clone());
                    // The chosen victim, killed just before, is in the group.
                    for context in self.kills.values_mut() {
                        if context.incident_seq == current.incident_seq {
                            context.group = Some(cgroup.clone());
                        }
                    }
                }
            }
        }
    }

    fn remember(&mut self, pid: u32, context: OomContext) {
        if self.kills.insert(pid, context).is_none() {
            self.order.push_back(pid);
        }
        while self.order.len() > REMEMBERED_KILLS {
            if let Some(old) = self.order.pop_front() {
                self.kills.remove(&old);
            }
        }
    }

    /// What the kernel logged about the kill of `pid`.
    pub fn context_of(&self, pid: u32) -> Option<&OomContext> {
        self.kills.get(&pid)
    }
}

/// `/dev/kmsg`, read without blocking from where it was when opened.
pub struct Kmsg {
    file: File,
    buffer: Vec<u8>,
    pub log: OomLog,
}

impl Kmsg {
    pub fn open() -> io::Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")?;
        // Only what happens from now on.
        file.seek(SeekFrom::End(0))?;
        Ok(Self {
            file,
            // A record is at most 1 KiB of text plus its dictionary.
            buffer: vec![0; 8192],
            log: OomLog::default(),
        })
    }

    /// Reads every record logged since the last call.
    pub fn poll(&mut self) {
        loop {
            match self.file.read(&mut self.buffer) {
                Ok(0) => return,
                Ok(len) => {
                    let record = String::from_utf8_lossy(&self.buffer[..len]);
                    if let Some((seq, text)) = parse_record(&record) {
                        if let Some(line) = parse_line(text) {
                            self.log.feed(seq, line);
                        }
                    }
                }
                // EPIPE: records were overwritten before we read them; the
                // next read continues with the oldest one left.
                Err(error) if error.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Lines as this project's CI kernel (6.18) printed them.
    const INVOKED: &str =
        "tail invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0";
    const SUMMARY: &str = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/oom-e2e-series-5-13577,task_memcg=/oom-e2e-series-5-13577,task=tail,pid=13630,uid=0";
    const KILLED: &str = "Memory cgroup out of memory: Killed process 13630 (tail) total-vm:35476kB, anon-rss:32640kB, file-rss:1544kB, shmem-rss:0kB, UID:0 pgtables:108kB oom_score_adj:0";

    #[test]
    fn parses_the_kernels_oom_lines() {
        assert_eq!(
            parse_line(INVOKED),
            Some(OomLine::Invoked {
                gfp_flags: vec!["GFP_KERNEL".into()],
                order: Some(0),
            })
        );
        assert_eq!(
            parse_line(SUMMARY),
            Some(OomLine::Summary {
                constraint: Some("memcg"),
                oom_memcg: Some("/oom-e2e-series-5-13577".into()),
                pid: Some(13630),
            })
        );
        assert_eq!(parse_line(KILLED), Some(OomLine::Killed { pid: 13630 }));
        assert_eq!(
            parse_line("Tasks in /a/b c are going to be killed due to memory.oom.group set"),
            Some(OomLine::GroupKill {
                cgroup: "/a/b c".into()
            })
        );
        assert_eq!(
            parse_line(
                "java invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=2, oom_score_adj=0"
            ),
            Some(OomLine::Invoked {
                gfp_flags: vec!["GFP_HIGHUSER_MOVABLE".into(), "__GFP_COMP".into()],
                order: Some(2),
            })
        );
        assert_eq!(parse_line("eth0: link up"), None);
    }

    #[test]
    fn a_global_oom_has_no_oom_memcg_and_paths_may_hold_commas() {
        let global = "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/system.slice/x.service,task=java,pid=77,uid=1000";
        assert_eq!(
            parse_line(global),
            Some(OomLine::Summary {
                constraint: Some("global"),
                oom_memcg: None,
                pid: Some(77),
            })
        );
        let comma = "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/a,b,task_memcg=/a,b/c,task=x,pid=5,uid=0";
        assert!(matches!(
            parse_line(comma),
            Some(OomLine::Summary { oom_memcg: Some(path), .. }) if path == "/a,b"
        ));
    }

    #[test]
    fn splits_kmsg_records() {
        assert_eq!(
            parse_record("3,1234,2294016047,-;oom-kill:constraint=X\n SUBSYSTEM=memory\n"),
            Some((1234, "oom-kill:constraint=X"))
        );
        assert_eq!(parse_record("garbage"), None);
    }

    #[test]
    fn lines_written_from_user_space_are_not_the_kernels() {
        let forged = "Memory cgroup out of memory: Killed process 4242 (x)";
        // `echo '<3>...' > /dev/kmsg` is logged as LOG_USER (prio 11), a
        // daemon's as its own facility; only facility 0 is the kernel.
        for prio in [11, 14, 30, 191] {
            assert_eq!(
                parse_record(&format!("{prio},99,1,-;{forged}")),
                None,
                "prio {prio}"
            );
        }
        assert_eq!(
            parse_record(&format!("3,99,1,-;{forged}")),
            Some((99, forged))
        );
    }

    fn feed_all(log: &mut OomLog, lines: &[&str]) {
        for (seq, text) in lines.iter().enumerate() {
            if let Some(line) = parse_line(text) {
                log.feed(100 + seq as u64, line);
            }
        }
    }

    #[test]
    fn one_oom_is_one_incident_with_its_context() {
        let mut log = OomLog::default();
        feed_all(
            &mut log,
            &[INVOKED, "[ pid ] uid tgid ...", SUMMARY, KILLED],
        );
        let context = log.context_of(13630).expect("the kill is known");
        assert_eq!(context.incident_seq, 100);
        assert_eq!(context.constraint, Some("memcg"));
        assert_eq!(
            context.oom_memcg.as_deref(),
            Some("/oom-e2e-series-5-13577")
        );
        assert_eq!(context.gfp_flags, Some(vec!["GFP_KERNEL".to_owned()]));
        assert_eq!(context.order, Some(0));
        assert_eq!(context.group, None);
    }

    #[test]
    fn a_group_kill_shares_one_incident() {
        let mut log = OomLog::default();
        feed_all(
            &mut log,
            &[
                INVOKED,
                SUMMARY,
                KILLED,
                "Tasks in /grp are going to be killed due to memory.oom.group set",
                "Memory cgroup out of memory: Killed process 13631 (tail) total-vm:1kB",
                "Memory cgroup out of memory: Killed process 13632 (sh) total-vm:1kB",
            ],
        );
        let incidents: Vec<(u64, Option<String>)> = [13630, 13631, 13632]
            .iter()
            .map(|pid| {
                let c = log.context_of(*pid).expect("known");
                (c.incident_seq, c.group.clone())
            })
            .collect();
        assert!(
            incidents
                .iter()
                .all(|i| *i == (100, Some("/grp".to_owned()))),
            "{incidents:?}"
        );
    }

    #[test]
    fn rate_limited_headers_still_separate_incidents_but_add_nothing() {
        let mut log = OomLog::default();
        feed_all(
            &mut log,
            &[
                INVOKED,
                SUMMARY,
                KILLED,
                // The next OOM's header and summary were rate-limited.
                "Memory cgroup out of memory: Killed process 9 (tail) total-vm:1kB",
            ],
        );
        let second = log.context_of(9).expect("known");
        assert_ne!(
            second.incident_seq,
            log.context_of(13630).expect("known").incident_seq
        );
        assert_eq!(second.constraint, None, "never borrowed from another OOM");
        assert_eq!(second.oom_memcg, None);
    }
}
