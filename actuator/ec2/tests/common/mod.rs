//! moto on 127.0.0.1 for the EC2 provider's tests, and a fault layer over the narrow API.
//!
//! The tests need `moto[server]` in the workspace's `.venv` (`./scripts/test` installs it) or
//! a Python with moto named by `BERTH_MOTO_PYTHON`. Without it they fail, never skip.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::config::{Credentials, SharedCredentialsProvider};
use berth_ec2::api::{
    ApiResult, Ec2Api, Ec2Instance, Filter, FleetError, FleetRequest, FleetResult, Image,
    InstanceTypeInfo, LaunchTemplate, LaunchTemplateData, SecurityGroup, Subnet, Tags,
};

/// Starts moto in-process on 127.0.0.1:0, prints the port, then takes seeding commands (one
/// JSON object per line) until its stdin closes. Seeding goes through moto's own Python API
/// because moto refuses `PutParameter` under `/aws/` (AWS-owned names), where the EKS AMI
/// parameters live.
const LAUNCHER: &str = r#"
import json, sys, time
from moto.server import ThreadedMotoServer
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ssm.models import ssm_backends, Parameter
# moto prints warnings on stdout: keep stdout for this protocol alone.
reply = sys.stdout
sys.stdout = sys.stderr
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
print(f"PORT {port}", file=reply, flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "ssm":
        params = ssm_backends[DEFAULT_ACCOUNT_ID][cmd["region"]]._parameters
        versions = params[cmd["name"]]
        versions.append(Parameter(
            account_id=DEFAULT_ACCOUNT_ID, name=cmd["name"], value=cmd["value"],
            parameter_type="String", description=None, allowed_pattern=None, keyid=None,
            last_modified_date=time.time(), version=len(versions) + 1, data_type="text"))
    print("OK", file=reply, flush=True)
server.stop()
"#;

/// An EC2NodeClass named `default` whose selectors match what [`fixture`] tags
/// (`karpenter.sh/discovery: ci`), with the role the tests create.
pub const NODE_CLASS: &str = "apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata:
  name: default
spec:
  role: KarpenterNodeRole-ci
  amiSelectorTerms:
    - alias: al2023@latest
  subnetSelectorTerms:
    - tags:
        karpenter.sh/discovery: ci
  securityGroupSelectorTerms:
    - tags:
        karpenter.sh/discovery: ci
";

/// Creates the IAM role [`NODE_CLASS`] names, so its instance profile can be made.
pub async fn create_node_role(conf: &aws_config::SdkConfig) {
    aws_sdk_iam::Client::new(conf)
        .create_role()
        .role_name("KarpenterNodeRole-ci")
        .assume_role_policy_document("{}")
        .send()
        .await
        .unwrap();
}

pub const AL2023_X86: &str =
    "/aws/service/eks/optimized-ami/1.33/amazon-linux-2023/x86_64/standard/recommended/image_id";

pub struct Fixture {
    pub moto: Moto,
    pub conf: aws_config::SdkConfig,
    pub ec2: aws_sdk_ec2::Client,
    pub subnets: Vec<(String, String)>,
    pub security_group: String,
    pub amis: Vec<String>,
}

/// A VPC with two subnets (us-east-1a, us-east-1b) and a security group tagged for discovery,
/// and the AL2023 alias's SSM parameter (which moto lacks) seeded through moto's own API.
pub async fn fixture() -> Fixture {
    let moto = Moto::start();
    let conf = moto.sdk_config().await;
    let ec2 = aws_sdk_ec2::Client::new(&conf);
    use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
    let tagged = |rt: ResourceType| {
        TagSpecification::builder()
            .resource_type(rt)
            .tags(
                Tag::builder()
                    .key("karpenter.sh/discovery")
                    .value("ci")
                    .build(),
            )
            .build()
    };
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc()
        .unwrap()
        .vpc_id()
        .unwrap()
        .to_owned();
    let mut subnets = Vec::new();
    for (i, zone) in ["us-east-1a", "us-east-1b"].into_iter().enumerate() {
        let s = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(format!("10.0.{}.0/24", i + 1))
            .availability_zone(zone)
            .tag_specifications(tagged(ResourceType::Subnet))
            .send()
            .await
            .unwrap();
        subnets.push((
            s.subnet().unwrap().subnet_id().unwrap().to_owned(),
            zone.to_owned(),
        ));
    }
    let security_group = ec2
        .create_security_group()
        .group_name("berth-nodes")
        .description("nodes")
        .vpc_id(&vpc)
        .tag_specifications(tagged(ResourceType::SecurityGroup))
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_owned();
    let images = ec2.describe_images().owners("amazon").send().await.unwrap();
    let amis: Vec<String> = images
        .images()
        .iter()
        .filter(|i| i.architecture().map(|a| a.as_str()) == Some("x86_64"))
        .filter_map(|i| i.image_id().map(str::to_owned))
        .take(2)
        .collect();
    assert_eq!(amis.len(), 2, "moto ships x86_64 images");
    moto.seed_parameter(AL2023_X86, &amis[0]);
    Fixture {
        moto,
        conf,
        ec2,
        subnets,
        security_group,
        amis,
    }
}

/// A moto server for one test; stopped (and killed) when dropped.
pub struct Moto {
    child: Child,
    commands: Mutex<(
        std::process::ChildStdin,
        BufReader<std::process::ChildStdout>,
    )>,
    pub endpoint: String,
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_MOTO_PYTHON") {
        return PathBuf::from(p);
    }
    // The workspace root's .venv, whichever crate's tests include this module.
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let venv = here
        .ancestors()
        .map(|d| d.join(".venv/bin/python"))
        .find(|p| p.exists());
    venv.unwrap_or_else(|| {
        panic!(
            "moto is not installed: no .venv/bin/python above {}. Run ./scripts/test (it \
             creates .venv with moto[server]) or set BERTH_MOTO_PYTHON to a Python that has \
             moto.",
            here.display()
        )
    })
}

impl Moto {
    pub fn start() -> Self {
        let mut child = Command::new(python())
            .arg("-c")
            .arg(LAUNCHER)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read moto's port");
        let port: u16 = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                panic!("moto did not start (said {line:?}); is moto[server] installed?")
            });
        Self {
            child,
            commands: Mutex::new((stdin, stdout)),
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Sets an SSM parameter in moto's backend, AWS-owned names included (a new version when
    /// it exists).
    pub fn seed_parameter(&self, name: &str, value: &str) {
        use std::io::Write;
        let mut guard = self.commands.lock().unwrap();
        let (stdin, stdout) = &mut *guard;
        let cmd =
            serde_json::json!({"op": "ssm", "region": "us-east-1", "name": name, "value": value});
        writeln!(stdin, "{cmd}").expect("send to moto");
        stdin.flush().expect("send to moto");
        let mut reply = String::new();
        stdout.read_line(&mut reply).expect("moto's reply");
        assert_eq!(reply.trim(), "OK", "moto could not seed {name}");
    }

    /// AWS configuration pointing at this server, with static credentials: no test ever
    /// falls through to the default credential chain or the instance-metadata address.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "testing", "testing", None, None, "moto",
            )))
            .load()
            .await
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A clock tests move by hand.
#[derive(Clone)]
pub struct ManualClock(pub Arc<Mutex<SystemTime>>);

impl ManualClock {
    pub fn new() -> Self {
        Self(Arc::new(Mutex::new(SystemTime::now())))
    }

    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }

    pub fn clock(&self) -> berth_ec2::provider::Clock {
        let c = self.0.clone();
        Arc::new(move || *c.lock().unwrap())
    }
}

/// Wraps an [`Ec2Api`] and makes chosen instance types fail in `CreateFleet` the way EC2 does
/// (moto never reports per-override errors): their overrides are dropped from the request and
/// reported as errors with `code`; counts calls per operation.
pub struct Faulty<A> {
    pub inner: A,
    pub failing: Mutex<BTreeSet<String>>,
    pub code: Mutex<String>,
    pub fleet_requests: Mutex<Vec<FleetRequest>>,
}

impl<A> Faulty<A> {
    pub fn new(inner: A) -> Self {
        Self {
            inner,
            failing: Mutex::default(),
            code: Mutex::new("InsufficientInstanceCapacity".to_owned()),
            fleet_requests: Mutex::default(),
        }
    }

    pub fn fail(&self, instance_type: &str) {
        self.failing
            .lock()
            .unwrap()
            .insert(instance_type.to_owned());
    }
}

impl<A: Ec2Api> Ec2Api for Faulty<A> {
    async fn describe_subnets(&self, filters: Vec<Filter>) -> ApiResult<Vec<Subnet>> {
        self.inner.describe_subnets(filters).await
    }
    async fn describe_security_groups(
        &self,
        filters: Vec<Filter>,
    ) -> ApiResult<Vec<SecurityGroup>> {
        self.inner.describe_security_groups(filters).await
    }
    async fn describe_images(
        &self,
        filters: Vec<Filter>,
        owners: Vec<String>,
    ) -> ApiResult<Vec<Image>> {
        self.inner.describe_images(filters, owners).await
    }
    async fn get_parameter(&self, name: String) -> ApiResult<Option<String>> {
        self.inner.get_parameter(name).await
    }
    async fn create_launch_template(
        &self,
        name: String,
        data: LaunchTemplateData,
        tags: Tags,
    ) -> ApiResult<LaunchTemplate> {
        self.inner.create_launch_template(name, data, tags).await
    }
    async fn describe_launch_templates(
        &self,
        filters: Vec<Filter>,
    ) -> ApiResult<Vec<LaunchTemplate>> {
        self.inner.describe_launch_templates(filters).await
    }
    async fn delete_launch_template(&self, name: String) -> ApiResult<()> {
        self.inner.delete_launch_template(name).await
    }
    async fn create_fleet(&self, mut request: FleetRequest) -> ApiResult<FleetResult> {
        self.fleet_requests.lock().unwrap().push(request.clone());
        let failing = self.failing.lock().unwrap().clone();
        let code = self.code.lock().unwrap().clone();
        let mut errors = Vec::new();
        for lt in &mut request.launch_templates {
            lt.overrides.retain(|o| {
                if failing.contains(&o.instance_type) {
                    errors.push(FleetError {
                        code: code.clone(),
                        message: format!("no capacity for {} in {}", o.instance_type, o.zone),
                        instance_type: Some(o.instance_type.clone()),
                        subnet_id: Some(o.subnet_id.clone()),
                        zone: Some(o.zone.clone()),
                    });
                    false
                } else {
                    true
                }
            });
        }
        request
            .launch_templates
            .retain(|lt| !lt.overrides.is_empty());
        if request.launch_templates.is_empty() {
            return Ok(FleetResult {
                instance_ids: Vec::new(),
                errors,
            });
        }
        let mut result = self.inner.create_fleet(request).await?;
        result.errors.extend(errors);
        Ok(result)
    }
    async fn describe_instances(&self, filters: Vec<Filter>) -> ApiResult<Vec<Ec2Instance>> {
        self.inner.describe_instances(filters).await
    }
    async fn terminate_instances(&self, ids: Vec<String>) -> ApiResult<()> {
        self.inner.terminate_instances(ids).await
    }
    async fn describe_instance_types(&self) -> ApiResult<Vec<InstanceTypeInfo>> {
        self.inner.describe_instance_types().await
    }
    async fn describe_instance_type_offerings(&self) -> ApiResult<Vec<(String, String)>> {
        self.inner.describe_instance_type_offerings().await
    }
    async fn spot_prices(&self) -> ApiResult<BTreeMap<(String, String), f64>> {
        self.inner.spot_prices().await
    }
    async fn on_demand_prices(&self, region: String) -> ApiResult<BTreeMap<String, f64>> {
        self.inner.on_demand_prices(region).await
    }
    async fn get_instance_profile(&self, name: String) -> ApiResult<Option<Vec<String>>> {
        self.inner.get_instance_profile(name).await
    }
    async fn create_instance_profile(&self, name: String, tags: Tags) -> ApiResult<()> {
        self.inner.create_instance_profile(name, tags).await
    }
    async fn add_role_to_instance_profile(&self, profile: String, role: String) -> ApiResult<()> {
        self.inner.add_role_to_instance_profile(profile, role).await
    }
    async fn remove_role_from_instance_profile(
        &self,
        profile: String,
        role: String,
    ) -> ApiResult<()> {
        self.inner
            .remove_role_from_instance_profile(profile, role)
            .await
    }
    async fn delete_instance_profile(&self, name: String) -> ApiResult<()> {
        self.inner.delete_instance_profile(name).await
    }
}
