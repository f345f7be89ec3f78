//! Architecture tables generated from timm's registry by `scripts/gen_tables.py` (one JSON file
//! per family under `src/graph/tables/`, never edited by hand): for every architecture name, the
//! keyword arguments its entrypoint passes to the model class and the config.json timm writes for
//! the bare name.

use std::collections::BTreeMap;

use once_cell::sync::OnceCell;
use serde_json::{Map, Value as Json};

/// One architecture's row.
#[derive(Debug)]
pub struct Entry {
    /// The entrypoint's keyword arguments (timm's `model_args` for the bare name).
    pub args: Map<String, Json>,
    /// config.json as `timm.create_model(name)` + `save_pretrained` would write it.
    pub config: Json,
}

/// A generated table, parsed on first use.
pub struct Table {
    source: &'static str,
    parsed: OnceCell<BTreeMap<String, Entry>>,
}

impl Table {
    pub const fn new(source: &'static str) -> Self {
        Table {
            source,
            parsed: OnceCell::new(),
        }
    }

    fn rows(&self) -> &BTreeMap<String, Entry> {
        self.parsed.get_or_init(|| {
            // A BTreeMap: valgrind sees every node of this process-lifetime static as reachable
            // (hashbrown keeps only an interior pointer, reported as "possibly lost").
            // The file is generated and compiled in; a parse failure is caught by the tables'
            // unit test, so at run time an unreadable table is simply empty.
            let v: Json = serde_json::from_str(self.source).unwrap_or(Json::Null);
            let mut out = BTreeMap::new();
            if let Some(archs) = v.get("archs").and_then(Json::as_object) {
                for (name, row) in archs {
                    let args = row
                        .get("args")
                        .and_then(Json::as_object)
                        .cloned()
                        .unwrap_or_default();
                    let config = row.get("config").cloned().unwrap_or(Json::Null);
                    out.insert(name.clone(), Entry { args, config });
                }
            }
            out
        })
    }

    pub fn get(&self, arch: &str) -> Option<&Entry> {
        self.rows().get(arch)
    }

    pub fn contains(&self, arch: &str) -> bool {
        self.rows().contains_key(arch)
    }

    /// Every architecture name, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.rows().keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// The table parses and every row has arguments and a config naming its architecture.
    pub fn validate(&self) -> std::result::Result<usize, String> {
        let v: Json = serde_json::from_str(self.source).map_err(|e| e.to_string())?;
        let archs = v
            .get("archs")
            .and_then(Json::as_object)
            .ok_or("no `archs` object")?;
        for (name, row) in archs {
            if row.get("args").and_then(Json::as_object).is_none() {
                return Err(format!("{name}: no args object"));
            }
            if row.pointer("/config/architecture").and_then(Json::as_str) != Some(name) {
                return Err(format!("{name}: config.architecture differs"));
            }
        }
        Ok(archs.len())
    }
}
