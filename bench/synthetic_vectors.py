"""Millions of vectors that look like real tile embeddings, streamed to disk.

Isotropic clusters (bench_search.py's generator) flatter an approximate index: real embeddings
of a trained model live near a low-dimensional, unevenly populated subspace. Here a Gaussian
mixture is fitted to real embeddings (bench/real_embeddings.py) in their leading principal
components, where most of the variance is; the remaining dimensions get isotropic noise with
the variance measured there. Samples are unit-normalised like the model's output.

    python bench/synthetic_vectors.py --real emb.npz --n 10000000 --out vectors_10m.npy
    python bench/synthetic_vectors.py --real emb.npz --compare      # real vs synthetic statistics

The output is a float16 .npy (10M x 512 = 10 GB), written block by block through a memory map,
so generation needs little RAM.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class FittedEmbeddingModel:
    mean: np.ndarray            # [D]
    components: np.ndarray      # [P, D] principal directions
    mixture: object             # sklearn GaussianMixture in the P-dim PCA space
    residual_std: float         # per-dimension std of what the P components leave out

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        seed = int(rng.integers(0, 2**31 - 1))
        self.mixture.random_state = seed
        coords, _ = self.mixture.sample(n)
        vectors = self.mean + coords.astype(np.float32) @ self.components
        residual = rng.standard_normal(vectors.shape, dtype=np.float32) * self.residual_std
        # Keep only the part of the noise orthogonal to the PCA subspace (the mixture models that part).
        residual -= (residual @ self.components.T) @ self.components
        vectors += residual
        # The mixture sampler returns samples grouped by component; shuffle so blocks are mixed.
        vectors = vectors[rng.permutation(n)]
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def fit(real: np.ndarray, pca_dims: int = 64, components: int = 48, seed: int = 0) -> FittedEmbeddingModel:
    from sklearn.mixture import GaussianMixture
    real = real.astype(np.float32)
    mean = real.mean(0)
    centred = real - mean
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    basis = vt[:pca_dims]
    coords = centred @ basis.T
    residual = centred - coords @ basis
    residual_std = float(np.sqrt((residual ** 2).sum(1).mean() / max(real.shape[1] - pca_dims, 1)))
    mixture = GaussianMixture(components, covariance_type="full", reg_covar=1e-5, random_state=seed,
                              max_iter=200).fit(coords)
    return FittedEmbeddingModel(mean, basis, mixture, residual_std)


def write_vectors(model: FittedEmbeddingModel, n: int, out: Path, seed: int = 0, block: int = 200_000) -> None:
    """Stream n float16 unit vectors into a .npy file; written to a temp name, then renamed."""
    from ssjdn.core.files import atomic_path
    rng = np.random.default_rng(seed)
    with atomic_path(out) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, model.mean.shape[0]))
        for start in range(0, n, block):
            stop = min(n, start + block)
            array[start:stop] = model.sample(stop - start, rng).astype(np.float16)
            print(f"  {stop:,}/{n:,}", flush=True)
        array.flush()
        del array


def neighbour_statistics(base: np.ndarray, queries: np.ndarray, k: int = 10) -> dict:
    """Cosine of the 1st and 10th neighbour and the spread of scores a query sees."""
    scores = queries @ base.T
    top = -np.sort(-scores, axis=1)[:, :k]
    return {"top1": float(np.median(top[:, 0])), "top10": float(np.median(top[:, k - 1])),
            "mean": float(scores.mean()), "std": float(scores.std())}


def compare(real_images: np.ndarray, real_texts: np.ndarray, model: FittedEmbeddingModel, seed: int = 0) -> None:
    """Print real vs synthetic neighbour statistics at the same base size."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(real_images))
    held, base = real_images[order[:200]], real_images[order[200:]]
    synthetic = model.sample(len(base) + 200, rng).astype(np.float32)
    rows = [("real image queries, real base", neighbour_statistics(base, held)),
            ("synthetic queries, synthetic base", neighbour_statistics(synthetic[200:], synthetic[:200]))]
    if len(real_texts):
        texts = real_texts[rng.permutation(len(real_texts))[:200]]
        rows += [("real text queries, real base", neighbour_statistics(base, texts)),
                 ("real text queries, synthetic base", neighbour_statistics(synthetic[200:], texts))]
    print(f"{'':38s} {'top1':>6s} {'top10':>6s} {'mean':>6s} {'std':>6s}")
    for name, stats in rows:
        print(f"{name:38s} {stats['top1']:6.3f} {stats['top10']:6.3f} {stats['mean']:6.3f} {stats['std']:6.3f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, required=True, help=".npz from bench/real_embeddings.py")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--pca-dims", type=int, default=64)
    parser.add_argument("--components", type=int, default=48)
    parser.add_argument("--compare", action="store_true", help="print real vs synthetic statistics")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = np.load(args.real)
    model = fit(data["images"], args.pca_dims, args.components, args.seed)
    if args.compare:
        compare(data["images"], data["texts"], model, args.seed)
    if args.out:
        write_vectors(model, args.n, args.out, args.seed)


if __name__ == "__main__":
    main()
