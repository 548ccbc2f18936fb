//! The one sentence that explains a kill: who was killed, where, under
//! which limit, and what filled that limit, largest share first.
//!
//! ```text
//! python3[4242] killed in pod shop/worker-7c9d (limit 512.0 MiB): tmpfs/shmem 301.0 MiB,
//! python3 anon 160.2 MiB, page cache 31.0 MiB, kernel 12.4 MiB, 3 other processes 8.1 MiB
//! java[77] killed: the node ran out of memory: largest cgroups pod shop/cache-0 2.9 GiB,
//! /system.slice/backup.service 610.0 MiB; node anon 3.6 GiB, page cache 120.5 MiB, ...
//! ```

use super::{one_line, Action, Document};

/// The node's largest cgroups a global OOM's sentence names.
const SENTENCE_CGROUPS: usize = 3;

/// Shares smaller than this are left out of the sentence.
const SMALLEST_SHARE: u64 = 64 * 1024;

impl Document {
    /// The sentence, for a kill whose limited cgroup's stats are known.
    pub fn explanation(&self) -> Option<String> {
        if self.kind() != Action::OomKill {
            return None;
        }
        let oom = self.oom.as_ref()?;
        if oom.memcg.is_none() {
            return self.node_explanation();
        }
        let memcg = oom.memcg.as_ref()?;
        let stats = memcg.stats.as_ref()?;
        let process = self.process.as_ref()?;
        let name = process.name.as_deref().unwrap_or("?");
        let victim_anon = oom
            .victim
            .as_ref()
            .and_then(|v| v.rss.as_ref())
            .and_then(|rss| rss.anon_bytes)
            .unwrap_or(0);

        let mut shares: Vec<(String, u64)> = Vec::new();
        if let Some(shmem) = stats.shmem_bytes {
            shares.push(("tmpfs/shmem".into(), shmem));
        }
        shares.push((format!("{name} anon"), victim_anon));
        if let Some(anon) = stats.anon_bytes {
            let others = memcg.tasks_count.unwrap_or(1).saturating_sub(1);
            let label = match others {
                0 => "other anon".to_owned(),
                1 => "1 other process".to_owned(),
                n => format!("{n} other processes"),
            };
            shares.push((label, anon.saturating_sub(victim_anon)));
        }
        if let Some(file) = stats.file_bytes {
            let cache = file.saturating_sub(stats.shmem_bytes.unwrap_or(0));
            shares.push(("page cache".into(), cache));
        }
        if let Some(kernel) = stats.kernel_bytes {
            shares.push(("kernel".into(), kernel));
        }
        if let Some(swap) = stats.swap_bytes {
            shares.push(("swap".into(), swap));
        }
        shares.retain(|(_, bytes)| *bytes >= SMALLEST_SHARE);
        // Largest first; equal shares keep the order above.
        shares.sort_by_key(|share| std::cmp::Reverse(share.1));

        let place = self
            .place()
            .unwrap_or_else(|| format!("memory cgroup {}", memcg.path));
        let limit = memcg
            .limit_bytes
            .map_or(String::new(), |l| format!(" (limit {})", mib(l)));
        let verb = if oom.victim_exiting() {
            "was already exiting, marked as the OOM victim without a kill,"
        } else {
            "killed"
        };
        let shares: Vec<String> = shares
            .iter()
            .map(|(label, bytes)| format!("{label} {}", mib(*bytes)))
            .collect();
        Some(one_line(&format!(
            "{name}[{}] {verb} in {place}{limit}: {}",
            process.pid,
            shares.join(", ")
        )))
    }

    /// The sentence of a global OOM: the node's largest cgroups, then the
    /// node's memory by kind.
    fn node_explanation(&self) -> Option<String> {
        let oom = self.oom.as_ref()?;
        let node = oom.node.as_ref()?;
        let process = self.process.as_ref()?;
        let name = process.name.as_deref().unwrap_or("?");
        let largest: Vec<String> = node
            .memcgs
            .iter()
            .take(SENTENCE_CGROUPS)
            .map(|memcg| {
                let what = match &memcg.kubernetes {
                    Some(k8s) => match &k8s.namespace {
                        Some(namespace) => format!("pod {namespace}/{}", k8s.pod.name),
                        None => format!("pod {}", k8s.pod.name),
                    },
                    None => memcg.path.clone(),
                };
                format!("{what} {}", mib(memcg.usage_bytes))
            })
            .collect();
        let stats = &node.stats;
        let kinds = [
            ("anon", stats.anon_bytes),
            (
                "page cache",
                stats.file_bytes.saturating_sub(stats.shmem_bytes),
            ),
            ("tmpfs/shmem", stats.shmem_bytes),
            ("kernel", stats.kernel_bytes),
            ("free", stats.free_bytes),
        ]
        .map(|(label, bytes)| format!("{label} {}", mib(bytes)));
        let largest = if largest.is_empty() {
            String::new()
        } else {
            format!(" largest cgroups {};", largest.join(", "))
        };
        Some(one_line(&format!(
            "{name}[{}] killed: the node ran out of memory:{largest} node {}",
            process.pid,
            kinds.join(", ")
        )))
    }

    /// `pod NAMESPACE/NAME`, else `container ID` (12 digits), if known.
    fn place(&self) -> Option<String> {
        let kubernetes = self.kubernetes.as_ref();
        let pod = kubernetes
            .and_then(|k| k.pod.as_ref())
            .and_then(|p| p.name.as_deref());
        match (kubernetes.and_then(|k| k.namespace.as_deref()), pod) {
            (Some(namespace), Some(pod)) => Some(format!("pod {namespace}/{pod}")),
            (None, Some(pod)) => Some(format!("pod {pod}")),
            _ => self
                .container
                .as_ref()
                .map(|c| format!("container {}", &c.id[..12.min(c.id.len())])),
        }
    }
}

/// Bytes as MiB with one decimal, or GiB from 1 GiB on.
pub fn mib(bytes: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    let bytes = bytes as f64;
    if bytes >= GIB {
        format!("{:.1} GiB", bytes / GIB)
    } else {
        format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
    }
}
