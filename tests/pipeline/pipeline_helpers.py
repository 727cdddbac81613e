"""Small real plates (TIFF files with round nuclei) and run configurations for the pipeline tests."""

import numpy as np
import tifffile

from phenossl.config import config_from_dict


def disc_field(shape=(160, 160), centres=((80, 80),), radius=9, value=3000):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = np.full(shape, 200, dtype=np.uint16)
    for y, x in centres:
        image[(yy - y) ** 2 + (xx - x) ** 2 <= radius**2] = value
    return image


def plate_folder(folder, n_fields=2, centres=((40, 40), (40, 120), (120, 40), (120, 120), (80, 80)), plate="P1"):
    """``n_fields`` fields (wells B02, B03, ...) of DNA discs + random actin, BBBC021-style names."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n_fields):
        dna = disc_field(centres=centres)
        actin = (rng.random(dna.shape) * 1000).astype(np.uint16)
        tifffile.imwrite(folder / f"{plate}_B0{i + 2}_s1_w1.tif", dna)
        tifffile.imwrite(folder / f"{plate}_B0{i + 2}_s1_w2.tif", actin)
    return folder


def run_config(tmp_path, plate, **train):
    """A fast run of the plate folder(s) ``plate`` (1 epoch at 32 px on the CPU) into tmp_path/run."""
    plates = plate if isinstance(plate, (list, tuple)) else [plate]
    settings = dict(epochs=1, batch_size=4, resolution=32, device="cpu")
    settings.update(train)
    return config_from_dict({
        "name": "t",
        "input": {"paths": [str(p) for p in plates], "channel_names": {"w1": "DNA", "w2": "actin"}, "nuclear_channel": "DNA"},
        "segmentation": {"diameter": 18},
        "tiles": {"size": 48, "border": "pad"},
        "train": {"encoder": "resnet18", **settings},
        "cluster": {"k": 2, "n_nearest": 2},
        "output": {"dir": str(tmp_path / "run")},
    })


