//! vpc-cni-tuner: keeps the Amazon VPC CNI (aws-node) env and kubelet maxPods right for the EKS
//! fleet that is actually running.
//!
//! Layout: [`instance`] (embedded instance-type facts), [`engine`] (formulas and recommendation),
//! [`userdata`] (maxPods in node user data), [`eks_addon`] (the EKS add-on's
//! configurationValues), [`karpenter`], [`rollout`] and [`subnet`] are the pure core, with no kube, AWS SDK or tokio
//! imports, built even without the `operator` feature. With it (the default): [`crd`] (the API),
//! [`aws`] (SDK adapters behind traits), [`plan`] (the pure decide step), then the reconcile
//! pipeline [`observe`] -> [`plan`] -> [`apply`] -> [`report`], run by [`controller`]; and
//! [`cli`], [`admin`], [`leader`], [`metrics`], [`webhook`] and [`operator`] (wiring). Layers import only
//! downwards (README, Layout; checked by `tests/layers.rs`).

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
#[cfg(feature = "operator")]
pub mod fence;
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
pub mod rollout;
pub mod subnet;
#[cfg(all(feature = "operator", any(test, feature = "test-util")))]
pub mod testing;
pub mod userdata;
#[cfg(feature = "operator")]
pub mod webhook;
