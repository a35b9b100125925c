"""Bag of visual words: SIFT (or RootSIFT), a k-means vocabulary, tf-idf inverted file.

- Features: DoG SIFT keypoints and descriptors (Lowe, IJCV 2004) via OpenCV, RootSIFT
  by default (Arandjelović & Zisserman, "Three things everyone should know to improve
  object retrieval", CVPR 2012). See `irbench.methods.sift.keypoints`.
- Vocabulary: k-means (faiss; HNSW assignment above 4,096 words) of 20,000 words by
  default on `vocabulary_source` (default: the dataset's independent set, else its train
  split, else its database), or a vocabulary file; hard assignment to the nearest word
  (Sivic & Zisserman, "Video Google: a text retrieval approach to object matching in
  videos", ICCV 2003). See `vocabulary`.
- Search: tf-idf weighted, L2-normalized BoW vectors compared by cosine similarity
  through an inverted file (Sivic & Zisserman 2003; Philbin, Chum, Isard, Sivic &
  Zisserman, "Object retrieval with large vocabularies and fast spatial matching",
  CVPR 2007, without its spatial re-ranking). See `invfile`.

Deviations from the papers, all config fields: DoG instead of Hessian-affine regions,
RootSIFT on, 20,000 words by default (Philbin et al. use 1M words by approximate
k-means: `--set vocabulary_size=1000000`), a keypoint cap per image.

Stages and their cache artifacts, shared by every SIFT method whose fields agree:
`sift/features` (per image list), `vocabulary` (per training image list), `words`
(the word of every feature, per image list and vocabulary) and `tfidf-index` (the
database's inverted file, built streaming and memory-mapped); see `SIFT_STAGES`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from irbench.core.cache import release_pages
from irbench.core.progress import Advance
from irbench.datasets.base import Image, Query
from irbench.errors import ConfigError, IrbenchError
from irbench.methods.base import Method, Stage
from irbench.methods.sift.invfile import TfIdfIndex, build_steps
from irbench.methods.sift.keypoints import (
    DESCRIPTOR_DIM,
    SIFT_STAGE,
    Features,
    SiftOptions,
    descriptor_vectors,
    drop_descriptors,
    extract_features,
    features_id,
    sift_params,
)
from irbench.methods.sift.vocabulary import (
    FILE_PREFIX,
    VOCABULARY_STAGE,
    Vocabulary,
    VocabularyOptions,
    load_vocabulary_file,
    resolve_vocabulary_size,
    sample_indices,
    train_kmeans,
    training_sample_size,
    use_hnsw,
)

log = logging.getLogger(__name__)

__all__ = ["BowConfig", "BowMethod", "SiftVocabularyMethod", "SIFT_STAGES", "TFIDF_STAGE"]

TFIDF_STAGE = "tfidf-index"
"""The cached stage of a database's `TfIdfIndex` (its arrays memory-mapped)."""

SIFT_STAGES: dict[str, Stage] = {
    SIFT_STAGE: Stage(shared=True),
    VOCABULARY_STAGE: Stage(after=(SIFT_STAGE,), seeded=True, shared=True),
    "words": Stage(after=(VOCABULARY_STAGE,), shared=True),
    TFIDF_STAGE: Stage(after=("words",), shared=True),
}
"""The cached stages of the vocabulary-based SIFT methods (extraction, vocabulary,
quantization, the tf-idf inverted file of a database); `sift/features` is keyed by
`keypoints.extract_features` itself."""


class _DescriptorsPerImage(Sequence[np.ndarray]):
    """The stored descriptors of each image of a list, as a sequence of arrays; the
    features are loaded (`load`) on first access, so cached words never load them."""

    def __init__(self, n_images: int, load: Callable[[], Features]) -> None:
        self._n = n_images
        self._load = load
        self._features: Features | None = None

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index):  # int -> array, slice -> list of arrays
        if self._features is None:
            self._features = self._load()
        offsets, descriptors = self._features.offsets, self._features.descriptors
        if isinstance(index, slice):
            return [descriptors[offsets[i]:offsets[i + 1]]
                    for i in range(*index.indices(self._n))]
        i = range(self._n)[index]
        return descriptors[offsets[i]:offsets[i + 1]]


def _quantize_images(vocabulary: Vocabulary, use_rootsift: bool,
                     per_image: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """The word of every stored descriptor, per image (the `words` stage's compute; a
    module-level function of picklable arguments, so a shard can run elsewhere)."""
    counts = [len(d) for d in per_image]
    descriptors = (np.concatenate(per_image) if per_image
                   else np.zeros((0, DESCRIPTOR_DIM), np.uint8))
    for rows in per_image[:1]:  # views of one memory-mapped file: release what was read
        release_pages(rows)
    words = vocabulary.quantize(
        descriptors, prepare=functools.partial(descriptor_vectors, use_rootsift=use_rootsift))
    return [{"words": w} for w in np.split(words, np.cumsum(counts)[:-1])]


@dataclass(frozen=True)
class BowConfig(VocabularyOptions, SiftOptions):
    """Bag of words: the SIFT fields, then the vocabulary fields (see their modules)."""


class SiftVocabularyMethod(Method):
    """Shared machinery of vocabulary-based SIFT methods: cached feature extraction,
    vocabulary training (train split, else database) and cached quantization.

    Subclasses (bag of words here; Hamming embedding, spatial / geometric coding later)
    call `features`, `ensure_vocabulary` and `words`, and build their own index.
    """

    stages: ClassVar[Mapping[str, Stage]] = SIFT_STAGES

    def __init__(self, config: Any = None, context: Any = None) -> None:
        super().__init__(config, context)
        self._vocabulary: Vocabulary | None = None
        self._vocabulary_id: str = ""
        self._vocabulary_training: tuple[Sequence[Image], str] | None = None
        """(images, trained_on label) of the current vocabulary."""
        self._last_features: Features | None = None
        self._extracted: dict[str, Sequence[Image | Query]] = {}
        """The image lists whose features this method read, by features id."""

    # -- features ---------------------------------------------------------------------

    def features(self, role: str, images: Sequence[Image | Query]) -> Features:
        """SIFT features of `images` (queries on their crop box), cached by content. The
        latest list is also kept in memory (vocabulary training and quantization of the
        database read it back to back); `forget_features` drops it."""
        fid = self.features_id(images)
        if self._last_features is not None and self._last_features.id == fid:
            return self._last_features
        self._last_features = None
        feats = extract_features(images, sift_params(self.config), self.context,
                                 description=f"{self.name}: SIFT ({role})")
        self._last_features = feats
        self._extracted[fid] = images
        return feats

    def features_id(self, images: Sequence[Image | Query]) -> str:
        """The id of the SIFT extraction of `images`, without loading it."""
        return features_id(images, sift_params(self.config), self.context)

    def forget_features(self) -> None:
        self._last_features = None

    def drop_descriptors(self, image_lists: Sequence[Sequence[Any]]) -> int:
        """Delete the stored SIFT descriptors of `image_lists` and of every list this
        method extracted (`keypoints.drop_descriptors`); the geometry, words, signatures,
        vocabulary and indexes stay cached."""
        self.forget_features()
        lists = {self.features_id(images): images for images in image_lists if len(images)}
        lists.update(self._extracted)
        return sum(drop_descriptors(images, sift_params(self.config), self.context)
                   for images in lists.values())

    def vectors(self, descriptors: np.ndarray) -> np.ndarray:
        """Stored uint8 descriptors as the float32 vectors the vocabulary sees."""
        return descriptor_vectors(descriptors, self.config.rootsift)

    # -- vocabulary -------------------------------------------------------------------

    def ensure_vocabulary(self, images: Sequence[Image], trained_on: str) -> Vocabulary:
        """Train (or load from the cache) the vocabulary on `images`' descriptors;
        `trained_on` says which images they are (for the run record)."""
        cfg = self.config
        computed = False

        def compute() -> dict[str, Any]:
            nonlocal computed
            computed = True
            feats = self.features(trained_on, images)
            n = int(feats.n_features)
            size = resolve_vocabulary_size(cfg.vocabulary_size, n,
                                           cfg.min_descriptors_per_word)
            idx = sample_indices(n, training_sample_size(
                size, cfg.training_descriptors_per_word, n), self.context.seed)
            x = self.vectors(feats.descriptors[idx])
            with self.context.progress.task(f"{self.name}: k-means ({size} words)",
                                            total=cfg.kmeans_iterations) as bar:
                centroids = train_kmeans(x, size, niter=cfg.kmeans_iterations,
                                         seed=self.context.seed,
                                         hnsw=use_hnsw(cfg.kmeans_assignment, size),
                                         progress=bar)
            return {"centroids": centroids,
                    "n_training_images": len(images),
                    "n_available_descriptors": n,
                    "n_training_descriptors": len(idx)}

        art = self.cached(VOCABULARY_STAGE, compute,
                          inputs={"features": self.features_id(images)})
        size = int(np.asarray(art["centroids"]).shape[0])
        self._set_vocabulary(art["centroids"], art.id, reused=not computed)
        self._vocabulary_training = (images, trained_on)
        n_avail = int(art["n_available_descriptors"])
        self._info.update({
            "vocabulary_trained_on": trained_on,
            "n_training_images": int(art["n_training_images"]),
            "n_training_descriptors": int(art["n_training_descriptors"]),
            "n_available_training_descriptors": n_avail,
        })
        if size < cfg.vocabulary_size:
            log.warning("%s: vocabulary of %d words instead of vocabulary_size=%d: the %d "
                        "training descriptors (%s) allow at most %d words at "
                        "min_descriptors_per_word=%d; train on a larger set "
                        "(vocabulary_source) or lower min_descriptors_per_word",
                        self.name, size, cfg.vocabulary_size, n_avail, trained_on, size,
                        cfg.min_descriptors_per_word)
            self._info["vocabulary_shrunk"] = (
                f"{n_avail} training descriptors < {cfg.min_descriptors_per_word} per word")
        return self._vocabulary

    def _set_vocabulary(self, centroids: np.ndarray, vocabulary_id: str, *, reused: bool
                        ) -> None:
        cfg = self.config
        self._vocabulary = Vocabulary(centroids,
                                      hnsw=use_hnsw(cfg.kmeans_assignment, len(centroids)))
        self._vocabulary_id = vocabulary_id
        self._info.update({
            "vocabulary_id": vocabulary_id,
            "vocabulary_reused": reused,
            "vocabulary_size_requested": cfg.vocabulary_size,
            "vocabulary_size": self._vocabulary.size,
            "vocabulary_assignment": "hnsw" if self._vocabulary.hnsw else "exact",
            "descriptor": "rootsift" if cfg.rootsift else "sift",
        })

    def load_vocabulary(self, path: str) -> Vocabulary:
        """Use the vocabulary file `path` (`vocabulary.save_vocabulary`): its content hash
        names it, so the words quantized with it are cached like any other vocabulary's."""
        centroids, digest = load_vocabulary_file(path)
        self._set_vocabulary(centroids, f"file-{digest}", reused=True)
        self._info["vocabulary_trained_on"] = f"file:{path}"
        return self._vocabulary

    def inverted_file_bar(self, n_images: int) -> contextlib.AbstractContextManager[Advance]:
        """The progress bar of a streaming inverted-file build over `n_images` database
        images: each image once in each of its two passes (`invfile.build_steps`)."""
        return self.context.progress.task(f"{self.name}: inverted file (2 passes)",
                                          total=build_steps(n_images))

    def words(self, role: str, images: Sequence[Image | Query]) -> tuple[np.ndarray, np.ndarray]:
        """(word id of every feature uint32[F], per-image offsets int64[n+1]), cached in
        shards of images (on the context's executor, like the extraction); the features
        are loaded only when the words are not cached."""
        if self._vocabulary is None:
            raise RuntimeError(f"{self.name}: no vocabulary yet (call fit/index first)")
        rows = _DescriptorsPerImage(len(images), lambda: self.features(role, images))
        art = self.cached_map("words", rows,
                              functools.partial(_quantize_images, self._vocabulary,
                                                self.config.rootsift),
                              inputs={"vocabulary": self._vocabulary_id,
                                      "features": self.features_id(images)},
                              description=f"{self.name}: quantize ({role})")
        words = art.get("words", np.zeros(0, np.uint32))  # an empty list stores offsets only
        return np.asarray(words, np.uint32), np.asarray(art["offsets"], np.int64)

    # -- the contract -----------------------------------------------------------------

    def fit(self, train: Sequence[Image]) -> None:
        """Train the vocabulary on the images `vocabulary_source` names (see
        `VocabularyOptions`); 'database' defers to `index`."""
        train = list(train)
        source = self.config.vocabulary_source
        if source == "auto":
            source = self.context.independent_set or ("train" if train else "database")
        if source == "train":
            if not train:
                raise ConfigError(f"{self.name}: vocabulary_source='train' but the dataset "
                                  f"{self.context.dataset_id or '(unnamed)'} has no train split; "
                                  f"use 'auto', 'database' or a dataset name")
            self.ensure_vocabulary(train, "train")
        elif source.startswith(FILE_PREFIX):
            self.load_vocabulary(source[len(FILE_PREFIX):])
        elif source != "database":
            images, dataset_id = self._independent_images(source)
            self.ensure_vocabulary(images, dataset_id)
            self._info["vocabulary_independent_set"] = source
        self.forget_features()

    def _independent_images(self, name: str) -> tuple[Sequence[Image], str]:
        """The database of the registered dataset `name`, and its dataset id."""
        hint = (f"the vocabulary of {self.name} on {self.context.dataset_id or 'this dataset'} "
                f"is trained on {name!r} (vocabulary_source={self.config.vocabulary_source!r}"
                f"; 'auto' picks the dataset's customary independent set). Fetch it with "
                f"`bench data fetch {name}`, or pass --set vocabulary_source=train (or "
                f"database) to train on this dataset instead")
        if self.context.load_dataset is None:
            raise ConfigError(f"{hint}; this run context cannot load other datasets (run "
                              f"through irbench.harness.runner.run)")
        try:
            ds = self.context.load_dataset(name)
        except IrbenchError as exc:
            raise type(exc)(f"{exc}\n{hint}") from exc
        if not len(ds.database):
            raise ConfigError(f"{hint}; it has no database images")
        return ds.database, f"{ds.name}@{ds.version}"

    def prepare_database(self, database: Sequence[Image], *, keep_features: bool = False
                         ) -> tuple[np.ndarray, np.ndarray]:
        """Vocabulary (trained on the database if `fit` had no train split) and the
        database's words and offsets; records feature counts in `info`. The list is
        passed on as given, so shared segments (distractors) keep their own cache.
        `keep_features` keeps the database features in memory for the caller's next
        `features` / `embedded` call (it then calls `forget_features`)."""
        if self._vocabulary is None:
            self.ensure_vocabulary(database, "database")
        elif self._vocabulary_training is None:  # a vocabulary file: train the rest here
            self._vocabulary_training = (database, "database")
        words, offsets = self.words("database", database)
        if not keep_features:
            self.forget_features()
        counts = np.diff(offsets)
        self._info.update({
            "database_features": int(offsets[-1]),
            "mean_features_per_image": round(float(counts.mean()), 2) if len(counts) else 0.0,
            "images_without_features": int((counts == 0).sum()),
        })
        return words, offsets


class BowMethod(SiftVocabularyMethod):
    """Bag of visual words with tf-idf weighting and an inverted file."""

    name = "bow"
    description = "Bag of visual words: RootSIFT, k-means vocabulary, tf-idf inverted file"
    Config = BowConfig

    def __init__(self, config: Any = None, context: Any = None) -> None:
        super().__init__(config, context)
        self._index: TfIdfIndex | None = None

    def index(self, database: Sequence[Image]) -> None:
        """Build (or load from the cache, memory-mapped) the database's inverted file."""
        words, offsets = self.prepare_database(database)
        n_words = self._vocabulary.size

        def write(folder: Path | None) -> dict[str, Any]:
            with self.inverted_file_bar(len(offsets) - 1) as bar:
                return TfIdfIndex.build(words, offsets, n_words, folder=folder,
                                        progress=bar).arrays()

        art = self.cached_files(TFIDF_STAGE, write, inputs={
            "vocabulary": self._vocabulary_id, "features": self.features_id(database)})
        self._index = TfIdfIndex.from_arrays(art)
        self._info["postings"] = int(self._index.invfile.n_postings)

    def query(self, queries: Sequence[Query], k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._index is None:
            raise RuntimeError("bow: index() must run before query()")
        words, offsets = self.words("queries", queries)
        self.forget_features()
        counts = np.diff(offsets)
        self._info["query_features"] = int(offsets[-1])
        self._info["queries_without_features"] = int((counts == 0).sum())
        return self._index.search(words, offsets, k)

    def index_bytes(self) -> int | None:
        return None if self._index is None else self._index.nbytes
