"""Training: configs (`config`), the Keras fit (`fit`), callbacks, distillation and the
keras-tuner architecture search (`search`)."""
