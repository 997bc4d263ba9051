//! The Kubernetes NodeClaim store's requests, against kube-rs's tower-test mock.

use berth_actuator::store::{Kube, NodeClaimStore, StoreError};
use berth_scheduler_core::model::{
    CapacityType, Instance, InstanceState, NodeClaim, NodeClassRef, Operator, Requirement,
    Resources,
};
use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn mock() -> (Kube, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Kube::new(kube::Client::new(service, "default")), handle)
}

fn claim() -> NodeClaim {
    let mut c = NodeClaim::new(
        "gitlab-x1",
        "gitlab",
        NodeClassRef {
            group: "karpenter.k8s.aws".into(),
            kind: "EC2NodeClass".into(),
            name: "default".into(),
        },
    );
    c.requirements = vec![Requirement::new(
        "node.kubernetes.io/instance-type",
        Operator::In,
        &["m5.large"],
    )];
    c.requests = Resources::new().with("cpu", 1500);
    c
}

/// The next request: method, path, JSON body.
async fn next(
    handle: &mut Handle,
) -> (
    Method,
    String,
    Value,
    tower_test::mock::SendResponse<Response<Body>>,
) {
    let (req, send) = handle.next_request().await.expect("a request");
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (method, path, body, send)
}

fn reply(send: tower_test::mock::SendResponse<Response<Body>>, status: u16, body: Value) {
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
    );
}

fn stored(finalizers: &[&str], rv: &str) -> Value {
    json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
        "metadata": {"name": "gitlab-x1", "resourceVersion": rv, "finalizers": finalizers},
        "spec": {"requirements": [], "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}},
    })
}

fn conflict() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409, "message": "exists"})
}

#[tokio::test]
async fn create_posts_the_claim_with_the_termination_finalizer_and_tolerates_409() {
    let (store, mut handle) = mock();
    let server = tokio::spawn(async move {
        for status in [201, 409] {
            let (method, path, body, send) = next(&mut handle).await;
            assert_eq!(method, Method::POST);
            assert_eq!(path, "/apis/karpenter.sh/v1/nodeclaims");
            assert_eq!(body["metadata"]["name"], "gitlab-x1");
            assert_eq!(
                body["metadata"]["finalizers"],
                json!(["karpenter.sh/termination"])
            );
            assert_eq!(
                body["metadata"]["labels"]["karpenter.sh/nodepool"],
                "gitlab"
            );
            assert_eq!(body["spec"]["resources"]["requests"]["cpu"], "1500m");
            assert_eq!(body["spec"]["nodeClassRef"]["kind"], "EC2NodeClass");
            reply(send, status, if status == 409 { conflict() } else { body });
        }
    });
    store.create(&claim()).await.unwrap();
    store.create(&claim()).await.unwrap(); // already there: fine
    server.await.unwrap();
}

#[tokio::test]
async fn launched_writes_status_with_the_resource_version_and_retries_a_conflict() {
    let (store, mut handle) = mock();
    let instance = Instance {
        node_claim: "gitlab-x1".into(),
        node_pool: "gitlab".into(),
        provider_id: "aws:///us-east-1a/i-0abc".into(),
        instance_type: "m5.large".into(),
        zone: "us-east-1a".into(),
        capacity_type: CapacityType::Spot,
        image_id: "ami-1".into(),
        capacity: Resources::new().with("cpu", 2000),
        allocatable: Resources::new().with("cpu", 1930),
        labels: Default::default(),
        price: 0.03,
        state: InstanceState::Pending,
        launched_at: std::time::SystemTime::UNIX_EPOCH,
    };
    let server = tokio::spawn(async move {
        for (rv, status) in [("7", 409), ("8", 200)] {
            let (method, path, _, send) = next(&mut handle).await;
            assert_eq!(
                (method, path.as_str()),
                (Method::GET, "/apis/karpenter.sh/v1/nodeclaims/gitlab-x1")
            );
            reply(send, 200, stored(&["karpenter.sh/termination"], rv));
            let (method, path, body, send) = next(&mut handle).await;
            assert_eq!(method, Method::PATCH);
            assert_eq!(path, "/apis/karpenter.sh/v1/nodeclaims/gitlab-x1/status");
            assert_eq!(body["metadata"]["resourceVersion"], rv);
            assert_eq!(body["status"]["providerID"], "aws:///us-east-1a/i-0abc");
            assert_eq!(body["status"]["allocatable"]["cpu"], "1930m");
            let conditions = body["status"]["conditions"].as_array().unwrap();
            assert_eq!(conditions.len(), 1);
            assert_eq!(conditions[0]["type"], "Launched");
            assert_eq!(conditions[0]["status"], "True");
            reply(
                send,
                status,
                if status == 409 {
                    conflict()
                } else {
                    stored(&[], rv)
                },
            );
        }
    });
    store.launched("gitlab-x1", &instance).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn finalize_drops_only_the_termination_finalizer_and_a_missing_claim_is_done() {
    let (store, mut handle) = mock();
    let server = tokio::spawn(async move {
        let (_, _, _, send) = next(&mut handle).await;
        reply(
            send,
            200,
            stored(&["karpenter.sh/termination", "example.com/other"], "3"),
        );
        let (method, path, body, send) = next(&mut handle).await;
        assert_eq!(method, Method::PATCH);
        assert_eq!(path, "/apis/karpenter.sh/v1/nodeclaims/gitlab-x1");
        assert_eq!(body["metadata"]["finalizers"], json!(["example.com/other"]));
        assert_eq!(body["metadata"]["resourceVersion"], "3");
        reply(send, 200, stored(&["example.com/other"], "4"));
        // Second call: already gone.
        let (_, _, _, send) = next(&mut handle).await;
        reply(
            send,
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "gone"}),
        );
    });
    store.finalize("gitlab-x1").await.unwrap();
    store.finalize("gitlab-x1").await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn a_status_write_to_a_missing_claim_is_not_found() {
    let (store, mut handle) = mock();
    let server = tokio::spawn(async move {
        let (_, _, _, send) = next(&mut handle).await;
        reply(
            send,
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "gone"}),
        );
    });
    assert_eq!(
        store
            .launch_failed("gitlab-x1", "InsufficientCapacity")
            .await,
        Err(StoreError::NotFound("gitlab-x1".into()))
    );
    server.await.unwrap();
}
