//! The Events a reconcile raises, from plan and outcomes: what the operator wrote (aws-node,
//! the EKS add-on, launch templates, EC2NodeClasses) and a handover of aws-node to its owner.

use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::{Client, Resource};
use tracing::warn;

use super::desired::truncate;
use crate::apply::{AddonOutcome, NodeClassOutcome, Outcomes};
use crate::crd::NodeNetworkPolicy;
use crate::eks_addon::ADDON_NAME;
use crate::plan::{EnvChange, FleetPlan, NodeClassWrite};

/// Who raises Events.
pub struct EventSink<'a> {
    pub client: &'a Client,
    pub reporter: &'a kube::runtime::events::Reporter,
}

impl EventSink<'_> {
    /// Records an Event about `policy`.
    pub(crate) async fn publish(
        &self,
        policy: &NodeNetworkPolicy,
        reason: &str,
        type_: EventType,
        note: String,
    ) {
        let event = KubeEvent {
            type_,
            reason: reason.to_owned(),
            // Event notes are limited to 1 kB.
            note: Some(truncate(&note, 1000)),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        // A Recorder per Event: kube's Recorder folds every later Event with the same reason
        // about the same object into the first one's series, keeping the first note, so the
        // second of three launch-template updates (or a later env change) would never be seen.
        // The operator publishes only on changes, so there is nothing to fold.
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(err) = recorder.publish(&event, &policy.object_ref(&())).await {
            warn!(%err, reason, "could not record event");
        }
    }
}

/// An Event to raise.
struct Note {
    policy: String,
    reason: &'static str,
    warning: bool,
    note: String,
}

/// Raises the Events of what `outcomes` say was done, in the order it was done.
pub(crate) async fn publish_outcomes(
    sink: &EventSink<'_>,
    policies: &[Arc<NodeNetworkPolicy>],
    plan: &FleetPlan,
    outcomes: &Outcomes,
) {
    for note in notes(plan, outcomes) {
        if let Some(policy) = policies.iter().find(|p| p.name_any() == note.policy) {
            let type_ = if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            sink.publish(policy, note.reason, type_, note.note).await;
        }
    }
}

fn notes(plan: &FleetPlan, outcomes: &Outcomes) -> Vec<Note> {
    let mut notes = Vec::new();
    if let (Some(write), true) = (&plan.daemonset_write, outcomes.daemonset_written) {
        let drift = write.changes.iter().any(|c| c.drift);
        let reverted = write.reverted_by.as_ref().map(|by| {
            format!(
                " (field manager {by} put its value back; a second revert within {} h hands \
                 aws-node over to its owner)",
                crate::plan::owner::REVERT_WINDOW.as_hours()
            )
        });
        notes.push(Note {
            policy: write.policy.clone(),
            reason: if drift {
                "AwsNodeEnvRestored"
            } else {
                "AwsNodeEnvUpdated"
            },
            warning: reverted.is_some(),
            note: format!(
                "{}: {}{}",
                write.reference,
                EnvChange::join(&write.changes),
                reverted.unwrap_or_default()
            ),
        });
    }
    if let Some((policy, message)) = &plan.handover {
        warn!(%policy, %message, "aws-node handed over to its owner");
        notes.push(Note {
            policy: policy.clone(),
            reason: "AwsNodeHandedOver",
            warning: true,
            note: message.clone(),
        });
    }
    if let (AddonOutcome::Sent { update, drift }, Some(write)) =
        (&outcomes.addon, &plan.addon.write)
    {
        notes.push(Note {
            policy: write.policy.clone(),
            reason: if *drift {
                "EksAddonDriftRestored"
            } else {
                "EksAddonUpdated"
            },
            warning: *drift,
            note: format!(
                "EKS add-on {ADDON_NAME} (cluster {}) configurationValues.env: {}; update {}",
                write.cluster,
                EnvChange::join(&write.changes),
                update.id
            ),
        });
    }
    for (policy, results) in &outcomes.templates {
        for note in results.values().filter_map(|r| r.updated.clone()) {
            notes.push(Note {
                policy: policy.clone(),
                reason: "LaunchTemplateUpdated",
                warning: false,
                note,
            });
        }
        for (reason, warning, note) in results.values().flat_map(|r| r.rollout_events.clone()) {
            notes.push(Note {
                policy: policy.clone(),
                reason,
                warning,
                note,
            });
        }
    }
    for (policy, reason, warning, note) in &outcomes.policy_events {
        notes.push(Note {
            policy: policy.clone(),
            reason,
            warning: *warning,
            note: note.clone(),
        });
    }
    for (write, outcome) in &outcomes.node_classes {
        if *outcome == NodeClassOutcome::Written {
            notes.push(Note {
                policy: write.policy.clone(),
                reason: "EC2NodeClassUpdated",
                warning: false,
                note: describe(write),
            });
        }
    }
    notes
}

fn describe(write: &NodeClassWrite) -> String {
    let from = write
        .from
        .map_or_else(|| "unset".to_owned(), |v| v.to_string());
    let mut note = format!(
        "EC2NodeClass {}: spec.kubelet.maxPods {from} -> {} (bounded by {})",
        write.node_class, write.max_pods, write.bounding_type
    );
    if let Some((instance_type, ip_limit)) = &write.from_above_ip_limit {
        note.push_str(&format!(
            "; {from} was more than the {ip_limit} pods the IPs of {instance_type} carry"
        ));
    }
    note
}
