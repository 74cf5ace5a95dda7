//! Launch-template sync against an in-process fake EC2: failures become conditions naming the
//! template.

use super::*;
use crate::aws::launch_templates::{LaunchTemplateData, TemplateRef, TemplateVersion};
use crate::crd::UserDataFormatSpec;
use crate::report::desired::synced_condition;

/// A launch-template API whose read and create answer as given; the default-version call
/// must not happen (both scenarios fail before it).
struct Fake {
    read: fn() -> Result<TemplateVersion, Ec2Error>,
    create: fn() -> Result<i64, Ec2Error>,
}

#[async_trait::async_trait]
impl LaunchTemplateApi for Fake {
    async fn read_version(&self, _: &TemplateRef, _: &str) -> Result<TemplateVersion, Ec2Error> {
        (self.read)()
    }
    async fn create_version(&self, _: &TemplateVersion, _: &str, _: &str) -> Result<i64, Ec2Error> {
        (self.create)()
    }
    async fn set_default_version(&self, _: &str, _: i64) -> Result<(), Ec2Error> {
        panic!("no default version without a created one")
    }
    async fn instances_of(&self, _: &str) -> Result<Vec<String>, Ec2Error> {
        Ok(vec![])
    }
    async fn instance_types(
        &self,
        _: &[String],
    ) -> Result<Vec<(String, crate::instance::InstanceLimits)>, Ec2Error> {
        Ok(vec![])
    }
}

/// A template that is deleted between the read and the write.
const DELETED_MID_UPDATE: Fake = Fake {
    read: || {
        Ok(TemplateVersion {
            template_id: "lt-0abc".into(),
            template_name: None,
            version: 1,
            default_version: true,
            data: LaunchTemplateData::with_user_data(
                BASE64.encode("#!/bin/bash\n/etc/eks/bootstrap.sh c\n"),
            ),
        })
    },
    create: || {
        Err(Ec2Error::Api {
            operation: "CreateLaunchTemplateVersion",
            code: "InvalidLaunchTemplateId.NotFound".into(),
            message: "The specified launch template, with template ID lt-0abc, does not exist."
                .into(),
        })
    },
};

/// No permission to read templates.
const DENIED: Fake = Fake {
    read: || {
        Err(Ec2Error::Api {
            operation: "DescribeLaunchTemplateVersions",
            code: "UnauthorizedOperation".into(),
            message: "You are not authorized to perform this operation.".into(),
        })
    },
    create: || panic!("no write without a read"),
};

#[tokio::test]
async fn access_denied_is_a_clear_condition() {
    let spec = LaunchTemplateSpec {
        id: None,
        name: Some("web".into()),
        region: None,
        user_data_format: UserDataFormatSpec::Auto,
        set_default_version: true,
        source_version: "$Default".into(),
    };
    let result = sync_template(&DENIED, &spec, 110, false, &BTreeMap::new()).await;
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
    let spec = LaunchTemplateSpec {
        id: Some("lt-0abc".into()),
        name: None,
        region: None,
        user_data_format: UserDataFormatSpec::Auto,
        set_default_version: true,
        source_version: "$Default".into(),
    };
    let result = sync_template(&DELETED_MID_UPDATE, &spec, 110, false, &BTreeMap::new()).await;
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
