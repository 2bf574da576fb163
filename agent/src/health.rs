//! Losses the agent must not keep to a counter: a full flow table (new
//! connections go untracked, so the graph misses them) and a full ring
//! buffer (new-flow events are lost; the sweep finds their flows, later).
//!
//! The datapath task feeds the kernel's totals after every sweep; a loss
//! starts an episode, logged as a warning with its rate (again at most
//! every [`WARN_EVERY`] while it lasts), shown by `/healthz` as degraded
//! with the reason, and by the graph, `weir status` and the UI as the time
//! the graph is incomplete. An episode ends after `clear_after` without a
//! loss, and says so; the graph stays flagged for its time.

use std::{
    collections::VecDeque,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// While a loss lasts, the warning is repeated at most this often.
pub const WARN_EVERY: Duration = Duration::from_secs(30);
/// Ended episodes kept for the graph's flag.
const PAST: usize = 32;

/// What was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Packets of new connections the flow table had no room for.
    FlowTableFull,
    /// New-flow events the ring buffer had no room for.
    RingbufFull,
}

impl Loss {
    const ALL: [Self; 2] = [Self::FlowTableFull, Self::RingbufFull];

    /// Whether the graph misses connections because of it.
    #[must_use]
    pub const fn loses_flows(self) -> bool {
        matches!(self, Self::FlowTableFull)
    }
}

/// One stretch of time with losses of one kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Episode {
    /// What was lost.
    pub reason: Loss,
    /// Why it matters and what to do, for people.
    pub message: String,
    /// The graph misses connections for this time.
    pub incomplete: bool,
    /// The first loss was after this time, RFC 3339.
    pub from: String,
    /// The last loss was before this time, RFC 3339 (`None`: it goes on).
    pub until: Option<String>,
    /// Packets (flow table) or events (ring buffer) lost.
    pub lost: u64,
    /// Losses per second over the last sweep (rounded up).
    pub rate_per_second: u64,
}

/// The state of one kind of loss.
#[derive(Debug, Default)]
struct Ongoing {
    from: u64,
    last_loss: u64,
    lost: u64,
    rate: f64,
    warned: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Kernel totals at the last sample, and its time.
    last: Option<([u64; 2], u64)>,
    ongoing: [Option<Ongoing>; 2],
    past: VecDeque<(Loss, Ongoing, u64)>,
    flow_table_capacity: u64,
}

/// The agent's losses; share it as `Arc<Health>`.
#[derive(Debug)]
pub struct Health {
    clear_after: Duration,
    state: Mutex<State>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new(Duration::from_secs(120))
    }
}

fn secs(ns: u64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "seconds for a rate")]
    let s = ns as f64 / 1e9;
    s
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Health {
    /// No loss yet; an episode ends after `clear_after` without a loss.
    #[must_use]
    pub fn new(clear_after: Duration) -> Self {
        Self {
            clear_after,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The flow table's real capacity (for the messages).
    pub fn set_flow_table_capacity(&self, capacity: u64) {
        self.state().flow_table_capacity = capacity;
    }

    /// The kernel's totals of table-full packets and ring-buffer losses at
    /// `now` (Unix ns). The first sample is the baseline: totals of maps
    /// adopted from a previous agent are not this agent's to report.
    pub fn kernel_totals(&self, table_full: u64, ringbuf_full: u64, now: u64) {
        let mut state = self.state();
        let totals = [table_full, ringbuf_full];
        let Some((before, at)) = state.last.replace((totals, now)) else {
            return;
        };
        let capacity = state.flow_table_capacity;
        let elapsed = secs(now.saturating_sub(at)).max(1e-3);
        for (i, loss) in Loss::ALL.into_iter().enumerate() {
            // A total below the last one: the maps were replaced.
            let delta = totals[i].saturating_sub(before[i]);
            if delta > 0 {
                #[expect(clippy::cast_precision_loss, reason = "a rate")]
                let rate = delta as f64 / elapsed;
                let ongoing = state.ongoing[i].get_or_insert_with(|| Ongoing {
                    from: at,
                    ..Ongoing::default()
                });
                ongoing.last_loss = now;
                ongoing.lost += delta;
                ongoing.rate = rate;
                if ongoing.warned == 0 || now.saturating_sub(ongoing.warned) >= nanos(WARN_EVERY) {
                    ongoing.warned = now;
                    warn!(
                        reason = ?loss,
                        lost = ongoing.lost,
                        rate_per_second = format!("{rate:.1}"),
                        since = %crate::timestamp::rfc3339(ongoing.from),
                        "{}",
                        message(loss, ongoing, capacity)
                    );
                }
            } else if let Some(ongoing) = &state.ongoing[i]
                && now.saturating_sub(ongoing.last_loss) >= nanos(self.clear_after)
            {
                let ongoing = state.ongoing[i].take().unwrap_or_default();
                info!(
                    reason = ?loss,
                    lost = ongoing.lost,
                    from = %crate::timestamp::rfc3339(ongoing.from),
                    until = %crate::timestamp::rfc3339(ongoing.last_loss),
                    "{} ended: no loss for {}{}",
                    title(loss),
                    humantime::format_duration(self.clear_after),
                    if loss.loses_flows() {
                        "; the graph stays marked incomplete for that time"
                    } else {
                        ""
                    }
                );
                let until = ongoing.last_loss;
                if state.past.len() == PAST {
                    state.past.pop_front();
                }
                state.past.push_back((loss, ongoing, until));
            } else if let Some(ongoing) = &mut state.ongoing[i] {
                ongoing.rate = 0.0;
            }
        }
    }

    /// Losses going on now (what makes `/healthz` degraded).
    #[must_use]
    pub fn ongoing(&self) -> Vec<Episode> {
        let state = self.state();
        Loss::ALL
            .into_iter()
            .zip(&state.ongoing)
            .filter_map(|(loss, o)| {
                Some(episode(loss, o.as_ref()?, None, state.flow_table_capacity))
            })
            .collect()
    }

    /// Every episode that overlaps `[since, ∞)` (Unix ns), ended ones
    /// first, in order.
    #[must_use]
    pub fn episodes(&self, since: Option<u64>) -> Vec<Episode> {
        let state = self.state();
        let capacity = state.flow_table_capacity;
        let mut all: Vec<Episode> = state
            .past
            .iter()
            .filter(|(_, _, until)| since.is_none_or(|s| *until >= s))
            .map(|(loss, o, until)| episode(*loss, o, Some(*until), capacity))
            .collect();
        all.extend(
            Loss::ALL
                .into_iter()
                .zip(&state.ongoing)
                .filter_map(|(loss, o)| Some(episode(loss, o.as_ref()?, None, capacity))),
        );
        all
    }
}

fn title(loss: Loss) -> &'static str {
    match loss {
        Loss::FlowTableFull => "flow table full",
        Loss::RingbufFull => "ring buffer full",
    }
}

fn message(loss: Loss, o: &Ongoing, capacity: u64) -> String {
    match loss {
        Loss::FlowTableFull => format!(
            "flow table full ({capacity} entries): {} packets of new connections went untracked \
             ({:.1}/s); those connections are missing from the graph: raise --flow-table-entries",
            o.lost, o.rate
        ),
        Loss::RingbufFull => format!(
            "ring buffer full: {} new-flow events lost ({:.1}/s); the sweep still finds their \
             flows, later than the events would have: raise --ringbuf-bytes",
            o.lost, o.rate
        ),
    }
}

fn episode(loss: Loss, o: &Ongoing, until: Option<u64>, capacity: u64) -> Episode {
    Episode {
        reason: loss,
        message: message(loss, o, capacity),
        incomplete: loss.loses_flows(),
        from: crate::timestamp::rfc3339(o.from),
        until: until.map(crate::timestamp::rfc3339),
        lost: o.lost,
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a non-negative rate, far below 2^64"
        )]
        rate_per_second: o.rate.ceil() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_loss_starts_an_episode_that_ends_after_a_quiet_period() {
        let health = Health::new(Duration::from_secs(10));
        health.set_flow_table_capacity(64);
        // The baseline: totals of adopted maps are not reported.
        health.kernel_totals(500, 7, 100 * S);
        assert!(health.ongoing().is_empty());
        health.kernel_totals(500, 7, 102 * S);
        assert!(health.ongoing().is_empty());

        health.kernel_totals(900, 7, 104 * S);
        let ongoing = health.ongoing();
        assert_eq!(ongoing.len(), 1, "{ongoing:?}");
        let e = &ongoing[0];
        assert_eq!(
            (e.reason, e.lost, e.incomplete),
            (Loss::FlowTableFull, 400, true)
        );
        assert_eq!(e.rate_per_second, 200, "{e:?}");
        assert_eq!(e.from, crate::timestamp::rfc3339(102 * S));
        assert_eq!(e.until, None);
        assert!(e.message.contains("64 entries"), "{}", e.message);
        assert!(e.message.contains("--flow-table-entries"), "{}", e.message);

        // Ring buffer losses: degraded too, but the graph is complete.
        health.kernel_totals(1000, 10, 106 * S);
        let ongoing = health.ongoing();
        assert_eq!(ongoing.len(), 2);
        assert_eq!(ongoing[0].lost, 500);
        assert_eq!(
            (ongoing[1].reason, ongoing[1].incomplete),
            (Loss::RingbufFull, false)
        );

        // Quiet, but not for long enough yet.
        health.kernel_totals(1000, 10, 115 * S);
        assert_eq!(health.ongoing().len(), 2);
        health.kernel_totals(1000, 10, 116 * S);
        assert!(health.ongoing().is_empty());
        let past = health.episodes(None);
        assert_eq!(past.len(), 2, "{past:?}");
        assert_eq!(past[0].until, Some(crate::timestamp::rfc3339(106 * S)));
        // Episodes that ended before `since` are not the window's.
        assert!(health.episodes(Some(107 * S)).is_empty());
        assert_eq!(health.episodes(Some(106 * S)).len(), 2);
    }

    #[test]
    fn replaced_maps_do_not_count_as_a_loss() {
        let health = Health::new(Duration::from_secs(10));
        health.kernel_totals(500, 0, S);
        health.kernel_totals(3, 0, 2 * S);
        assert!(health.ongoing().is_empty());
    }
}
