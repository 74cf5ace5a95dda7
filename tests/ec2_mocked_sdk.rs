//! EC2 behaviour moto cannot show, through the AWS SDK with a mocked HTTP layer (no network):
//! the CreateLaunchTemplateVersion request carries SourceVersion and the copied data, throttling
//! is retried with backoff, and AccessDenied is not retried.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::types::{InstanceType, ResponseLaunchTemplateData};
use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient, capture_request};
use aws_smithy_types::body::SdkBody;
use vpc_cni_tuner::aws::launch_templates::{
    LaunchTemplateApi, LaunchTemplateData, SdkLaunchTemplates, TemplateVersion,
};
use vpc_cni_tuner::aws::{instance_types, retry_config, timeout_config};

fn client(http: impl aws_sdk_ec2::config::HttpClient + 'static) -> aws_sdk_ec2::Client {
    let config = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .retry_config(retry_config())
        .timeout_config(timeout_config())
        .http_client(http)
        .build();
    aws_sdk_ec2::Client::from_conf(config)
}

fn response(status: u16, body: &str) -> http::Response<SdkBody> {
    http::Response::builder()
        .status(status)
        .body(SdkBody::from(body.to_owned()))
        .unwrap()
}

fn any_request() -> http::Request<SdkBody> {
    http::Request::builder()
        .uri("https://ec2.us-east-1.amazonaws.com/")
        .body(SdkBody::empty())
        .unwrap()
}

fn ec2_error(code: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>{code}</Code>\
         <Message>{code} for the test</Message></Error></Errors><RequestID>r</RequestID></Response>"
    )
}

const M5_LARGE: &str = "<DescribeInstanceTypesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
<instanceTypeSet><item><instanceType>m5.large</instanceType><vCpuInfo><defaultVCpus>2</defaultVCpus></vCpuInfo>\
<networkInfo><maximumNetworkInterfaces>3</maximumNetworkInterfaces><ipv4AddressesPerInterface>10</ipv4AddressesPerInterface>\
<defaultNetworkCardIndex>0</defaultNetworkCardIndex><networkCards><item><networkCardIndex>0</networkCardIndex>\
<maximumNetworkInterfaces>3</maximumNetworkInterfaces></item></networkCards></networkInfo>\
<hypervisor>nitro</hypervisor><bareMetal>false</bareMetal></item></instanceTypeSet></DescribeInstanceTypesResponse>";

#[tokio::test]
async fn mocked_sdk_create_version_sends_source_version_and_copied_data() {
    let (http, request) = capture_request(Some(
        http::Response::builder()
            .status(200)
            .body(SdkBody::from(
                "<CreateLaunchTemplateVersionResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
                 <launchTemplateVersion><launchTemplateId>lt-0abc</launchTemplateId><versionNumber>4</versionNumber>\
                 </launchTemplateVersion></CreateLaunchTemplateVersionResponse>",
            ))
            .unwrap(),
    ));
    let api = SdkLaunchTemplates::new(client(http));
    let source = TemplateVersion {
        template_id: "lt-0abc".into(),
        template_name: Some("web".into()),
        version: 3,
        default_version: true,
        data: LaunchTemplateData::from_sdk(
            ResponseLaunchTemplateData::builder()
                .image_id("ami-0123")
                .instance_type(InstanceType::M5Large)
                .security_group_ids("sg-1")
                .user_data("b2xk")
                .build(),
        ),
    };
    let version = api
        .create_version(&source, "bmV3", "vpc-cni-tuner: maxPods 110")
        .await
        .expect("created");
    assert_eq!(version, 4);
    let sent = request.expect_request();
    let body = std::str::from_utf8(sent.body().bytes().unwrap())
        .unwrap()
        .to_owned();
    for want in [
        "Action=CreateLaunchTemplateVersion",
        "LaunchTemplateId=lt-0abc",
        "SourceVersion=3",
        "LaunchTemplateData.ImageId=ami-0123",
        "LaunchTemplateData.InstanceType=m5.large",
        "LaunchTemplateData.SecurityGroupId.1=sg-1",
        "LaunchTemplateData.UserData=bmV3",
    ] {
        assert!(body.contains(want), "{want} missing from {body}");
    }
    assert!(!body.contains("b2xk"), "the old user data must not be sent");
}

#[tokio::test]
async fn mocked_sdk_throttling_is_retried_with_backoff() {
    let replay = StaticReplayClient::new(vec![
        ReplayEvent::new(
            any_request(),
            response(503, &ec2_error("RequestLimitExceeded")),
        ),
        ReplayEvent::new(
            any_request(),
            response(503, &ec2_error("RequestLimitExceeded")),
        ),
        ReplayEvent::new(any_request(), response(200, M5_LARGE)),
    ]);
    let found = instance_types::describe(&client(replay.clone()), &["m5.large".into()])
        .await
        .expect("succeeds after retries");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].1.max_enis, 3);
    assert_eq!(replay.actual_requests().count(), 3);
}

#[tokio::test]
async fn mocked_sdk_access_denied_is_a_clear_error_without_retries() {
    let replay = StaticReplayClient::new(vec![ReplayEvent::new(
        any_request(),
        response(403, &ec2_error("UnauthorizedOperation")),
    )]);
    let err = instance_types::describe(&client(replay.clone()), &["m5.large".into()])
        .await
        .expect_err("denied");
    assert_eq!(err.code(), Some("UnauthorizedOperation"));
    assert!(err.to_string().contains("DescribeInstanceTypes"), "{err}");
    assert_eq!(replay.actual_requests().count(), 1, "no retry storm");
}

/// An endpoint on 127.0.0.1 that accepts connections and never answers: the call fails with a
/// timeout instead of hanging the reconcile.
#[tokio::test]
async fn silent_endpoint_times_out_instead_of_hanging() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let config = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .endpoint_url(format!("http://{address}"))
        .retry_config(retry_config())
        // The production timeouts, scaled down so the test is quick.
        .timeout_config(
            aws_sdk_ec2::config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(std::time::Duration::from_millis(200))
                .operation_timeout(std::time::Duration::from_secs(1))
                .build(),
        )
        .build();
    let started = std::time::Instant::now();
    let err = instance_types::describe(
        &aws_sdk_ec2::Client::from_conf(config),
        &["m5.large".into()],
    )
    .await
    .expect_err("times out");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.to_string().to_lowercase().contains("timeout") || err.to_string().contains("timed out"),
        "{err}"
    );
    holder.abort();
}
