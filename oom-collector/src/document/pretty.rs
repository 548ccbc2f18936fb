//! `--format pretty`: a document as one line a person reads at a terminal.

use super::{explain::mib, one_line, Action, Document};

impl Document {
    /// One readable line for `--format pretty`: what happened, to which
    /// process, where, and (for a kill) its command line and trigger.
    pub fn pretty(&self) -> String {
        let process = self
            .process
            .as_ref()
            .map(|p| format!("{}[{}]", p.name.as_deref().unwrap_or("?"), p.pid))
            .unwrap_or_default();
        let mut parts: Vec<String> = Vec::new();
        let oom = self.oom.clone().unwrap_or_default();
        if let Some(sentence) = self.explanation() {
            parts.push(sentence);
            if let Some(container) = &self.container {
                parts.push(format!(
                    "container {}",
                    &container.id[..12.min(container.id.len())]
                ));
            }
            self.push_command_and_trigger(&mut parts);
            let label = if oom.victim_exiting() {
                "OOM EXIT"
            } else {
                "OOM KILL"
            };
            return one_line(&format!(
                "{} {label:<8} {}",
                self.timestamp,
                parts.join(" | ")
            ));
        }
        let label = match self.kind() {
            Action::OomKill => {
                let victim = oom.victim.clone().unwrap_or_default();
                if let Some(rss) = victim.rss {
                    let total = [rss.anon_bytes, rss.file_bytes, rss.shmem_bytes]
                        .into_iter()
                        .flatten()
                        .fold(0u64, u64::saturating_add);
                    parts.push(format!("{process} rss {}", mib(total)));
                } else {
                    parts.push(process);
                }
                if let Some(memcg) = victim.memcg {
                    let limit = memcg
                        .limit_bytes
                        .map_or(String::new(), |l| format!(" (limit {})", mib(l)));
                    parts.push(format!("in {}{limit}", memcg.path));
                }
                if let Some(hit) = oom.memcg.as_ref() {
                    let limit = hit
                        .limit_bytes
                        .map_or(String::new(), |l| format!(" {}", mib(l)));
                    parts.push(format!("limit{limit} of {} hit", hit.path));
                } else if let Some(constraint) = oom.constraint {
                    parts.push(format!("{constraint} OOM"));
                }
                if oom.group_kill == Some(true) {
                    parts.push("group kill".into());
                }
                if oom.victim_exiting() {
                    parts.push("already exiting, no kill sent".into());
                    "OOM EXIT"
                } else {
                    "OOM KILL"
                }
            }
            Action::MemoryAllocationFailed => {
                let alloc = oom.alloc.clone().unwrap_or_default();
                let largest = alloc
                    .request_bytes
                    .map_or(String::new(), |b| format!(", largest {}", mib(b)));
                let process = match alloc.other_processes {
                    _ if !process.is_empty() => process,
                    Some(0) => "processes of its cgroup".to_owned(),
                    Some(told) => format!("{told}+ other processes of its cgroup"),
                    None => "interrupt context".to_owned(),
                };
                parts.push(format!(
                    "{process} {} refused {}x in {} ms{largest}",
                    alloc.syscall.unwrap_or("page allocation"),
                    alloc.count.unwrap_or(0),
                    alloc.window_ms.unwrap_or(0)
                ));
                "ENOMEM"
            }
            Action::EventsLost => {
                parts.push(self.message.clone());
                "LOST"
            }
        };
        if let Some(container) = &self.container {
            parts.push(format!(
                "container {}",
                &container.id[..12.min(container.id.len())]
            ));
        }
        if let Some(pod) = self.kubernetes.as_ref().and_then(|k| k.pod.as_ref()) {
            let namespace = self
                .kubernetes
                .as_ref()
                .and_then(|k| k.namespace.as_deref());
            match (namespace, &pod.name, &pod.uid) {
                (Some(namespace), Some(name), _) => parts.push(format!("pod {namespace}/{name}")),
                (_, Some(name), _) => parts.push(format!("pod {name}")),
                (_, None, Some(uid)) => parts.push(format!("pod {uid}")),
                _ => {}
            }
        }
        if self.kind() == Action::OomKill {
            self.push_command_and_trigger(&mut parts);
        }
        one_line(&format!(
            "{} {label:<8} {}",
            self.timestamp,
            parts.join(" | ")
        ))
    }

    /// A kill's command line and the process whose allocation triggered it.
    fn push_command_and_trigger(&self, parts: &mut Vec<String>) {
        if let Some(command_line) = self.process.as_ref().and_then(|p| p.command_line.as_ref()) {
            parts.push(format!("cmd {}", shorten(command_line, 160)));
        }
        if let Some(trigger) = self.oom.as_ref().and_then(|o| o.trigger.as_ref()) {
            parts.push(format!("by {}[{}]", trigger.name, trigger.pid));
        }
    }
}

/// At most `max` characters, with an ellipsis when cut.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}
