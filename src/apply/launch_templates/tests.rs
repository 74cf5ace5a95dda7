//! Launch-template sync against an in-process fake EC2: failures become conditions naming the
//! template.

use super::*;
use crate::crd::UserDataFormatSpec;
use crate::report::desired::synced_condition;
use crate::testing::FakeEc2;

/// The template `id`, its default version as the source, made default after a write.
fn template(id: &str) -> LaunchTemplateSpec {
    LaunchTemplateSpec {
        id: Some(id.into()),
        name: None,
        region: None,
        user_data_format: UserDataFormatSpec::Auto,
        set_default_version: true,
        source_version: "$Default".into(),
        rollout: None,
    }
}

/// A template that is deleted between the read and the write.
fn deleted_mid_update() -> FakeEc2 {
    let fake = FakeEc2::default();
    fake.fail(
        "CreateLaunchTemplateVersion",
        (
            "InvalidLaunchTemplateId.NotFound",
            "The specified launch template, with template ID lt-0abc, does not exist.",
        ),
    );
    fake
}

/// No permission to read templates.
fn denied() -> FakeEc2 {
    let fake = FakeEc2::default();
    fake.fail(
        "DescribeLaunchTemplateVersions",
        (
            "UnauthorizedOperation",
            "You are not authorized to perform this operation.",
        ),
    );
    fake
}

#[tokio::test]
async fn access_denied_is_a_clear_condition() {
    let spec = LaunchTemplateSpec {
        id: None,
        name: Some("web".into()),
        region: None,
        user_data_format: UserDataFormatSpec::Auto,
        set_default_version: true,
        source_version: "$Default".into(),
        rollout: None,
    };
    let fake = denied();
    let result = sync_template(&fake, &spec, 110, false, &BTreeMap::new()).await;
    assert!(fake.state().created.is_empty(), "no write without a read");
    let condition = synced_condition(&[result], false);
    assert!(!condition.status);
    assert_eq!(condition.reason, "AccessDenied");
    assert!(
        condition.message.contains("UnauthorizedOperation"),
        "{}",
        condition.message
    );
    assert!(
        condition.message.contains("name=web"),
        "{}",
        condition.message
    );
}

#[tokio::test]
async fn template_deleted_while_being_updated_is_reported_not_retried_blindly() {
    let spec = template("lt-0abc");
    let fake = deleted_mid_update();
    let result = sync_template(&fake, &spec, 110, false, &BTreeMap::new()).await;
    assert!(
        fake.state().defaults.is_empty(),
        "no default version without a created one"
    );
    assert_eq!(result.updated, None);
    assert!(!result.status.in_sync);
    let (reason, message) = result.problem.clone().expect("problem");
    assert_eq!(reason, "LaunchTemplateNotFound");
    assert!(
        message.contains("InvalidLaunchTemplateId.NotFound"),
        "{message}"
    );
    let condition = synced_condition(&[result], false);
    assert!(!condition.status);
    assert_eq!(condition.reason, "LaunchTemplateNotFound");
}

/// Who launches from a template cannot be read (IAM): the sync still works, `launchedBy` is
/// absent and the message says why, also next to DryRun's own message.
#[tokio::test]
async fn unreadable_launchers_are_said_and_do_not_stop_the_sync() {
    let spec = template("lt-0abc");
    let fake = FakeEc2::default();
    fake.fail(
        "DescribeAutoScalingGroups",
        (
            "AccessDenied",
            "not authorized to perform autoscaling:DescribeAutoScalingGroups",
        ),
    );
    let result = sync_template_in(&fake, &spec, 110, true, &BTreeMap::new(), Some("prod")).await;
    assert_eq!(result.problem, None);
    assert_eq!(result.status.launched_by, None);
    let message = result.status.message.expect("a message");
    assert!(message.starts_with("would create a version"), "{message}");
    assert!(
        message.contains("cannot tell which node groups launch from it")
            && message.contains("autoscaling:DescribeAutoScalingGroups"),
        "{message}"
    );
    let written = sync_template_in(&fake, &spec, 110, false, &BTreeMap::new(), None).await;
    assert!(written.status.in_sync);
    assert_eq!(fake.state().created.len(), 1, "the write is not held up");
}
