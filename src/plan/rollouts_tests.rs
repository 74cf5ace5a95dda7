//! The rollout decision table: which group, when, and why not.

use super::*;
use crate::rollout::LauncherKind::{AutoScalingGroup, NodeGroup};

const GATE: RolloutGate = RolloutGate {
    dry_run: false,
    operator_allows: true,
    generation: Some(3),
};

fn group(kind: LauncherKind, name: &str, version: &str) -> GroupFacts {
    GroupFacts {
        launcher: crate::testing::launcher(kind, name, version),
        nodes: 2,
        nodes_behind: 2,
        not_ready: 0,
        previous: None,
    }
}

fn record(state: &str, version: i64) -> GroupRolloutStatus {
    GroupRolloutStatus {
        state: state.to_owned(),
        version: Some(version),
        id: Some("u-1".into()),
        failed_generation: Some(3),
        ..Default::default()
    }
}

fn with(mut g: GroupFacts, previous: GroupRolloutStatus) -> GroupFacts {
    g.previous = Some(previous);
    g
}

fn template(groups: Vec<GroupFacts>) -> TemplateFacts {
    TemplateFacts {
        template_id: "lt-1".into(),
        enabled: true,
        min_healthy_percentage: 90,
        wanted: Some(2),
        would_write: false,
        groups,
    }
}

fn start(version: i64, template_version: Option<&str>) -> GroupStep {
    GroupStep::Start {
        version,
        template_version: template_version.map(str::to_owned),
        min_healthy_percentage: 90,
    }
}

/// The state and message of a shown record.
fn shown(step: &GroupStep) -> (&str, &str) {
    match step {
        GroupStep::Show(r) => (r.state.as_str(), r.message.as_deref().unwrap_or_default()),
        other => panic!("not a shown record: {other:?}"),
    }
}

fn decide_one(groups: Vec<GroupFacts>, gate: RolloutGate) -> Vec<GroupStep> {
    decide(&[template(groups)], gate).remove(0)
}

#[test]
fn one_group_at_a_time_in_order() {
    let steps = decide_one(
        vec![group(NodeGroup, "a", "1"), group(NodeGroup, "b", "1")],
        GATE,
    );
    assert_eq!(steps[0], start(2, None));
    assert_eq!(shown(&steps[1]).0, state::PENDING);
}

#[test]
fn a_rollout_in_progress_holds_the_others_across_templates() {
    let running = template(vec![with(
        group(NodeGroup, "a", "1"),
        record(state::IN_PROGRESS, 2),
    )]);
    let other = template(vec![group(AutoScalingGroup, "web", "1")]);
    let steps = decide(&[running, other], GATE);
    assert_eq!(steps[0][0], GroupStep::Keep);
    let (state, message) = shown(&steps[1][0]);
    assert_eq!(state, state::PENDING);
    assert!(message.contains("NodeGroup a"), "{message}");
}

#[test]
fn after_success_the_next_group_starts() {
    let steps = decide_one(
        vec![
            with(group(NodeGroup, "a", "2"), record(state::SUCCESSFUL, 2)),
            group(NodeGroup, "b", "1"),
        ],
        GATE,
    );
    assert_eq!(steps, vec![GroupStep::Keep, start(2, None)]);
}

#[test]
fn a_failure_stops_further_rollouts_until_the_spec_changes() {
    let groups = || {
        vec![
            with(group(NodeGroup, "a", "1"), record(state::FAILED, 2)),
            group(NodeGroup, "b", "1"),
        ]
    };
    let steps = decide_one(groups(), GATE);
    assert_eq!(steps[0], GroupStep::Keep);
    let (state, message) = shown(&steps[1]);
    assert_eq!(state, state::WAITING);
    assert!(message.contains("NodeGroup a failed"), "{message}");
    // An edited spec (new generation) tries again, from the failed group.
    let edited = RolloutGate {
        generation: Some(4),
        ..GATE
    };
    let steps = decide_one(groups(), edited);
    assert_eq!(steps[0], start(2, None));
    // So does a new wanted version.
    let mut newer = template(groups());
    newer.wanted = Some(3);
    assert_eq!(decide(&[newer], GATE)[0][0], start(3, None));
}

#[test]
fn cancelled_counts_as_failed() {
    let steps = decide_one(
        vec![
            with(group(NodeGroup, "a", "1"), record(state::CANCELLED, 2)),
            group(NodeGroup, "b", "1"),
        ],
        GATE,
    );
    assert_eq!(shown(&steps[1]).0, state::WAITING);
}

#[test]
fn a_version_is_never_rolled_twice_to_a_group() {
    // The refresh succeeded but nodes stay behind (the AMI ignores the value): no second start.
    let mut g = with(
        group(AutoScalingGroup, "web", "$Default"),
        record(state::SUCCESSFUL, 2),
    );
    g.nodes_behind = 2;
    assert_eq!(decide_one(vec![g], GATE), vec![GroupStep::Keep]);
    // In progress (after a restart, from the status): followed, not started.
    let g = with(group(NodeGroup, "a", "1"), record(state::IN_PROGRESS, 2));
    assert_eq!(decide_one(vec![g], GATE), vec![GroupStep::Keep]);
}

#[test]
fn a_busy_group_or_not_ready_nodes_wait_and_hold_the_rest() {
    let mut busy = group(NodeGroup, "a", "1");
    busy.launcher.busy = Some("UPDATING".into());
    let steps = decide_one(vec![busy, group(NodeGroup, "b", "1")], GATE);
    let (state, message) = shown(&steps[0]);
    assert_eq!(state, state::WAITING);
    assert!(message.contains("UPDATING"), "{message}");
    assert_eq!(shown(&steps[1]).0, state::PENDING);

    let mut sick = group(NodeGroup, "a", "1");
    sick.not_ready = 1;
    let steps = decide_one(vec![sick], GATE);
    assert!(
        shown(&steps[0])
            .1
            .contains("1 node(s) of the group are NotReady")
    );
}

#[test]
fn dry_run_and_an_operator_without_rollouts_start_nothing() {
    let groups = || {
        vec![
            group(NodeGroup, "a", "1"),
            group(AutoScalingGroup, "w", "1"),
        ]
    };
    let dry = RolloutGate {
        dry_run: true,
        ..GATE
    };
    let steps = decide_one(groups(), dry);
    for step in &steps {
        assert_eq!(shown(step).0, state::WOULD_START);
    }
    assert!(
        shown(&steps[0])
            .1
            .contains("UpdateNodegroupVersion of node group a")
    );
    assert!(
        shown(&steps[1])
            .1
            .contains("StartInstanceRefresh of Auto Scaling group w")
    );

    let off = RolloutGate {
        operator_allows: false,
        ..GATE
    };
    let steps = decide_one(groups(), off);
    assert!(shown(&steps[0]).1.contains("--rollouts"));
    assert_eq!(shown(&steps[1]).0, state::PENDING);
}

#[test]
fn dry_run_before_the_template_is_written_says_both_steps() {
    let mut unsynced = template(vec![group(NodeGroup, "a", "1")]);
    unsynced.wanted = None;
    unsynced.would_write = true;
    let dry = RolloutGate {
        dry_run: true,
        ..GATE
    };
    let steps = decide(&[unsynced.clone()], dry).remove(0);
    let (state, message) = shown(&steps[0]);
    assert_eq!(state, state::WOULD_START);
    assert!(
        message.contains("would write a new version of lt-1"),
        "{message}"
    );
    // Enforce never gets here without a version; nothing is shown.
    assert_eq!(decide(&[unsynced], GATE), vec![vec![GroupStep::Clear]]);
}

#[test]
fn auto_scaling_groups_roll_by_version_or_by_nodes_behind() {
    // $Default: new instances already get the version; only nodes behind need a refresh.
    let mut current = group(AutoScalingGroup, "web", "$Default");
    current.nodes_behind = 0;
    assert_eq!(decide_one(vec![current], GATE), vec![GroupStep::Clear]);
    let behind = group(AutoScalingGroup, "web", "$Default");
    assert_eq!(
        decide_one(vec![behind], GATE),
        vec![start(2, Some("$Default"))]
    );
    // Pinned: the refresh's desired configuration moves it to the wanted version.
    let pinned = group(AutoScalingGroup, "web", "1");
    assert_eq!(decide_one(vec![pinned], GATE), vec![start(2, Some("2"))]);
    // A managed node group on the wanted version needs nothing, whatever its nodes say.
    let ng = group(NodeGroup, "a", "2");
    assert_eq!(decide_one(vec![ng], GATE), vec![GroupStep::Clear]);
}

#[test]
fn a_mixed_instances_group_that_pins_a_version_waits_without_blocking_the_next() {
    let mut mixed = group(AutoScalingGroup, "spot", "1");
    mixed.launcher.mixed_instances = true;
    let steps = decide_one(vec![mixed, group(NodeGroup, "b", "1")], GATE);
    let (state, message) = shown(&steps[0]);
    assert_eq!(state, state::WAITING);
    assert!(
        message.contains("mixed-instances policy pins version 1"),
        "{message}"
    );
    assert_eq!(steps[1], start(2, None));
    // On $Default it is refreshed with its own configuration.
    let mut mixed = group(AutoScalingGroup, "spot", "$Default");
    mixed.launcher.mixed_instances = true;
    assert_eq!(decide_one(vec![mixed], GATE), vec![start(2, None)]);
}

#[test]
fn rollout_off_or_a_template_not_in_sync_starts_nothing() {
    let mut off = template(vec![group(NodeGroup, "a", "1")]);
    off.enabled = false;
    assert_eq!(decide(&[off], GATE), vec![vec![GroupStep::Clear]]);
    let mut unsynced = template(vec![
        with(group(NodeGroup, "a", "1"), record(state::SUCCESSFUL, 1)),
        group(NodeGroup, "b", "1"),
    ]);
    unsynced.wanted = None;
    assert_eq!(
        decide(&[unsynced], GATE),
        vec![vec![GroupStep::Keep, GroupStep::Clear]]
    );
}

#[test]
fn the_condition_shows_the_worst_record() {
    let records = [
        ("a", record(state::SUCCESSFUL, 2)),
        ("b", record(state::PENDING, 2)),
        ("c", record(state::IN_PROGRESS, 2)),
    ];
    let of = |records: &[(&str, GroupRolloutStatus)], dry_run| {
        condition(records.iter().map(|(n, r)| (*n, r)), true, dry_run).expect("a condition")
    };
    let c = of(&records, false);
    assert_eq!((c.status, c.reason), (false, Reason::RolloutInProgress));
    assert!(c.message.starts_with("c: InProgress"), "{}", c.message);
    let failed = [
        ("a", record(state::FAILED, 2)),
        ("b", record(state::IN_PROGRESS, 2)),
    ];
    assert_eq!(of(&failed, false).reason, Reason::RolloutFailed);
    let done = [("a", record(state::SUCCESSFUL, 2))];
    let c = of(&done, false);
    assert_eq!((c.status, c.reason), (true, Reason::RolledOut));
    assert_eq!(of(&[], true).reason, Reason::DryRun);
    let would = [("a", record(state::WOULD_START, 2))];
    assert_eq!(of(&would, true).reason, Reason::DryRun);
    assert!(!of(&would, true).status);
    assert_eq!(condition(std::iter::empty(), false, false), None);
}

#[test]
fn following_an_update_keeps_its_record_and_stamps_a_failure() {
    let previous = record(state::IN_PROGRESS, 2);
    let progress = crate::rollout::UpdateProgress {
        id: "u-1".into(),
        state: UpdateState::Failed,
        status: "Failed".into(),
        percent_complete: None,
        reason: Some("PodEvictionFailure: Reached max retries".into()),
    };
    let next = followed(&previous, &progress, Some(7));
    assert_eq!(next.state, state::FAILED);
    assert_eq!(next.failed_generation, Some(7));
    assert_eq!(next.id.as_deref(), Some("u-1"));
    assert_eq!(
        next.message.as_deref(),
        Some("Failed: PodEvictionFailure: Reached max retries")
    );
}
