"""Deployment to TFLite: graph rewrites (`fold`), conversion (`convert`), the LiteRT runtime and
latency (`runtime`), verification (`verify`, `calibration`), the audio-in model
(`audio_model`), the whole export (`export`) and TensorFlow Lite Micro (`tflm`)."""
