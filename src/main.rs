use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use vpc_cni_tuner::cli::{self, Cli, Command, LogFormat, RunArgs};
use vpc_cni_tuner::instance::InstanceCatalog;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Recommend(args) => {
            let stdout = std::io::stdout();
            cli::recommend(&args, &InstanceCatalog::embedded(), &mut stdout.lock())
                .map_err(anyhow::Error::from)
        }
        Command::Crd => cli::crd_yaml()
            .map(|yaml| print!("{yaml}"))
            .map_err(anyhow::Error::from),
        Command::Run(args) => run(*args),
        Command::Subnets(args) => subnets(&args),
        Command::Schema => {
            print!("{}", cli::recommend_schema());
            Ok(())
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "vpc-cni-tuner", &mut std::io::stdout());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn subnets(args: &cli::subnets::SubnetsArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let stdout = std::io::stdout();
            cli::subnets::subnets_command(args, &InstanceCatalog::embedded(), &mut stdout.lock())
                .await
        })
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        // The message and the event's fields at the top level of each line, where log pipelines
        // (CloudWatch, Loki, Elasticsearch) look for them.
        LogFormat::Json => subscriber.json().flatten_event(true).init(),
        LogFormat::Text => subscriber.init(),
    }
    // One thread. The operator waits on the network; a multi-thread runtime (a worker per CPU
    // the cgroup quota allows, and this thread driving `block_on`) spent a fifth of its start-up
    // CPU handing wake-ups between threads (eventfd writes, futex waits) and kept an allocator
    // arena per thread. Measured at 100,000 Nodes, paged, 2 cores, no quota: CPU to Ready 2.8 ->
    // 2.3 s, peak RSS 52 -> 46 MiB (README, Benchmarks). The longest step that holds the thread,
    // a plan over the whole fleet, takes milliseconds.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let config =
                cli::kube_config(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
            let clients = vpc_cni_tuner::controller::Clients::from_config(config)?;
            let (stop, shutdown) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!("shutdown signal received; finishing the current reconcile");
                let _ = stop.send(true);
            });
            vpc_cni_tuner::operator::run(clients, args, shutdown).await
        })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
