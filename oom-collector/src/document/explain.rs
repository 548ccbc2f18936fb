//! The one sentence that explains a kill: who was killed, where, under
//! which limit, and what filled that limit, largest share first.
//!
//! ```text
//! python3[4242] killed in pod shop/worker-7c9d (limit 512.0 MiB): tmpfs/shmem 301.0 MiB,
//! python3 anon 160.2 MiB, page cache 31.0 MiB, kernel 12.4 MiB, 3 other processes 8.1 MiB
//! ```

use super::{one_line, Action, Document};

/// Shares smaller than this are left out of the sentence.
const SMALLEST_SHARE: u64 = 64 * 1024;

impl Document {
    /// The sentence, for a kill whose limited cgroup's stats are known.
    pub fn explanation(&self) -> Option<String> {
        if self.kind() != Action::OomKill {
            return None;
        }
        let oom = self.oom.as_ref()?;
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
            let others = memcg.task_count.unwrap_or(1).saturating_sub(1);
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

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
