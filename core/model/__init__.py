"""The model library: the SSJDN network, its backbones (registered by name) and text encoder,
pretrained weights as data, the loss, model specs, checkpoints (api), the fast query-text path
and score calibration; configs in configs/. No geodata, no index."""
