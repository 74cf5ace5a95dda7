//! Fenced writes (#36): with leader election, a replica that does not hold the lease sends no
//! write, checked right before each request, on both doors: the Kubernetes client's tower layer
//! and the AWS SDK interceptor. Reads and the Lease itself always pass.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient};
use aws_smithy_types::body::SdkBody;
use http::{Request, Response};
use kube::client::Body;
use vpc_cni_tuner::fence::{Fence, FenceInterceptor, FenceLayer};

/// A Kubernetes client whose requests reach a recorder that answers `{}` (so GETs of a
/// DaemonSet fail to parse, which is fine: the request went out).
fn kube_client(fence: &Fence) -> (kube::Client, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = seen.clone();
    let inner = tower::service_fn(move |request: Request<Body>| {
        let recorder = recorder.clone();
        async move {
            recorder
                .lock()
                .unwrap()
                .push(format!("{} {}", request.method(), request.uri().path()));
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .status(200)
                    .body(Body::from(
                        br#"{"apiVersion":"v1","kind":"Status","status":"Success"}"#.to_vec(),
                    ))
                    .unwrap(),
            )
        }
    });
    let service = tower::ServiceBuilder::new()
        .layer(FenceLayer(fence.clone()))
        .service(inner);
    (kube::Client::new(service, "default"), seen)
}

async fn send(client: &kube::Client, method: &str, path: &str) -> Result<String, String> {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .body(b"{}".to_vec())
        .unwrap();
    client
        .request_text(request)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn kubernetes_writes_wait_for_the_lease_reads_and_the_lease_do_not() {
    let fence = Fence::open();
    let (client, seen) = kube_client(&fence);
    let ds = "/apis/apps/v1/namespaces/kube-system/daemonsets/aws-node";
    let status = "/apis/tuner.vpccni.io/v1alpha1/nodenetworkpolicies/default/status";
    let lease = "/apis/coordination.k8s.io/v1/namespaces/vpc-cni-tuner/leases/vpc-cni-tuner";
    // Without leader election: open.
    send(&client, "PATCH", ds).await.expect("open");

    fence.elect();
    let denied = send(&client, "PATCH", ds).await.expect_err("no lease yet");
    assert!(
        denied.contains("does not hold the leader lease"),
        "{denied}"
    );
    send(&client, "PATCH", status)
        .await
        .expect_err("status too");
    send(
        &client,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/default/events",
    )
    .await
    .expect_err("Events too");
    send(&client, "GET", ds).await.expect("reads pass");
    send(&client, "PUT", lease)
        .await
        .expect("the election itself passes");

    // Held: writes go out; the lease expires by this replica's clock: they stop, renewed or
    // not.
    fence.held_until(Instant::now() + Duration::from_millis(300));
    send(&client, "PATCH", ds).await.expect("held");
    tokio::time::sleep(Duration::from_millis(350)).await;
    send(&client, "PATCH", ds)
        .await
        .expect_err("expired locally");
    fence.held_until(Instant::now() + Duration::from_secs(10));
    fence.lost();
    send(&client, "PATCH", ds).await.expect_err("lost");

    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            format!("PATCH {ds}"),
            format!("GET {ds}"),
            format!("PUT {lease}"),
            format!("PATCH {ds}"),
        ],
        "no fenced request reached the server"
    );
}

fn ec2(http: StaticReplayClient, fence: &Fence) -> aws_sdk_ec2::Client {
    let config = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .http_client(http)
        .interceptor(FenceInterceptor(fence.clone()))
        .build();
    aws_sdk_ec2::Client::from_conf(config)
}

#[tokio::test]
async fn aws_writes_wait_for_the_lease_reads_do_not() {
    let describe = ReplayEvent::new(
        http::Request::builder()
            .uri("https://ec2.us-east-1.amazonaws.com/")
            .body(SdkBody::empty())
            .unwrap(),
        http::Response::builder()
            .status(200)
            .body(SdkBody::from(
                "<DescribeLaunchTemplatesResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\">\
                 <launchTemplates/></DescribeLaunchTemplatesResponse>",
            ))
            .unwrap(),
    );
    let http = StaticReplayClient::new(vec![describe]);
    let fence = Fence::open();
    fence.elect();
    let client = ec2(http.clone(), &fence);
    let denied = client
        .create_launch_template_version()
        .launch_template_id("lt-0abc")
        .source_version("1")
        .send()
        .await
        .expect_err("no lease: CreateLaunchTemplateVersion is not sent");
    let text = aws_sdk_ec2::error::DisplayErrorContext(&denied).to_string();
    assert!(text.contains("does not hold the leader lease"), "{text}");
    client
        .modify_launch_template()
        .launch_template_id("lt-0abc")
        .default_version("2")
        .send()
        .await
        .expect_err("ModifyLaunchTemplate neither");
    client
        .describe_launch_templates()
        .send()
        .await
        .expect("reads pass");
    assert_eq!(http.actual_requests().count(), 1, "only the read went out");
}
