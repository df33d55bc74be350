"""Concept library: validated concept YAML, per-model vectors in safetensors, bundles.

Pure numpy / pyyaml / safetensors: no MLX or Gradio, so it is safe to import anywhere.
"""

from .atomic import atomic_write_bytes, atomic_write_text, clean_stray_temp_files
from .bundle import BUNDLE_FORMAT, decode_bundle, encode_bundle
from .errors import (
    ConceptExists,
    ConceptNotFound,
    ConceptValidationError,
    InvalidSlug,
    LibraryError,
    StaleVectors,
    VectorMismatch,
)
from .schema import CONCEPT_KEYS, concept_from_data, concept_to_dict, concept_to_yaml, parse_concept
from .slugs import model_key, slugify, validate_model_key, validate_slug
from .store import ConceptLibrary, ConceptSummary
from .vectors import FORMAT as VECTORS_FORMAT
from .vectors import check_compatible, decode_vectors, encode_vectors, load_vectors, save_vectors

__all__ = [
    "BUNDLE_FORMAT", "CONCEPT_KEYS", "VECTORS_FORMAT",
    "ConceptExists", "ConceptLibrary", "ConceptNotFound", "ConceptSummary", "ConceptValidationError",
    "InvalidSlug", "LibraryError", "StaleVectors", "VectorMismatch",
    "atomic_write_bytes", "atomic_write_text", "check_compatible", "clean_stray_temp_files",
    "concept_from_data", "concept_to_dict", "concept_to_yaml", "decode_bundle", "decode_vectors",
    "encode_bundle", "encode_vectors", "load_vectors", "model_key", "parse_concept", "save_vectors",
    "slugify", "validate_model_key", "validate_slug",
]
