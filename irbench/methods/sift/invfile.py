"""Inverted file: postings as flat CSR-by-visual-word arrays, and tf-idf BoW scoring.

`InvertedFile` is the substrate every word-based method shares. Posting list of word w
is the slice `indptr[w]:indptr[w + 1]` of

- `image_ids` uint32[P]: the database image of each posting (sorted within a list),
- `columns`: any number of per-posting arrays of length P — here the tf-idf weight
  (`weight`, float32); Hamming embedding adds a `signature` (uint64) and weak
  geometric consistency a quantized `angle` and `scale` (uint8), with one posting per
  feature instead of one per (word, image).

Everything is built with numpy sorts and `bincount` (no Python loop over postings),
and a query only touches the posting lists of its own words (`InvertedFile.gather`).

Indexes are built by streaming over the per-feature arrays (which may be memory-mapped
and larger than memory) in blocks of whole images (`image_blocks`), in two passes: the
first counts the postings of each word (and each word's document frequency), which
gives `indptr`; the second places each block's postings at per-word cursors — a stable
counting sort (`InvertedFile.from_blocks`), so within a list postings stay in image
order, then input order: the order a global sort by (word, image) gives. Per-image sums
(tf-idf norms) are complete within a block, since no image spans two. The output arrays
are `.npy` files in a folder, memory-mapped while they are filled (the pages written
are released after each block), or arrays in memory when no folder is given; peak
memory is O(V) + O(block), whatever the number of postings. The methods store an index
as a cache artifact whose files the build writes in place (`Method.cached_files`):
the cache stages the folder, checksums the files and renames it into place, so the
index is written once, never held in memory, and memory-mapped when reused (rather
than returned in memory and written by the cache, which would need it all in RAM, or
built in a temporary folder and copied, which writes it twice).

`TfIdfIndex` is the bag-of-words scorer (Sivic & Zisserman, "Video Google", ICCV 2003;
Philbin et al., CVPR 2007). With N database images, n_w of them containing word w, and
tf_{d,w} the number of features of image d assigned to w:

    idf_w    = log(N / n_w)                       (0 for a word no image contains)
    v_{d,w}  = tf_{d,w} · idf_w / || (tf_{d,·} · idf_·) ||_2
    score(q, d) = Σ_w v_{q,w} · v_{d,w}           (cosine similarity of tf-idf vectors)

The query vector v_q is built the same way from the query's words, with the database
idf. (Sivic & Zisserman write tf as n_{d,w} / n_d; the 1 / n_d factor cancels in the L2
normalization, so raw counts give the same scores.) Top-k follows
`irbench.core.search.topk_from_scores`: best first, ties to the lower index.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from irbench.core.cache import release_pages, release_rows
from irbench.core.progress import Advance
from irbench.core.search import topk_from_scores

__all__ = ["InvertedFile", "TfIdfIndex", "ranges", "bow_vectors", "image_blocks",
           "read_rows", "new_array", "block_vectors", "idf_of", "check_lengths",
           "BUILD_BLOCK", "build_steps"]

BLOCK_ELEMENTS = 1 << 16
"""Dense scores accumulated per block of queries: small blocks keep `bincount`'s output
in cache (measured fastest on 20k images; one query per block above 65,536 images)."""

BUILD_BLOCK = 1 << 18
"""Features read per block when an index is built (blocks end at image boundaries; an
image with more features is a block of its own): about 20 MB of temporaries for HE."""

RELEASE_EVERY = 1 << 12
"""Postings placed between releases of the written pages of a memory-mapped file being
built: at most this many pages (4 KiB) of each output array are resident at once."""

PostingBlock = tuple[np.ndarray, np.ndarray, Mapping[str, np.ndarray]]
"""(word ids, image ids, columns) of some postings, in image order."""

_STRUCTURE = ("indptr", "image_ids")
"""Names of the file's own arrays (a column may not take them)."""


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of `arange(s, s + l)` for each (s, l), int64, without a Python loop."""
    starts = np.asarray(starts, np.int64)
    lengths = np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    first = np.cumsum(lengths) - lengths  # where each range begins in the output
    return np.repeat(starts - first, lengths) + np.arange(total, dtype=np.int64)


def image_blocks(offsets: np.ndarray, block_features: int = BUILD_BLOCK
                 ) -> list[tuple[int, int]]:
    """Consecutive image ranges [begin, end) covering every image (empty ones too), each
    of at most `block_features` features unless one image alone has more."""
    offsets = np.asarray(offsets, np.int64)
    n = len(offsets) - 1
    out: list[tuple[int, int]] = []
    begin = 0
    while begin < n:
        end = int(np.searchsorted(offsets, offsets[begin] + max(1, int(block_features)),
                                  side="right")) - 1
        end = min(n, max(end, begin + 1))
        out.append((begin, end))
        begin = end
    return out


def build_steps(n_images: int) -> int:
    """The total a streaming build's `progress` reaches: it is called with the number of
    images of each block, in each of the two passes."""
    return 2 * int(n_images)


def read_rows(array: Any, begin: int, end: int) -> np.ndarray:
    """A copy of rows [begin, end) of an array (memory-mapped or a `ConcatRows`); the
    mapped pages read are released (`irbench.core.cache.release_pages`)."""
    rows = np.array(array[begin:end])
    release_pages(array)
    return rows


def new_array(folder: Path | None, name: str, dtype: Any, shape: tuple[int, ...]
              ) -> np.ndarray:
    """An uninitialised array `folder/NAME.npy`, memory-mapped for writing, or one in
    memory when `folder` is None."""
    if folder is None:
        return np.empty(shape, dtype)
    return np.lib.format.open_memmap(Path(folder) / f"{name}.npy", mode="w+",
                                     dtype=dtype, shape=shape)


def _placement(words: np.ndarray, cursor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, positions) of a block's postings in a CSR file being filled: the block
    sorted stably by word (`order`), and for each the next free slot of its list
    (`cursor`, int64[V], advanced past them). Positions increase along `order`."""
    order = np.argsort(words, kind="stable")
    w = words[order]
    m = len(w)
    first = np.ones(m, bool)  # the first posting of each word's run
    first[1:] = w[1:] != w[:-1]
    starts = np.flatnonzero(first)
    rank = np.arange(m, dtype=np.int64) - np.repeat(starts, np.diff(np.append(starts, m)))
    positions = cursor[w] + rank
    cursor[w[starts]] += np.diff(np.append(starts, m))
    return order, positions


class InvertedFile:
    """Postings in CSR layout by visual word: `indptr` int64[V+1], `image_ids` uint32[P],
    and per-posting `columns` (name -> array of length P)."""

    def __init__(self, indptr: np.ndarray, image_ids: np.ndarray, n_images: int,
                 columns: Mapping[str, np.ndarray] | None = None) -> None:
        self.indptr = np.asarray(indptr, np.int64)
        self.image_ids = np.asarray(image_ids, np.uint32)
        self.n_images = int(n_images)
        self.columns: dict[str, np.ndarray] = {k: np.asarray(v) for k, v in (columns or {}).items()}
        p = len(self.image_ids)
        if self.indptr[0] != 0 or self.indptr[-1] != p:
            raise ValueError("indptr must start at 0 and end at the number of postings")
        for name, col in self.columns.items():
            if len(col) != p:
                raise ValueError(f"column {name!r} has {len(col)} rows for {p} postings")

    @classmethod
    def from_postings(cls, words: np.ndarray, image_ids: np.ndarray, n_words: int,
                      n_images: int, columns: Mapping[str, np.ndarray] | None = None
                      ) -> InvertedFile:
        """Build from unordered postings (one per entry of `words`): sorted by word, then
        image, then input order (a stable sort, so equal inputs give equal files)."""
        words = np.asarray(words, np.int64)
        image_ids = np.asarray(image_ids, np.int64)
        if words.size and (words.min() < 0 or words.max() >= n_words):
            raise ValueError(f"word ids must lie in [0, {n_words})")
        if image_ids.size and (image_ids.min() < 0 or image_ids.max() >= n_images):
            raise ValueError(f"image ids must lie in [0, {n_images})")
        if n_images > np.iinfo(np.uint32).max:
            raise ValueError("at most 2**32 - 1 images")
        order = np.lexsort((image_ids, words))
        counts = np.bincount(words, minlength=n_words)
        indptr = np.zeros(n_words + 1, np.int64)
        np.cumsum(counts, out=indptr[1:])
        cols = {k: np.asarray(v)[order] for k, v in (columns or {}).items()}
        return cls(indptr, image_ids[order].astype(np.uint32), n_images, cols)

    @classmethod
    def from_blocks(cls, list_lengths: np.ndarray, blocks: Iterable[PostingBlock],
                    n_images: int, dtypes: Mapping[str, Any],
                    folder: Path | None = None) -> InvertedFile:
        """Build from postings given in blocks, in image order across and within blocks,
        and the length of every list (counted in a first pass over the same blocks): a
        stable counting sort, so the file equals `from_postings` of the concatenated
        blocks. Columns `dtypes` (name -> dtype); the arrays are `NAME.npy` files in
        `folder` (`indptr`, `image_ids`, each column), memory-mapped, or in memory when
        `folder` is None. Memory: O(V) + one block."""
        list_lengths = np.asarray(list_lengths, np.int64)
        n_words = len(list_lengths)
        if n_images > np.iinfo(np.uint32).max:
            raise ValueError("at most 2**32 - 1 images")
        clash = set(dtypes) & set(_STRUCTURE)
        if clash:
            raise ValueError(f"column names {sorted(clash)} are taken by the file's arrays")
        indptr = new_array(folder, "indptr", np.int64, (n_words + 1,))
        indptr[0] = 0
        np.cumsum(list_lengths, out=indptr[1:])
        p = int(indptr[-1])
        image_ids = new_array(folder, "image_ids", np.uint32, (p,))
        columns = {name: new_array(folder, name, dtype, (p,)) for name, dtype in dtypes.items()}
        cursor = np.array(indptr[:-1])
        ends = np.array(indptr[1:])
        last_image = -1
        for words, images, values in blocks:
            words = np.asarray(words, np.int64)
            images = np.asarray(images, np.int64)
            if len(images) != len(words):
                raise ValueError(f"a block has {len(words)} words and {len(images)} image ids")
            if not len(words):
                continue
            if words.min() < 0 or words.max() >= n_words:
                raise ValueError(f"word ids must lie in [0, {n_words})")
            if (images[0] < max(last_image, 0) or np.any(images[1:] < images[:-1])
                    or images[-1] >= n_images):
                raise ValueError(f"image ids must be in image order, in [0, {n_images})")
            last_image = int(images[-1])
            order, positions = _placement(words, cursor)
            if np.any(positions >= ends[words[order]]):
                raise ValueError("the blocks hold more postings of a word than counted")
            placed = {"image_ids": images[order]}
            for name in columns:
                column = np.asarray(values[name])
                if len(column) != len(words):
                    raise ValueError(f"column {name!r} has {len(column)} rows in a block of "
                                     f"{len(words)} postings")
                placed[name] = column[order]
            outputs = {"image_ids": image_ids, **columns}
            # Positions increase along `order`: a step of it writes one stretch of each
            # file, whose pages are released after it (a block's postings fall in every
            # list, so a mapped file would otherwise be resident whole after each block).
            step = len(order) if folder is None else RELEASE_EVERY
            for lo in range(0, len(order), step):
                at = positions[lo:lo + step]
                for name, out in outputs.items():
                    out[at] = placed[name][lo:lo + step]
                    release_rows(out, int(at[0]), int(at[-1]) + 1)
        if np.any(cursor != ends):
            raise ValueError("the blocks hold fewer postings than counted")
        return cls(indptr, image_ids, n_images, columns)

    # -- structure -----------------------------------------------------------------------

    @property
    def n_words(self) -> int:
        return len(self.indptr) - 1

    @property
    def n_postings(self) -> int:
        return len(self.image_ids)

    def list_lengths(self) -> np.ndarray:
        """Postings per word, int64[V]."""
        return np.diff(self.indptr)

    def word_of_posting(self) -> np.ndarray:
        """The word of every posting, int64[P]."""
        return np.repeat(np.arange(self.n_words, dtype=np.int64), self.list_lengths())

    def document_frequency(self) -> np.ndarray:
        """Number of distinct images in each posting list, int64[V]."""
        if self.n_postings == 0:
            return np.zeros(self.n_words, np.int64)
        word = self.word_of_posting()
        first = np.ones(self.n_postings, bool)  # first posting of an (image, word) run
        first[1:] = (word[1:] != word[:-1]) | (self.image_ids[1:] != self.image_ids[:-1])
        return np.bincount(word[first], minlength=self.n_words)

    def postings(self, word: int) -> slice:
        """The slice of posting list `word` in `image_ids` and the columns."""
        return slice(int(self.indptr[word]), int(self.indptr[word + 1]))

    def gather(self, words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Postings of `words`: (positions int64[m] into the posting arrays, and for each
        the index into `words` it came from, int64[m]). Only these lists are touched."""
        words = np.asarray(words, np.int64)
        starts = self.indptr[words]
        lengths = self.indptr[words + 1] - starts
        source = np.repeat(np.arange(len(words), dtype=np.int64), lengths)
        return ranges(starts, lengths), source

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays (indptr, image ids, every column)."""
        return int(self.indptr.nbytes + self.image_ids.nbytes
                   + sum(c.nbytes for c in self.columns.values()))

    def arrays(self) -> dict[str, np.ndarray]:
        """`indptr`, `image_ids` and the columns by name (what `from_arrays` reads)."""
        return {"indptr": self.indptr, "image_ids": self.image_ids, **self.columns}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any], n_images: int,
                    columns: Iterable[str]) -> InvertedFile:
        """The file of `arrays` (as `arrays` gives them; memory-mapped ones stay so)."""
        return cls(arrays["indptr"], arrays["image_ids"], n_images,
                   {name: arrays[name] for name in columns})

    def release(self) -> None:
        """Release the resident pages of memory-mapped posting arrays (after a scan)."""
        for array in (self.image_ids, *self.columns.values()):
            release_pages(array)


def bow_vectors(words: np.ndarray, offsets: np.ndarray, n_words: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse term counts of each image: (image int64[m], word int64[m], tf float64[m]),
    sorted by image then word, one entry per distinct (image, word)."""
    offsets = np.asarray(offsets, np.int64)
    n = len(offsets) - 1
    image = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    key = image * n_words + np.asarray(words, np.int64)
    uniq, counts = np.unique(key, return_counts=True)
    return uniq // n_words, uniq % n_words, counts.astype(np.float64)


def check_lengths(offsets: np.ndarray, **per_feature: Any) -> None:
    """ValueError unless `offsets` is a valid int64[N+1] and every per-feature array has
    `offsets[-1]` rows."""
    if offsets.ndim != 1 or len(offsets) < 1 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        raise ValueError("offsets must be int64[N+1], starting at 0 and non-decreasing")
    for name, array in per_feature.items():
        if len(array) != offsets[-1]:
            raise ValueError(f"{name} has {len(array)} rows for {int(offsets[-1])} features")


def idf_of(df: np.ndarray, n: int) -> np.ndarray:
    """idf_w = log(N / n_w), 0 for a word no image contains, float64[V]."""
    with np.errstate(divide="ignore"):
        return np.where(df > 0, np.log(n / np.maximum(df, 1)), 0.0)


def block_vectors(words: Any, offsets: np.ndarray, n_words: int,
                   blocks: Iterable[tuple[int, int]], progress: Advance | None = None
                   ) -> Iterator[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]]:
    """For each block of images [begin, end): (begin, end, and `bow_vectors` of its
    features: image int64[m] counted from `begin`, word int64[m], tf float64[m]), one
    entry per distinct (image, word), sorted by image then word. Word ids are checked.
    `progress` is called with the block's number of images once the caller is done with
    it (asks for the next block)."""
    for begin, end in blocks:
        w = read_rows(words, int(offsets[begin]), int(offsets[end])).astype(np.int64)
        if w.size and (w.min() < 0 or w.max() >= n_words):
            raise ValueError(f"word ids must lie in [0, {n_words})")
        yield begin, end, *bow_vectors(w, offsets[begin:end + 1] - offsets[begin], n_words)
        if progress is not None:
            progress(end - begin)


def _normalized_weights(image: np.ndarray, word: np.ndarray, tf: np.ndarray, idf: np.ndarray,
                        n: int) -> np.ndarray:
    """tf · idf divided by each image's L2 norm (0 where the norm is 0), float64."""
    w = tf * idf[word]
    norm = np.sqrt(np.bincount(image, weights=w * w, minlength=n))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norm[image] > 0, w / norm[image], 0.0)


class TfIdfIndex:
    """Bag-of-words search: an `InvertedFile` whose `weight` column holds the database's
    L2-normalized tf-idf weights, and the idf of each word (formula in the module doc)."""

    def __init__(self, invfile: InvertedFile, idf: np.ndarray) -> None:
        self.invfile = invfile
        self.idf = np.asarray(idf, np.float32)

    @classmethod
    def build_reference(cls, words: np.ndarray, offsets: np.ndarray, n_words: int
                        ) -> TfIdfIndex:
        """The former in-memory build (one global sort of every posting), kept as the
        reference `build` is tested and benchmarked against: the same index."""
        n = len(offsets) - 1
        image, word, tf = bow_vectors(words, offsets, n_words)
        df = np.bincount(word, minlength=n_words)
        with np.errstate(divide="ignore"):
            idf = np.where(df > 0, np.log(n / np.maximum(df, 1)), 0.0)
        weight = _normalized_weights(image, word, tf, idf, n)
        inv = InvertedFile.from_postings(word, image, n_words, n,
                                         {"weight": weight.astype(np.float32)})
        return cls(inv, idf.astype(np.float32))

    @classmethod
    def build(cls, words: np.ndarray, offsets: np.ndarray, n_words: int, *,
              folder: Path | None = None, block_features: int = BUILD_BLOCK,
              progress: Advance | None = None) -> TfIdfIndex:
        """From the word id of every database feature and per-image `offsets` (int64[N+1]),
        streaming over `words` (which may be memory-mapped) `block_features` at a time;
        the arrays are `.npy` files in `folder` (see `arrays`), or in memory when None.
        `progress` moves by the images of each block in each pass (`build_steps`)."""
        offsets = np.asarray(offsets, np.int64)
        n = len(offsets) - 1
        check_lengths(offsets, words=words)
        blocks = image_blocks(offsets, block_features)
        df = np.zeros(n_words, np.int64)  # pass 1: images containing each word
        for _, _, _, word, _ in block_vectors(words, offsets, n_words, blocks, progress):
            df += np.bincount(word, minlength=n_words)
        idf = idf_of(df, n)

        def postings() -> Iterator[PostingBlock]:  # pass 2: weights, by (word, image)
            for begin, end, image, word, tf in block_vectors(words, offsets, n_words, blocks,
                                                             progress):
                weight = _normalized_weights(image, word, tf, idf, end - begin)
                yield word, image + begin, {"weight": weight.astype(np.float32)}

        inv = InvertedFile.from_blocks(df, postings(), n, {"weight": np.float32}, folder)
        stored_idf = new_array(folder, "idf", np.float32, (n_words,))
        stored_idf[:] = idf
        return cls(inv, stored_idf)

    def arrays(self) -> dict[str, Any]:
        """The index as artifact values: its arrays and `n_images` (`from_arrays`)."""
        return {**self.invfile.arrays(), "idf": self.idf, "n_images": self.n_images}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any]) -> TfIdfIndex:
        """The index `arrays` describes (memory-mapped arrays stay mapped)."""
        return cls(InvertedFile.from_arrays(arrays, int(arrays["n_images"]), ("weight",)),
                   arrays["idf"])

    @property
    def n_images(self) -> int:
        return self.invfile.n_images

    @property
    def n_words(self) -> int:
        return self.invfile.n_words

    @property
    def nbytes(self) -> int:
        return self.invfile.nbytes + int(self.idf.nbytes)

    def query_vectors(self, words: np.ndarray, offsets: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sparse L2-normalized tf-idf vectors of queries: (query, word, weight float64),
        sorted by query then word."""
        offsets = np.asarray(offsets, np.int64)
        query, word, tf = bow_vectors(words, offsets, self.n_words)
        weight = _normalized_weights(query, word, tf, self.idf.astype(np.float64),
                                     len(offsets) - 1)
        keep = weight != 0
        return query[keep], word[keep], weight[keep]

    def scores(self, words: np.ndarray, offsets: np.ndarray, *,
               block_elements: int = BLOCK_ELEMENTS) -> np.ndarray:
        """Dense cosine scores float32[nq, N] of the queries given by their features' words
        and `offsets`, scanning only the queries' posting lists."""
        nq = len(offsets) - 1
        out = np.zeros((nq, self.n_images), np.float32)
        query, word, qweight = self.query_vectors(words, offsets)
        for begin, end in self._blocks(nq, block_elements):
            out[begin:end] = self._scores_block(query, word, qweight, begin, end)
            self.invfile.release()
        return out

    def _blocks(self, nq: int, block_elements: int) -> list[tuple[int, int]]:
        step = max(1, block_elements // max(1, self.n_images))
        return [(b, min(nq, b + step)) for b in range(0, nq, step)]

    def _scores_block(self, query: np.ndarray, word: np.ndarray, qweight: np.ndarray,
                      begin: int, end: int) -> np.ndarray:
        n = self.n_images
        sel = slice(*np.searchsorted(query, [begin, end]))
        pos, src = self.invfile.gather(word[sel])
        local = query[sel][src] - begin
        target = local * n + self.invfile.image_ids[pos]
        contrib = qweight[sel][src] * self.invfile.columns["weight"][pos]
        acc = np.bincount(target, weights=contrib, minlength=(end - begin) * n)
        return acc.reshape(end - begin, n).astype(np.float32)

    def search(self, words: np.ndarray, offsets: np.ndarray, k: int, *,
               block_elements: int = BLOCK_ELEMENTS) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (ranks int64[nq, k'], scores float32[nq, k']), k' = min(k, N), best first,
        ties to the lower database index; queries are scored in blocks of about
        `block_elements` dense scores (at least one query per block)."""
        nq = len(offsets) - 1
        n = self.n_images
        k = min(int(k), n)
        ranks = np.zeros((nq, k), np.int64)
        top = np.zeros((nq, k), np.float32)
        if nq == 0 or k == 0:
            return ranks, top
        query, word, qweight = self.query_vectors(words, offsets)
        for begin, end in self._blocks(nq, block_elements):
            scores = self._scores_block(query, word, qweight, begin, end)
            self.invfile.release()
            ranks[begin:end], top[begin:end] = topk_from_scores(scores, k)
        return ranks, top
