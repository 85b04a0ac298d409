"""The model library: the SSJDN network, its backbones and text encoder, the loss, checkpoints
and specs (api), the fast query-text path and score calibration. No geodata, no index."""
