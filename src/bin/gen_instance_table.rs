//! Maintainer tool: regenerates `src/instance/table.rs` from EC2 `DescribeInstanceTypes`.
//!
//!     cargo run --bin gen-instance-table -- --region us-east-1 --region us-west-2 ...
//!
//! Against real AWS it needs `ec2:DescribeInstanceTypes`; tests run it against `moto_server`
//! with `--endpoint-url http://127.0.0.1:PORT`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use vpc_cni_tuner::aws::{AwsEndpoint, ec2_client, instance_types};
use vpc_cni_tuner::codegen::{TableSource, merge, render_table};

#[derive(Debug, Parser)]
#[command(about = "Regenerate the embedded instance-type table from EC2 DescribeInstanceTypes")]
struct Args {
    /// Regions to query; the table is the union of their answers.
    #[arg(long = "region", required = true)]
    regions: Vec<String>,
    /// EC2 endpoint override (also read from AWS_ENDPOINT_URL by the SDK).
    #[arg(long)]
    endpoint_url: Option<String>,
    /// Where to write the table.
    #[arg(long, default_value = "src/instance/table.rs")]
    output: PathBuf,
    /// Date for the header (YYYY-MM-DD); today (UTC) by default.
    #[arg(long)]
    date: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut answers = Vec::new();
    for region in &args.regions {
        let client = ec2_client(&AwsEndpoint {
            region: Some(region.clone()),
            endpoint_url: args.endpoint_url.clone(),
            ..Default::default()
        })
        .await;
        let found = instance_types::describe_all(&client)
            .await
            .with_context(|| format!("listing instance types in {region}"))?;
        eprintln!("{region}: {} instance types", found.len());
        answers.extend(found);
    }
    let entries = merge(answers);
    anyhow::ensure!(
        !entries.is_empty(),
        "the endpoint returned no instance types"
    );
    let date = match args.date {
        Some(date) => date,
        None => jiff::Timestamp::now().strftime("%Y-%m-%d").to_string(),
    };
    let source = TableSource {
        endpoint: args.endpoint_url.clone(),
        regions: args.regions.clone(),
        date,
    };
    std::fs::write(&args.output, render_table(&entries, &source))
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!(
        "wrote {} instance types to {}",
        entries.len(),
        args.output.display()
    );
    Ok(())
}
