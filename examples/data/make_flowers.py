"""Writes flowers.parquet, the table of examples/flowers_table.dl: 300 flowers of three species
("alba", "nigra", "rubra"), each with three measurements (petal_length, petal_width, stem_cm,
float32) and the soil it grew in ("clay", "loam", "sand", a dictionary column).

A species sets the mean of each measurement, and the soil moves the petals: on sand they are
smaller, on clay larger, so the measurements alone confuse alba on clay with nigra on sand, and
a classifier that also reads the soil does better. Everything is drawn from one seeded generator:
`python examples/data/make_flowers.py` rewrites the same file (it needs pyarrow: dlc[tables]).
"""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).parent
N = 300
SPECIES = ["alba", "nigra", "rubra"]
SOILS = ["clay", "loam", "sand"]
MEANS = np.array([[3.0, 1.0, 30.0], [4.0, 1.4, 32.0], [5.0, 1.8, 36.0]])  # per species: petals, stem
SOIL_SHIFT = np.array([0.6, 0.0, -0.6])  # per soil: on the petals


def main():
    rng = np.random.default_rng(0)
    species = rng.integers(0, 3, N)
    soil = rng.integers(0, 3, N)
    x = MEANS[species] + rng.normal(0, [0.25, 0.12, 3.0], (N, 3))
    x[:, 0] += SOIL_SHIFT[soil]
    x[:, 1] += SOIL_SHIFT[soil] * 0.4
    table = pa.table(
        {
            "petal_length": x[:, 0].astype(np.float32),
            "petal_width": x[:, 1].astype(np.float32),
            "stem_cm": x[:, 2].astype(np.float32),
            "soil": pa.DictionaryArray.from_arrays(pa.array(soil, pa.int8()), pa.array(SOILS)),
            "species": pa.array([SPECIES[s] for s in species]),
        }
    )
    pq.write_table(table, HERE / "flowers.parquet", compression="zstd")


if __name__ == "__main__":
    main()
