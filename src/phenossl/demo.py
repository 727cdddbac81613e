"""The demo: the whole pipeline on the bundled synthetic plate, small enough for a laptop CPU."""

from __future__ import annotations

from pathlib import Path

from phenossl.config import RunConfig, config_from_dict

DEMO_EPOCHS = 20


def demo_config(out: Path | str = "phenossl-demo", *, epochs: int | None = None, overwrite: bool = False,
                device: str = "auto") -> RunConfig:
    """The demo's configuration: three phenotypes at two densities, the paper's morphology composition."""
    from phenossl.synthetic import sample_data_path

    plate = sample_data_path()
    return config_from_dict(
        {
            "name": "demo",
            "seed": 0,
            "input": {
                "kind": "plate",
                "paths": [str(plate)],
                "channel_names": {"w1": "DNA", "w2": "tubulin", "w3": "actin"},
                "nuclear_channel": "DNA",
                "metadata": str(plate / "metadata.csv"),
            },
            "segmentation": {"backend": "classical"},
            "tiles": {"size": 196, "border": "pad"},
            "train": {
                "method": "mocov2",
                "encoder": "resnet18",
                "composition_a": "morphology",
                "composition_b": "context",
                "weight_a": 1.0,
                "epochs": epochs or DEMO_EPOCHS,
                "batch_size": 64,
                "resolution": 64,
                "device": device,
            },
            "cluster": {"k": 3, "label_columns": ["compound", "density_condition"]},
            "output": {"dir": str(out), "overwrite": overwrite},
        }
    )
