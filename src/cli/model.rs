//! Which model to load: `--model`, else `$LLMFS_MODEL`, else the default location that
//! `scripts/fetch-model.sh` installs to.

use clap::Args;
use llmfs::codec::llm::{LlmModel, ModelConfig};
use llmfs::codec::primer::Coding;
use llmfs::tier::{self, Pool, PoolConfig};
use std::path::PathBuf;
use std::sync::Arc;

/// File name of the default model, SmolLM2-135M-Instruct Q4_1.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// GGUF model file [default: $LLMFS_MODEL, else ~/.local/share/llmfs/models/SmolLM2-135M-Instruct.Q4_1.gguf]
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Model layers to offload to the GPU (needs a build with --features cuda, metal or vulkan).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub gpu_layers: u32,
    /// llama.cpp threads, shared by the lanes [default: all cores]. Changes the speed,
    /// never the code.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
    /// Model lanes: contexts coding segments at once, each on its own thread [default:
    /// one per thread, as memory allows]. Changes the speed, never the code.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub lanes: Option<u16>,
}

/// What one lane costs in memory, for 4 KiB segments of the default model: its
/// context's KV cache (2 x 30 layers x 4,098 cells x 192 values x 2 bytes = 94 MiB
/// allocated) and compute buffers; measured with `scripts/bench-pool.sh` (README).
pub const LANE_BYTES: u64 = 110 << 20;

/// Lanes for `threads` threads: one per thread, fewer when half the available memory
/// would not hold them.
pub fn default_lanes(threads: u32) -> usize {
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(u64::MAX, |kib| kib << 10);
    let by_memory = (available / 2 / LANE_BYTES).max(1);
    (threads as u64).min(by_memory) as usize
}

/// Where `scripts/install.sh` puts the model for system use (services, mount(8)).
const SYSTEM_MODEL_DIR: &str = "/var/lib/llmfs/models";

/// The default model path: `$XDG_DATA_HOME/llmfs/models/…`, else `~/.local/share/…`;
/// the system location `/var/lib/llmfs/models/…` when there is no home (a bare service)
/// or the model is not in it but is there.
pub fn default_model_path() -> PathBuf {
    let system = PathBuf::from(SYSTEM_MODEL_DIR).join(DEFAULT_MODEL_FILE);
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".local/share"))
        });
    match data {
        Some(d) => {
            let user = d.join("llmfs/models").join(DEFAULT_MODEL_FILE);
            if !user.exists() && system.exists() {
                system
            } else {
                user
            }
        }
        None => system,
    }
}

impl ModelArgs {
    pub fn config(&self) -> ModelConfig {
        let path = self
            .model
            .clone()
            .or_else(|| {
                std::env::var_os("LLMFS_MODEL")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(default_model_path);
        ModelConfig {
            path,
            gpu_layers: self.gpu_layers,
            threads: self.threads,
        }
    }

    /// The pool's shape: `--lanes` and `--threads`, else one 1-thread lane per core (as
    /// memory allows), lane 0 with a wide context of every thread for lone reads, unless
    /// OpenMP threads wait passively (the daemon's default): then a context of several
    /// threads is slower than one, and there is no wide context.
    pub fn pool_config(&self) -> PoolConfig {
        let threads = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as u32));
        let lanes = self
            .lanes
            .map_or_else(|| default_lanes(threads), usize::from);
        let mut config = PoolConfig::new(Some(lanes), Some(threads));
        if openmp_waits_passively() {
            config.wide_threads = None;
        }
        config
    }

    /// Loads the model and starts a pool of lanes over it, coding under `coding` segments
    /// of up to `max_tokens` tokens; `verify` decodes every LLM segment again before
    /// accepting it.
    pub fn pool(
        &self,
        coding: &Coding,
        max_tokens: usize,
        verify: bool,
    ) -> anyhow::Result<(Pool, Arc<LlmModel>)> {
        let model = Arc::new(self.load()?);
        let pool = self.start_pool(Arc::clone(&model), coding, max_tokens, verify)?;
        Ok((pool, model))
    }

    /// [`pool`](Self::pool) over a model already loaded.
    pub fn start_pool(
        &self,
        model: Arc<LlmModel>,
        coding: &Coding,
        max_tokens: usize,
        verify: bool,
    ) -> anyhow::Result<Pool> {
        let config = self.pool_config();
        let pool = Pool::start(
            config,
            tier::lanes::gguf(Arc::clone(&model), coding.clone(), max_tokens, verify),
        )
        .map_err(|e| anyhow::anyhow!("starting the model's lanes: {e}"))?;
        log::debug!(
            "{} lanes of {} llama.cpp threads{}",
            pool.lanes(),
            config.threads_per_lane,
            config.wide_threads.map_or(String::new(), |w| format!(
                ", lane 0 also {w} for lone reads"
            ))
        );
        Ok(pool)
    }

    pub fn load(&self) -> anyhow::Result<LlmModel> {
        let config = self.config();
        if config.gpu_layers > 0
            && !cfg!(any(feature = "cuda", feature = "metal", feature = "vulkan"))
        {
            anyhow::bail!("--gpu-layers needs a build with GPU support (cargo build --features cuda, metal or vulkan)");
        }
        let model = LlmModel::load(&config)?;
        log::debug!(
            "loaded {} ({}) fingerprint {}",
            config.path.display(),
            model.name(),
            model.fingerprint()
        );
        Ok(model)
    }
}

/// Parses a size: a number of bytes with an optional binary unit, `K`/`KB`/`KiB`,
/// `M`/`MB`/`MiB` or `G`/`GB`/`GiB` in any case (`4096`, `4K`, `16KiB`, `64m`). The one
/// size syntax of every flag and mount option; each caller checks its own range.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: usize = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (examples: 4096, 4K, 16KiB, 64M)"))?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "`{s}` has an unknown unit `{unit}` (use K, M or G)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// A segment size: 1 byte to the container's limit of 16 MiB.
pub fn parse_segment_size(s: &str) -> Result<usize, String> {
    let max = llmfs::codec::container::MAX_SEGMENT_SIZE;
    match parse_size(s)? {
        0 => Err(format!("`{s}`: the segment size must be at least 1 byte")),
        n if n as u64 > max => Err(format!(
            "`{s}`: the segment size can be at most {} MiB",
            max >> 20
        )),
        n => Ok(n),
    }
}

/// Whether llama.cpp's OpenMP threads sleep at every barrier (`OMP_WAIT_POLICY=passive`,
/// which the daemon sets for itself unless told otherwise). Then a context of several
/// threads pays a wake-up per graph node: measured on 2 cores (a lone cold 4 KiB read
/// through a mount), 2 threads 33.1 s, 1 thread 20.6 s; with spinning threads 2 take
/// 11.7 s, but 37.4 s next to one busy process (1 thread passive: 21.1 s).
pub fn openmp_waits_passively() -> bool {
    std::env::var("OMP_WAIT_POLICY").is_ok_and(|v| v.trim().eq_ignore_ascii_case("passive"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("16KiB"), Ok(16384));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("2gb"), Ok(2 << 30));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("4Q").is_err());
        assert!(parse_size("K").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
        assert!(parse_size("9999999999999G").is_err());
    }

    #[test]
    fn segment_sizes() {
        assert_eq!(parse_segment_size("16M"), Ok(16 << 20));
        assert!(parse_segment_size("17M").is_err());
        assert!(parse_segment_size("0").is_err());
        assert_eq!(parse_segment_size("1"), Ok(1));
    }
}
