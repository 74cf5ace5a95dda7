//! vpc-cni-tuner: keeps the Amazon VPC CNI (aws-node) env and kubelet maxPods right for the EKS
//! fleet that is actually running.
//!
//! Layout: [`instance`] (embedded instance-type facts), [`engine`] (formulas and recommendation),
//! [`userdata`] (maxPods in node user data) and [`eks_addon`] (the EKS add-on's
//! configurationValues) are the pure core, with no kube, AWS SDK or tokio imports, built even
//! without the `operator` feature. With it (the default): [`crd`] (the API),
//! [`plan`] (the pure decide step), [`controller`] (watch, apply, status), [`aws`] (EC2),
//! [`cli`], [`admin`], [`leader`], [`metrics`] and [`operator`] (wiring).

#[cfg(feature = "operator")]
pub mod admin;
#[cfg(feature = "operator")]
pub mod apply;
#[cfg(feature = "operator")]
pub mod aws;
#[cfg(feature = "operator")]
pub mod cli;
pub mod codegen;
#[cfg(feature = "operator")]
pub mod controller;
#[cfg(feature = "operator")]
pub mod crd;
pub mod eks_addon;
pub mod engine;
#[cfg(feature = "operator")]
pub mod error;
pub mod instance;
pub mod karpenter;
#[cfg(feature = "operator")]
pub mod leader;
#[cfg(feature = "operator")]
pub mod metrics;
#[cfg(feature = "operator")]
pub mod observe;
#[cfg(feature = "operator")]
pub mod operator;
#[cfg(feature = "operator")]
pub mod plan;
#[cfg(feature = "operator")]
pub mod report;
#[cfg(all(feature = "operator", any(test, feature = "test-util")))]
pub mod testing;
pub mod userdata;
