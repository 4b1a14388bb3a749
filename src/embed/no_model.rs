//! A p402 built without the `embeddings` feature (the fuzz targets' build,
//! which skips fastembed and ONNX Runtime to compile in minutes) has no
//! model: loading one fails with a clear error and the cache answers exact
//! matches only, as it does when the model files are missing.

use std::path::Path;

use super::EmbedError;

/// Has no values: nothing can be embedded or verified in this build.
pub enum Models {}

impl Models {
    pub fn load(_dir: &Path) -> Result<Self, EmbedError> {
        Err(EmbedError::NotBuilt)
    }

    pub fn embed(&mut self, _text: &str) -> Result<Vec<f32>, EmbedError> {
        match *self {}
    }

    pub fn score_both_ways(&mut self, _asked: &str, _cached: &str) -> Result<f32, EmbedError> {
        match *self {}
    }
}
