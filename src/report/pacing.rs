//! Calm status: what changed between a policy's status and the one it should have, and when a
//! change that is only node counts is written. Counts move with every node event; a fleet with
//! Spot churn would otherwise patch every policy's status many times a minute, and every GitOps
//! controller and dashboard that watches the CRD gets each patch. Conditions, decisions and
//! written values are written at once; count-only changes at most once per policy per window
//! (`--status-count-seconds`), and the last counts are written when the window ends.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::crd::NodeNetworkPolicyStatus;

/// What differs between the current status and the desired one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusChange {
    Unchanged,
    /// Only node counts (matched nodes, nodes per type or template, the numbers in condition
    /// messages); whether any node is behind is not a count.
    Counts,
    /// A value: a decision (maxPods, the env, prefix delegation), a written version, an owner.
    Values,
    /// A condition's status or reason, or the observed generation.
    Conditions,
}

impl StatusChange {
    /// The `cause` label of `vpc_cni_tuner_status_writes_total`.
    pub fn cause(self) -> &'static str {
        match self {
            Self::Unchanged => "unchanged",
            Self::Counts => "counts",
            Self::Values => "values",
            Self::Conditions => "conditions",
        }
    }
}

/// Classifies the change from `current` to `desired` (`desired` has its conditions sorted by
/// type, as [`super::desired::desired_status`] builds them).
pub fn classify(
    desired: &NodeNetworkPolicyStatus,
    current: Option<&NodeNetworkPolicyStatus>,
) -> StatusChange {
    let Some(current) = current else {
        return StatusChange::Conditions;
    };
    let mut current = current.clone();
    current.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    if &current == desired {
        return StatusChange::Unchanged;
    }
    let states = |s: &NodeNetworkPolicyStatus| -> Vec<(String, String, String)> {
        s.conditions
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect()
    };
    if states(&current) != states(desired)
        || current.observed_generation != desired.observed_generation
    {
        return StatusChange::Conditions;
    }
    if without_counts(&current) != without_counts(desired) {
        StatusChange::Values
    } else {
        StatusChange::Counts
    }
}

/// `status` with every node count replaced by whether it is zero where that matters (nodes
/// behind), or by zero; digits in condition messages masked.
fn without_counts(status: &NodeNetworkPolicyStatus) -> NodeNetworkPolicyStatus {
    let behind = |n: u32| u32::from(n > 0);
    let mut s = status.clone();
    s.matched_nodes = 0;
    s.excluded_nodes.values_mut().for_each(|n| *n = 0);
    for t in &mut s.instance_types {
        t.nodes_at_target = behind(t.nodes - t.nodes_at_target.min(t.nodes));
        t.nodes = 0;
        t.nodes_with_other_warm_env = t.nodes_with_other_warm_env.map(behind);
    }
    for t in &mut s.launch_templates {
        t.nodes = t.nodes.map(|_| 0);
        t.nodes_behind = t.nodes_behind.map(behind);
        for l in t.launched_by.iter_mut().flatten() {
            l.nodes = l.nodes.map(|_| 0);
            l.nodes_behind = l.nodes_behind.map(behind);
        }
    }
    for c in &mut s.ec2_node_classes {
        c.nodes = 0;
        c.nodes_behind = behind(c.nodes_behind);
    }
    for c in &mut s.conditions {
        c.message = mask_digits(&c.message);
    }
    s
}

/// `message` with each run of digits replaced by `#`.
fn mask_digits(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut in_number = false;
    for ch in message.chars() {
        if ch.is_ascii_digit() {
            if !in_number {
                out.push('#');
            }
            in_number = true;
        } else {
            out.push(ch);
            in_number = false;
        }
    }
    out
}

/// When each policy's status was last written, to pace count-only writes.
#[derive(Debug)]
pub struct StatusPacer {
    window: Duration,
    last_write: Mutex<HashMap<String, Instant>>,
}

impl Default for StatusPacer {
    fn default() -> Self {
        Self::new(Duration::from_secs(60))
    }
}

/// Whether to write a policy's status now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    Write,
    Skip,
    /// A count-only change waits this long (then the counts of that moment are written).
    Later(Duration),
}

impl StatusPacer {
    /// Count-only changes at most once per `window` per policy (`--status-count-seconds`).
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            last_write: Mutex::default(),
        }
    }

    /// Whether `change` to `policy`'s status is written at `now`.
    pub fn pace(&self, policy: &str, change: StatusChange, now: Instant) -> Pace {
        match change {
            StatusChange::Unchanged => Pace::Skip,
            StatusChange::Conditions | StatusChange::Values => Pace::Write,
            StatusChange::Counts => {
                let last = self
                    .last_write
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(policy)
                    .copied();
                match last.map(|at| now.saturating_duration_since(at)) {
                    Some(since) if since < self.window => Pace::Later(self.window - since),
                    _ => Pace::Write,
                }
            }
        }
    }

    /// `policy`'s status was written at `now`.
    pub fn written(&self, policy: &str, now: Instant) {
        self.last_write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(policy.to_owned(), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{InstanceTypeStatus, LaunchTemplateStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn status(nodes: u32, at_target: u32, ready_message: &str) -> NodeNetworkPolicyStatus {
        NodeNetworkPolicyStatus {
            observed_generation: Some(1),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "Reconciled".into(),
                message: ready_message.into(),
                observed_generation: Some(1),
                last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
            }],
            matched_nodes: nodes,
            max_pods: Some(110),
            instance_types: vec![InstanceTypeStatus {
                instance_type: "m5.large".into(),
                nodes,
                max_pods: 110,
                nodes_at_target: at_target,
                ..Default::default()
            }],
            launch_templates: vec![LaunchTemplateStatus {
                nodes: Some(nodes),
                nodes_behind: Some(nodes - at_target),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn node_counts_alone_are_counts_and_the_rest_is_not() {
        let current = status(10, 10, "10 nodes planned");
        assert_eq!(classify(&current, Some(&current)), StatusChange::Unchanged);
        assert_eq!(classify(&current, None), StatusChange::Conditions);
        let more = status(12, 12, "12 nodes planned");
        assert_eq!(classify(&more, Some(&current)), StatusChange::Counts);
        // A node behind where none was (or the last one catching up) is not a count.
        let behind = status(12, 11, "12 nodes planned");
        assert_eq!(classify(&behind, Some(&more)), StatusChange::Values);
        assert_eq!(classify(&more, Some(&behind)), StatusChange::Values);
        let more_behind = status(14, 11, "14 nodes planned");
        assert_eq!(classify(&more_behind, Some(&behind)), StatusChange::Counts);
        // A decision.
        let mut other = more.clone();
        other.max_pods = Some(29);
        assert_eq!(classify(&other, Some(&more)), StatusChange::Values);
        // A message that changes in words.
        let words = status(12, 12, "12 nodes planned; one more thing");
        assert_eq!(classify(&words, Some(&more)), StatusChange::Values);
        // A condition's status or reason.
        let mut flipped = more.clone();
        flipped.conditions[0].status = "False".into();
        flipped.conditions[0].reason = "UnknownInstanceType".into();
        assert_eq!(classify(&flipped, Some(&more)), StatusChange::Conditions);
        let mut generation = more.clone();
        generation.observed_generation = Some(2);
        assert_eq!(classify(&generation, Some(&more)), StatusChange::Conditions);
    }

    #[test]
    fn count_only_writes_wait_for_the_window_and_the_rest_does_not() {
        let pacer = StatusPacer::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(pacer.pace("a", StatusChange::Counts, t0), Pace::Write);
        pacer.written("a", t0);
        let t10 = t0 + Duration::from_secs(10);
        assert_eq!(
            pacer.pace("a", StatusChange::Counts, t10),
            Pace::Later(Duration::from_secs(50))
        );
        assert_eq!(pacer.pace("a", StatusChange::Conditions, t10), Pace::Write);
        assert_eq!(pacer.pace("a", StatusChange::Values, t10), Pace::Write);
        assert_eq!(pacer.pace("a", StatusChange::Unchanged, t10), Pace::Skip);
        // Another policy has its own window.
        assert_eq!(pacer.pace("b", StatusChange::Counts, t10), Pace::Write);
        let t60 = t0 + Duration::from_secs(60);
        assert_eq!(pacer.pace("a", StatusChange::Counts, t60), Pace::Write);
    }

    #[test]
    fn digits_are_masked_per_run() {
        assert_eq!(
            mask_digits("12 nodes, 3 behind, maxPods 110"),
            "# nodes, # behind, maxPods #"
        );
    }

    /// Node churn for two simulated minutes: a node joins or leaves every 240 ms (500 events),
    /// each a count-only change. At most three writes: the first, and one per window.
    #[test]
    fn five_hundred_node_events_in_two_minutes_give_at_most_three_count_writes() {
        let pacer = StatusPacer::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let mut current = status(100, 100, "100 nodes planned");
        let mut writes = 0;
        for i in 0..500u32 {
            let now = t0 + Duration::from_millis(u64::from(i) * 240);
            let nodes = 100 + (i % 2);
            let desired = status(nodes, nodes, &format!("{nodes} nodes planned"));
            let change = classify(&desired, Some(&current));
            if pacer.pace("p", change, now) == Pace::Write {
                pacer.written("p", now);
                current = desired;
                writes += 1;
            }
        }
        assert!((1..=3).contains(&writes), "{writes} writes");
    }
}
