use std::{process::ExitCode, time::Duration};

use clap::Parser;
use oom_collector::{
    cli::{Cli, LogArgs, LogFormat},
    error_chain,
    stderr_log::StderrLog,
};
use tracing_subscriber::EnvFilter;

/// How long the last log lines (why it failed) may take to reach stderr at
/// exit: a stalled stderr must not keep the collector.
const EXIT_LOG_FLUSH: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = init_logging(&cli.log);
    let code = run(cli);
    if let Some(log) = log {
        log.flush(EXIT_LOG_FLUSH);
    }
    code
}

fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(oom_collector::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            tracing::error!("{}", error_chain(&error));
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr through a thread of its own (see `stderr_log`), or
/// straight to stderr if that thread cannot start.
fn init_logging(args: &LogArgs) -> Option<StderrLog> {
    let filter = match &args.log_level {
        Some(filter) => EnvFilter::new(filter),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    let log = StderrLog::start().ok();
    match (args.log_format, log.clone()) {
        (LogFormat::Text, Some(log)) => builder.with_writer(log).init(),
        (LogFormat::Json, Some(log)) => builder.json().with_writer(log).init(),
        (LogFormat::Text, None) => builder.with_writer(std::io::stderr).init(),
        (LogFormat::Json, None) => builder.json().with_writer(std::io::stderr).init(),
    }
    log
}
