//! Shared by the integration tests: the real default model and the vendored corpus.

#![allow(dead_code)]

use std::path::PathBuf;

/// The model the tests run with: `$LLMFS_MODEL`, else where `scripts/fetch-model.sh`
/// installs it. A missing model fails the test loudly; it is never skipped.
pub fn model_path() -> PathBuf {
    let path = std::env::var_os("LLMFS_MODEL")
        .map(PathBuf::from)
        .or_else(|| {
            let data = std::env::var_os("XDG_DATA_HOME")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share"))
                })?;
            Some(data.join("llmfs/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
        })
        .expect("neither LLMFS_MODEL nor HOME is set");
    assert!(
        path.is_file(),
        "the model {} is missing: run scripts/fetch-model.sh (tests never skip for a missing model)",
        path.display()
    );
    path
}

pub fn corpus(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
