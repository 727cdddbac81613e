"""``python -m phenossl.synthetic --out FOLDER --seed 0``: write a synthetic plate (see ``files.main``)."""

from phenossl.synthetic.files import main

if __name__ == "__main__":
    raise SystemExit(main())
