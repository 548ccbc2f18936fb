//! Counters keyed by pod that forget pods: a Job's or CronJob's pods each
//! bring new label values, so a family that only grows would hold every
//! pod the node ever ran.
//!
//! A label set untouched for [`SeriesLimits::idle`] is removed, and past
//! [`SeriesLimits::max`] label sets the one touched longest ago makes room
//! for the new one. Each removal is counted in
//! `oom_metric_series_dropped_total{metric,reason}` (`reason` is `idle` or
//! `limit`), so a dashboard can tell a forgotten pod from a quiet one.
//!
//! A removed counter that comes back starts again from its first increment,
//! as after a restart of the collector.

use std::{
    collections::{BTreeMap, HashMap},
    hash::Hash,
    sync::Mutex,
    time::{Duration, Instant},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};

/// How many label sets one family keeps, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct SeriesLimits {
    /// A label set not counted for this long is removed: a day, so a pod
    /// that is still there keeps its series between rare kills, while the
    /// pods of finished Jobs go within a day.
    pub idle: Duration,
    /// At most this many label sets (a few hundred bytes each, so a few
    /// megabytes in all); the least recently counted goes first.
    pub max: usize,
}

impl Default for SeriesLimits {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(24 * 60 * 60),
            max: 10_000,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DroppedLabels {
    metric: &'static str,
    /// `idle` or `limit`.
    reason: &'static str,
}

/// A counter family whose label sets expire; see the module doc.
pub(super) struct BoundedCounters<S> {
    family: Family<S, Counter>,
    /// The name of the family as Prometheus shows it, for the drop counter.
    metric: &'static str,
    dropped: Family<DroppedLabels, Counter>,
    limits: SeriesLimits,
    touched: Mutex<Touched<S>>,
}

/// When each label set was last counted, and the same in time order. The
/// sequence number keeps two sets counted at the same instant apart.
struct Touched<S> {
    last: HashMap<S, (Instant, u64)>,
    by_age: BTreeMap<(Instant, u64), S>,
    sequence: u64,
}

impl<S: Clone + Eq + Hash> BoundedCounters<S> {
    pub(super) fn new(
        family: Family<S, Counter>,
        metric: &'static str,
        dropped: Family<DroppedLabels, Counter>,
        limits: SeriesLimits,
    ) -> Self {
        Self {
            family,
            metric,
            dropped,
            limits,
            touched: Mutex::new(Touched {
                last: HashMap::new(),
                by_age: BTreeMap::new(),
                sequence: 0,
            }),
        }
    }

    /// Adds `by` to the counter of `labels`.
    pub(super) fn inc_by(&self, labels: &S, by: u64) {
        self.inc_by_at(labels, by, Instant::now());
    }

    fn inc_by_at(&self, labels: &S, by: u64, now: Instant) {
        let mut touched = self.touched.lock().expect("series lock");
        self.expire(&mut touched, now);
        touched.sequence += 1;
        let stamp = (now, touched.sequence);
        match touched.last.insert(labels.clone(), stamp) {
            Some(previous) => {
                touched.by_age.remove(&previous);
            }
            None => {
                while touched.last.len() > self.limits.max
                    && self.drop_oldest(&mut touched, "limit")
                {}
            }
        }
        touched.by_age.insert(stamp, labels.clone());
        self.family.get_or_create(labels).inc_by(by);
    }

    /// Removes the label sets idle for too long; called before each scrape
    /// too, so they go even when nothing is counted.
    pub(super) fn expire_idle(&self) {
        let mut touched = self.touched.lock().expect("series lock");
        self.expire(&mut touched, Instant::now());
    }

    fn expire(&self, touched: &mut Touched<S>, now: Instant) {
        while let Some((&(at, _), _)) = touched.by_age.first_key_value() {
            if now.saturating_duration_since(at) < self.limits.idle {
                break;
            }
            self.drop_oldest(touched, "idle");
        }
    }

    /// Whether there was one to drop.
    fn drop_oldest(&self, touched: &mut Touched<S>, reason: &'static str) -> bool {
        let Some((_, labels)) = touched.by_age.pop_first() else {
            return false;
        };
        touched.last.remove(&labels);
        self.family.remove(&labels);
        self.dropped
            .get_or_create(&DroppedLabels {
                metric: self.metric,
                reason,
            })
            .inc();
        true
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::{encoding::text::encode, registry::Registry};

    use super::*;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct PodLabels {
        pod: String,
    }

    fn pod(name: &str) -> PodLabels {
        PodLabels {
            pod: name.to_owned(),
        }
    }

    fn counters(limits: SeriesLimits) -> (BoundedCounters<PodLabels>, Registry) {
        let mut registry = Registry::with_prefix("oom");
        let family = Family::default();
        let dropped = Family::default();
        registry.register("kills", "kills", family.clone());
        registry.register("metric_series_dropped", "dropped", dropped.clone());
        (
            BoundedCounters::new(family, "oom_kills_total", dropped, limits),
            registry,
        )
    }

    fn text(registry: &Registry) -> String {
        let mut text = String::new();
        encode(&mut text, registry).expect("encode");
        text
    }

    #[test]
    fn a_pod_not_counted_for_the_idle_time_is_forgotten_and_the_drop_counted() {
        let hour = Duration::from_secs(3600);
        let (kills, registry) = counters(SeriesLimits {
            idle: 2 * hour,
            max: 100,
        });
        let start = Instant::now();
        kills.inc_by_at(&pod("cron-29001"), 1, start);
        kills.inc_by_at(&pod("web-0"), 1, start);
        kills.inc_by_at(&pod("web-0"), 1, start + hour + hour / 2);
        kills.inc_by_at(
            &pod("cron-29002"),
            1,
            start + 2 * hour + Duration::from_secs(1),
        );

        let text = text(&registry);
        assert!(
            !text.contains("cron-29001"),
            "the finished Job's pod is gone:\n{text}"
        );
        assert!(
            text.contains("oom_kills_total{pod=\"web-0\"} 2"),
            "a pod counted within the idle time keeps its count:\n{text}"
        );
        assert!(
            text.contains("oom_kills_total{pod=\"cron-29002\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "oom_metric_series_dropped_total{metric=\"oom_kills_total\",reason=\"idle\"} 1"
            ),
            "the expiry is counted:\n{text}"
        );
    }

    #[test]
    fn past_the_limit_the_least_recently_counted_pod_makes_room() {
        let (kills, registry) = counters(SeriesLimits {
            idle: Duration::from_secs(3600),
            max: 2,
        });
        let start = Instant::now();
        kills.inc_by_at(&pod("a"), 1, start);
        kills.inc_by_at(&pod("b"), 1, start);
        kills.inc_by_at(&pod("a"), 1, start);
        kills.inc_by_at(&pod("c"), 1, start);

        let text = text(&registry);
        assert!(
            !text.contains("pod=\"b\""),
            "b was counted longest ago:\n{text}"
        );
        assert!(text.contains("oom_kills_total{pod=\"a\"} 2"), "{text}");
        assert!(text.contains("oom_kills_total{pod=\"c\"} 1"), "{text}");
        assert!(
            text.contains(
                "oom_metric_series_dropped_total{metric=\"oom_kills_total\",reason=\"limit\"} 1"
            ),
            "the overflow is counted:\n{text}"
        );
    }
}
