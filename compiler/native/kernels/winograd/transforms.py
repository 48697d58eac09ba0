"""The arithmetic of Winograd's F(2 x 2, 3 x 3) (kernels/winograd): its transforms'
matrices as data, and their application to a tile of values of any kind — LLVM vectors
in the transforms' loops, map expressions in the filters' transform."""

from __future__ import annotations


TILE = 2  # m: a tile's outputs along each side
WINDOW = 4  # m + 3 - 1: a tile's inputs along each side

# Bᵀ (input), G (filter) and Aᵀ (output) of F(2 x 2, 3 x 3), interpolating at 0, ±1 and
# infinity: the tile's window d, the filter g and the tile y along one axis; each
# transform is applied along both
BT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
G = ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1))
AT = ((1, 1, 1, 0), (0, 1, -1, -1))


def combination(coeffs, values, add, sub, times):
    """Σ c·v over the coefficients c that are not 0, left to right: ±1 an addition or a
    subtraction, another c a product first (`times(v, c)`; the first term's too, but
    for c = 1)."""
    total = None
    for c, v in zip(coeffs, values):
        if c == 0:
            continue
        if total is None:
            total = v if c == 1 else times(v, c)
        elif abs(c) == 1:
            total = add(total, v) if c > 0 else sub(total, v)
        else:
            total = add(total, times(v, c))
    return total


def two_sided(M, tile, add, sub, times):
    """M t Mᵀ of a square tile (a list of rows), M along its rows first, then its columns."""
    rows = [[combination(row, [t[j] for t in tile], add, sub, times) for j in range(len(tile[0]))] for row in M]
    return [[combination(col, r, add, sub, times) for col in M] for r in rows]


def tiles(out_hw: tuple) -> tuple:
    """The rows and columns of tiles that cover an image of out_hw outputs."""
    return tuple(-(-d // TILE) for d in out_hw)
