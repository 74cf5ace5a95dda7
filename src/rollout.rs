//! Who launches nodes from a launch template, and the state of an update that replaces them: the
//! plain facts the AWS adapters return (EKS `DescribeNodegroup` / `DescribeUpdate`, Auto Scaling
//! `DescribeAutoScalingGroups` / `DescribeInstanceRefreshes`) and the rollout decision reads.
//! Pure: no SDK type.

use std::fmt;

/// The kind of group that launches from a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LauncherKind {
    /// An EKS managed node group (it pins a template version number).
    NodeGroup,
    /// An Auto Scaling group (a version number, `$Default` or `$Latest`).
    AutoScalingGroup,
}

impl LauncherKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NodeGroup => "NodeGroup",
            Self::AutoScalingGroup => "AutoScalingGroup",
        }
    }
}

impl fmt::Display for LauncherKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A group that launches from a template, as AWS describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launcher {
    pub kind: LauncherKind,
    pub name: String,
    /// The template version it launches: a number, `$Default` or `$Latest`.
    pub version: Option<String>,
    /// Another update of the group is running: the node group's status (`UPDATING`), or
    /// filled in later for an Auto Scaling group whose instance refresh is in progress.
    pub busy: Option<String>,
    /// An Auto Scaling group's instance ids (a node group's nodes are found by label).
    pub instances: Vec<String>,
    /// An Auto Scaling group that launches through a mixed-instances policy.
    pub mixed_instances: bool,
}

impl Launcher {
    /// The version it launches as a number (`None` for `$Default`, `$Latest` or unknown).
    pub fn pinned_version(&self) -> Option<i64> {
        self.version.as_deref().and_then(|v| v.parse().ok())
    }
}

/// The state of a node-group update or an instance refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateState {
    InProgress,
    Successful,
    Failed,
    Cancelled,
}

impl UpdateState {
    /// EKS's update status (`InProgress`, `Successful`, `Failed`, `Cancelled`) or an instance
    /// refresh's (`Pending`, `InProgress`, `Baking`, `Cancelling`, `RollbackInProgress`,
    /// `Successful`, `Failed`, `Cancelled`, `RollbackSuccessful`, `RollbackFailed`).
    pub fn parse(status: &str) -> Self {
        match status {
            "Successful" => Self::Successful,
            "Failed" | "RollbackFailed" => Self::Failed,
            "Cancelled" | "RollbackSuccessful" => Self::Cancelled,
            _ => Self::InProgress,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "InProgress",
            Self::Successful => "Successful",
            Self::Failed => "Failed",
            Self::Cancelled => "Cancelled",
        }
    }

    pub fn is_done(self) -> bool {
        self != Self::InProgress
    }
}

/// An update as AWS reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateProgress {
    pub id: String,
    pub state: UpdateState,
    /// AWS's own status word (e.g. `RollbackInProgress`), kept for the message.
    pub status: String,
    pub percent_complete: Option<u32>,
    /// The errors (EKS) or status reason (Auto Scaling).
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_and_update_states_map_to_four() {
        for (status, state) in [
            ("Pending", UpdateState::InProgress),
            ("InProgress", UpdateState::InProgress),
            ("Baking", UpdateState::InProgress),
            ("Cancelling", UpdateState::InProgress),
            ("RollbackInProgress", UpdateState::InProgress),
            ("Successful", UpdateState::Successful),
            ("Failed", UpdateState::Failed),
            ("RollbackFailed", UpdateState::Failed),
            ("Cancelled", UpdateState::Cancelled),
            ("RollbackSuccessful", UpdateState::Cancelled),
        ] {
            assert_eq!(UpdateState::parse(status), state, "{status}");
        }
        assert!(!UpdateState::InProgress.is_done());
    }

    #[test]
    fn only_numbers_pin() {
        let launcher = |v: &str| Launcher {
            kind: LauncherKind::AutoScalingGroup,
            name: "g".into(),
            version: Some(v.into()),
            busy: None,
            instances: Vec::new(),
            mixed_instances: false,
        };
        assert_eq!(launcher("7").pinned_version(), Some(7));
        assert_eq!(launcher("$Default").pinned_version(), None);
        assert_eq!(launcher("$Latest").pinned_version(), None);
    }
}
