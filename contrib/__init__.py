"""ONNX helpers for BERT/GPT2, tuning scripts and model-zoo configs (to come)."""
