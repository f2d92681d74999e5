//! `vigil bench`: runs a scenario on a two-worker runtime and prints the result.

use std::process::ExitCode;

use anyhow::Context;
use vigil_bench::BenchArgs;

pub(crate) fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let json = args.common.json;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime
        .block_on(vigil_bench::run(args))
        .context("bench run failed")?;
    if json {
        println!("{}", serde_json::to_string(&report.json)?);
    } else {
        println!("{}", report.human);
    }
    Ok(ExitCode::SUCCESS)
}
