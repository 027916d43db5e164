//! `corral mcp --stdio`: the Model Context Protocol over stdin and stdout, for local
//! clients that start a process (an IDE agent, a chat desktop app). The same tools and
//! pipelines `/mcp` serves, from the local database (the data directory's SQLite, or
//! `--database-url`), as the local tenant (or `--tenant`), with no token. This process
//! also executes the pipeline runs it starts. stdout carries only protocol messages;
//! logs go to stderr.

use super::Cli;
use super::runs::{DbArgs, TenantArgs};
use clap::Args;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Args)]
pub(super) struct McpArgs {
    /// Speak MCP over stdin/stdout (the only transport of this command; `corral serve`
    /// serves it over HTTP at /mcp).
    #[arg(long)]
    stdio: bool,
    /// Pipeline runs executed at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    #[command(flatten)]
    tenant: TenantArgs,
    #[command(flatten)]
    db: DbArgs,
}

pub(super) async fn mcp(cli: &Cli, args: &McpArgs) -> anyhow::Result<ExitCode> {
    use rmcp::ServiceExt;
    if !args.stdio {
        eprintln!(
            "INVALID_REQUEST: say `corral mcp --stdio` (MCP over HTTP is `corral serve`'s /mcp)"
        );
        return Ok(ExitCode::from(2));
    }
    let runner = cli.runner(&args.db, args.concurrency).await?;
    let tenant = match args.tenant.resolve(runner.store()).await? {
        Ok(tenant) => tenant,
        Err(code) => return Ok(code),
    };
    if let Err(e) = runner.recover().await {
        tracing::warn!("recovering runs of a crashed host failed: {e}");
    }
    let stop = CancellationToken::new();
    let worker = {
        let (runner, stop) = (runner.clone(), stop.clone());
        tokio::spawn(async move { runner.work(false, stop).await })
    };
    let server = crate::api::mcp::McpServer::local(runner.clone(), tenant);
    let service = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("mcp: {e}"))?;
    let ended = service.waiting().await;
    stop.cancel();
    let _ = worker.await;
    ended.map_err(|e| anyhow::anyhow!("mcp: {e}"))?;
    Ok(ExitCode::SUCCESS)
}
