//! The narrow seam between Berth and AWS: only the calls the EC2 provider makes, in plain
//! types, so tests can wrap it (a fault layer that fails chosen instance types) or fake it.
//! [`SdkApi`] implements it with aws-sdk-ec2 and aws-sdk-ssm; no SDK type crosses it.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::SystemTime;

use aws_sdk_ec2::types as ec2;

/// A `Describe*` filter: `tag:<key>`, `tag-key`, `group-name`, ... with accepted values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub name: String,
    pub values: Vec<String>,
}

impl Filter {
    pub fn new(name: &str, values: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        }
    }

    /// `tag:<key>` = value, or `tag-key` = key when the value is `*`, as Karpenter reads
    /// selector tags.
    pub fn tag(key: &str, value: &str) -> Self {
        if value == "*" {
            Self::new("tag-key", &[key])
        } else {
            Self::new(&format!("tag:{key}"), &[value])
        }
    }
}

pub type Tags = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq)]
pub struct Subnet {
    pub id: String,
    pub zone: String,
    pub zone_id: String,
    pub available_ips: i64,
    pub tags: Tags,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SecurityGroup {
    pub id: String,
    pub name: String,
    pub tags: Tags,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub id: String,
    pub name: String,
    /// EC2's spelling: `x86_64`, `arm64`.
    pub architecture: String,
    pub owner: String,
    /// ISO 8601, as EC2 reports it (sorts by time).
    pub created: String,
    pub tags: Tags,
}

/// An EBS volume of a launch template.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockDevice {
    pub device_name: String,
    pub volume_size_gib: Option<i32>,
    pub volume_type: Option<String>,
    pub iops: Option<i32>,
    pub throughput: Option<i32>,
    pub encrypted: Option<bool>,
    pub kms_key_id: Option<String>,
    pub snapshot_id: Option<String>,
    pub delete_on_termination: Option<bool>,
}

/// Instance metadata service options of a launch template.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetadataOptions {
    pub http_endpoint_enabled: bool,
    pub http_tokens_required: bool,
    pub http_put_response_hop_limit: i32,
    pub http_protocol_ipv6_enabled: bool,
}

/// What a launch template carries (everything but the instance type and subnet, which the
/// fleet's overrides choose).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LaunchTemplateData {
    pub image_id: String,
    /// Base64, as EC2 wants it.
    pub user_data: String,
    pub security_group_ids: Vec<String>,
    pub instance_profile: Option<String>,
    pub block_devices: Vec<BlockDevice>,
    pub metadata: MetadataOptions,
    pub detailed_monitoring: bool,
    pub associate_public_ip_address: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LaunchTemplate {
    pub id: String,
    pub name: String,
    pub tags: Tags,
}

/// One (instance type, subnet) a fleet may launch into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetOverride {
    pub instance_type: String,
    pub subnet_id: String,
    pub zone: String,
}

/// A launch template of a fleet with the overrides that use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetLaunchTemplate {
    pub name: String,
    pub overrides: Vec<FleetOverride>,
}

/// A `CreateFleet` of type `instant` for one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetRequest {
    /// One per image (architecture), each with its overrides.
    pub launch_templates: Vec<FleetLaunchTemplate>,
    pub spot: bool,
    /// Idempotency token (the NodeClaim name).
    pub client_token: String,
    /// Tags for the instance and its volumes.
    pub tags: Tags,
}

/// An error EC2 reported for some overrides of a fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetError {
    /// `InsufficientInstanceCapacity`, `MaxSpotInstanceCountExceeded`, ...
    pub code: String,
    pub message: String,
    pub instance_type: Option<String>,
    pub subnet_id: Option<String>,
    pub zone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct FleetResult {
    /// Launched instance ids (at most one for a target capacity of one).
    pub instance_ids: Vec<String>,
    pub errors: Vec<FleetError>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ec2Instance {
    pub id: String,
    pub instance_type: String,
    pub zone: String,
    /// `pending`, `running`, `shutting-down`, `terminated`, `stopping`, `stopped`.
    pub state: String,
    pub spot: bool,
    pub image_id: String,
    pub launched_at: SystemTime,
    pub tags: Tags,
    pub subnet_id: String,
    pub security_group_ids: Vec<String>,
}

/// What `DescribeInstanceTypes` says of one type (the fields Berth uses).
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceTypeInfo {
    pub name: String,
    pub vcpu: u32,
    pub memory_mib: u64,
    /// EC2's spellings (`x86_64`, `arm64`, ...).
    pub architectures: Vec<String>,
    pub gpu_count: u32,
    pub gpu_manufacturer: Option<String>,
    pub gpu_name: Option<String>,
    pub gpu_memory_mib: Option<u64>,
    pub neuron_count: u32,
    pub efa: bool,
    pub max_enis: u32,
    pub ipv4_per_eni: u32,
    pub hypervisor: Option<String>,
    pub bare_metal: bool,
    pub burstable: bool,
    /// `on-demand`, `spot`.
    pub usage_classes: Vec<String>,
    pub local_storage_gb: Option<u64>,
}

/// A failed AWS call: `code` is the service's error code (`InvalidParameterValue`,
/// `UnauthorizedOperation`, ...) or `Transport` when no answer came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{operation}: {code}: {message}")]
pub struct ApiError {
    pub operation: &'static str,
    pub code: String,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Every AWS call the EC2 provider makes. Implementations must be cheap to share.
pub trait Ec2Api: Send + Sync + 'static {
    fn describe_subnets(
        &self,
        filters: Vec<Filter>,
    ) -> impl Future<Output = ApiResult<Vec<Subnet>>> + Send;
    fn describe_security_groups(
        &self,
        filters: Vec<Filter>,
    ) -> impl Future<Output = ApiResult<Vec<SecurityGroup>>> + Send;
    /// Images matching `filters`, restricted to `owners` when not empty.
    fn describe_images(
        &self,
        filters: Vec<Filter>,
        owners: Vec<String>,
    ) -> impl Future<Output = ApiResult<Vec<Image>>> + Send;
    /// An SSM parameter's value; `None` when it does not exist.
    fn get_parameter(&self, name: String)
    -> impl Future<Output = ApiResult<Option<String>>> + Send;
    fn create_launch_template(
        &self,
        name: String,
        data: LaunchTemplateData,
        tags: Tags,
    ) -> impl Future<Output = ApiResult<LaunchTemplate>> + Send;
    fn describe_launch_templates(
        &self,
        filters: Vec<Filter>,
    ) -> impl Future<Output = ApiResult<Vec<LaunchTemplate>>> + Send;
    fn delete_launch_template(&self, name: String) -> impl Future<Output = ApiResult<()>> + Send;
    fn create_fleet(
        &self,
        request: FleetRequest,
    ) -> impl Future<Output = ApiResult<FleetResult>> + Send;
    /// Instances matching `filters` in any state but `terminated`.
    fn describe_instances(
        &self,
        filters: Vec<Filter>,
    ) -> impl Future<Output = ApiResult<Vec<Ec2Instance>>> + Send;
    fn terminate_instances(&self, ids: Vec<String>) -> impl Future<Output = ApiResult<()>> + Send;
    fn describe_instance_types(
        &self,
    ) -> impl Future<Output = ApiResult<Vec<InstanceTypeInfo>>> + Send;
    /// (instance type, zone) pairs offered in the region.
    fn describe_instance_type_offerings(
        &self,
    ) -> impl Future<Output = ApiResult<Vec<(String, String)>>> + Send;
    /// Latest spot price per (instance type, zone), USD/hour.
    fn spot_prices(
        &self,
    ) -> impl Future<Output = ApiResult<BTreeMap<(String, String), f64>>> + Send;
    /// On-demand Linux price per instance type in `region`, USD/hour (the AWS Pricing API).
    fn on_demand_prices(
        &self,
        region: String,
    ) -> impl Future<Output = ApiResult<BTreeMap<String, f64>>> + Send;
    /// The role names of an IAM instance profile; `None` when it does not exist.
    fn get_instance_profile(
        &self,
        name: String,
    ) -> impl Future<Output = ApiResult<Option<Vec<String>>>> + Send;
    /// Creates an instance profile (path `/`) with tags; `EntityAlreadyExists` when it exists.
    fn create_instance_profile(
        &self,
        name: String,
        tags: Tags,
    ) -> impl Future<Output = ApiResult<()>> + Send;
    fn add_role_to_instance_profile(
        &self,
        profile: String,
        role: String,
    ) -> impl Future<Output = ApiResult<()>> + Send;
    fn remove_role_from_instance_profile(
        &self,
        profile: String,
        role: String,
    ) -> impl Future<Output = ApiResult<()>> + Send;
    /// Deletes an instance profile (which must hold no role); `Ok` when it does not exist.
    fn delete_instance_profile(&self, name: String) -> impl Future<Output = ApiResult<()>> + Send;
}

/// [`Ec2Api`] over aws-sdk-ec2, aws-sdk-ssm, aws-sdk-pricing and aws-sdk-iam.
#[derive(Debug, Clone)]
pub struct SdkApi {
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
    pricing: aws_sdk_pricing::Client,
    iam: aws_sdk_iam::Client,
}

impl SdkApi {
    pub fn new(
        ec2: aws_sdk_ec2::Client,
        ssm: aws_sdk_ssm::Client,
        pricing: aws_sdk_pricing::Client,
        iam: aws_sdk_iam::Client,
    ) -> Self {
        Self {
            ec2,
            ssm,
            pricing,
            iam,
        }
    }

    /// Clients from a shared AWS configuration (region, credentials, endpoint). The Pricing
    /// API lives in us-east-1 whatever the cluster's region.
    pub fn from_conf(conf: &aws_config::SdkConfig) -> Self {
        Self::build(conf, None)
    }

    /// [`SdkApi::from_conf`], with every AWS operation the clients start recorded in `log`.
    pub fn from_conf_logged(conf: &aws_config::SdkConfig, log: &CallLog) -> Self {
        Self::build(conf, Some(log))
    }

    fn build(conf: &aws_config::SdkConfig, log: Option<&CallLog>) -> Self {
        // Each SDK's config builder has its own `interceptor`; the trait is the same one.
        macro_rules! client {
            ($sdk:ident, $builder:expr) => {{
                let mut b = $builder;
                if let Some(log) = log {
                    b = b.interceptor(log.clone());
                }
                $sdk::Client::from_conf(b.build())
            }};
        }
        Self::new(
            client!(aws_sdk_ec2, aws_sdk_ec2::config::Builder::from(conf)),
            client!(aws_sdk_ssm, aws_sdk_ssm::config::Builder::from(conf)),
            client!(
                aws_sdk_pricing,
                aws_sdk_pricing::config::Builder::from(conf)
                    .region(aws_sdk_pricing::config::Region::new("us-east-1"))
            ),
            client!(aws_sdk_iam, aws_sdk_iam::config::Builder::from(conf)),
        )
    }
}

/// The AWS operations an [`SdkApi`] started, as IAM action names (`ec2:CreateFleet`,
/// `ssm:GetParameter`, ...), whether they succeeded or not: what the actuator's IAM policy
/// must allow. An SDK interceptor fills it as each operation starts; clones share one log.
#[derive(Debug, Clone, Default)]
pub struct CallLog(std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>);

impl CallLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every action recorded so far, sorted.
    pub fn actions(&self) -> std::collections::BTreeSet<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl aws_sdk_ec2::config::Intercept for CallLog {
    fn name(&self) -> &'static str {
        "berth-call-log"
    }

    // Before serialization, not before execution: the operation's metadata is in the bag
    // only once its runtime plugins have run.
    fn read_before_serialization(
        &self,
        _context: &aws_sdk_ec2::config::interceptors::BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &aws_sdk_ec2::config::RuntimeComponents,
        cfg: &mut aws_sdk_ec2::config::ConfigBag,
    ) -> Result<(), aws_sdk_ec2::error::BoxError> {
        use aws_smithy_runtime_api::client::orchestrator::Metadata;
        if let Some(op) = cfg.load::<Metadata>() {
            // The SDKs name their services "EC2", "SSM", "IAM", "Pricing"; IAM's action
            // prefixes are the same in lower case.
            let action = format!("{}:{}", op.service().to_ascii_lowercase(), op.name());
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(action);
        }
        Ok(())
    }
}

fn api_error<E, R>(operation: &'static str, e: aws_sdk_ec2::error::SdkError<E, R>) -> ApiError
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match e.as_service_error() {
        Some(service) => ApiError {
            operation,
            code: service.code().unwrap_or("Unknown").to_owned(),
            message: service.message().unwrap_or_default().to_owned(),
        },
        None => ApiError {
            operation,
            code: "Transport".to_owned(),
            message: aws_sdk_ec2::error::DisplayErrorContext(&e).to_string(),
        },
    }
}

fn sdk_filters(filters: Vec<Filter>) -> Option<Vec<ec2::Filter>> {
    Some(
        filters
            .into_iter()
            .map(|f| {
                ec2::Filter::builder()
                    .name(f.name)
                    .set_values(Some(f.values))
                    .build()
            })
            .collect(),
    )
}

fn tags_of(tags: &[ec2::Tag]) -> Tags {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

fn sdk_tags(tags: &Tags) -> Vec<ec2::Tag> {
    tags.iter()
        .map(|(k, v)| ec2::Tag::builder().key(k).value(v).build())
        .collect()
}

impl Ec2Api for SdkApi {
    async fn describe_subnets(&self, filters: Vec<Filter>) -> ApiResult<Vec<Subnet>> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .ec2
                .describe_subnets()
                .set_filters(sdk_filters(filters.clone()))
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| api_error("DescribeSubnets", e))?;
            out.extend(page.subnets().iter().map(|s| Subnet {
                id: s.subnet_id().unwrap_or_default().to_owned(),
                zone: s.availability_zone().unwrap_or_default().to_owned(),
                zone_id: s.availability_zone_id().unwrap_or_default().to_owned(),
                available_ips: i64::from(s.available_ip_address_count().unwrap_or(0)),
                tags: tags_of(s.tags()),
            }));
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn describe_security_groups(
        &self,
        filters: Vec<Filter>,
    ) -> ApiResult<Vec<SecurityGroup>> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .ec2
                .describe_security_groups()
                .set_filters(sdk_filters(filters.clone()))
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| api_error("DescribeSecurityGroups", e))?;
            out.extend(page.security_groups().iter().map(|g| SecurityGroup {
                id: g.group_id().unwrap_or_default().to_owned(),
                name: g.group_name().unwrap_or_default().to_owned(),
                tags: tags_of(g.tags()),
            }));
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn describe_images(
        &self,
        filters: Vec<Filter>,
        owners: Vec<String>,
    ) -> ApiResult<Vec<Image>> {
        let page = self
            .ec2
            .describe_images()
            .set_filters(sdk_filters(filters))
            .set_owners((!owners.is_empty()).then_some(owners))
            .send()
            .await
            .map_err(|e| api_error("DescribeImages", e))?;
        Ok(page
            .images()
            .iter()
            .map(|i| Image {
                id: i.image_id().unwrap_or_default().to_owned(),
                name: i.name().unwrap_or_default().to_owned(),
                architecture: i
                    .architecture()
                    .map(|a| a.as_str().to_owned())
                    .unwrap_or_default(),
                owner: i.owner_id().unwrap_or_default().to_owned(),
                created: i.creation_date().unwrap_or_default().to_owned(),
                tags: tags_of(i.tags()),
            })
            .collect())
    }

    async fn get_parameter(&self, name: String) -> ApiResult<Option<String>> {
        match self.ssm.get_parameter().name(&name).send().await {
            Ok(out) => Ok(out.parameter().and_then(|p| p.value()).map(str::to_owned)),
            Err(e) => {
                use aws_sdk_ssm::error::ProvideErrorMetadata;
                if e.as_service_error()
                    .is_some_and(|s| s.is_parameter_not_found())
                {
                    return Ok(None);
                }
                Err(match e.as_service_error() {
                    Some(s) => ApiError {
                        operation: "GetParameter",
                        code: s.code().unwrap_or("Unknown").to_owned(),
                        message: s.message().unwrap_or_default().to_owned(),
                    },
                    None => ApiError {
                        operation: "GetParameter",
                        code: "Transport".to_owned(),
                        message: aws_sdk_ssm::error::DisplayErrorContext(&e).to_string(),
                    },
                })
            }
        }
    }

    async fn create_launch_template(
        &self,
        name: String,
        data: LaunchTemplateData,
        tags: Tags,
    ) -> ApiResult<LaunchTemplate> {
        let metadata = ec2::LaunchTemplateInstanceMetadataOptionsRequest::builder()
            .http_endpoint(if data.metadata.http_endpoint_enabled {
                ec2::LaunchTemplateInstanceMetadataEndpointState::Enabled
            } else {
                ec2::LaunchTemplateInstanceMetadataEndpointState::Disabled
            })
            .http_tokens(if data.metadata.http_tokens_required {
                ec2::LaunchTemplateHttpTokensState::Required
            } else {
                ec2::LaunchTemplateHttpTokensState::Optional
            })
            .http_put_response_hop_limit(data.metadata.http_put_response_hop_limit)
            .http_protocol_ipv6(if data.metadata.http_protocol_ipv6_enabled {
                ec2::LaunchTemplateInstanceMetadataProtocolIpv6::Enabled
            } else {
                ec2::LaunchTemplateInstanceMetadataProtocolIpv6::Disabled
            })
            .build();
        let devices = data
            .block_devices
            .iter()
            .map(|b| {
                ec2::LaunchTemplateBlockDeviceMappingRequest::builder()
                    .device_name(&b.device_name)
                    .ebs(
                        ec2::LaunchTemplateEbsBlockDeviceRequest::builder()
                            .set_volume_size(b.volume_size_gib)
                            .set_volume_type(b.volume_type.as_deref().map(ec2::VolumeType::from))
                            .set_iops(b.iops)
                            .set_throughput(b.throughput)
                            .set_encrypted(b.encrypted)
                            .set_kms_key_id(b.kms_key_id.clone())
                            .set_snapshot_id(b.snapshot_id.clone())
                            .set_delete_on_termination(b.delete_on_termination)
                            .build(),
                    )
                    .build()
            })
            .collect();
        let mut request = ec2::RequestLaunchTemplateData::builder()
            .image_id(&data.image_id)
            .user_data(&data.user_data)
            .metadata_options(metadata)
            .set_block_device_mappings(Some(devices))
            .monitoring(
                ec2::LaunchTemplatesMonitoringRequest::builder()
                    .enabled(data.detailed_monitoring)
                    .build(),
            )
            .tag_specifications(
                ec2::LaunchTemplateTagSpecificationRequest::builder()
                    .resource_type(ec2::ResourceType::Instance)
                    .set_tags(Some(sdk_tags(&tags)))
                    .build(),
            );
        if let Some(profile) = &data.instance_profile {
            request = request.iam_instance_profile(
                ec2::LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                    .name(profile)
                    .build(),
            );
        }
        request = match data.associate_public_ip_address {
            // A network interface carries the security groups when the public IP is set.
            Some(public) => request.network_interfaces(
                ec2::LaunchTemplateInstanceNetworkInterfaceSpecificationRequest::builder()
                    .device_index(0)
                    .associate_public_ip_address(public)
                    .set_groups(Some(data.security_group_ids.clone()))
                    .build(),
            ),
            None => request.set_security_group_ids(Some(data.security_group_ids.clone())),
        };
        let out = self
            .ec2
            .create_launch_template()
            .launch_template_name(&name)
            .launch_template_data(request.build())
            .tag_specifications(
                ec2::TagSpecification::builder()
                    .resource_type(ec2::ResourceType::LaunchTemplate)
                    .set_tags(Some(sdk_tags(&tags)))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| api_error("CreateLaunchTemplate", e))?;
        let lt = out.launch_template();
        Ok(LaunchTemplate {
            id: lt
                .and_then(|t| t.launch_template_id())
                .unwrap_or_default()
                .to_owned(),
            name,
            tags,
        })
    }

    async fn describe_launch_templates(
        &self,
        filters: Vec<Filter>,
    ) -> ApiResult<Vec<LaunchTemplate>> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .ec2
                .describe_launch_templates()
                .set_filters(sdk_filters(filters.clone()))
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| api_error("DescribeLaunchTemplates", e))?;
            out.extend(page.launch_templates().iter().map(|t| LaunchTemplate {
                id: t.launch_template_id().unwrap_or_default().to_owned(),
                name: t.launch_template_name().unwrap_or_default().to_owned(),
                tags: tags_of(t.tags()),
            }));
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn delete_launch_template(&self, name: String) -> ApiResult<()> {
        self.ec2
            .delete_launch_template()
            .launch_template_name(name)
            .send()
            .await
            .map_err(|e| api_error("DeleteLaunchTemplate", e))?;
        Ok(())
    }

    async fn create_fleet(&self, request: FleetRequest) -> ApiResult<FleetResult> {
        let configs: Vec<ec2::FleetLaunchTemplateConfigRequest> = request
            .launch_templates
            .iter()
            .map(|lt| {
                let overrides = lt
                    .overrides
                    .iter()
                    .map(|o| {
                        ec2::FleetLaunchTemplateOverridesRequest::builder()
                            .instance_type(ec2::InstanceType::from(o.instance_type.as_str()))
                            .subnet_id(&o.subnet_id)
                            .availability_zone(&o.zone)
                            .build()
                    })
                    .collect();
                ec2::FleetLaunchTemplateConfigRequest::builder()
                    .launch_template_specification(
                        ec2::FleetLaunchTemplateSpecificationRequest::builder()
                            .launch_template_name(&lt.name)
                            .version("$Latest")
                            .build(),
                    )
                    .set_overrides(Some(overrides))
                    .build()
            })
            .collect();
        let capacity = ec2::TargetCapacitySpecificationRequest::builder()
            .total_target_capacity(1)
            .default_target_capacity_type(if request.spot {
                ec2::DefaultTargetCapacityType::Spot
            } else {
                ec2::DefaultTargetCapacityType::OnDemand
            })
            .build();
        let tags = sdk_tags(&request.tags);
        let out = self
            .ec2
            .create_fleet()
            .r#type(ec2::FleetType::Instant)
            .client_token(&request.client_token)
            .set_launch_template_configs(Some(configs))
            .target_capacity_specification(capacity)
            .spot_options(
                ec2::SpotOptionsRequest::builder()
                    .allocation_strategy(ec2::SpotAllocationStrategy::PriceCapacityOptimized)
                    .build(),
            )
            .on_demand_options(
                ec2::OnDemandOptionsRequest::builder()
                    .allocation_strategy(ec2::FleetOnDemandAllocationStrategy::LowestPrice)
                    .build(),
            )
            .tag_specifications(
                ec2::TagSpecification::builder()
                    .resource_type(ec2::ResourceType::Instance)
                    .set_tags(Some(tags.clone()))
                    .build(),
            )
            .tag_specifications(
                ec2::TagSpecification::builder()
                    .resource_type(ec2::ResourceType::Volume)
                    .set_tags(Some(tags))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| api_error("CreateFleet", e))?;
        Ok(FleetResult {
            instance_ids: out
                .instances()
                .iter()
                .flat_map(|i| i.instance_ids().iter().cloned())
                .collect(),
            errors: out
                .errors()
                .iter()
                .map(|e| {
                    let o = e
                        .launch_template_and_overrides()
                        .and_then(|l| l.overrides());
                    FleetError {
                        code: e.error_code().unwrap_or_default().to_owned(),
                        message: e.error_message().unwrap_or_default().to_owned(),
                        instance_type: o
                            .and_then(|o| o.instance_type())
                            .map(|t| t.as_str().to_owned()),
                        subnet_id: o.and_then(|o| o.subnet_id()).map(str::to_owned),
                        zone: o.and_then(|o| o.availability_zone()).map(str::to_owned),
                    }
                })
                .collect(),
        })
    }

    async fn describe_instances(&self, filters: Vec<Filter>) -> ApiResult<Vec<Ec2Instance>> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .ec2
                .describe_instances()
                .set_filters(sdk_filters(filters.clone()))
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| api_error("DescribeInstances", e))?;
            for r in page.reservations() {
                for i in r.instances() {
                    let state = i
                        .state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_owned())
                        .unwrap_or_default();
                    if state == "terminated" {
                        continue;
                    }
                    out.push(Ec2Instance {
                        id: i.instance_id().unwrap_or_default().to_owned(),
                        instance_type: i
                            .instance_type()
                            .map(|t| t.as_str().to_owned())
                            .unwrap_or_default(),
                        zone: i
                            .placement()
                            .and_then(|p| p.availability_zone())
                            .unwrap_or_default()
                            .to_owned(),
                        state,
                        spot: i.instance_lifecycle() == Some(&ec2::InstanceLifecycleType::Spot),
                        image_id: i.image_id().unwrap_or_default().to_owned(),
                        subnet_id: i.subnet_id().unwrap_or_default().to_owned(),
                        security_group_ids: i
                            .security_groups()
                            .iter()
                            .filter_map(|g| g.group_id().map(str::to_owned))
                            .collect(),
                        launched_at: i
                            .launch_time()
                            .and_then(|t| SystemTime::try_from(*t).ok())
                            .unwrap_or(SystemTime::UNIX_EPOCH),
                        tags: tags_of(i.tags()),
                    });
                }
            }
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn terminate_instances(&self, ids: Vec<String>) -> ApiResult<()> {
        self.ec2
            .terminate_instances()
            .set_instance_ids(Some(ids))
            .send()
            .await
            .map_err(|e| api_error("TerminateInstances", e))?;
        Ok(())
    }

    async fn describe_instance_types(&self) -> ApiResult<Vec<InstanceTypeInfo>> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .ec2
                .describe_instance_types()
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| api_error("DescribeInstanceTypes", e))?;
            out.extend(page.instance_types().iter().map(info_of));
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn describe_instance_type_offerings(&self) -> ApiResult<Vec<(String, String)>> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .ec2
                .describe_instance_type_offerings()
                .location_type(ec2::LocationType::AvailabilityZone)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| api_error("DescribeInstanceTypeOfferings", e))?;
            out.extend(page.instance_type_offerings().iter().filter_map(|o| {
                Some((
                    o.instance_type()?.as_str().to_owned(),
                    o.location()?.to_owned(),
                ))
            }));
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn on_demand_prices(&self, region: String) -> ApiResult<BTreeMap<String, f64>> {
        use aws_sdk_pricing::types::{Filter as PFilter, FilterType};
        let filter = |field: &str, value: &str| {
            PFilter::builder()
                .r#type(FilterType::TermMatch)
                .field(field)
                .value(value)
                .build()
                .expect("type, field and value are set")
        };
        let mut out = BTreeMap::new();
        let mut token = None;
        loop {
            let page = self
                .pricing
                .get_products()
                .service_code("AmazonEC2")
                .filters(filter("regionCode", &region))
                .filters(filter("operatingSystem", "Linux"))
                .filters(filter("tenancy", "Shared"))
                .filters(filter("preInstalledSw", "NA"))
                .filters(filter("capacitystatus", "Used"))
                .filters(filter("licenseModel", "No License required"))
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| {
                    use aws_sdk_pricing::error::ProvideErrorMetadata;
                    match e.as_service_error() {
                        Some(s) => ApiError {
                            operation: "GetProducts",
                            code: s.code().unwrap_or("Unknown").to_owned(),
                            message: s.message().unwrap_or_default().to_owned(),
                        },
                        None => ApiError {
                            operation: "GetProducts",
                            code: "Transport".to_owned(),
                            message: aws_sdk_pricing::error::DisplayErrorContext(&e).to_string(),
                        },
                    }
                })?;
            out.extend(
                page.price_list()
                    .iter()
                    .filter_map(|d| on_demand_price_of(d)),
            );
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn spot_prices(&self) -> ApiResult<BTreeMap<(String, String), f64>> {
        let mut latest: BTreeMap<(String, String), (SystemTime, f64)> = BTreeMap::new();
        let mut token = None;
        loop {
            let page = self
                .ec2
                .describe_spot_price_history()
                .product_descriptions("Linux/UNIX")
                .start_time(aws_sdk_ec2::primitives::DateTime::from(SystemTime::now()))
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| api_error("DescribeSpotPriceHistory", e))?;
            for p in page.spot_price_history() {
                let (Some(t), Some(z), Some(price)) = (
                    p.instance_type(),
                    p.availability_zone(),
                    p.spot_price().and_then(|s| s.parse::<f64>().ok()),
                ) else {
                    continue;
                };
                let at = p
                    .timestamp()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                let key = (t.as_str().to_owned(), z.to_owned());
                if latest.get(&key).is_none_or(|(seen, _)| at >= *seen) {
                    latest.insert(key, (at, price));
                }
            }
            token = page
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            if token.is_none() {
                return Ok(latest.into_iter().map(|(k, (_, p))| (k, p)).collect());
            }
        }
    }

    async fn get_instance_profile(&self, name: String) -> ApiResult<Option<Vec<String>>> {
        match self
            .iam
            .get_instance_profile()
            .instance_profile_name(&name)
            .send()
            .await
        {
            Ok(out) => Ok(Some(
                out.instance_profile()
                    .map(|p| p.roles().iter().map(|r| r.role_name().to_owned()).collect())
                    .unwrap_or_default(),
            )),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_no_such_entity_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(api_error("GetInstanceProfile", e)),
        }
    }

    async fn create_instance_profile(&self, name: String, tags: Tags) -> ApiResult<()> {
        let tags = tags
            .iter()
            .map(|(k, v)| {
                aws_sdk_iam::types::Tag::builder()
                    .key(k)
                    .value(v)
                    .build()
                    .map_err(|e| ApiError {
                        operation: "CreateInstanceProfile",
                        code: "InvalidInput".to_owned(),
                        message: format!("tag {k}: {e}"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.iam
            .create_instance_profile()
            .instance_profile_name(name)
            .path("/")
            .set_tags(Some(tags))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| api_error("CreateInstanceProfile", e))
    }

    async fn add_role_to_instance_profile(&self, profile: String, role: String) -> ApiResult<()> {
        self.iam
            .add_role_to_instance_profile()
            .instance_profile_name(profile)
            .role_name(role)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| api_error("AddRoleToInstanceProfile", e))
    }

    async fn remove_role_from_instance_profile(
        &self,
        profile: String,
        role: String,
    ) -> ApiResult<()> {
        self.iam
            .remove_role_from_instance_profile()
            .instance_profile_name(profile)
            .role_name(role)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| api_error("RemoveRoleFromInstanceProfile", e))
    }

    async fn delete_instance_profile(&self, name: String) -> ApiResult<()> {
        match self
            .iam
            .delete_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_no_such_entity_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(api_error("DeleteInstanceProfile", e)),
        }
    }
}

/// The USD on-demand price in one Pricing API `PriceList` entry (a JSON document).
fn on_demand_price_of(doc: &str) -> Option<(String, f64)> {
    let v: serde_json::Value = serde_json::from_str(doc).ok()?;
    let name = v["product"]["attributes"]["instanceType"]
        .as_str()?
        .to_owned();
    let terms = v["terms"]["OnDemand"].as_object()?;
    let price = terms.values().find_map(|term| {
        term["priceDimensions"]
            .as_object()?
            .values()
            .find_map(|d| d["pricePerUnit"]["USD"].as_str()?.parse::<f64>().ok())
    })?;
    (price > 0.0).then_some((name, price))
}

fn info_of(t: &ec2::InstanceTypeInfo) -> InstanceTypeInfo {
    let gpus = t.gpu_info().map(|g| g.gpus()).unwrap_or_default();
    let network = t.network_info();
    InstanceTypeInfo {
        name: t
            .instance_type()
            .map(|i| i.as_str().to_owned())
            .unwrap_or_default(),
        vcpu: t
            .v_cpu_info()
            .and_then(|v| v.default_v_cpus())
            .unwrap_or(0)
            .max(0) as u32,
        memory_mib: t
            .memory_info()
            .and_then(|m| m.size_in_mib())
            .unwrap_or(0)
            .max(0) as u64,
        architectures: t
            .processor_info()
            .map(|p| {
                p.supported_architectures()
                    .iter()
                    .map(|a| a.as_str().to_owned())
                    .collect()
            })
            .unwrap_or_default(),
        gpu_count: gpus
            .iter()
            .map(|g| g.count().unwrap_or(0).max(0) as u32)
            .sum(),
        gpu_manufacturer: gpus
            .first()
            .and_then(|g| g.manufacturer())
            .map(str::to_owned),
        gpu_name: gpus.first().and_then(|g| g.name()).map(str::to_owned),
        gpu_memory_mib: gpus
            .first()
            .and_then(|g| g.memory_info())
            .and_then(|m| m.size_in_mib())
            .map(|m| m.max(0) as u64),
        neuron_count: t
            .neuron_info()
            .map(|n| {
                n.neuron_devices()
                    .iter()
                    .map(|d| d.count().unwrap_or(0).max(0) as u32)
                    .sum()
            })
            .unwrap_or(0),
        efa: network.and_then(|n| n.efa_supported()).unwrap_or(false),
        max_enis: network
            .and_then(|n| n.maximum_network_interfaces())
            .unwrap_or(0)
            .max(0) as u32,
        ipv4_per_eni: network
            .and_then(|n| n.ipv4_addresses_per_interface())
            .unwrap_or(0)
            .max(0) as u32,
        hypervisor: t.hypervisor().map(|h| h.as_str().to_owned()),
        bare_metal: t.bare_metal().unwrap_or(false),
        burstable: t.burstable_performance_supported().unwrap_or(false),
        usage_classes: t
            .supported_usage_classes()
            .iter()
            .map(|u| u.as_str().to_owned())
            .collect(),
        local_storage_gb: t
            .instance_storage_info()
            .and_then(|s| s.total_size_in_gb())
            .map(|g| g.max(0) as u64),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_on_demand_price_of_a_price_list_entry() {
        let doc = r#"{"product":{"attributes":{"instanceType":"m5.large"}},
            "terms":{"OnDemand":{"X.JRTCKXETXF":{"priceDimensions":{"X.JRTCKXETXF.6YS6EN2CT7":
            {"unit":"Hrs","pricePerUnit":{"USD":"0.0960000000"}}}}}}}"#;
        assert_eq!(
            super::on_demand_price_of(doc),
            Some(("m5.large".to_owned(), 0.096))
        );
        assert_eq!(super::on_demand_price_of("{}"), None);
    }
}
