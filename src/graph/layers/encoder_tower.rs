//! The forward of a VLM encoder tower (timm's `Qwen3VitEncoder`, `DeepseekVitEncoder`,
//! `Gemma4VitEncoder`: the `*_enc` architectures): no `forward_head` (timm raises for
//! classification use), and by `global_pool` either a token sequence (the projector's tokens or
//! the raw patch tokens, option `output=tokens`) or the mean over the patch tokens.

use crate::error::{Error, Result};
use crate::graph::args::Args;
use crate::graph::layers::pool::{global_pool_nlc, TokenPool};
use crate::graph::{Builder, OutputKind, Value};

/// What the tower's forward returns for its `global_pool`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TowerOutput {
    /// `[N, T, D]`.
    Tokens,
    /// `'avg'`: `[N, D]`.
    Mean,
}

impl TowerOutput {
    /// Refuses, before the graph is built, an output the forward does not give (`class`:
    /// timm's class name, for the message).
    pub fn check(self, b: &Builder, arch: &str, class: &str) -> Result<()> {
        match (self, b.output()) {
            (TowerOutput::Tokens, OutputKind::Logits | OutputKind::Features) => {
                Err(Error::unsupported(format!(
                    "`{arch}` is {class}: its forward returns a token sequence (N, T, D) and timm gives it no forward_head; create it with option output=tokens (or output=feature_maps)"
                )))
            }
            (TowerOutput::Mean, OutputKind::Tokens) => Err(Error::unsupported(format!(
                "option output=tokens: `{arch}` with global_pool='avg' returns one vector per image (output=logits)"
            ))),
            _ => Ok(()),
        }
    }

    /// The model's output from the tower's last value `x` (`[N, T, D]`, `tokens` per image):
    /// declared as the token output, or (`Mean`, `x` being the patch tokens) mean-pooled.
    pub fn finish(self, b: &mut Builder, x: &Value, tokens: usize, dim: usize) -> (Value, usize) {
        match self {
            TowerOutput::Tokens => {
                b.token_output(tokens);
                (x.clone(), dim)
            }
            TowerOutput::Mean => (global_pool_nlc(b, x, TokenPool::Avg, 0, false), dim),
        }
    }
}

/// One `global_pool` value of a tower: what its forward returns, and the classifier form's
/// `encoder_pool` that builds the same trunk.
pub type TowerPool = (&'static str, TowerOutput, &'static str);

/// The tower's `global_pool` (`default`: timm's for the class), as what the forward returns and
/// the classifier form's `encoder_pool`. The encoder classes take the classifier's arguments with
/// the same defaults, less `encoder_pool` and `final_norm`, which are refused here.
pub fn read_pool(
    a: &Args,
    class: &str,
    default: &str,
    pools: &[TowerPool],
) -> Result<(TowerOutput, String)> {
    for key in ["encoder_pool", "final_norm"] {
        if a.has(key) {
            return Err(a.unsupported(key, &format!("{class} does not take it (timm raises)")));
        }
    }
    let pool: String = a.get("global_pool", default.to_string())?;
    pools
        .iter()
        .find(|p| p.0 == pool)
        .map(|p| (p.1, p.2.to_string()))
        .ok_or_else(|| {
            let names: Vec<String> = pools.iter().map(|p| format!("'{}'", p.0)).collect();
            a.unsupported(
                "global_pool",
                &format!("{class} takes {} (timm asserts)", names.join(", ")),
            )
        })
}
