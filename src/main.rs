use std::process::ExitCode;

use clap::Parser;
use vpc_cni_tuner::cli::{self, Cli, Command};
use vpc_cni_tuner::instance::InstanceCatalog;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match cli::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Recommend(args) => {
            let stdout = std::io::stdout();
            match cli::recommend(&args, &InstanceCatalog::embedded(), &mut stdout.lock()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("error: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
