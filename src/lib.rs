//! vpc-cni-tuner: keeps the Amazon VPC CNI (aws-node) env and kubelet maxPods right for the EKS
//! fleet that is actually running.
//!
//! Layout: [`instance`] (embedded instance-type facts) and [`engine`] (formulas and
//! recommendation) are the pure tuning core, with no kube, AWS SDK or tokio imports. [`aws`] is
//! the EC2 adapter, [`codegen`] renders the instance table, [`cli`] is the command line.

pub mod admin;
pub mod aws;
pub mod cli;
pub mod codegen;
pub mod controller;
pub mod crd;
pub mod engine;
pub mod instance;
pub mod leader;
pub mod metrics;
pub mod operator;
pub mod plan;
pub mod userdata;
