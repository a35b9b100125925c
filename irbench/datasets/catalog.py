"""Where each benchmark's files come from and how they lie on disk (one place for all).

Official addresses first, known mirrors after. None of these sources publishes a
checksum we could embed, so the SHA-256 of the first download is recorded and checked
afterwards (see `irbench.datasets.storage`).
"""

from __future__ import annotations

from pathlib import Path

from irbench.datasets.storage import Package, Source
from irbench.errors import DatasetError, UnknownNameError

OXFORD = "https://www.robots.ox.ac.uk/~vgg/data/oxbuildings"
PARIS = "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings"
REVISITOP = "http://cmp.felk.cvut.cz/revisitop/data/datasets"
R1M = "http://ptak.felk.cvut.cz/revisitop/revisitop1m"
INSTRE_FTP = "ftp://ftp.irisa.fr/local/texmex/corpus/instre"
HOLIDAYS_FTP = "ftp://ftp.inrialpes.fr/pub/lear/douze/data"

PARIS_CORRUPT = frozenset({
    "paris_louvre_000136", "paris_louvre_000146", "paris_moulinrouge_000422",
    "paris_museedorsay_001059", "paris_notredame_000188", "paris_pantheon_000284",
    "paris_pantheon_000960", "paris_pantheon_000974", "paris_pompidou_000195",
    "paris_pompidou_000196", "paris_pompidou_000201", "paris_pompidou_000467",
    "paris_pompidou_000640", "paris_sacrecoeur_000299", "paris_sacrecoeur_000330",
    "paris_sacrecoeur_000353", "paris_triomphe_000662", "paris_triomphe_000833",
    "paris_triomphe_000863", "paris_triomphe_000867",
})
"""The 20 Paris images that do not decode, listed by the dataset's authors in
`https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/corrupt.txt`. The community
(and the revisited rParis6k, built without them) drops them from the database and from
every ground-truth list: 6,412 files, 6,392 images."""


PACKAGES: dict[str, Package] = {}


def _add(package: Package) -> Package:
    PACKAGES[package.name] = package
    return package


_add(Package(
    name="oxford5k", required=("jpg", "gt"), folder="oxford5k",
    description="Oxford Buildings: 5,063 images and the 55 queries' ground truth",
    sources=(
        Source("oxbuild_images-v1.tgz", (f"{OXFORD}/oxbuild_images-v1.tgz",
                                         f"{OXFORD}/oxbuild_images.tgz"),
               extract_to="jpg", flatten=True, keep=(".jpg",)),
        Source("gt_files_170407.tgz", (f"{OXFORD}/gt_files_170407.tgz",),
               extract_to="gt", flatten=True, keep=(".txt",)),
    ),
    layout="oxford5k/jpg/<name>.jpg (5,063)\noxford5k/gt/<query>_{query,good,ok,junk}.txt (55 x 4)",
    homepage=f"{OXFORD}/",
    citation="Philbin et al., Object retrieval with large vocabularies and fast spatial "
             "matching, CVPR 2007",
    expected_images=5063,
))

_add(Package(
    name="paris6k", required=("jpg", "gt"), folder="paris6k",
    description="Paris Buildings: 6,412 files (20 corrupt) and the 55 queries' ground truth",
    sources=(
        Source("paris_1-v1.tgz", (f"{PARIS}/paris_1-v1.tgz", f"{PARIS}/paris_1.tgz"),
               extract_to="jpg", flatten=True, keep=(".jpg",)),
        Source("paris_2-v1.tgz", (f"{PARIS}/paris_2-v1.tgz", f"{PARIS}/paris_2.tgz"),
               extract_to="jpg", flatten=True, keep=(".jpg",)),
        Source("paris_120310.tgz", (f"{PARIS}/paris_120310.tgz",),
               extract_to="gt", flatten=True, keep=(".txt",)),
    ),
    layout="paris6k/jpg/<name>.jpg (6,412, of which 20 known corrupt)\n"
           "paris6k/gt/<query>_{query,good,ok,junk}.txt (55 x 4)",
    homepage=f"{PARIS}/",
    citation="Philbin et al., Lost in quantization, CVPR 2008",
    expected_images=6412,
    known_corrupt=PARIS_CORRUPT,
    notes=("The 20 images of corrupt.txt do not decode; the loader drops them from the "
           "database and the ground truth, as the community does (6,392 images).",),
))

_add(Package(
    name="flickr100k", required=("jpg",), folder="flickr100k",
    description="Oxford's 100,071 Flickr distractors (for oxford105k and paris106k)",
    sources=(),
    layout="flickr100k/jpg/**/<name>.jpg (100,071, any subfolders)",
    homepage=f"{OXFORD}/flickr100k.html",
    citation="Philbin et al., CVPR 2007",
    expected_images=100071,
    manual=("The Flickr 100k distractors are distributed in several parts from "
            f"{OXFORD}/flickr100k.html, with no stable direct addresses irbench could "
            "check. Download the parts there, then run `bench data fetch flickr100k --from "
            "FOLDER` (a folder of the .tgz parts, or of the extracted images)."),
))

for _name, _base, _count in (("roxford5k", "oxford5k", 4993), ("rparis6k", "paris6k", 6322)):
    _add(Package(
        name=_name, folder=_name, required=(f"gnd_{_name}.pkl",),
        description=f"Revisited {_base[:-2]} ground truth (gnd_{_name}.pkl); images from "
                    f"{_base}",
        sources=(Source(f"gnd_{_name}.pkl", (f"{REVISITOP}/{_name}/gnd_{_name}.pkl",),
                        extract_to=None),),
        layout=f"{_name}/gnd_{_name}.pkl; images in {_base}/jpg/ (or {_name}/jpg/)",
        homepage="http://cmp.felk.cvut.cz/revisitop/",
        citation="Radenović et al., Revisiting Oxford and Paris, CVPR 2018",
        expected_images=None,
    ))

_add(Package(
    name="r1m", required=("revisitop1m.txt", "jpg"), folder="revisitop1m",
    description="The revisited 1M distractors (R1M): 1,001,001 images in 100 archives",
    sources=(Source("revisitop1m.txt", (f"{R1M}/revisitop1m.txt",), extract_to=None),)
    + tuple(Source(f"revisitop1m.{i}.tar.gz", (f"{R1M}/jpg/revisitop1m.{i}.tar.gz",),
                   extract_to="jpg", keep=(".jpg",)) for i in range(1, 101)),
    layout="revisitop1m/revisitop1m.txt (1,001,001 relative paths)\n"
           "revisitop1m/jpg/<path from the list>",
    homepage="http://cmp.felk.cvut.cz/revisitop/",
    citation="Radenović et al., CVPR 2018",
    expected_images=1001001,
))

_add(Package(
    name="instre", required=("gnd_instre.mat",), folder="instre",
    description="INSTRE: 28,543 images (S1, S2, M) with per-image boxes, and gnd_instre.mat",
    sources=(
        Source("instre.tar.gz", (f"{INSTRE_FTP}/instre.tar.gz",), extract_to="."),
        Source("gnd_instre.mat", (f"{INSTRE_FTP}/gnd_instre.mat",), extract_to=None),
    ),
    layout="instre/gnd_instre.mat\n"
           "instre/INSTRE-S1/<class>/<nnn>.jpg and <nnn>.txt (box: x y w h)\n"
           "instre/INSTRE-S2/<class>/...\ninstre/INSTRE-M/<class>/...",
    homepage="http://123.57.42.89/instre/home.html",
    citation="Wang and Jiang, INSTRE: a new benchmark for instance-level object retrieval "
             "and recognition, ACM TOMM 2015; protocol of Iscen et al., CVPR 2017",
    expected_images=28543,
    notes=("The images are re-hosted by the texmex corpus at IRISA (the official site "
           "serves a .rar archive); gnd_instre.mat is Iscen et al.'s protocol file.",),
))

_add(Package(
    name="holidays", required=("jpg",), folder="holidays",
    description="INRIA Holidays: 1,491 images in 500 groups, as distributed "
                "(read with orientation=original)",
    sources=(
        Source("jpg1.tar.gz", (f"{HOLIDAYS_FTP}/jpg1.tar.gz",), extract_to="jpg",
               flatten=True, keep=(".jpg",)),
        Source("jpg2.tar.gz", (f"{HOLIDAYS_FTP}/jpg2.tar.gz",), extract_to="jpg",
               flatten=True, keep=(".jpg",)),
    ),
    layout="holidays/jpg/<nnnnnn>.jpg (1,491; the group is the name's first four digits, "
           "the query ends in 00)",
    homepage="https://lear.inrialpes.fr/people/jegou/data.php",
    citation="Jégou et al., Hamming embedding and weak geometric consistency, ECCV 2008",
    expected_images=1491,
))

_add(Package(
    name="holidays-upright", required=("jpg_upright",), folder="holidays",
    description="INRIA Holidays with the sideways photos turned upright (the default "
                "orientation; as CNN-era papers evaluate)",
    sources=(Source("holidays_rotated.tar.gz",
                    ("https://www.dropbox.com/s/f1z8pgzhkf52tcb/holidays_rotated.tar.gz?dl=1",),
                    extract_to="jpg_upright", flatten=True, keep=(".jpg",)),),
    layout="holidays/jpg_upright/<nnnnnn>.jpg (1,491, same names as jpg/; the default "
           "orientation=upright reads these)",
    homepage="https://lear.inrialpes.fr/people/jegou/data.php",
    citation="the copy with fixed orientations circulated with CNN retrieval code "
             "(Babenko et al. 2014 and later rotate the sideways photos upright)",
    expected_images=1491,
    notes=("A third-party copy (no official upright release exists); its SHA-256 is "
           "recorded at first download.",),
))

_add(Package(
    name="ukbench", required=("full",), folder="ukbench",
    description="UKBench (Nistér and Stewénius): 10,200 images, 2,550 objects x 4",
    sources=(Source("ukbench.zip", ("http://vis.uky.edu/~stewe/ukbench/ukbench.zip",
                                    "https://archive.org/download/ukbench/ukbench.zip"),
                    extract_to=".", keep=(".jpg",)),),
    layout="ukbench/full/ukbench<nnnnn>.jpg (10,200; four consecutive images per object)",
    homepage="https://archive.org/details/ukbench",
    citation="Nistér and Stewénius, Scalable recognition with a vocabulary tree, CVPR 2006",
    expected_images=10200,
))


def get_package(name: str) -> Package:
    try:
        return PACKAGES[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(PACKAGES), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownNameError(f"unknown data package {name!r}.{hint} Known: "
                               f"{', '.join(sorted(PACKAGES))}") from None


def missing(package: Package, data_root: Path, what: str, dataset: str | None = None,
            fetch: str | None = None) -> DatasetError:
    """The error for a missing file or folder: what, where, the layout, the fetch command
    (`bench data fetch <fetch or dataset or package>`)."""
    name = dataset or package.name
    how = (f"`bench data fetch {fetch or name}`" if not package.manual
           else f"`bench data fetch {package.name} --from PATH` ({package.manual})")
    return DatasetError(
        f"dataset {name}: {what} not found under {Path(data_root)}.\n"
        f"Expected layout under the data root:\n  "
        + package.layout.replace("\n", "\n  ")
        + f"\nGet it with {how}, or point --data-root / IRBENCH_DATA at a folder that has it.")
