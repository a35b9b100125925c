"""Paris Buildings (`paris6k`, `paris106k`): the Oxford protocol on Paris landmarks.

Philbin et al., CVPR 2008. 6,412 files, of which the 20 listed in the dataset's
`corrupt.txt` do not decode: they are left out of the database and out of every
ground-truth list, as the community does (and as the revisited rParis6k was built), so
the database has 6,392 images. 55 queries cropped to their boxes, good + ok positive,
junk ignored; train split = the 55 query crops with their 11 landmarks.
"""

from __future__ import annotations

from irbench.datasets.catalog import PARIS_CORRUPT
from irbench.datasets.oxford import BuildingsDataset


class Paris6k(BuildingsDataset):
    name = "paris6k"
    description = ("Paris Buildings: 6,392 images (20 corrupt files dropped), 55 cropped "
                   "queries.")
    package = "paris6k"
    packages = ("paris6k",)
    independent_set = "oxford5k"
    dropped = PARIS_CORRUPT
    protocol_note = "; the 20 corrupt images are dropped from database and ground truth"
