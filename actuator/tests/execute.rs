//! Lifecycle steps carried out against kube-rs's tower-test mock: the requests they make.

use berth_actuator::execute::{Eviction, Executor};
use berth_actuator::store::Kube;
use berth_scheduler_core::model::{Taint, TaintEffect};
use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Send = tower_test::mock::SendResponse<Response<Body>>;

fn mock() -> (Executor, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (
        Executor::new(Kube::new(kube::Client::new(service, "default"))),
        handle,
    )
}

async fn next(handle: &mut Handle) -> (Method, String, Value, Send) {
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

fn reply(send: Send, status: u16, body: Value) {
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
    );
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": reason})
}

fn node(taints: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "ip-10-0-1-5", "resourceVersion": "11", "labels": {"workload": "ci"}},
        "spec": {"providerID": "aws:///us-east-1a/i-1", "taints": taints},
    })
}

fn claim() -> Value {
    json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
        "metadata": {"name": "gitlab-x1", "uid": "uid-1", "resourceVersion": "5"},
        "spec": {"requirements": [], "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}},
    })
}

#[tokio::test]
async fn register_labels_taints_and_owns_the_node_then_marks_the_claim() {
    let (exec, mut handle) = mock();
    let server = tokio::spawn(async move {
        let (method, path, _, send) = next(&mut handle).await;
        assert_eq!(
            (method, path.as_str()),
            (Method::GET, "/api/v1/nodes/ip-10-0-1-5")
        );
        reply(
            send,
            200,
            node(json!([
                {"key": "karpenter.sh/unregistered", "effect": "NoExecute"},
                {"key": "other", "value": "x", "effect": "NoSchedule"},
            ])),
        );
        let (method, path, body, send) = next(&mut handle).await;
        assert_eq!(
            (method, path.as_str()),
            (Method::PATCH, "/api/v1/nodes/ip-10-0-1-5")
        );
        assert_eq!(body["metadata"]["resourceVersion"], "11");
        assert_eq!(
            body["metadata"]["labels"]["karpenter.sh/registered"],
            "true"
        );
        assert_eq!(body["metadata"]["ownerReferences"][0]["kind"], "NodeClaim");
        assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(
            body["spec"]["taints"],
            json!([
                {"key": "other", "value": "x", "effect": "NoSchedule"},
                {"key": "dedicated", "value": "gitlab", "effect": "NoSchedule"},
            ])
        );
        reply(send, 200, node(json!([])));
        let (method, path, _, send) = next(&mut handle).await;
        assert_eq!(
            (method, path.as_str()),
            (Method::GET, "/apis/karpenter.sh/v1/nodeclaims/gitlab-x1")
        );
        reply(send, 200, claim());
        let (method, path, body, send) = next(&mut handle).await;
        assert_eq!(method, Method::PATCH);
        assert_eq!(path, "/apis/karpenter.sh/v1/nodeclaims/gitlab-x1/status");
        assert_eq!(body["status"]["nodeName"], "ip-10-0-1-5");
        assert_eq!(body["status"]["conditions"][0]["type"], "Registered");
        reply(send, 200, claim());
    });
    exec.register(
        "gitlab-x1",
        "uid-1",
        "ip-10-0-1-5",
        &[("karpenter.sh/registered".to_owned(), "true".to_owned())].into(),
        &[Taint {
            key: "dedicated".into(),
            value: "gitlab".into(),
            effect: TaintEffect::NoSchedule,
        }],
    )
    .await
    .unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn a_node_write_that_conflicts_is_read_again_and_retried() {
    let (exec, mut handle) = mock();
    let server = tokio::spawn(async move {
        for (rv, code) in [("11", 409), ("12", 200)] {
            let (_, _, _, send) = next(&mut handle).await;
            let mut n = node(json!([]));
            n["metadata"]["resourceVersion"] = rv.into();
            reply(send, 200, n.clone());
            let (method, _, body, send) = next(&mut handle).await;
            assert_eq!(method, Method::PATCH);
            assert_eq!(body["metadata"]["resourceVersion"], rv);
            assert_eq!(
                body["spec"]["taints"],
                json!([{"key": "karpenter.sh/disrupted", "effect": "NoSchedule"}])
            );
            reply(
                send,
                code,
                if code == 409 {
                    status(409, "Conflict")
                } else {
                    n
                },
            );
        }
    });
    exec.taint_disrupted("ip-10-0-1-5").await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn evictions_report_accepted_blocked_by_a_pdb_or_gone() {
    let (exec, mut handle) = mock();
    let server = tokio::spawn(async move {
        for (code, reason) in [
            (201, "Created"),
            (429, "TooManyRequests"),
            (404, "NotFound"),
        ] {
            let (method, path, body, send) = next(&mut handle).await;
            assert_eq!(method, Method::POST);
            assert_eq!(path, "/api/v1/namespaces/ci/pods/build-1/eviction");
            // NB: kube-rs sends only the metadata (no apiVersion/kind); a server must accept it.
            assert_eq!(body["metadata"]["name"], "build-1");
            let answer = if code == 201 {
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201})
            } else {
                status(code, reason)
            };
            reply(send, code, answer);
        }
    });
    assert_eq!(
        exec.evict("ci", "build-1").await.unwrap(),
        Eviction::Evicted
    );
    assert_eq!(
        exec.evict("ci", "build-1").await.unwrap(),
        Eviction::Blocked
    );
    assert_eq!(exec.evict("ci", "build-1").await.unwrap(), Eviction::Gone);
    server.await.unwrap();
}
