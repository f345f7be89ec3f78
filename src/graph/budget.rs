//! The size of the model a config describes, measured while the graph is built (and first in a
//! dry run with no weights allocated), so a hostile `model_args` (a depth of 10⁶, 2²⁰ channels,
//! an 8192-pixel input at patch size 1) is refused with the figure instead of exhausting memory.

use crate::error::{Error, Result};

/// Larger than any timm model (ViT-gigantic has 1.8 × 10⁹ parameters).
pub const DEFAULT_MAX_PARAMS: u64 = 4_000_000_000;
/// Elements of the largest single activation per image: 2³¹ floats are 8 GiB.
pub const MAX_ACTIVATION: u64 = 1 << 31;
/// Nodes in one graph; timm's largest models need a few tens of thousands.
pub const MAX_NODES: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct Budget {
    pub max_params: u64,
    pub params: u64,
    pub nodes: usize,
    pub largest_activation: u64,
    /// The spatial size activations are measured at.
    pub hw: (usize, usize),
    /// Set when the node limit was crossed; reported by [`Budget::check`].
    over_nodes: bool,
}

impl Budget {
    pub fn new(max_params: u64, hw: (usize, usize)) -> Self {
        Budget {
            max_params,
            params: 0,
            nodes: 0,
            largest_activation: 0,
            hw,
            over_nodes: false,
        }
    }

    /// Counts a parameter of `shape`; returns its ONNX dims.
    pub fn param(&mut self, key: &str, shape: &[usize]) -> Result<Vec<i64>> {
        let n = product(shape).ok_or_else(|| too_big(format!("parameter `{key}` {shape:?}")))?;
        self.params = self.params.saturating_add(n);
        if self.params > self.max_params {
            return Err(Error::invalid_model(format!(
                "the model described by config.json has more than {} parameters (option max_params; reached at `{key}` {shape:?}); refusing to build it",
                self.max_params
            )));
        }
        self.check()?;
        Ok(shape.iter().map(|&d| d as i64).collect())
    }

    pub fn node(&mut self) {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            self.over_nodes = true;
        }
    }

    pub fn activation(&mut self, shape: &[usize]) -> Result<()> {
        let n = product(shape).ok_or_else(|| too_big(format!("an activation {shape:?}")))?;
        self.largest_activation = self.largest_activation.max(n);
        if n > MAX_ACTIVATION {
            return Err(Error::invalid_model(format!(
                "the model described by config.json needs an activation of {n} values per image ({shape:?} at input {}x{}), over the limit of {MAX_ACTIVATION}",
                self.hw.0, self.hw.1
            )));
        }
        self.check()
    }

    /// Fails once the graph has grown past the node limit.
    pub fn check(&self) -> Result<()> {
        if self.over_nodes {
            return Err(Error::invalid_model(format!(
                "the model described by config.json needs more than {MAX_NODES} graph nodes; refusing to build it"
            )));
        }
        Ok(())
    }
}

fn product(shape: &[usize]) -> Option<u64> {
    shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
}

fn too_big(what: String) -> Error {
    Error::invalid_model(format!(
        "{what} overflows: config.json describes an impossible model"
    ))
}
