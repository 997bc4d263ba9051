use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    berth_watcher::run(berth_watcher::Args::parse())
}
