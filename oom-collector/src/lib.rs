//! oom-collector: every Linux OOM kill as one structured JSON line.
//!
//! The data flows one way: kernel hooks ([`loader`]) -> ring buffer
//! ([`source`]) -> [`decode`] -> [`enrich`] -> [`sink`], driven by
//! [`pipeline`]. [`document`] defines the documents written.

pub mod alloc_failures;
pub mod arch;
pub mod btf;
pub mod cli;
pub mod cmdline;
pub mod decode;
pub mod document;
pub mod enrich;
pub mod host;
pub mod kmsg;
pub mod loader;
pub mod metrics;
pub mod pipeline;
pub mod probes;
pub mod redact;
pub mod selftest;
pub mod sink;
pub mod source;
pub mod stderr_log;
pub mod tracefs;

use std::{process::ExitCode, sync::Arc};

use tracing::{info, warn};

use crate::{
    cli::{Cli, Command, RunArgs},
    metrics::Metrics,
    pipeline::{Flow, Pipeline, PipelineError},
    selftest::SelftestError,
    sink::{Rotation, Sink, SinkError},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("selftest failed")]
    Selftest(#[from] SelftestError),
    #[error("cannot set up signal handling")]
    Signals(#[source] std::io::Error),
    #[error("memory hog")]
    Hog(#[source] std::io::Error),
    #[error(transparent)]
    Metrics(#[from] metrics::BindError),
    #[error("--unpin")]
    Unpin(#[from] loader::pin::PinError),
}

/// Runs the command the user asked for.
pub async fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        None => collect(&cli.run).await,
        Some(Command::Run(args)) => collect(&args).await,
        Some(Command::Probes(args)) => {
            let hooks = probes::probe_kernel(&args.pipeline_options().load);
            print!("{}", probes::report(&hooks));
            Ok(if loader::required_active(&hooks) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Some(Command::Selftest(args)) => {
            let document = selftest::selftest(&args).await?;
            eprintln!(
                "selftest passed: the OOM kill of pid {} came through as event {}",
                document.process.as_ref().map_or(0, |p| p.pid),
                document.event.id
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Hog { cgroup_procs }) => {
            selftest::hog(&cgroup_procs).map_err(Error::Hog)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Resolves once standard output is a pipe or socket whose reader has gone
/// (the kernel flags it with POLLERR); never for a file or a terminal.
async fn stdout_reader_gone() {
    use rustix::event::{poll, PollFd, PollFlags};
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    loop {
        tick.tick().await;
        let stdout = std::io::stdout();
        let mut fds = [PollFd::new(&stdout, PollFlags::OUT)];
        let gone = poll(&mut fds, Some(&rustix::time::Timespec::default())).is_ok()
            && fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP);
        if gone {
            return;
        }
    }
}

/// The collector proper: stream events until SIGINT or SIGTERM.
async fn collect(args: &RunArgs) -> Result<ExitCode, Error> {
    use tokio::signal::unix::{signal, SignalKind};

    if let (true, Some(dir)) = (args.unpin, &args.pin_dir) {
        let removed = if dir.exists() {
            loader::pin::PinRoot::open(dir)?.remove_sets(None)?
        } else {
            0
        };
        eprintln!(
            "removed {removed} kept set(s) of hooks from {}; their hooks are detached",
            dir.display()
        );
        if args.then_wait {
            let mut interrupt = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
            let mut terminate = signal(SignalKind::terminate()).map_err(Error::Signals)?;
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
        return Ok(ExitCode::SUCCESS);
    }

    // Before anything slow: a SIGTERM during start-up (a rollout that
    // changes its mind) waits here, and the collector then stops as it
    // would once running, instead of dying by the signal's default action.
    let mut interrupt = signal(SignalKind::interrupt()).map_err(Error::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(Error::Signals)?;
    let mut sink = Sink::open(
        &args.output,
        args.format,
        Rotation {
            max_bytes: args.output_max_bytes,
            keep: args.output_keep,
        },
    )?;
    let mut pipeline = Pipeline::start(&args.pipeline_options())?;
    for hook in pipeline.hooks() {
        match &hook.state {
            Ok(()) => info!(hook = hook.name, "hook active"),
            Err(reason) => warn!(hook = hook.name, %reason, "hook unavailable"),
        }
    }
    let metrics = Arc::new(Metrics::new());
    metrics.set_hooks(pipeline.hooks());
    metrics
        .health()
        .watch_outputs(args.healthz_output_stall, Box::new(sink.blocked()));
    metrics.watch_output_counts(Box::new(sink.failures()));
    pipeline.on_progress({
        let metrics = Arc::clone(&metrics);
        move || metrics.health().pipeline_progressed()
    });
    if let Some(addr) = args.metrics_addr {
        metrics::serve(addr, Arc::clone(&metrics)).await?;
    }
    // `oom-collector | head -1`: with stdout the only output, a reader
    // that has gone is a reason to stop now, not at the next event.
    let stdout_only = args.output.iter().all(|o| o.as_os_str() == sink::STDOUT);
    let stop = async move {
        tokio::select! {
            _ = interrupt.recv() => info!("SIGINT: draining and stopping"),
            _ = terminate.recv() => info!("SIGTERM: draining and stopping"),
            () = stdout_reader_gone(), if stdout_only => {
                info!("stdout was closed by its reader; stopping");
            }
        }
    };
    if args.pin_dir.is_some() {
        pipeline.hold_records_until_written(sink.receipts());
    }
    info!(host = %pipeline.host().name, "collecting OOM events");
    pipeline
        .run(stop, |document| {
            metrics.observe(&document);
            sink.write(&document).map(|()| Flow::Continue)
        })
        .await?;
    // What an output still holds at exit is lost: say so on the others.
    sink.finish_reporting(|lost, outputs| {
        let report = pipeline.output_failed_report(lost, &outputs.join(", "));
        metrics.observe(&report);
        Some(report)
    })?;
    Ok(ExitCode::SUCCESS)
}

/// An error and its sources on one line.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
