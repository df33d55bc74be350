"""The concept library on disk: user concepts and vectors, over read-only shipped ones.

Layout (slugs and model keys are validated, so paths never leave these folders)::

    <user_root>/concepts/<slug>.yaml
    <user_root>/vectors/<model-key>/<slug>.safetensors
    <shipped_concepts>/<slug>.yaml                   (read-only, e.g. repo concepts/)
    <shipped_vectors>/<model-key>/<slug>.safetensors (read-only, e.g. repo assets/vectors/)

A user concept shadows a shipped one with the same slug. All writes are atomic.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path

from app.types import Concept, ConceptVectors, Recommendation

from .atomic import atomic_write_bytes, atomic_write_text, clean_stray_temp_files
from .listing import ConceptSummary, concept_files, matches, read_concept_file
from .lock import WriterLock
from .bundle import decode_bundle, encode_bundle
from .errors import ConceptExists, ConceptNotFound, InvalidSlug, LibraryError, StaleVectors, VectorMismatch
from .schema import concept_to_yaml, parse_concept
from .slugs import model_key, validate_model_key, validate_slug
from .txn import Transaction, recover
from .vectors import encode_vectors, load_vectors as load_vectors_file

log = logging.getLogger("steering_lab.library")

VECTOR_SUFFIX = ".safetensors"


class ConceptLibrary:
    """User + shipped concepts and their per-model vectors; see the module docstring."""

    def __init__(self, user_root: Path, shipped_concepts: Path | None = None, shipped_vectors: Path | None = None):
        self.user_root = Path(user_root)
        self.user_concepts = self.user_root / "concepts"
        self.user_vectors = self.user_root / "vectors"
        self.shipped_concepts = Path(shipped_concepts) if shipped_concepts else None
        self.shipped_vectors = Path(shipped_vectors) if shipped_vectors else None
        self.problems: list[tuple[Path, str]] = []
        self._parsed: dict[Path, tuple[tuple[int, int, int], Concept]] = {}
        self._logged: set[tuple[str, str]] = set()
        self.writer = WriterLock(self.user_root)
        if self.user_root.is_dir():
            with self.writer:  # a killed writer's change is finished (or dropped) before anything reads
                recover(self.user_root)
                clean_stray_temp_files(self.user_root, check_writers=False)  # every writer takes this lock

    def shown(self, path: Path | None) -> str:
        """A library file as messages show it: relative to its library folder."""
        if path is None:
            return "(no file)"
        path = Path(path)
        for root, label in ((self.user_root, ""), (self.shipped_concepts, "shipped "),
                            (self.shipped_vectors, "shipped vectors/")):
            if root is not None:
                try:
                    rel = path.relative_to(root)
                except ValueError:
                    continue
                return f"{label}{rel}" if label != "shipped " else f"shipped concepts/{rel}"
        return path.name

    def _read(self, path: Path, slug: str) -> Concept:
        """Parse a concept file, reusing the last parse while the file is unchanged.

        Pure-Python YAML parsing costs ~15 ms per file, which adds up on every list();
        callers get a deep copy so they can never modify the cached object.
        """
        try:
            st = path.stat()
        except OSError as e:
            raise LibraryError(f"{self.shown(path)}: cannot read concept file ({e.strerror or type(e).__name__})") from None
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        hit = self._parsed.get(path)
        if hit is None or hit[0] != signature:
            hit = (signature, read_concept_file(path, slug, self.shown(path)))
            self._parsed[path] = hit
        return copy.deepcopy(hit[1])

    # -- paths -------------------------------------------------------------
    def _user_yaml(self, slug: str) -> Path:
        return self.user_concepts / f"{validate_slug(slug)}.yaml"

    def _shipped_yaml(self, slug: str) -> Path | None:
        return self.shipped_concepts / f"{validate_slug(slug)}.yaml" if self.shipped_concepts else None

    def _user_vec(self, slug: str, key: str) -> Path:
        return self.user_vectors / validate_model_key(key) / f"{validate_slug(slug)}{VECTOR_SUFFIX}"

    def _concept_path(self, slug: str) -> Path | None:
        user, shipped = self._user_yaml(slug), self._shipped_yaml(slug)
        if user.is_file():
            return user
        return shipped if shipped is not None and shipped.is_file() else None

    def _vector_files(self, slug: str) -> dict[str, Path]:
        """Model key -> vectors file for ``slug``; user files win over shipped ones."""
        name = f"{validate_slug(slug)}{VECTOR_SUFFIX}"
        found: dict[str, Path] = {}
        for root in (self.shipped_vectors, self.user_vectors):
            if root is None or not root.is_dir():
                continue
            for folder in sorted(root.iterdir()):
                try:
                    validate_model_key(folder.name)
                except InvalidSlug:
                    continue
                if (folder / name).is_file():
                    found[folder.name] = folder / name
        return found

    def vector_models(self, slug: str) -> list[str]:
        """The model keys that have vectors stored for ``slug`` (shipped or the user's): vectors are per model."""
        return sorted(self._vector_files(slug))

    def _find_vectors(self, slug: str, key: str) -> Path | None:
        user = self._user_vec(slug, key)
        if user.is_file():
            return user
        if self.shipped_vectors is not None:
            shipped = self.shipped_vectors / key / user.name
            if shipped.is_file():
                return shipped
        return None

    # -- concepts ----------------------------------------------------------
    def list(self, category: str | None = None, tag: str | None = None, text: str | None = None) -> list[ConceptSummary]:
        """Concepts sorted by category then name; malformed files are skipped into ``problems``."""
        found, self.problems = concept_files(self.shipped_concepts, self.user_concepts)
        out = []
        for slug, (path, shipped) in found.items():
            try:
                c = self._read(path, slug)
            except LibraryError as e:
                self.problems.append((path, str(e)))
                continue
            summary = ConceptSummary(slug, c.name, c.category, tuple(c.tags), c.description, len(c.pairs), shipped, path)
            if matches(summary, category, tag, text):
                out.append(summary)
        self._log_problems()
        return sorted(out, key=lambda s: (s.category, s.name.casefold(), s.slug))

    def _log_problems(self) -> None:
        """One log line per skipped file and reason (list() runs often; the log stays readable)."""
        for path, msg in self.problems:
            key = (str(path), msg)
            if key not in self._logged:
                self._logged.add(key)
                log.warning("skipped %s: %s", self.shown(path), msg.splitlines()[0] if msg else "")

    def get(self, slug: str) -> Concept:
        """The user copy if there is one, else the shipped concept; ``ConceptNotFound`` otherwise."""
        path = self._concept_path(slug)
        if path is None:
            raise ConceptNotFound(f"no concept named {slug!r}; run `steering-lab concepts list` (or open the Library tab) to see the available slugs")
        return self._read(path, slug)

    def exists(self, slug: str) -> bool:
        return self._concept_path(slug) is not None

    def is_shipped(self, slug: str) -> bool:
        """True when a shipped concept has this slug (even if a user copy shadows it)."""
        shipped = self._shipped_yaml(slug)
        return shipped is not None and shipped.is_file()

    def has_user_copy(self, slug: str) -> bool:
        return self._user_yaml(slug).is_file()

    def _stored_text(self, concept: Concept) -> tuple[str, Concept]:
        """Validate by serialising and re-parsing: what is written is exactly what reads back."""
        slug = validate_slug(concept.slug)
        text = concept_to_yaml(concept)
        return text, parse_concept(text, slug, source=f"concept {slug!r}")

    def _refuse_existing(self, slug: str) -> None:
        """Create-if-absent: called inside the writer lock, so no one can take the slug meanwhile."""
        if self.has_user_copy(slug):
            raise ConceptExists(
                f"a concept named {slug!r} already exists; pass overwrite=True to replace it, or choose another slug"
            )
        if self.is_shipped(slug):
            raise ConceptExists(
                f"{slug!r} is a shipped concept; pass overwrite=True to save your own copy that "
                "shadows it (deleting the copy later brings the shipped one back)"
            )

    def save(self, concept: Concept, overwrite: bool = False) -> Concept:
        """Validate (serialise + re-parse) and write atomically; returns the concept as stored."""
        return self.save_with_vectors(concept, {}, overwrite=overwrite)

    def save_with_vectors(self, concept: Concept, vectors: dict[str, ConceptVectors],
                          overwrite: bool = False) -> Concept:
        """Save a concept and its vectors (model id -> vectors) as one all-or-nothing change.

        Vectors with an empty ``concept_fingerprint`` get the stored concept's. Without
        ``overwrite`` an existing slug is refused; with it, the concept's other user vectors
        are kept when its pairs are unchanged (they become stale otherwise, as in ``save``).
        """
        text, stored = self._stored_text(concept)
        slug = stored.slug
        blobs = {}
        for model_id, cv in vectors.items():
            if not cv.concept_fingerprint:
                cv = dataclasses.replace(cv, concept_fingerprint=stored.pairs_fingerprint())
            blobs[self._user_vec(slug, model_key(model_id))] = encode_vectors(cv, label=slug)
        with self.writer:
            if not overwrite:
                self._refuse_existing(slug)
            if not blobs:
                atomic_write_text(self._user_yaml(slug), text)
                return stored
            txn = Transaction(self.user_root)
            if not overwrite:  # orphans of an earlier concept with this slug must not come back
                for path in self._user_vector_paths(slug):
                    txn.delete(path)
            txn.put(self._user_yaml(slug), text.encode("utf-8"))
            for path, blob in blobs.items():
                txn.put(path, blob)
            txn.commit()
        return stored

    def _refuse_taken(self, new: str, action: str) -> None:
        if self.exists(new):
            raise ConceptExists(f"cannot {action}: a concept named {new!r} already exists; choose another slug")

    def _user_vector_paths(self, slug: str) -> list[Path]:
        name = f"{validate_slug(slug)}{VECTOR_SUFFIX}"
        if not self.user_vectors.is_dir():
            return []
        return [folder / name for folder in sorted(self.user_vectors.iterdir()) if (folder / name).is_file()]

    def _copy_into(self, txn: Transaction, old: str, new: str, concept: Concept) -> Concept:
        """Stage ``concept`` (slug ``new``) and copies of ``old``'s vectors; clear orphans at ``new``."""
        text, stored = self._stored_text(concept)
        for path in self._user_vector_paths(new):
            txn.delete(path)
        txn.put(self._user_yaml(new), text.encode("utf-8"))
        for key, path in self._vector_files(old).items():
            try:
                data = path.read_bytes()
            except OSError as e:
                raise LibraryError(f"cannot read {self.shown(path)} ({e.strerror or type(e).__name__}); "
                                   "nothing was changed") from None
            txn.put(self._user_vec(new, key), data)
        return stored

    def rename(self, old: str, new: str, new_name: str | None = None) -> Concept:
        """Rename a user concept and its vectors, all at once (see ``txn``)."""
        validate_slug(old), validate_slug(new)
        if old == new:
            raise LibraryError(f"cannot rename {old!r} to itself; choose a different slug")
        with self.writer:
            if not self.has_user_copy(old):
                if self.is_shipped(old):
                    raise LibraryError(f"{old!r} is a shipped concept and cannot be renamed; duplicate it instead")
                raise ConceptNotFound(f"no user concept named {old!r} to rename")
            self._refuse_taken(new, f"rename {old!r} to {new!r}")
            current = self.get(old)
            concept = dataclasses.replace(current, slug=new, name=new_name or current.name)
            txn = Transaction(self.user_root)
            self._copy_into(txn, old, new, concept)
            for path in self._user_vector_paths(old):
                txn.delete(path)
            txn.delete(self._user_yaml(old))
            txn.commit()
            return self.get(new)

    def duplicate(self, slug: str, new_slug: str, new_name: str | None = None) -> Concept:
        """Copy a user or shipped concept (and its vectors) to a new user concept, all at once."""
        validate_slug(slug), validate_slug(new_slug)
        with self.writer:
            source = self.get(slug)
            self._refuse_taken(new_slug, f"duplicate {slug!r} as {new_slug!r}")
            name = new_name or f"{source.name[:93]} (copy)"
            provenance = {**source.provenance, "duplicated_from": slug}
            copy = dataclasses.replace(source, slug=new_slug, name=name, provenance=provenance)
            txn = Transaction(self.user_root)
            stored = self._copy_into(txn, slug, new_slug, copy)
            txn.commit()
            return stored

    def delete(self, slug: str) -> None:
        """Delete a user concept and its user vectors at once (a shadowed shipped concept reappears)."""
        validate_slug(slug)  # before the lock: a bad slug never touches the disk
        with self.writer:
            if not self.has_user_copy(slug):
                if self.is_shipped(slug):
                    raise LibraryError(
                        f"shipped concepts cannot be deleted; {slug!r} ships with the lab. "
                        "Duplicate it to make your own version, or just don't select it"
                    )
                raise ConceptNotFound(f"no user concept named {slug!r} to delete")
            txn = Transaction(self.user_root)
            for path in self._user_vector_paths(slug):
                txn.delete(path)
            txn.delete(self._user_yaml(slug))
            txn.commit()

    def set_recommendation(self, slug: str, model: str, rec: Recommendation) -> Concept:
        """Store a layer/strength for a model (id or key); shipped concepts get a user copy."""
        validate_slug(slug)
        with self.writer:
            concept = self.get(slug)
            concept.recommended = {**concept.recommended, model_key(model): rec}
            return self.save(concept, overwrite=True)

    def ship(self, concept: Concept, model_id: str, vectors: ConceptVectors) -> Path:
        """(Maintainers) write a SHIPPED concept's YAML and its vectors for a model, validated first.

        Used by ``calibrate --ship``: the vectors are written before the YAML, so a crash in
        between leaves at most new vectors beside the old settings, never settings without them.
        """
        slug = validate_slug(concept.slug)
        target = self._shipped_yaml(slug)
        if target is None or self.shipped_vectors is None or not target.is_file():
            raise LibraryError(f"{slug!r} is not a shipped concept; only shipped concepts can be shipped")
        text = concept_to_yaml(concept)
        parse_concept(text, slug, source=str(target))  # refuse anything the loader would refuse
        if vectors.concept_fingerprint != concept.pairs_fingerprint():
            raise StaleVectors(f"vectors for {slug!r} do not match its pairs; extract them again before shipping")
        path = self.shipped_vectors / validate_model_key(model_key(model_id)) / f"{slug}{VECTOR_SUFFIX}"
        atomic_write_bytes(path, encode_vectors(vectors, label=slug))
        atomic_write_text(target, text)
        return path

    # -- vectors -----------------------------------------------------------
    def save_vectors(self, slug: str, model_id: str, vectors: ConceptVectors) -> Path:
        """Store vectors for an existing concept; an empty concept_fingerprint is filled in."""
        path = self._user_vec(slug, model_key(model_id))
        with self.writer:
            concept = self.get(slug)
            if not vectors.concept_fingerprint:
                vectors = dataclasses.replace(vectors, concept_fingerprint=concept.pairs_fingerprint())
            atomic_write_bytes(path, encode_vectors(vectors, label=slug))
        return path

    def load_vectors(
        self, slug: str, model_id: str, model_fingerprint: str | None = None,
        hidden_size: int | None = None, num_layers: int | None = None,
    ) -> ConceptVectors | None:
        """Vectors for this model (user first, then shipped), or None when there are none.

        Raises ``VectorMismatch`` for another model's vectors and ``StaleVectors`` when the
        concept's pairs changed since extraction.
        """
        concept = self.get(slug)
        path = self._find_vectors(slug, model_key(model_id))
        if path is None:
            return None
        cv = load_vectors_file(path, model_fingerprint, hidden_size, num_layers, label=slug,
                                expect_model_id=model_id, source=self.shown(path))
        if cv.concept_fingerprint != concept.pairs_fingerprint():
            raise StaleVectors(
                f"vectors for {slug!r} on {model_id} were extracted before its pairs or system prompts "
                f"changed (fingerprint {cv.concept_fingerprint or 'none'} != {concept.pairs_fingerprint()}); "
                "re-extract the concept"
            )
        return cv

    def vector_status(
        self, slug: str, model_id: str, model_fingerprint: str | None = None,
        hidden_size: int | None = None, num_layers: int | None = None,
    ) -> str:
        """One of "ready", "missing", "stale", "mismatch" (an unreadable file counts as mismatch:
        re-extracting replaces it); the reason for an unreadable file goes to ``problems``."""
        self.get(slug)  # ConceptNotFound propagates: that is a caller error, not a status
        try:
            found = self.load_vectors(slug, model_id, model_fingerprint, hidden_size, num_layers)
        except StaleVectors:
            return "stale"
        except VectorMismatch:
            return "mismatch"
        except LibraryError as e:
            self.problems.append((self._find_vectors(slug, model_key(model_id)), str(e)))
            return "mismatch"
        return "missing" if found is None else "ready"

    # -- bundles -----------------------------------------------------------
    def export_bundle(self, slug: str) -> str:
        """One YAML text with the concept and its current (non-stale, readable) vectors."""
        concept = self.get(slug)
        vectors: dict[str, ConceptVectors] = {}
        for key, path in self._vector_files(slug).items():
            try:
                cv = load_vectors_file(path, label=slug, source=self.shown(path))
            except LibraryError as e:
                self.problems.append((path, str(e)))
                continue
            if cv.concept_fingerprint == concept.pairs_fingerprint():
                vectors[key] = cv
        return encode_bundle(concept, vectors)

    def import_bundle(self, text: str | bytes, slug: str | None = None, overwrite: bool = False) -> str:
        """Validate the whole bundle (outside the writer lock), then write it all at once; returns the slug."""
        concept, vectors = decode_bundle(text, slug)
        self.save_with_vectors(concept, vectors, overwrite=overwrite)  # model keys are their own keys
        return concept.slug

