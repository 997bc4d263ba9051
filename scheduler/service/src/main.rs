use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    berth_scheduler::run(berth_scheduler::Args::parse())
}
