//! `vpc-cni-tuner subnets`: the per-subnet capacity table of `status.subnets`, from the live
//! account (the standard AWS credential chain, `AWS_ENDPOINT_URL` honoured) or offline from the
//! JSON that `aws ec2 describe-subnets`, `describe-network-interfaces` and
//! `get-subnet-cidr-reservations` print, so it can go into a support case. `-o json` is a
//! contract: `{"subnets": [...]}` with the names of `status.subnets[]`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::Value;

use super::CliError;
use crate::aws::launch_templates::{LaunchTemplateApi, SubnetQuery};
use crate::crd::{SubnetStatus, SubnetsSpec};
use crate::instance::InstanceCatalog;
use crate::plan::subnets::{self, FleetShape, SubnetFacts};
use crate::subnet::{InterfaceInfo, ReservationInfo, SubnetInfo};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SubnetsOutput {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct SubnetsArgs {
    /// A subnet to report (repeatable). Live: at least this or `--vpc-id`.
    #[arg(long = "subnet-id", value_name = "ID")]
    pub subnet_ids: Vec<String>,
    /// Every subnet of this VPC (live).
    #[arg(long, value_name = "ID")]
    pub vpc_id: Option<String>,
    /// Offline: `aws ec2 describe-subnets` output (JSON).
    #[arg(long, value_name = "FILE", requires = "network_interfaces_file")]
    pub subnets_file: Option<PathBuf>,
    /// Offline: `aws ec2 describe-network-interfaces` output (JSON) covering the subnets.
    #[arg(long, value_name = "FILE", requires = "subnets_file")]
    pub network_interfaces_file: Option<PathBuf>,
    /// Offline: `aws ec2 get-subnet-cidr-reservations --subnet-id ID` output (repeatable, one
    /// per subnet).
    #[arg(long = "reservations-file", value_name = "FILE")]
    pub reservations_files: Vec<PathBuf>,
    /// Headroom for these instance types (repeatable).
    #[arg(long = "instance-type", value_name = "TYPE")]
    pub instance_types: Vec<String>,
    /// Headroom with prefix delegation (each node takes /28 prefixes).
    #[arg(long)]
    pub prefix_delegation: bool,
    /// aws-node warm settings for the headroom, `NAME=VALUE` (repeatable): WARM_ENI_TARGET,
    /// WARM_IP_TARGET, MINIMUM_IP_TARGET, WARM_PREFIX_TARGET. Unset: the VPC CNI's defaults.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// AWS region (live); else the standard chain.
    #[arg(long)]
    pub aws_region: Option<String>,
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: SubnetsOutput,
}

/// The fleet shape the flags describe.
fn shape(args: &SubnetsArgs, catalog: &InstanceCatalog) -> Result<FleetShape, CliError> {
    let mut types = Vec::new();
    for name in &args.instance_types {
        let limits = catalog
            .lookup(name)
            .map_err(|e| CliError::Input(format!("--instance-type {name}: {e}")))?;
        types.push((name.clone(), limits));
    }
    let mut env = Vec::new();
    for entry in &args.env {
        let (name, value) = entry.split_once('=').ok_or_else(|| {
            CliError::Input(format!(
                "--env {entry:?}: write NAME=VALUE, e.g. WARM_PREFIX_TARGET=1"
            ))
        })?;
        if value.trim().parse::<u32>().is_err() {
            return Err(CliError::Input(format!(
                "--env {entry:?}: {name} must be a whole number"
            )));
        }
        env.push((name.to_owned(), value.to_owned()));
    }
    Ok(FleetShape {
        types,
        prefix_delegation: args.prefix_delegation,
        targets: FleetShape::targets_of(env.iter().map(|(n, v)| (n.as_str(), v.as_str()))),
    })
}

fn read_json(path: &PathBuf, flag: &str) -> Result<Value, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Input(format!("{flag} {}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| {
        CliError::Input(format!(
            "{flag} {}: not the JSON the AWS CLI prints: {e}",
            path.display()
        ))
    })
}

fn text(v: &Value, key: &str) -> Option<String> {
    v[key].as_str().map(str::to_owned)
}

/// The subnets, interfaces and reservations in the AWS CLI's JSON.
fn offline(args: &SubnetsArgs) -> Result<Vec<SubnetFacts>, CliError> {
    let (Some(subnets_file), Some(interfaces_file)) =
        (&args.subnets_file, &args.network_interfaces_file)
    else {
        return Ok(Vec::new());
    };
    let subnets = read_json(subnets_file, "--subnets-file")?;
    let Some(subnets) = subnets["Subnets"].as_array() else {
        return Err(CliError::Input(format!(
            "--subnets-file {}: no \"Subnets\" list (save `aws ec2 describe-subnets --output json`)",
            subnets_file.display()
        )));
    };
    let interfaces = read_json(interfaces_file, "--network-interfaces-file")?;
    let Some(interfaces) = interfaces["NetworkInterfaces"].as_array() else {
        return Err(CliError::Input(format!(
            "--network-interfaces-file {}: no \"NetworkInterfaces\" list (save `aws ec2 \
             describe-network-interfaces --filters Name=subnet-id,Values=... --output json`)",
            interfaces_file.display()
        )));
    };
    let interfaces: Vec<InterfaceInfo> = interfaces
        .iter()
        .map(|i| InterfaceInfo {
            id: text(i, "NetworkInterfaceId").unwrap_or_default(),
            subnet_id: text(i, "SubnetId").unwrap_or_default(),
            instance_id: text(&i["Attachment"], "InstanceId"),
            addresses: i["PrivateIpAddresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| text(a, "PrivateIpAddress"))
                .collect(),
            prefixes: i["Ipv4Prefixes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| text(p, "Ipv4Prefix"))
                .collect(),
        })
        .collect();
    let mut reservations: Vec<(String, ReservationInfo)> = Vec::new();
    for file in &args.reservations_files {
        let json = read_json(file, "--reservations-file")?;
        for r in json["SubnetIpv4CidrReservations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            reservations.push((
                text(r, "SubnetId").unwrap_or_default(),
                ReservationInfo {
                    id: text(r, "SubnetCidrReservationId").unwrap_or_default(),
                    cidr: text(r, "Cidr").unwrap_or_default(),
                    prefix: r["ReservationType"].as_str() == Some("prefix"),
                    description: text(r, "Description").unwrap_or_default(),
                },
            ));
        }
    }
    Ok(subnets
        .iter()
        .map(|s| SubnetInfo {
            id: text(s, "SubnetId").unwrap_or_default(),
            cidr: text(s, "CidrBlock"),
            availability_zone: text(s, "AvailabilityZone"),
            vpc_id: text(s, "VpcId"),
            available: s["AvailableIpAddressCount"].as_u64().map(|n| n as u32),
        })
        .filter(|s| args.subnet_ids.is_empty() || args.subnet_ids.contains(&s.id))
        .map(|subnet| facts(subnet, &interfaces, &reservations))
        .collect())
}

fn facts(
    subnet: SubnetInfo,
    interfaces: &[InterfaceInfo],
    reservations: &[(String, ReservationInfo)],
) -> SubnetFacts {
    let mine: Vec<InterfaceInfo> = interfaces
        .iter()
        .filter(|i| i.subnet_id == subnet.id)
        .cloned()
        .collect();
    SubnetFacts {
        reservations: reservations
            .iter()
            .filter(|(s, _)| *s == subnet.id)
            .map(|(_, r)| r.clone())
            .collect(),
        fleet_nodes: mine
            .iter()
            .filter_map(|i| i.instance_id.as_deref())
            .collect::<BTreeSet<_>>()
            .len() as u32,
        interfaces: mine,
        sources: BTreeSet::new(),
        idle: None,
        subnet,
    }
}

/// The subnets from the live account.
pub async fn live(
    args: &SubnetsArgs,
    api: &dyn LaunchTemplateApi,
) -> Result<Vec<SubnetFacts>, CliError> {
    if args.subnet_ids.is_empty() && args.vpc_id.is_none() {
        return Err(CliError::Input(
            "name the subnets: --subnet-id ID (repeatable) or --vpc-id ID; or read saved JSON \
             with --subnets-file and --network-interfaces-file"
                .into(),
        ));
    }
    let aws = |e: crate::aws::Ec2Error| CliError::Input(e.to_string());
    let query = SubnetQuery {
        ids: args.subnet_ids.clone(),
        vpc: args.vpc_id.clone(),
        ..Default::default()
    };
    let mut facts = Vec::new();
    for subnet in api.subnets(&query).await.map_err(aws)? {
        let interfaces = api.interfaces(Some(&subnet.id), &[]).await.map_err(aws)?;
        let reservations: Vec<(String, ReservationInfo)> = api
            .subnet_reservations(&subnet.id)
            .await
            .map_err(aws)?
            .into_iter()
            .map(|r| (subnet.id.clone(), r))
            .collect();
        facts.push(self::facts(subnet, &interfaces, &reservations));
    }
    Ok(facts)
}

/// The rows for `facts`, in subnet order.
pub fn rows(
    args: &SubnetsArgs,
    facts: &[SubnetFacts],
    catalog: &InstanceCatalog,
) -> Result<Vec<SubnetStatus>, CliError> {
    let shape = shape(args, catalog)?;
    let mut rows = subnets::report(facts, &shape, &SubnetsSpec::default()).statuses;
    rows.sort_by(|a, b| a.subnet_id.cmp(&b.subnet_id));
    Ok(rows)
}

/// Prints the rows as a table or as the JSON contract.
pub fn print(
    rows: &[SubnetStatus],
    output: SubnetsOutput,
    out: &mut impl Write,
) -> Result<(), CliError> {
    match output {
        SubnetsOutput::Json => {
            let json = serde_json::json!({ "subnets": rows });
            let text =
                serde_json::to_string_pretty(&json).map_err(|e| CliError::Render(e.to_string()))?;
            writeln!(out, "{text}")?;
        }
        SubnetsOutput::Table => {
            writeln!(
                out,
                "{:<26} {:<18} {:<12} {:>6} {:>6} {:>8} {:>10}  LARGEST FREE BLOCK",
                "SUBNET", "CIDR", "AZ", "TOTAL", "FREE", "FREE/28", "FRAGMENTED"
            )?;
            for r in rows {
                writeln!(
                    out,
                    "{:<26} {:<18} {:<12} {:>6} {:>6} {:>8} {:>10}  {}",
                    r.subnet_id,
                    r.cidr,
                    r.availability_zone.as_deref().unwrap_or("-"),
                    r.total_addresses,
                    r.free_addresses,
                    r.free_aligned_prefixes,
                    r.fragmented_addresses,
                    r.largest_free_block.as_deref().unwrap_or("-"),
                )?;
                for h in &r.headroom {
                    writeln!(
                        out,
                        "  room for {} more {} node(s), {} more pods",
                        h.nodes, h.instance_type, h.pods
                    )?;
                }
                if let Some(advice) = &r.advice {
                    writeln!(out, "  {advice}")?;
                }
            }
        }
    }
    Ok(())
}

/// `subnets`: offline when the files are given, else live.
pub async fn subnets_command(
    args: &SubnetsArgs,
    catalog: &InstanceCatalog,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let facts = if args.subnets_file.is_some() {
        offline(args)?
    } else {
        let provider = crate::aws::provider::SdkProvider::new(crate::aws::AwsEndpoint {
            region: args.aws_region.clone(),
            endpoint_url: None,
            ..Default::default()
        });
        let api = crate::aws::Ec2Provider::api(&provider, None).await?;
        live(args, api.as_ref()).await?
    };
    let rows = rows(args, &facts, catalog)?;
    print(&rows, args.output, out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &std::path::Path, extra: &[&str]) -> SubnetsArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            args: SubnetsArgs,
        }
        let subnets = dir.join("subnets.json");
        let interfaces = dir.join("enis.json");
        let mut argv = vec![
            "subnets".to_owned(),
            format!("--subnets-file={}", subnets.display()),
            format!("--network-interfaces-file={}", interfaces.display()),
        ];
        argv.extend(extra.iter().map(|s| (*s).to_owned()));
        Wrap::parse_from(argv).args
    }

    #[test]
    fn offline_json_gives_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("subnets.json"),
            r#"{"Subnets": [{"SubnetId": "subnet-1", "CidrBlock": "10.0.0.0/24",
                "AvailabilityZone": "us-east-1a", "VpcId": "vpc-1", "AvailableIpAddressCount": 200}]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("enis.json"),
            r#"{"NetworkInterfaces": [{"NetworkInterfaceId": "eni-1", "SubnetId": "subnet-1",
                "Attachment": {"InstanceId": "i-1"},
                "PrivateIpAddresses": [{"PrivateIpAddress": "10.0.0.7"}, {"PrivateIpAddress": "10.0.0.23"}],
                "Ipv4Prefixes": [{"Ipv4Prefix": "10.0.0.48/28"}]}]}"#,
        )
        .unwrap();
        let a = args(
            dir.path(),
            &[
                "--instance-type=m5.large",
                "--prefix-delegation",
                "-o",
                "json",
            ],
        );
        let facts = offline(&a).unwrap();
        let rows = rows(&a, &facts, &InstanceCatalog::embedded()).unwrap();
        let mut out = Vec::new();
        print(&rows, a.output, &mut out).unwrap();
        let json: Value = serde_json::from_slice(&out).unwrap();
        let s = &json["subnets"][0];
        assert_eq!(s["subnetId"], "subnet-1");
        assert_eq!(s["cidr"], "10.0.0.0/24");
        // Blocks 0 (.0-.3, .7), 1 (.23), 3 (the prefix) and 15 (.255) are not free: 12 left.
        assert_eq!(s["freeAlignedPrefixes"], 12);
        assert_eq!(s["freeAddresses"], 256 - 5 - 2 - 16);
        assert_eq!(s["fragmentedAddresses"], 233 - 12 * 16);
        assert_eq!(s["fleetNodes"], 1);
        assert_eq!(s["headroom"][0]["instanceType"], "m5.large");
        assert_eq!(s["headroom"][0]["nodes"], 12);
    }

    #[test]
    fn bad_input_names_the_flag_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("subnets.json"), r#"{"Vpcs": []}"#).unwrap();
        std::fs::write(dir.path().join("enis.json"), "{}").unwrap();
        let err = offline(&args(dir.path(), &[])).unwrap_err().to_string();
        assert!(
            err.contains("--subnets-file") && err.contains("describe-subnets"),
            "{err}"
        );
        let err = rows(
            &args(dir.path(), &["--env=WARM_IP_TARGET"]),
            &[],
            &InstanceCatalog::embedded(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("NAME=VALUE"), "{err}");
        let err = rows(
            &args(dir.path(), &["--instance-type=m9.huge"]),
            &[],
            &InstanceCatalog::embedded(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("--instance-type m9.huge"), "{err}");
    }
}
