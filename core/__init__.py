"""SSJDN core: model, checkpoints, tiling, index and search. No Qt here."""
