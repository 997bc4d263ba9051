//! Reading Karpenter manifests: multi-document YAML (or JSON), dispatched on
//! `apiVersion`/`kind` into typed objects. Every error names the document and the field path;
//! unknown fields are errors, as `kubectl apply` (strict field validation) makes them.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{v1, v1beta1};

/// One Karpenter object, of either API version.
#[derive(Debug, Clone, PartialEq)]
pub enum Manifest {
    NodePool(v1::NodePool),
    NodeClaim(v1::NodeClaim),
    EC2NodeClass(v1::EC2NodeClass),
    NodePoolV1beta1(v1beta1::NodePool),
    NodeClaimV1beta1(v1beta1::NodeClaim),
    EC2NodeClassV1beta1(v1beta1::EC2NodeClass),
}

impl Manifest {
    /// `Kind/name`, for messages.
    pub fn describe(&self) -> String {
        let (kind, name) = match self {
            Manifest::NodePool(o) => ("NodePool", &o.metadata.name),
            Manifest::NodeClaim(o) => ("NodeClaim", &o.metadata.name),
            Manifest::EC2NodeClass(o) => ("EC2NodeClass", &o.metadata.name),
            Manifest::NodePoolV1beta1(o) => ("NodePool", &o.metadata.name),
            Manifest::NodeClaimV1beta1(o) => ("NodeClaim", &o.metadata.name),
            Manifest::EC2NodeClassV1beta1(o) => ("EC2NodeClass", &o.metadata.name),
        };
        format!("{kind}/{}", name.as_deref().unwrap_or("<unnamed>"))
    }
}

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("document {document}: not valid YAML: {message}")]
    Syntax { document: usize, message: String },
    #[error("document {document}: {field} is missing; every object needs apiVersion and kind")]
    MissingTypeMeta {
        document: usize,
        field: &'static str,
    },
    #[error(
        "document {document}: {api_version} {kind} is not a Karpenter object Berth reads (karpenter.sh/v1 NodePool|NodeClaim, karpenter.k8s.aws/v1 EC2NodeClass, or their v1beta1)"
    )]
    UnknownKind {
        document: usize,
        api_version: String,
        kind: String,
    },
    #[error("document {document} ({object}): {path}: {message}")]
    Field {
        document: usize,
        object: String,
        path: String,
        message: String,
    },
}

/// Reads every document of `text`. Empty documents are skipped; documents are numbered from 1.
/// Returns all errors of all documents, or all objects.
pub fn parse_all(text: &str) -> Result<Vec<Manifest>, Vec<ParseError>> {
    let mut manifests = Vec::new();
    let mut errors = Vec::new();
    for (i, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let value: Value = match serde::Deserialize::deserialize(de) {
            Ok(v) => v,
            Err(e) => {
                errors.push(ParseError::Syntax {
                    document,
                    message: e.to_string(),
                });
                // NB: after a syntax error the YAML stream cannot be resumed reliably.
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        match parse_value(document, value) {
            Ok(m) => manifests.push(m),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() {
        Ok(manifests)
    } else {
        Err(errors)
    }
}

/// Reads one object already parsed as JSON.
pub fn parse_value(document: usize, value: Value) -> Result<Manifest, Vec<ParseError>> {
    let field = |name: &'static str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    let api_version = field("apiVersion").ok_or(vec![ParseError::MissingTypeMeta {
        document,
        field: "apiVersion",
    }])?;
    let kind = field("kind").ok_or(vec![ParseError::MissingTypeMeta {
        document,
        field: "kind",
    }])?;
    let object = format!(
        "{kind}/{}",
        value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("<unnamed>")
    );
    let ctx = Ctx { document, object };
    match (api_version.as_str(), kind.as_str()) {
        ("karpenter.sh/v1", "NodePool") => ctx.typed(value).map(Manifest::NodePool),
        ("karpenter.sh/v1", "NodeClaim") => ctx.typed(value).map(Manifest::NodeClaim),
        ("karpenter.k8s.aws/v1", "EC2NodeClass") => ctx.typed(value).map(Manifest::EC2NodeClass),
        ("karpenter.sh/v1beta1", "NodePool") => ctx.typed(value).map(Manifest::NodePoolV1beta1),
        ("karpenter.sh/v1beta1", "NodeClaim") => ctx.typed(value).map(Manifest::NodeClaimV1beta1),
        ("karpenter.k8s.aws/v1beta1", "EC2NodeClass") => {
            ctx.typed(value).map(Manifest::EC2NodeClassV1beta1)
        }
        _ => Err(vec![ParseError::UnknownKind {
            document,
            api_version,
            kind,
        }]),
    }
}

struct Ctx {
    document: usize,
    object: String,
}

impl Ctx {
    fn error(&self, path: String, message: String) -> ParseError {
        ParseError::Field {
            document: self.document,
            object: self.object.clone(),
            path,
            message,
        }
    }

    /// Deserialises with the failing field's path, then refuses unknown fields.
    fn typed<T: DeserializeOwned>(&self, value: Value) -> Result<T, Vec<ParseError>> {
        let typed: T = serde_path_to_error::deserialize(&value).map_err(|e| {
            let path = e.path().to_string();
            vec![self.error(
                if path == "." { "(root)".into() } else { path },
                clean_serde_message(&e.into_inner().to_string()),
            )]
        })?;
        let mut unknown = Vec::new();
        let _: Result<T, _> = serde_ignored::deserialize(&value, |path| {
            // NB: kube's generated root types read apiVersion/kind themselves (checked above).
            let path = path.to_string();
            if path != "apiVersion" && path != "kind" {
                unknown.push(path);
            }
        });
        if unknown.is_empty() {
            Ok(typed)
        } else {
            Err(unknown
                .into_iter()
                .map(|p| self.error(p, "unknown field".into()))
                .collect())
        }
    }
}

/// serde_json's messages end with "at line 0 column 0" when reading from a `Value`.
fn clean_serde_message(message: &str) -> String {
    message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_owned()
}

impl fmt::Display for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}
