//! Berth's simulated cluster: an in-memory Kubernetes API server ([`server`] over [`store`],
//! with resourceVersions, conflicts, finalizers, watches, evictions and validation) and the
//! simulated control plane and nodes ([`controllers`]: workload controllers, kube-scheduler,
//! kubelets, garbage collector). See `sim/README.md` for what is faithful and what is not.

pub mod controllers;
pub mod faults;
pub mod patch;
pub mod pdb;
pub mod server;
pub mod store;
pub mod table;
