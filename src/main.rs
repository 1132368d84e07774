//! The `llmfs` command: standalone compress/decompress/bench and the FUSE mount.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
